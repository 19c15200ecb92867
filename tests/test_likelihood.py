"""A next-step model's gate table (ablation/analysis/likelihood.py) on results directories written by hand:
for a language model, geometric means and their intervals on the log scale, the paired comparison with the
full cell and its verdicts, the factorial effects on log perplexity against a hand computation, runs listed
apart, the page and the figures; for piano rolls, the same on the NLL per frame as it is."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats as sps

from ablation.analysis import files
from ablation.analysis import likelihood as lk
from ablation.analysis.stats import holm
from ablation.core.config import EXPERIMENT_COPY, load_experiment

GATES = ["none", "output", "input", "input+output", "forget", "input+forget", "forget+output", "input+forget+output"]
FULL = "input+forget+output"
SEEDS = (1, 2, 3, 4, 5)
UNIGRAM = (650.0, 640.0)  # dev, test
STUCK = ("none", 5)  # no_learning: listed apart, and the effects use seeds 1-4
# log perplexity = 5.3 - 0.25 i - 0.1 f + NOISE[gates][seed] (no output gate effect): the input gate lowers it by 22%
NOISE = {g: [0.004 * math.sin(7 * k + 3 * s) for s in SEEDS] for k, g in enumerate(GATES)}
NOISE["input+forget"] = [0.0005 * math.sin(3 * s) for s in SEEDS]  # beside the full cell's noise: equivalent
NOISE[FULL] = [0.0] * len(SEEDS)

EXPERIMENT = """\
[task]
name = "lm"

[grid]
"model.gates" = ["none", "output", "input", "input+output", "forget", "input+forget", "forget+output",
                 "input+forget+output"]
"train.seed" = [1, 2, 3, 4, 5]

[stats]
margin = 1.0

[report]
title = "Language modelling by hand"
reading = "likelihood"
"""


def log_ppl(gates: str, seed: int) -> float:
    i, f = ("input" in gates), ("forget" in gates)
    return 5.3 - 0.25 * i - 0.1 * f + NOISE[gates][seed - 1]


def _record(root: Path, gates: str, seed: int, status: str = "complete", task: str = "lm",
            metric: str = "perplexity") -> None:
    d = root / f"{task}-{gates.replace('+', '_')}-s{seed}"
    d.mkdir(parents=True)
    test = math.exp(log_ppl(gates, seed)) if status == "complete" else 700.0
    (d / "config.json").write_text(json.dumps({"task": {"name": "lm"}, "train": {"seed": seed}}))
    (d / "summary.json").write_text(json.dumps({
        "status": status, "gates": gates, "seed": seed, "task": task, "metric": metric, "test_metric": test,
        "dev_metric": test * 1.01, "baseline_dev": UNIGRAM[0], "baseline_test": UNIGRAM[1], "best_epoch": 3,
        "active_params": 1000, "failure_reason": "dev perplexity never beat the unigram model's"
        if status != "complete" else None, "wall_seconds": 360.0, "pack_size": 8, "threads": 1, "device": "cpu",
        "machine": {"cpu_model": "Test CPU"}}))


@pytest.fixture
def lm_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "lm"
    for gates in GATES:
        for seed in SEEDS:
            _record(root, gates, seed, "no_learning" if (gates, seed) == STUCK else "complete")
    _record(root, "input", 1, task="mnist1d", metric="accuracy")  # another task's record: skipped, named
    (root / EXPERIMENT_COPY).write_text(EXPERIMENT)
    # the hand-written records hold what this reading reads, not a full record's files
    monkeypatch.setattr(files, "check_record", lambda d: None)
    return root


@pytest.fixture
def runs(lm_dir):
    return lk.load(lm_dir)


def test_load_lists_apart_and_skips_by_name(runs):
    assert len(runs) == 40
    assert list(lk.complete(runs)["run_id"]).count("lm-none-s5") == 0
    assert runs.attrs["skipped"] == ["mnist1d-input-s1 (a record of task 'mnist1d', not measured in perplexity or nll)"]
    assert "none (seed 5, no_learning)" in lk.apart_text(runs)


def test_table_geometric_means_and_intervals_on_the_log_scale(runs):
    table = lk.table(runs, margin=1.0).set_index("gates")
    logs = np.array([log_ppl("output", s) for s in SEEDS])
    half = sps.t.ppf(0.975, 4) * logs.std(ddof=1) / math.sqrt(5)
    r = table.loc["output"]
    assert r["value"] == pytest.approx(math.exp(logs.mean()))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert table.loc["none", "n"] == 4 and table.loc[FULL, "verdict"] == "reference"
    # against the full cell, paired by seed: output lacks i and f: log ratio 0.25 + 0.1 plus its noise
    d = logs - np.array([log_ppl(FULL, s) for s in SEEDS])
    assert r["diff_vs_full"] == pytest.approx(d.mean())
    assert r["shown_vs_full"] == pytest.approx(100 * (math.exp(d.mean()) - 1))
    assert r["p_paired"] == pytest.approx(sps.ttest_1samp(d, 0).pvalue)
    assert r["verdict"] == "worse"  # a higher perplexity
    assert table.loc["input+forget", "verdict"] == "equivalent"  # noise apart, within ±1% (log 1.01)
    tested = table["p_paired"].notna()
    assert np.allclose(table.loc[tested, "p_holm"], holm(table.loc[tested, "p_paired"]))


def test_effects_match_the_hand_computed_contrasts(runs):
    effects = lk.effects(runs).set_index("term")
    seeds = [1, 2, 3, 4]  # seed 5's gateless run did not learn
    for gate, size in (("input", -0.25), ("forget", -0.1), ("output", 0.0)):
        contrast = [np.mean([log_ppl(g, s) for g in GATES if gate in g])
                    - np.mean([log_ppl(g, s) for g in GATES if gate not in g]) for s in seeds]
        assert effects.loc[gate, "effect"] == pytest.approx(np.mean(contrast))
        assert effects.loc[gate, "effect"] == pytest.approx(size, abs=0.01)
        assert effects.loc[gate, "shown"] == pytest.approx(100 * math.expm1(np.mean(contrast)))
        assert effects.loc[gate, "n"] == 4
    claims = lk.effect_claims(lk.effects(runs), runs.attrs["scale"])
    pct = runs.attrs["scale"].diff_text(effects.loc["input", "shown"])
    assert claims[0].startswith(f"Adding the input gate lowers perplexity: {pct}")
    assert "−22." in claims[0] and claims[2].startswith("Adding the output gate has no detectable effect on perplexity")


def test_no_effects_without_two_seeds_of_every_gate_set(runs):
    rest = runs[~((runs["gates"] == "none") & (runs["seed"] > 1))]
    rest.attrs = runs.attrs
    assert lk.effects(rest).empty


def test_page_and_figures(lm_dir):
    exp = load_experiment(lm_dir / EXPERIMENT_COPY)
    text = lk.write(lm_dir, exp)
    assert text.startswith("| gates | test perplexity |")
    page = (lm_dir / lk.PAGE).read_text()
    assert "the unigram model's perplexity is 640.0" in page and "# Language modelling by hand" in page
    assert "`o` against the full cell: higher perplexity, +" in page
    assert "`i+f` against the full cell: equivalent" in page
    assert (lm_dir / "effects.csv").is_file() and (lm_dir / "figures" / "test_metric.png").is_file()
    before = {p: p.stat().st_mtime_ns for p in lm_dir.glob("*.*")}
    lk.write(lm_dir, exp)  # nothing changed: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in lm_dir.glob("*.*")} == before
    runs = lk.load(lm_dir)
    assert isinstance(lk.plot_test_metric(runs, lk.table(runs)), Figure)
    assert isinstance(lk.plot_effects(lk.effects(runs), runs.attrs["scale"]), Figure)


def test_an_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no complete run records of a next-step task"):
        lk.page(tmp_path)


def test_an_nll_per_frame_is_compared_as_it_is(tmp_path, monkeypatch):
    """Piano rolls: the NLL per frame is a mean loss already, so means, differences and effects are on it,
    shown in nats, and the margin is in nats."""
    root = tmp_path / "chorales"
    for gates in GATES:
        for seed in SEEDS:
            _record(root, gates, seed, task="chorales", metric="nll")  # test_metric = exp(log_ppl): any positive
    monkeypatch.setattr(files, "check_record", lambda d: None)
    runs = lk.load(root)
    assert runs.attrs["scale"].name == "NLL per frame" and not runs.attrs["scale"].log
    t = lk.table(runs, margin=0.5).set_index("gates")
    values = np.array([math.exp(log_ppl("output", s)) for s in SEEDS])
    d = values - np.array([math.exp(log_ppl(FULL, s)) for s in SEEDS])
    assert t.loc["output", "value"] == pytest.approx(values.mean())
    assert t.loc["output", "diff_vs_full"] == pytest.approx(d.mean()) == t.loc["output", "shown_vs_full"]
    e = lk.effects(runs).set_index("term")
    assert e.loc["input", "shown"] == e.loc["input", "effect"]
    page = lk.page(root)
    assert "each note's frequency is 640.000" in page and "±0.5 nats per frame" in page  # no [stats]: the default
    assert "test NLL per frame" in page


def test_runs_still_improving_at_the_budget_are_said_to_be(runs):
    t, e = lk.table(runs), lk.effects(runs)
    assert "39 of the 39 complete runs had their best dev perplexity in the last epoch (3)" in \
        " ".join(lk.reading(runs, t, e, epochs=3))
    assert not any("fixed budget" in c for c in lk.reading(runs, t, e, epochs=10))
