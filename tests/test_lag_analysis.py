"""The long-lag grid's analysis (ablation/analysis/lag.py) on a tiny results directory written by hand:
solved or not, time to solve with censoring, exact intervals, the primary test (the exact McNemar test
paired by (length, seed) over all lengths, Holm over the 7, Newcombe's paired interval), Fisher and
log-rank against the full cell with Holm, Newcombe's interval, the gates' main effects, the page and
the figures."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats as sps

from ablation.analysis import files, lag, stats
from ablation.analysis.stats import holm
from ablation.core import records
from ablation.core.config import EXPERIMENT_COPY, RunConfig, apply, load_experiment
from ablation.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GATES = ["none", "output", "input", "input+output", "forget", "input+forget", "forget+output", "input+forget+output"]
FULL = "input+forget+output"
SEEDS = range(1, 7)
EPOCHS = 10
BASE_DEV, BASE_TEST = 0.17, 0.165  # the MSE of predicting the mean; solved below 0.1 x these
SOLVED = 0.001  # a dev or test MSE off the plateau

# Length 10: every gate set with a forget gate solves every seed; its test MSE is
# 10^(-1 - 2f - 0.5i + 0.1 (seed - 1) o), so the forget gate's log10 effect is -2 at every seed and the
# output gate's 0.1 (seed - 1). When the dev MSE leaves the plateau (epoch), by seed:
CROSS_10 = {FULL: [2, 3, 3, 5, 6, 8]}  # the others with a forget gate: seed + 1
# Length 100: who solves, and when the full cell and f do (the others: seed + 3).
SOLVED_100 = {FULL: {1, 2, 3, 4}, "forget": {1, 2}, "input+forget": {1, 2, 3}, "forget+output": {1, 2, 3},
              "input+output": {1}}
CROSS_100 = {FULL: {1: 4, 2: 6, 3: 9, 4: 9}, "forget": {1: 4, 2: 6}}
DIVERGED = ("output", 100, 2)  # its metrics stop after epoch 3
STUCK = ("none", 100, 3)  # no_learning
HAND_CURVE = [0.17, 0.16, 0.05, 0.0169, 0.0170, 0.002, 0.001, 0.001, 0.001, 0.001]  # i+f, length 10, seed 1


def _config(gates: str, length: int, seed: int) -> tuple[str, dict]:
    """The run id and config.json of a run, as the trainer writes them."""
    sets = {"task.name": "adding", "task.length": length, "model.gates": gates, "train.seed": seed,
            "train.epochs": EPOCHS, "train.optimizer": "adam"}
    try:
        cfg = apply(RunConfig(), sets)
        return cfg.run_id(), cfg.to_dict()
    except ConfigError:  # a config.py without the task keys: the schema by hand
        return (f"adding{length}-{gates}-s{seed}",
                {"task": {"name": "adding", "length": length, "train_size": 1000, "eval_size": 100, "data_seed": 0},
                 "data": {}, "model": {"gates": [] if gates == "none" else gates.split("+"), "forget_init": "constant"},
                 "train": {"seed": seed, "optimizer": "adam", "epochs": EPOCHS}})


def _record(root: Path, gates: str, length: int, seed: int, dev: list[float], test: float | None,
            status: str = "complete", reason: str | None = None) -> Path:
    run_id, cfg = _config(gates, length, seed)
    d = root / run_id
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    lines = [{"epoch": e, "train_loss": m, "dev_metric": m, "seconds": 1.0} for e, m in enumerate(dev, 1)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    best = int(np.argmin(dev)) + 1 if dev else None
    summary = {"status": status, "gates": gates, "seed": seed, "dev_acc": None, "test_acc": None,
               "best_epoch": best, "active_params": 100, "failure_reason": reason,
               "diverged_epoch": len(dev) + 1 if status == "diverged" else None, "cell": "lstm",
               "peephole": "diagonal", "variant": "vanilla", "num_classes": 1, "pack_size": 8, "steps": 10,
               "device": "cpu", "threads": 1, "wall_seconds": 36.0, "train_examples": 1000, "task": "adding",
               "metric": "mse", "dev_metric": None if status == "diverged" else min(dev), "test_metric": test,
               "baseline_dev": BASE_DEV, "baseline_test": BASE_TEST, "run_id": run_id,
               "machine": {"cpu_model": "Test CPU"}, "test_examples": 2}
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    rows = "".join(f"{k},{y!r},{p!r}\n" for k, (y, p) in enumerate([(1.0, test or math.nan), (0.5, 0.5)]))
    (d / "predictions.csv").write_text("index,label,prediction\n" + rows)
    return d


def _curve(cross: int | None, epochs: int = EPOCHS) -> list[float]:
    return [BASE_DEV if cross is None or e < cross else SOLVED for e in range(1, epochs + 1)]


EXPERIMENT = """\
[task]
name = "adding"

[train]
epochs = 10
optimizer = "adam"

[grid]
"model.gates" = ["none", "output", "input", "input+output", "forget", "input+forget", "forget+output",
                 "input+forget+output"]
"task.length" = [10, 100]
"train.seed" = [1, 2, 3, 4, 5, 6]

[stats]
solve = 0.1

[report]
title = "Long lags: the adding problem"
summary = "the 8 gate sets x lengths 10 and 100 on the adding problem, 6 seeds"
reading = "lag"
"""


def _grid(root: Path) -> None:
    root.mkdir()
    for gates in GATES:
        f, i, o = ("forget" in gates), ("input" in gates), ("output" in gates)
        for seed in SEEDS:
            test = 10.0 ** (-1 - 2 * f - 0.5 * i + 0.1 * (seed - 1) * o)
            cross = (CROSS_10.get(gates, [s + 1 for s in SEEDS])[seed - 1]) if f else None
            dev = HAND_CURVE if (gates, seed) == ("input+forget", 1) else _curve(cross)
            _record(root, gates, 10, seed, dev, test)
            if (gates, 100, seed) == DIVERGED:
                _record(root, gates, 100, seed, _curve(None, 3), None, "diverged", "training loss nan in epoch 4")
                continue
            solved = seed in SOLVED_100.get(gates, set())
            cross = CROSS_100.get(gates, {}).get(seed, seed + 3) if solved else None
            status, reason = (("no_learning", "dev MSE never left the baseline") if (gates, 100, seed) == STUCK
                              else ("complete", None))
            _record(root, gates, 100, seed, _curve(cross), SOLVED if solved else 0.16 + 0.001 * seed, status, reason)
    (root / EXPERIMENT_COPY).write_text(EXPERIMENT)


def _has_files(d) -> str | None:
    missing = [f for f in lag.RECORD_FILES if not (Path(d) / f).is_file()]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture
def lag_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "lag"
    _grid(root)
    try:
        load_experiment(root / EXPERIMENT_COPY)
    except ConfigError as e:
        pytest.skip(f"core/config.py cannot read a lag experiment yet ([task], [stats] solve, reading 'lag'): {e}")
    reason = records.check_record(next(p for p in sorted(root.iterdir()) if p.is_dir()))
    if reason is not None:  # core/records.py does not know a generated task's record yet: read them anyway
        monkeypatch.setattr(files, "check_record", _has_files)
    return root


@pytest.fixture
def runs(lag_dir):
    return lag.load_lag(lag_dir)


def _row(frame, gates, length, seed=None):
    sel = frame[(frame["gates"] == gates) & (frame["length"] == length)]
    if seed is not None:
        sel = sel[sel["seed"] == seed]
    assert len(sel) == 1, (gates, length, seed)
    return sel.iloc[0]


# --- the rules --------------------------------------------------------------------------------------

def test_solved_follows_the_metrics_direction():
    assert lag.threshold(0.167, 0.1, higher=False) == pytest.approx(0.0167)
    assert lag.beats(0.0166, 0.0167, higher=False) and not lag.beats(0.0167, 0.0167, higher=False)
    # an accuracy: 100 - 0.1 x (100 - 25) = 92.5, reached or passed
    assert lag.threshold(25.0, 0.1, higher=True) == pytest.approx(92.5)
    assert lag.beats(92.5, 92.5, higher=True) and not lag.beats(92.4, 92.5, higher=True)
    assert not lag.beats(math.nan, 1.0, higher=False) and not lag.beats(None, 1.0, higher=True)


def test_clopper_pearson_by_hand():
    # 0/n and n/n have closed forms: 1 - (α/2)^(1/n) and (α/2)^(1/n)
    assert stats.clopper_pearson(0, 6) == pytest.approx((0.0, 1 - 0.025 ** (1 / 6)))
    assert stats.clopper_pearson(6, 6) == pytest.approx((0.025 ** (1 / 6), 1.0))
    # k/n: the Beta quantiles B(0.025; k, n-k+1) and B(0.975; k+1, n-k)
    assert stats.clopper_pearson(4, 6) == pytest.approx((sps.beta.ppf(0.025, 4, 3), sps.beta.ppf(0.975, 5, 2)))
    assert all(math.isnan(x) for x in stats.clopper_pearson(0, 0))


def test_newcombe_against_his_table_and_by_hand():
    # Newcombe (1998), Table II, method 10 (hybrid score, no continuity correction)
    published = {(56, 70, 48, 80): (0.0524, 0.3339), (9, 10, 3, 10): (0.1705, 0.8090),
                 (6, 7, 2, 7): (0.0582, 0.8062), (5, 56, 0, 29): (-0.0381, 0.1926),
                 (0, 10, 0, 20): (-0.1611, 0.2775), (10, 10, 0, 20): (0.6791, 1.0000)}
    for counts, (lo, hi) in published.items():
        d, got_lo, got_hi = stats.newcombe(*counts)
        assert d == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
        assert (got_lo, got_hi) == pytest.approx((lo, hi), abs=5e-5), counts

    def wilson(k, n, z=1.959963984540054):  # Wilson (1927), written out
        p = k / n
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)

    (l1, u1), (l2, u2) = wilson(12, 24), wilson(1, 24)
    d = 12 / 24 - 1 / 24
    want = (d, d - math.sqrt((0.5 - l1) ** 2 + (u2 - 1 / 24) ** 2), d + math.sqrt((u1 - 0.5) ** 2 + (1 / 24 - l2) ** 2))
    assert stats.newcombe(12, 24, 1, 24) == pytest.approx(want)


def test_mcnemar_exact_by_hand():
    # 0 of 10 discordant pairs the second's (or 10 of 10): the two tails 0.5^10 each
    assert stats.mcnemar_exact(0, 10) == pytest.approx(2 * 0.5 ** 10)
    assert stats.mcnemar_exact(10, 10) == pytest.approx(2 * 0.5 ** 10)
    # 1 of 5: P(X <= 1) + P(X >= 4) = 2 (1 + 5) / 32
    assert stats.mcnemar_exact(1, 5) == pytest.approx(2 * 6 / 32)
    assert stats.mcnemar_exact(3, 6) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 0) == 1.0  # no discordant pair: nothing against the null


def test_newcombe_paired_against_his_table_and_by_hand():
    # Newcombe (1998, Stat. Med. 17:2635), Table II, method 10: (both, only first, only second, neither)
    published = {(36, 12, 2, 0): (0.0569, 0.3404), (18, 12, 2, 18): (0.0562, 0.3290),
                 (53, 0, 0, 1): (-0.0729, 0.0729), (0, 30, 0, 0): (0.8395, 1.0000)}
    for counts, (lo, hi) in published.items():
        d, got_lo, got_hi = stats.newcombe_paired(*counts)
        assert d == pytest.approx((counts[1] - counts[2]) / sum(counts))
        assert (got_lo, got_hi) == pytest.approx((lo, hi), abs=5e-5), counts

    def wilson(k, n, z=1.959963984540054):  # Wilson (1927), written out
        p = k / n
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)

    def by_hand(a, b, c, d, phi):
        n = a + b + c + d
        p1, p2 = (a + b) / n, (a + c) / n
        (l1, u1), (l2, u2) = wilson(a + b, n), wilson(a + c, n)
        return ((b - c) / n, (b - c) / n - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2),
                (b - c) / n + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))

    # AD - BC = 0 x 7 - 3 x 10 = -30 < 0: φ = -30 / √(3 x 17 x 10 x 10), uncorrected
    assert stats.newcombe_paired(0, 3, 10, 7) == pytest.approx(by_hand(0, 3, 10, 7, -30 / math.sqrt(3 * 17 * 10 * 10)))
    # AD - BC = 5 x 2 - 3 x 3 = 1, within n/2 = 6.5: φ = 0
    assert stats.newcombe_paired(5, 3, 3, 2) == pytest.approx(by_hand(5, 3, 3, 2, 0.0))
    # AD - BC = 60 - 4 = 56 > n/2 = 10: φ = (56 - 10) / √(12 x 8 x 12 x 8)
    assert stats.newcombe_paired(10, 2, 2, 6) == pytest.approx(by_hand(10, 2, 2, 6, 46 / 96))
    # the gateless cell against the full cell, 0 of 20 against 20 of 20: a margin is 0, φ = 0
    assert stats.newcombe_paired(0, 0, 20, 0) == pytest.approx(by_hand(0, 0, 20, 0, 0.0))
    assert stats.newcombe_paired(0, 0, 20, 0)[1] == pytest.approx(-1.0)
    assert all(math.isnan(x) for x in stats.newcombe_paired(0, 0, 0, 0))


def test_kaplan_meier_median_and_degenerate_log_rank():
    # events at 2, 3, 3, 5, 6, 8 of 6 runs: S(2) = 5/6, S(3) = 5/6 x 3/5 = 1/2 -> 3
    assert stats.km_median([2, 3, 3, 5, 6, 8], [True] * 6) == 3
    # 4 events, 2 censored at 10: S(4) = 5/6, S(6) = 2/3, S(9) = 2/3 x 2/4 = 1/3 -> 9
    assert stats.km_median([4, 6, 9, 9, 10, 10], [True] * 4 + [False] * 2) == 9
    # a run censored at 4 is still at risk at 4: S(4) = 1 - 1/2, the median 4
    assert stats.km_median([4, 4], [True, False]) == 4
    assert math.isnan(stats.km_median([4, 6, 10, 10, 10, 10], [True, True, False, False, False, False]))
    assert stats.logrank([10, 10], [False, False], [10, 10], [False, False]) == (0.0, 1.0)  # no events at all
    assert stats.logrank([3, 3], [True, True], [3, 3], [True, True]) == (0.0, 1.0)  # zero variance
    z, p = stats.logrank([1, 2, 2, 3], [True] * 4, [8, 10, 10, 10], [True, False, False, False])
    assert z > 0 and p < 0.05  # the first sample solves sooner


# --- the records --------------------------------------------------------------------------------------

def test_load_lag_reads_solved_times_and_censoring(runs):
    assert len(runs) == 8 * 2 * 6 and runs.attrs["solve"] == 0.1 and runs.attrs["skipped"] == []
    hand = _row(runs, "input+forget", 10, 1)  # dev 0.05 at epoch 3 is above 0.017, 0.0169 at epoch 4 below
    assert hand["epochs_to_solve"] == 4 and hand["observed"] and hand["solved"]
    never = _row(runs, "none", 10, 1)  # complete, on the plateau: censored at its last epoch
    assert not never["solved"] and not never["observed"] and math.isnan(never["epochs_to_solve"])
    assert never["censored_at"] == EPOCHS
    gone = _row(runs, *DIVERGED)  # stopped after epoch 3: unsolved, censored at its budget, not at 3
    assert gone["status"] == "diverged" and not gone["solved"] and math.isnan(gone["test_metric"])
    assert gone["last_epoch"] == 3 and gone["censored_at"] == EPOCHS and not gone["observed"]
    stuck = _row(runs, *STUCK)
    assert stuck["status"] == "no_learning" and not stuck["solved"]
    assert _row(runs, FULL, 100, 3)["epochs_to_solve"] == 9 and _row(runs, FULL, 100, 3)["solved"]
    assert set(runs["forget_init"]) == {"constant"} and runs["threshold_test"].iloc[0] == pytest.approx(0.0165)


def test_a_damaged_record_is_skipped_and_named(lag_dir):
    bad = next(p for p in sorted(lag_dir.iterdir()) if p.is_dir())
    (bad / "summary.json").unlink()
    got = lag.load_lag(lag_dir)
    assert len(got) == 95 and got.attrs["skipped"] == [f"{bad.name} (missing summary.json)"]


# --- the tables ----------------------------------------------------------------------------------------

def test_solve_table_by_hand(runs):
    t = lag.solve_table(runs)
    assert len(t) == 16 and list(t["length"].unique()) == [10, 100]
    full = _row(t, FULL, 100)
    assert (full["n"], full["solved"]) == (6, 4) and full["rate"] == pytest.approx(4 / 6)
    assert (full["rate_low"], full["rate_high"]) == pytest.approx((sps.beta.ppf(0.025, 4, 3),
                                                                   sps.beta.ppf(0.975, 5, 2)))
    out = _row(t, "output", 100)  # its diverged run stays in the denominator
    assert (out["n"], out["solved"], out["diverged"], out["n_metric"]) == (6, 0, 1, 5)
    assert _row(t, "none", 100)["no_learning"] == 1
    assert _row(t, FULL, 10)["median_epochs"] == 3  # events 2, 3, 3, 5, 6, 8
    assert _row(t, "input+forget", 10)["median_epochs"] == 4  # events 4, 3, 4, 5, 6, 7
    assert _row(t, FULL, 100)["median_epochs"] == 9  # events 4, 6, 9, 9, two censored at 10
    assert math.isnan(_row(t, "forget", 100)["median_epochs"])  # 2 of 6 seen: not reached
    med = _row(t, "forget", 10)  # 10^(-1 - 2) at every seed
    assert med["metric_median"] == pytest.approx(1e-3)


def test_fisher_log_rank_holm_and_verdicts(runs):
    t = lag.solve_table(runs)
    io = _row(t, "input+output", 100)  # 1/6 against the full cell's 4/6
    assert io["p_fisher"] == pytest.approx(sps.fisher_exact([[1, 5], [4, 2]]).pvalue)
    assert io["diff_vs_full"] == pytest.approx(1 / 6 - 4 / 6)
    none = _row(t, "none", 10)  # 0/6 against 6/6: p = 2 / C(12, 6)
    assert none["p_fisher"] == pytest.approx(2 / math.comb(12, 6))
    for _, s in t.groupby("length"):
        tested = s[s["gates"] != FULL]
        assert len(tested) == 7 and s.loc[s["gates"] == FULL, "p_fisher"].isna().all()
        assert np.allclose(tested["p_fisher_holm"], holm(tested["p_fisher"]))
        assert np.allclose(tested["p_logrank_holm"], holm(tested["p_logrank"]))
        ranked = tested.sort_values("p_fisher", kind="stable")["p_fisher_holm"].to_numpy()
        assert np.all(np.diff(ranked) >= 0)  # Holm keeps the order of the raw p-values
    # the four gate sets without a forget gate at length 10: Holm's first step, 7 x 2/924, for all four
    ten = t[(t["length"] == 10) & ~t["gates"].str.contains("forget") & (t["gates"] != FULL)]
    assert len(ten) == 4 and np.allclose(ten["p_fisher_holm"], 7 * 2 / math.comb(12, 6))
    assert set(ten["verdict"]) == {"solves less often"}
    assert _row(t, FULL, 10)["verdict"] == "reference"
    assert _row(t, "forget", 10)["verdict"] == "no difference shown"  # 6/6 both; the times differ too little
    assert not t["verdict"].str.contains("equivalent").any()
    g, f = runs[(runs["gates"] == "input+output") & (runs["length"] == 100)], \
        runs[(runs["gates"] == FULL) & (runs["length"] == 100)]
    want = sps.logrank(*(sps.CensoredData(uncensored=x["epochs_to_solve"].dropna(),
                                          right=x.loc[~x["observed"], "censored_at"]) for x in (g, f)))
    assert (io["z_logrank"], io["p_logrank"]) == pytest.approx((want.statistic, want.pvalue))
    assert io["z_logrank"] < 0  # it solves later (and less often) than the full cell


def test_main_effects_by_hand(runs):
    e = lag.lag_effects(runs).set_index(["length", "gate", "outcome"])
    assert len(e) == 2 * 3 * 2
    rate = e.loc[(100, "forget", lag.RATE)]  # with f: 4 + 2 + 3 + 3 of 24; without: 0 + 0 + 0 + 1 of 24
    assert (rate["n_with"], rate["n_without"]) == (24, 24)
    assert (rate["effect"], rate["ci_low"], rate["ci_high"]) == pytest.approx(stats.newcombe(12, 24, 1, 24))
    logf = e.loc[(10, "forget", "log10 test MSE")]  # -2 at every seed: no spread
    assert (logf["effect"], logf["ci_low"], logf["ci_high"]) == pytest.approx((-2, -2, -2))
    logo = e.loc[(10, "output", "log10 test MSE")]  # 0.1 (seed - 1): 0, 0.1, ..., 0.5
    per_seed = 0.1 * np.arange(6)
    half = sps.t.ppf(0.975, 5) * per_seed.std(ddof=1) / math.sqrt(6)
    assert (logo["effect"], logo["ci_low"], logo["ci_high"]) == pytest.approx((0.25, 0.25 - half, 0.25 + half))
    assert e.loc[(100, "input", "log10 test MSE"), "n_with"] == 5  # the diverged run's seed drops out
    assert e.loc[(10, "forget", lag.RATE), "effect"] == 1.0  # 24/24 against 0/24


def test_longest_length_solved_by_a_majority(runs):
    longest = lag.longest_solved(lag.solve_table(runs)).set_index("gates")["text"]
    assert longest[FULL] == "100 (4/6)"
    assert longest["input+forget"] == "10 (6/6)"  # 3/6 at 100 is no majority
    assert longest["forget"] == "10 (6/6)" and longest["none"] == "no length" and longest["input"] == "no length"


# --- the primary test ----------------------------------------------------------------------------------

def test_primary_pairs_by_length_and_seed_over_all_lengths(runs):
    t = lag.primary_table(runs).set_index("gates")
    assert list(t.index) == GATES[:-1] and set(t["lengths"]) == {"10 100"}  # the 7, in the lecture's order
    assert (t["pairs"] == 12).all()  # 2 lengths x 6 seeds
    none = t.loc["none"]  # the full cell solves all 6 at 10 and seeds 1-4 at 100; none solves nothing
    assert (none["both"], none["only_full"], none["only_gate_set"], none["neither"]) == (0, 10, 0, 2)
    assert none["p_mcnemar"] == pytest.approx(2 * 0.5 ** 10)
    assert (none["rate_gate_set"], none["rate_full"]) == pytest.approx((0.0, 10 / 12))
    assert (none["diff_vs_full"], none["diff_ci_low"], none["diff_ci_high"]) == \
        pytest.approx(stats.newcombe_paired(0, 0, 10, 2))
    f = t.loc["forget"]  # 6 of 6 at 10, seeds 1 and 2 at 100: both 8, only the full cell at seeds 3 and 4
    assert (f["both"], f["only_full"], f["only_gate_set"], f["neither"]) == (8, 2, 0, 2)
    assert f["p_mcnemar"] == pytest.approx(0.5)  # 2 of 2 discordant: 2 x 0.5^2
    io = t.loc["input+output"]  # seed 1 at 100
    assert (io["both"], io["only_full"]) == (1, 9) and io["p_mcnemar"] == pytest.approx(2 * 0.5 ** 9)
    # Holm over the 7: 7 x 2^-9 for the three with 10 of 10 discordant, 4 x 2^-8 for i+o
    assert np.allclose(t["p_mcnemar_holm"], holm(t["p_mcnemar"]))
    assert t.loc["none", "p_mcnemar_holm"] == pytest.approx(7 * 2 * 0.5 ** 10)
    assert io["p_mcnemar_holm"] == pytest.approx(4 * 2 * 0.5 ** 9)
    assert list(t["verdict"]) == ["solves less often"] * 4 + ["no difference shown"] * 3
    assert not t["verdict"].str.contains("equivalent").any()


def test_primary_keeps_a_diverged_run_in_its_pair_and_drops_a_missing_one(runs):
    t = lag.primary_table(runs).set_index("gates")
    # output diverged at (100, 2), where the full cell solved: unsolved, in its pair, only the full cell's
    out = t.loc["output"]
    assert (out["pairs"], out["only_full"], out["neither"]) == (12, 10, 2)
    # none did not learn at (100, 3), where the full cell solved: the same
    assert (t.loc["none", "pairs"], t.loc["none", "only_full"]) == (12, 10)
    # a missing record drops its pair: the full cell's (100, 1) from every gate set, none's (10, 1) from none's
    gone = ((runs["gates"] == FULL) & (runs["length"] == 100) & (runs["seed"] == 1)) | \
        ((runs["gates"] == "none") & (runs["length"] == 10) & (runs["seed"] == 1))
    t = lag.primary_table(runs[~gone]).set_index("gates")
    assert t.loc["none", "pairs"] == 10 and (t.drop(index="none")["pairs"] == 11).all()
    assert (t.loc["none", "only_full"], t.loc["none", "p_mcnemar"]) == (8, pytest.approx(2 * 0.5 ** 8))
    io = t.loc["input+output"]  # its solved seed 1 at 100 lost its partner: no both
    assert (io["both"], io["only_full"], io["only_gate_set"], io["neither"]) == (0, 9, 0, 2)
    claims = lag.primary_claims(lag.primary_table(runs[~gone]), runs[~gone])
    assert claims[0].startswith("Primary: over the pairs (length, seed) that have both records (lengths 10, 100; ")
    # no full cell: no pair, no test, out of the Holm family
    t = lag.primary_table(runs[runs["gates"] != FULL])
    assert (t["pairs"] == 0).all() and t["p_mcnemar"].isna().all() and t["p_mcnemar_holm"].isna().all()
    assert set(t["verdict"]) == {"no pair with the full cell"}


def test_primary_holds_one_family_per_forget_init(runs):
    chrono = runs.assign(forget_init="chrono", run_id=runs["run_id"] + "-chrono")
    flipped = chrono["gates"] == "forget"  # in the chrono stratum f solves wherever the full cell does
    full = chrono[chrono["gates"] == FULL].set_index(["length", "seed"])["solved"]
    chrono.loc[flipped, "solved"] = [full[(r["length"], r["seed"])] for _, r in chrono[flipped].iterrows()]
    both = pd.concat([runs, chrono], ignore_index=True)
    t = lag.primary_table(both)
    assert len(t) == 14 and list(t["forget_init"].unique()) == ["chrono", "constant"]
    for _, s in t.groupby("forget_init"):  # Holm over each stratum's 7, not over the 14
        assert np.allclose(s["p_mcnemar_holm"], holm(s["p_mcnemar"]))
    alone = lag.primary_table(runs)
    assert np.allclose(t[t["forget_init"] == "constant"]["p_mcnemar_holm"], alone["p_mcnemar_holm"])
    assert t[(t["forget_init"] == "chrono") & (t["gates"] == "forget")]["p_mcnemar"].iloc[0] == 1.0
    claims = lag.primary_claims(t, both)
    assert [c.split(",")[0] for c in claims] == ["Primary: forget init chrono", "Primary: forget init constant"]
    assert "| forget init | gates |" in lag.primary_markdown(t)


# --- the files, the page, the hooks and the figures ----------------------------------------------------

def test_table_command_writes_the_page_and_figures(lag_dir):
    from ablation.analysis.render import page, write_tables

    md = write_tables(lag_dir)
    assert md.startswith("| length | gates | solved |") and "solves less often" in md
    for name in ("table.md", "table.csv", "effects.csv", "primary.csv", "README.md", "figures/solve_rate.png",
                 "figures/effects.png", "figures/effects.pdf"):
        assert (lag_dir / name).is_file(), name
    text = (lag_dir / "README.md").read_text(encoding="utf-8")
    assert text.startswith("# Long lags: the adding problem\n")
    # the primary test first: the page's first section, the reading's first claim, before the per-length tables
    headings = [x for x in text.splitlines() if x.startswith("## ")]
    assert headings[0] == "## Primary test (declared in experiments/lag.toml)"
    assert headings.index("## Per-length tables (secondary)") > headings.index("## Reading") > 0
    first = text.split("## ", 2)[1]
    assert "| none | 12 | 0 | 10 | 0 | 2 | −0.83 [" in first and "exact McNemar" in first
    assert [x for x in first.splitlines() if x.startswith("- ")][0].startswith(
        "- The gateless cell solves less often than the full cell: of 12 pairs (length, seed), only the full cell "
        "solved in 10 and only the gateless cell in 0")
    assert len([x for x in first.splitlines() if x.startswith("- ")]) == 4  # a sentence per gate set shown to differ
    reading = text.split("## Reading", 1)[1].split("\n- ")
    assert reading[1].startswith("Primary: over the 2 lengths × 6 seeds, the gateless cell solves less often than "
                                 "the full cell (0 of 12 pairs against 10 of 12; exact McNemar, Holm p = 0.014); ")
    assert "no difference shown for f, i+f, f+o (exact McNemar, Holm p ≥ 0.05)." in reading[1]
    assert reading[2].startswith("Secondary: ") and reading[3].startswith("Length 10 (secondary): ")
    assert "| verdict (secondary) |" in text and "the primary test pairs the runs" in text
    assert "`[stats] solve = 0.1`" in text and "## Reading" in text and "## Main effects of the gates" in text
    apart = text.split("## Runs listed apart", 1)[1].split("##", 1)[0]
    gone, _ = _config(*DIVERGED)
    stuck, _ = _config(*STUCK)
    assert gone in apart and "training loss nan in epoch 4" in apart and stuck in apart
    assert "1 run diverged and 1 did not learn" in text
    assert "![effects](figures/effects.png)" in text and "![solve rate](figures/solve_rate.png)" in text
    assert "equivalent" not in text
    assert "Training the 96 runs took" in text  # 96 x 36 s / 8 a pack = 0.1 core-hours
    assert page(lag_dir) == text  # what `make tables` would write
    written = {f: (lag_dir / f).read_bytes() for f in ("table.md", "table.csv", "effects.csv", "primary.csv",
                                                       "README.md", "figures/effects.pdf", "figures/solve_rate.png")}
    (lag_dir / "primary.csv").unlink()  # written afresh, not left as it was
    assert write_tables(lag_dir, fmt="csv") == (lag_dir / "table.csv").read_text()
    assert all((lag_dir / f).read_bytes() == b for f, b in written.items())  # the same records, the same bytes
    primary = (lag_dir / "primary.csv").read_text().splitlines()
    assert primary[0] == ",".join(lag.PRIMARY_COLUMNS) and len(primary) == 8
    assert primary[1].startswith("constant,none,10 100,12,0,10,0,2,0,0.833333,-0.833333,")
    table = (lag_dir / "table.csv").read_text().splitlines()
    assert len(table) == 17 and table[0].startswith("forget_init,length,gates,metric,n,solved,rate,rate_low")


# --- the gradient probe ---------------------------------------------------------------------------------

N_SEQUENCES = 1000  # test sequences behind each run's probe
PROBE_BINS = ((1, 10), (11, 20), (21, 30), (31, None))  # probes.LENGTH_BINS
# Each run's median r_d over its test sequences: on the best-on-dev parameters -slope x d + 0.2 (seed - 1),
# so over the seeds 1..6 the median is -slope x d + 0.5, the lowest seed's -slope x d, the highest's + 1.0;
# at initialisation -2 x slope x d at every seed. The diverged run has no probes.json.
BEST_SLOPE = {FULL: 0.02, "none": 0.1}  # the others 0.05
INIT_SLOPE = {FULL: 0.04, "none": 0.01}  # the others 0.02
FLOORED = ("none", 100, {1, 2, 3, 4})  # these seeds' gradients underflow before the last step: no gradient
TINY_LOG = math.log10(np.finfo(np.float32).tiny)  # probes.FLOOR's log, where the probe puts no gradient
LAST_LOG = -0.5  # log10 ||dJ/dh_T|| of a floored run: its r_d = TINY_LOG - LAST_LOG for d >= 1


def _probe_file(d: Path, length: int, curves: dict[str, list], zeros: dict[str, list[int]] | None = None) -> None:
    """A probes.json as the trainer writes it: per checkpoint the 4 length bins, the one holding
    ``length`` with distances 0..length-1 and its median r_d (``curves``), the other bins empty."""
    checkpoints = {}
    for name, q50 in curves.items():
        bins = []
        for lo, hi in PROBE_BINS:
            inside = lo <= length and (hi is None or length <= hi)
            m = length if inside else 0
            zero = (zeros or {}).get(name, [0] * length)
            bins.append({"lengths": [lo, hi], "distance": list(range(m)), "n": [N_SEQUENCES] * m,
                         "zero": zero[:m], "mean": q50[:m], "q10": q50[:m], "q50": q50[:m], "q90": q50[:m]})
        checkpoints[name] = {"bins": bins}
    probes = {"version": 2, "gradient_decay": {"statistic": "log10 ||dJ/dh_(T-d)|| - log10 ||dJ/dh_T||",
                                               "checkpoints": checkpoints},
              "gates": {}, "positions_n": [N_SEQUENCES] * length, "saturation_thresholds": [0.05, 0.95]}
    (d / "probes.json").write_text(json.dumps(probes))


def _add_probes(root: Path) -> None:
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        s = json.loads((d / "summary.json").read_text())
        gates, seed, length = s["gates"], s["seed"], json.loads((d / "config.json").read_text())["task"]["length"]
        if s["status"] == "diverged":
            continue
        best = [-BEST_SLOPE.get(gates, 0.05) * k + 0.2 * (seed - 1) for k in range(length)]
        init = [-2 * INIT_SLOPE.get(gates, 0.02) * k for k in range(length)]
        zeros = None
        if (gates, length) == FLOORED[:2] and seed in FLOORED[2]:
            best = [0.0] + [TINY_LOG - LAST_LOG] * (length - 1)
            zeros = {"best": [0] + [N_SEQUENCES] * (length - 1)}
        _probe_file(d, length, {"init": init, "epoch1": init, "best": best}, zeros)


@pytest.fixture
def probe_dir(lag_dir) -> Path:
    _add_probes(lag_dir)
    return lag_dir


def test_probe_frame_is_the_median_of_the_runs_medians(probe_dir):
    runs = lag.load_lag(probe_dir)
    probes = lag.load_probes(probe_dir, runs)
    assert probes.attrs["skipped"] == [] and len(probes) == 3 * (8 * 6 * 10 + (8 * 6 - 1) * 100)  # 3 checkpoints
    gone, _ = _config(*DIVERGED)
    assert gone not in set(probes["run_id"])  # no probes.json: left out
    decay = lag.decay_table(probes)
    assert list(decay["checkpoint"].unique()) == ["init", "epoch1", "best"]
    assert list(decay["gates"].unique()) == GATES  # the lecture's order
    ten = decay[decay["length"] == 10]
    assert sorted(ten["distance"].unique()) == list(range(10))  # d = 0..T-1 of its own bin only
    row = _row(decay[(decay["checkpoint"] == "best") & (decay["distance"] == 4)], "forget", 10)
    # seeds' medians -0.2 + 0.0, 0.2, ..., 1.0: their median (0.4 + 0.6) / 2 - 0.2, lowest -0.2, highest 0.8
    assert (row["seeds"], row["median"], row["low"], row["high"]) == pytest.approx((6, 0.3, -0.2, 0.8))
    assert (row["no_gradient"], row["sequences"]) == (0, N_SEQUENCES)
    init = _row(decay[(decay["checkpoint"] == "init") & (decay["distance"] == 50)], FULL, 100)
    assert (init["median"], init["low"], init["high"]) == pytest.approx((-4.0, -4.0, -4.0))
    out = _row(decay[(decay["checkpoint"] == "best") & (decay["distance"] == 0)], "output", 100)
    assert out["seeds"] == 5 and out["median"] == pytest.approx(0.6)  # seeds 1, 3, 4, 5, 6: 0, 0.4, 0.6, ...
    none = _row(decay[(decay["checkpoint"] == "best") & (decay["distance"] == 50)], "none", 100)
    # 4 of 6 seeds at the floor (the 4 lowest): the median of medians is the floor's
    assert none["no_gradient"] == 4 and none["median"] == pytest.approx(TINY_LOG - LAST_LOG)
    assert none["high"] == pytest.approx(-0.1 * 50 + 1.0)


def test_probe_frame_skips_what_it_cannot_read(probe_dir):
    runs = lag.load_lag(probe_dir)
    one, two = (probe_dir / r for r in runs["run_id"].iloc[:2])
    (one / "probes.json").write_text("{\"gradient_decay\": {\"checkpoints\": ")  # cut short
    (two / "probes.json").unlink()
    length = int(runs["length"].iloc[2])
    q50 = [0.0] + [None] * (length - 1)  # a member with no finite ratio past d = 0
    _probe_file(probe_dir / runs["run_id"].iloc[2], length, {"best": q50})
    probes = lag.load_probes(probe_dir, runs)
    assert [s.split(" ")[0] for s in probes.attrs["skipped"]] == [one.name]
    assert two.name not in set(probes["run_id"])
    third = probes[probes["run_id"] == runs["run_id"].iloc[2]]
    assert len(third) == length and third["q50"].isna().sum() == length - 1
    decay = lag.decay_table(probes)
    assert not decay["median"].isna().any()  # the nan medians drop out of their seeds
    assert lag.decay_table(probes.iloc[:0]).empty


def test_gradient_decay_figure_and_page(probe_dir):
    import matplotlib.pyplot as plt

    from ablation.analysis.render import page, write_tables

    runs = lag.load_lag(probe_dir)
    decay = lag.decay_table(lag.load_probes(probe_dir, runs))
    for fig, _ in (lag.plot_gradient_decay(decay), lag.plot_gradient_decay(decay.iloc[:0])):
        assert isinstance(fig, Figure)
        plt.close(fig)
    fig, ax = lag.plot_gradient_decay(decay, names=GATES)
    assert len(fig.axes) == 2 and ax.get_yscale() == "log"  # a panel per length
    plt.close(fig)

    write_tables(probe_dir)
    assert "gradient_decay" in lag.FIGURES
    assert (probe_dir / "figures/gradient_decay.png").is_file() and (probe_dir / "figures/gradient_decay.pdf").is_file()
    text = (probe_dir / "README.md").read_text(encoding="utf-8")
    assert "![gradient decay](figures/gradient_decay.png)" in text and page(probe_dir) == text
    claims = [c for c in text.splitlines() if "gradient" in c.lower() and c.startswith("- ")]
    assert "at d = 50, the shortest distance back to the first marked value" in claims[0]
    assert "length 100" in claims[0] and "over its 1000 test sequences" in claims[0]
    # best: the full cell -0.02 x 50 + 0.5 [-1.0, 0.0]; none at the floor in 4 of 6 seeds
    assert "i+f+o −0.5 [−1.0, 0.0]" in claims[0]
    assert "(the median sequence gets no gradient at all in 4 of 6 seeds)" in claims[0]
    floor = f"{TINY_LOG - LAST_LOG:.1f}".replace("-", "−")  # -37.4
    assert (f"on the best-on-dev parameters at least {-0.5 - (TINY_LOG - LAST_LOG):.1f} orders of magnitude above "
            f"(−0.5 against {floor}, at the probe's float32 floor: no gradient at all in 4 of 6 seeds)") in claims[1]
    # at initialisation -2 x 0.04 x 50 against -2 x 0.01 x 50
    assert "at initialisation 3.0 orders of magnitude below (−4.0 against −1.0)" in claims[1]
    written = {f: (probe_dir / f).read_bytes() for f in ("README.md", "figures/gradient_decay.png",
                                                         "figures/gradient_decay.pdf")}
    lag.save_figures(probe_dir)
    write_tables(probe_dir)
    assert all((probe_dir / f).read_bytes() == b for f, b in written.items())  # the same records, the same bytes
    for d in probe_dir.glob("*/probes.json"):  # the probes gone: no stale figure, no claim
        d.unlink()
    write_tables(probe_dir)
    text = (probe_dir / "README.md").read_text(encoding="utf-8")
    assert not (probe_dir / "figures/gradient_decay.png").exists() and "gradient_decay" not in text


def test_cli_reaches_the_lag_analysis(lag_dir, capsys):
    from ablation.cli import main

    assert main(["plot", str(lag_dir)]) == 0
    printed = capsys.readouterr().out.split()
    assert {str(lag_dir / "figures" / f"{f}.png") for f in ("solve_rate", "effects")} <= set(printed)
    assert main(["table", str(lag_dir)]) == 0 and "no difference shown" in capsys.readouterr().out
    assert main(["table", str(lag_dir), "--format", "tex"]) == 2
    assert "written as md or csv" in capsys.readouterr().err


def test_plots_return_figures(runs):
    import matplotlib.pyplot as plt

    table, effects = lag.solve_table(runs), lag.lag_effects(runs)
    for fig, _ in (lag.plot_solve_rate(table), lag.plot_lag_effects(effects),
                   lag.plot_lag_effects(effects.iloc[:0])):
        assert isinstance(fig, Figure)
        plt.close(fig)
    fig, ax = lag.plot_solve_rate(table)
    assert ax.get_xscale() == "log" and fig.axes[1].get_yscale() == "log"  # lengths and MSE span decades
    plt.close(fig)


def test_committed_lag_tables_are_honest():
    """Every committed lag table: the Clopper-Pearson interval of its own counts, Holm over the comparisons of
    each length, verdicts that follow the Holm p-values; its primary.csv: counts that add up to the pairs, the
    exact McNemar p of its own counts, Holm over each family, verdicts that follow."""
    tables = [p for p in sorted(ROOT.glob("results/*/table.csv"))
              if (p.parent / EXPERIMENT_COPY).is_file()
              and 'reading = "lag"' in (p.parent / EXPERIMENT_COPY).read_text(encoding="utf-8")]
    if not tables:
        pytest.skip("no lag grid committed under results/ yet")
    for path in tables:
        t = pd.read_csv(path)
        for _, r in t.iterrows():
            want = stats.clopper_pearson(r["solved"], r["n"])
            assert (r["rate_low"], r["rate_high"]) == pytest.approx(want, abs=1e-5)
        for _, s in t.groupby(lag.STRATA):
            p = s["p_fisher"].dropna()
            assert np.allclose(s["p_fisher_holm"].dropna(), holm(p), atol=len(p) * 1e-5), path
        tested = t[t["verdict"] != "reference"]
        assert ((tested["p_fisher_holm"] < 0.05) == tested["verdict"].str.endswith("often")).all(), path
        primary = pd.read_csv(path.parent / lag.PRIMARY)
        for _, r in primary.iterrows():
            counts = (r["both"], r["only_full"], r["only_gate_set"], r["neither"])
            assert sum(counts) == r["pairs"], path
            exact = stats.mcnemar_exact(r["only_full"], r["only_full"] + r["only_gate_set"])
            assert r["p_mcnemar"] == pytest.approx(exact, rel=1e-5, abs=1e-9), path
        for _, s in primary.groupby("forget_init"):
            p = s["p_mcnemar"].dropna()
            assert np.allclose(s["p_mcnemar_holm"].dropna(), holm(p), atol=len(p) * 1e-5), path
        assert ((primary["p_mcnemar_holm"] < 0.05) == primary["verdict"].str.endswith("often")).all(), path
