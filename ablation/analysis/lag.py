"""The long-lag grid (experiments/lag.toml): which gate sets solve a generated long-lag task, such as
the adding problem (Hochreiter & Schmidhuber 1997, exp. 4), as the lag grows, and how soon.

A run on such a task either stays on the plateau of the trivial baseline (predicting the training
targets' mean) or escapes it to near zero, at an epoch that varies by seed, so a mean with a
t-interval is the wrong summary. What counts is declared in the experiment file before training
([stats] solve, `Experiment.solve`):

- solved: the test metric of the best-on-dev weights beats solve x the test baseline (an MSE below
  it; for an accuracy in %, at least 100 - solve x (100 - baseline), the same fraction of the
  baseline's error rate). A diverged or stuck (no_learning) run is unsolved and stays in every
  denominator;
- time to solve: the first epoch whose dev metric beats solve x the dev baseline; a run that never
  gets there is right-censored at its last epoch, or at its epoch budget if it stopped early
  (diverged: it is known not to solve within the budget).

The primary test (declared in experiments/lag.toml): each gate set against the full cell, solved
or not, paired by (length, seed) over all the lengths of the grid (runs of one (length, seed) train
in one pack: the same initial shared weights, the same batches), within a forget-init stratum: the
exact McNemar test on the discordant pairs, Holm over the 7 gate sets, with the paired difference
of solve rates and Newcombe's (1998) interval for paired proportions (`primary_table`, primary.csv).
Everything else is secondary. Per (length, gate set): the solve rate with its exact Clopper-Pearson
interval, the Kaplan-Meier median time to solve, the median test metric with its quartiles; against
the full cell at the same length, Fisher's exact test on the solve counts and the log-rank test on
the times, each Holm-adjusted over the 7 comparisons of a length (at 5 seeds a cell Fisher's test
cannot reject: its smallest Holm p is 7 x 2 / C(10, 5) = 0.056). Per length, the main effect of each
gate (the 2^3 design, as `aggregate.effects_table`): on the solve rate a difference of pooled
proportions with Newcombe's hybrid-score interval, on log10 test MSE a contrast paired by seed
with a t-interval. The gradient probe of each record (probes.json, `ablation.training.probes`): per
(length, gate set, checkpoint, distance d) the median over seeds of each run's median log-ratio r_d
over its test sequences, with the lowest and highest seed (`load_probes`, `decay_table`). Pure
functions over one frame of runs (`load_lag`), then the page (`write`, `page`) and figures
(`save_figures`) that `ablation table` and `ablation plot` write for an experiment whose
[report] reading is "lag". No torch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from ablation.analysis.aggregate import FULL, _presence, experiment_for, gate_order
from ablation.analysis.files import csv_text, finite, record_dirs, write_if_changed
from ablation.analysis.plots import LEGEND, RATIO_FLOOR, _empty, save, short
from ablation.analysis.readings import MINUS, _capital, cost_sentence, p_text, signed
from ablation.analysis.stats import (
    ALPHA,
    FACTORS,
    clopper_pearson,
    holm,
    km_median,
    logrank,
    mcnemar_exact,
    newcombe,
    newcombe_paired,
    t_interval,
)
from ablation.core.config import SOLVE, Experiment
from ablation.core.spec import TASKS

RECORD_FILES = ("config.json", "summary.json", "metrics.jsonl")  # what this reading reads of a record
STRATA = ["forget_init", "length"]  # a comparison never crosses these: one Holm family per stratum
METRIC_WORDS = {"mse": "MSE", "accuracy": "accuracy (%)"}
LOG_METRICS = ("mse",)  # spans decades between the plateau and a solution: summarised on log10
RATE = "solve rate"  # the outcome of the effects' proportion rows
PAGE = "README.md"
PRIMARY = "primary.csv"  # the primary test's table (`primary_table`)
PRIMARY_HEADING = "Primary test (declared in experiments/{name}.toml)"  # the page's first section
PER_LENGTH_HEADING = "Per-length tables (secondary)"
FIGURES = ("effects", "solve_rate", "gradient_decay")  # the page's figures, headline first
APART = ("diverged", "no_learning")  # statuses listed apart on the page (and counted unsolved)
PROBES = "probes.json"  # the gradient probe of a record, read when there (a record without one is left out)
CHECKPOINT_WORDS = {"init": "at initialisation", "epoch1": "after epoch 1", "best": "on the best-on-dev parameters"}
DRAWN = {"best": "-", "init": "--"}  # the checkpoints the gradient_decay figure draws, by line style
# probes.FLOOR (the smallest normal float32), whose log the probe takes for a gradient below it: no gradient
NO_GRADIENT = float(np.log10(np.finfo(np.float32).tiny))


# --- reading records -------------------------------------------------------------------------------

def threshold(baseline: float, solve: float, higher: bool) -> float:
    """The metric a run must beat to count as solved: solve x the baseline where lower is better (the
    adding problem: 0.1 x the MSE of predicting the mean, about 0.167); for an accuracy (%), where
    higher is better, 100 - solve x (100 - baseline): the same fraction of the baseline's error rate."""
    return 100 - solve * (100 - baseline) if higher else solve * baseline


def beats(value, bound: float, higher: bool) -> bool:
    """Whether ``value`` counts as solved against ``bound`` (`threshold`): >= for a higher-is-better
    metric, < for a lower-is-better one; never for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return False
    return value >= bound if higher else value < bound


COLUMNS = ["run_id", "gates", "seed", "length", "forget_init", "task", "metric", "status", "failure_reason",
           "test_metric", "dev_metric", "baseline_dev", "baseline_test", "threshold_test", "solved",
           "epochs_to_solve", "observed", "censored_at", "last_epoch", "best_epoch", "wall_seconds", "pack_size",
           "threads", "device", "cpu_model"]


def load_lag(results: str | os.PathLike, experiment: Experiment | None = None) -> pd.DataFrame:
    """One row per run record under ``results`` (`COLUMNS`): its gate set, seed, length (config
    task.length), forget init, status, test and dev metric, baselines, ``solved``, the time to solve
    (``epochs_to_solve``, nan when not seen; ``observed``; ``censored_at``) and its cost. ``solve``
    and the epoch budget come from ``experiment`` (None: the copy in ``results``, `experiment_for`).
    A record `records.check_record` rejects, a temporary, or a record of no generated task is
    skipped, each listed with its reason in ``attrs["skipped"]``; ``attrs["solve"]`` is the factor."""
    root = Path(results)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such results directory")
    exp = experiment if experiment is not None else experiment_for(root)
    solve = float(getattr(exp, "solve", SOLVE)) if exp is not None else SOLVE
    budget = exp.base.train.epochs if exp is not None else None
    rows, skipped = [], []
    for d, reason in record_dirs(root, RECORD_FILES):
        row = _run(d, solve, budget) if reason is None else reason
        if isinstance(row, str):
            skipped.append(f"{d.name} ({row})")
            continue
        rows.append(row)
    runs = pd.DataFrame(rows, columns=COLUMNS)
    if len(set(runs["metric"])) > 1:
        raise ValueError(f"{results}: records of different metrics ({', '.join(sorted(set(runs['metric'])))}); "
                         "one results directory is one task")
    runs.attrs.update(skipped=skipped, solve=solve)
    return runs


def _run(d: Path, solve: float, budget: int | None) -> dict | str:
    """A record as a row of `load_lag`, or why it is not one of a generated task."""
    cfg = json.loads((d / "config.json").read_text())
    summary = json.loads((d / "summary.json").read_text())
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
    task = summary.get("task")
    length = cfg.get("task", {}).get("length")
    if task not in TASKS or task == "sst" or not isinstance(length, int):
        return "not a generated task's record (summary.json task, config.json task.length)"
    base_dev, base_test = finite(summary.get("baseline_dev")), finite(summary.get("baseline_test"))
    if math.isnan(base_dev) or math.isnan(base_test):
        return "summary.json lacks a finite baseline_dev or baseline_test"
    higher = TASKS[task].higher_is_better
    status = summary["status"]
    test = finite(summary.get("test_metric"))
    bound_dev, bound_test = threshold(base_dev, solve, higher), threshold(base_test, solve, higher)
    first = next((x["epoch"] for x in lines if beats(finite(x.get("dev_metric", x.get("dev_acc"))), bound_dev,
                                                      higher)), None)
    last = max((x["epoch"] for x in lines), default=0)
    given = cfg.get("train", {}).get("epochs", budget)  # the epochs it was given
    stopped = status != "complete" or not last  # diverged or stuck: known not to solve in its budget
    return {"run_id": d.name, "gates": summary["gates"], "seed": summary["seed"], "length": length,
            "forget_init": cfg.get("model", {}).get("forget_init", "constant"), "task": task,
            "metric": summary.get("metric", TASKS[task].metric), "status": status,
            "failure_reason": summary.get("failure_reason"), "test_metric": test,
            "dev_metric": finite(summary.get("dev_metric")), "baseline_dev": base_dev, "baseline_test": base_test,
            "threshold_test": bound_test, "solved": status == "complete" and beats(test, bound_test, higher),
            "epochs_to_solve": math.nan if first is None else float(first), "observed": first is not None,
            "censored_at": float((given or last) if stopped else last), "last_epoch": last,
            "best_epoch": summary.get("best_epoch"), "wall_seconds": summary.get("wall_seconds"),
            "pack_size": summary.get("pack_size"), "threads": summary.get("threads"),
            "device": summary.get("device"), "cpu_model": summary.get("machine", {}).get("cpu_model")}


def survival(runs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(time, event) of each run: the epoch it solved at when seen, else the epoch it is censored at."""
    event = runs["observed"].to_numpy(bool)
    return np.where(event, runs["epochs_to_solve"], runs["censored_at"]).astype(float), event


def _higher(metric: str) -> bool:
    """Whether a larger ``metric`` is better, as the task registry says of the tasks that report it."""
    return next((t.higher_is_better for t in TASKS.values() if t.metric == metric), False)


def _bar(metric: str) -> str:
    """Which side of the solve bar counts as solved, in words."""
    return "at or above" if _higher(metric) else "below"


def _strata(runs: pd.DataFrame):
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in runs.groupby(STRATA, sort=True)]


def _factorial(gates: str) -> bool:
    return gates == "none" or set(gates.split("+")) <= set(FACTORS)


# --- the primary test ----------------------------------------------------------------------------

PAIRED_BY = ["length", "seed"]  # runs of one (length, seed) train in one pack: shared initial weights, same batches
PRIMARY_COLUMNS = ["forget_init", "gates", "lengths", "pairs", "both", "only_full", "only_gate_set", "neither",
                   "rate_gate_set", "rate_full", "diff_vs_full", "diff_ci_low", "diff_ci_high", "p_mcnemar",
                   "p_mcnemar_holm", "verdict"]


def _solved_by_pair(runs: pd.DataFrame) -> pd.Series:
    """Solved or not (a diverged or stuck run: not) of each (length, seed); of two records of one
    (length, seed), the first by run id."""
    first = runs.sort_values("run_id", kind="stable").drop_duplicates(PAIRED_BY)
    return first.set_index(PAIRED_BY)["solved"].astype(bool)


def primary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The declared primary test (experiments/lag.toml): per forget init (one family each) and gate
    set other than the full cell, the pairs (length, seed) at which both it and the full cell have a
    record, over every length of the grid (a missing record drops its pair; a diverged or stuck run
    is unsolved and stays in its pair), counted as both solved, only the full cell, only the gate set,
    neither; the solve rates over the pairs and their difference (gate set - full cell) with
    Newcombe's paired interval (`newcombe_paired`); the exact McNemar p (`mcnemar_exact`) and its
    Holm adjustment over the gate sets of the family (7 in the 2^3 grid); the verdict "solves less
    often" / "solves more often" when the Holm p < α, else "no difference shown" (never
    "equivalent": there is no equivalence test). ``lengths``: the lengths that hold a pair."""
    rows = []
    for init, stratum in runs.groupby("forget_init", sort=True):
        full = _solved_by_pair(stratum[stratum["gates"] == FULL])
        for gates in gate_order(stratum["gates"].unique()):
            if gates == FULL:
                continue
            mine = _solved_by_pair(stratum[stratum["gates"] == gates])
            paired = pd.concat([mine.rename("gate_set"), full.rename("full")], axis=1, join="inner").sort_index()
            g, f = paired["gate_set"].to_numpy(bool), paired["full"].to_numpy(bool)
            both, only_full, only_gate_set, neither = (int(x.sum()) for x in (g & f, ~g & f, g & ~f, ~g & ~f))
            n = len(paired)
            diff, lo, hi = newcombe_paired(both, only_gate_set, only_full, neither)
            rows.append({"forget_init": init, "gates": gates,
                         "lengths": " ".join(str(x) for x in sorted(set(paired.index.get_level_values("length")))),
                         "pairs": n, "both": both, "only_full": only_full, "only_gate_set": only_gate_set,
                         "neither": neither, "rate_gate_set": (both + only_gate_set) / n if n else math.nan,
                         "rate_full": (both + only_full) / n if n else math.nan, "diff_vs_full": diff,
                         "diff_ci_low": lo, "diff_ci_high": hi,
                         "p_mcnemar": mcnemar_exact(only_full, only_full + only_gate_set) if n else math.nan})
    table = pd.DataFrame(rows, columns=PRIMARY_COLUMNS)
    if table.empty:
        return table
    table["p_mcnemar_holm"] = table.groupby("forget_init", sort=False)["p_mcnemar"].transform(
        lambda p: holm(p.to_numpy(float)))
    table["verdict"] = [_primary_verdict(r) for _, r in table.iterrows()]
    return table


def _primary_verdict(row) -> str:
    if row["pairs"] == 0:
        return "no pair with the full cell"
    if row["p_mcnemar_holm"] < ALPHA:
        return "solves less often" if row["only_full"] > row["only_gate_set"] else "solves more often"
    return "no difference shown"


# --- the tables ----------------------------------------------------------------------------------

def solve_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (forget init, length, gate set): n runs, solved, the solve rate with its 95%
    Clopper-Pearson interval, the Kaplan-Meier median epochs to solve (nan: not reached), the
    median test metric and its quartiles (over the runs that have one: not the diverged), and
    against the full cell at the same length the difference of solve rates (Newcombe interval),
    Fisher's exact p (two-sided) and the log-rank z and p, each Holm over the comparisons of the
    length; the verdict follows Fisher's Holm p, then the log-rank's ("no difference shown" when
    neither is below α: there is no equivalence test here)."""
    rows = []
    for key, stratum in _strata(runs):
        full = stratum[stratum["gates"] == FULL]
        for gates in gate_order(stratum["gates"].unique()):
            g = stratum[stratum["gates"] == gates].sort_values("seed")
            rows.append({**dict(zip(STRATA, key)), "gates": gates, **_cell(g),
                         **_versus_full(g, full, gates == FULL)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for test in ("fisher", "logrank"):
        adjusted = table.groupby(STRATA, sort=False)[f"p_{test}"].transform(lambda p: holm(p.to_numpy(float)))
        table.insert(table.columns.get_loc(f"p_{test}") + 1, f"p_{test}_holm", adjusted)
    table["verdict"] = [_verdict(r) for _, r in table.iterrows()]
    return table


def _cell(g: pd.DataFrame) -> dict:
    n, k = len(g), int(g["solved"].sum())
    lo, hi = clopper_pearson(k, n)
    values = g["test_metric"].dropna().to_numpy(float)
    q1, med, q3 = np.quantile(values, [0.25, 0.5, 0.75]) if len(values) else (math.nan,) * 3
    time, event = survival(g)
    return {"metric": g["metric"].iloc[0], "n": n, "solved": k, "rate": k / n, "rate_low": lo, "rate_high": hi,
            "seen_solving": int(event.sum()), "median_epochs": km_median(time, event),
            "metric_median": float(med), "metric_q1": float(q1), "metric_q3": float(q3), "n_metric": len(values),
            "diverged": int((g["status"] == "diverged").sum()),
            "no_learning": int((g["status"] == "no_learning").sum()),
            "baseline_test": float(g["baseline_test"].median()), "threshold_test": float(g["threshold_test"].median()),
            "seeds": " ".join(map(str, g["seed"]))}


def _versus_full(g: pd.DataFrame, full: pd.DataFrame, is_full: bool) -> dict:
    out = dict.fromkeys(("diff_vs_full", "diff_ci_low", "diff_ci_high", "p_fisher", "z_logrank", "p_logrank"),
                        math.nan)
    if is_full or full.empty:
        return out
    k, n, kf, nf = int(g["solved"].sum()), len(g), int(full["solved"].sum()), len(full)
    out["diff_vs_full"], out["diff_ci_low"], out["diff_ci_high"] = newcombe(k, n, kf, nf)
    out["p_fisher"] = float(stats.fisher_exact([[k, n - k], [kf, nf - kf]]).pvalue)
    out["z_logrank"], out["p_logrank"] = logrank(*survival(g), *survival(full))
    return out


def _verdict(row) -> str:
    if row["gates"] == FULL:
        return "reference"
    if math.isnan(row["p_fisher"]):
        return "no reference at this length"
    if row["p_fisher_holm"] < ALPHA:
        return "solves less often" if row["diff_vs_full"] < 0 else "solves more often"
    if row["p_logrank_holm"] < ALPHA:
        return "solves later" if row["z_logrank"] < 0 else "solves sooner"
    return "no difference shown"


def lag_effects(runs: pd.DataFrame) -> pd.DataFrame:
    """The main effect of each gate per (forget init, length), where all 8 gate sets of the 2^3 design
    ran: on the solve rate, the rate with the gate minus without (each side pooled over its 4 gate
    sets x seeds) with Newcombe's hybrid-score 95% interval; on the test metric (log10 for an MSE), per
    seed the mean over the gate sets with the gate minus the mean over those without (Montgomery,
    Design and Analysis of Experiments, §6.2), then its mean and 95% t-interval over the seeds where
    all 8 have a test metric (a diverged run drops its seed). Columns ``with``/``without``: each
    side's rate, or mean; ``n_with``/``n_without``: its runs, or the seeds."""
    rows = []
    for key, stratum in _strata(runs):
        s = stratum[stratum["gates"].map(_factorial)]
        has = {g: _presence(g) for g in s["gates"].unique()}
        if len(set(has.values())) < 8:
            continue
        where = dict(zip(STRATA, key))
        metric = s["metric"].iloc[0]
        log = metric in LOG_METRICS
        value = s["test_metric"].where(s["test_metric"] > 0) if log else s["test_metric"]
        y = (s.assign(value=np.log10(value) if log else value)
             .pivot_table(index="seed", columns="gates", values="value", aggfunc="first", dropna=False)
             .reindex(columns=sorted(has)).dropna())  # (seeds, 8 gate sets)
        outcome = f"{'log10 ' if log else ''}test {METRIC_WORDS.get(metric, metric)}"
        for j, gate in enumerate(FACTORS):
            on = np.array([has[g][j] for g in s["gates"]], dtype=bool)
            k1, n1, k2, n2 = int(s["solved"][on].sum()), int(on.sum()), int(s["solved"][~on].sum()), int((~on).sum())
            d, lo, hi = newcombe(k1, n1, k2, n2)
            rows.append({**where, "gate": gate, "outcome": RATE, "effect": d, "ci_low": lo, "ci_high": hi,
                         "with": k1 / n1, "without": k2 / n2, "n_with": n1, "n_without": n2})
            with_, without = (y[[g for g in y.columns if has[g][j] == side]].mean(axis=1) for side in (True, False))
            contrast = (with_ - without).to_numpy(float)  # (seeds,)
            lo, hi = t_interval(contrast)
            rows.append({**where, "gate": gate, "outcome": outcome,
                         "effect": float(contrast.mean()) if len(contrast) else math.nan, "ci_low": lo, "ci_high": hi,
                         "with": float(with_.mean()) if len(y) else math.nan,
                         "without": float(without.mean()) if len(y) else math.nan,
                         "n_with": len(y), "n_without": len(y)})
    cols = [*STRATA, "gate", "outcome", "effect", "ci_low", "ci_high", "with", "without", "n_with", "n_without"]
    return pd.DataFrame(rows, columns=cols)


def longest_solved(table: pd.DataFrame) -> pd.DataFrame:
    """Per (forget init, gate set): the longest length it solves in a majority (more than half) of its
    runs, with how many (``text``: "200 (4/5)"; "no length" when none)."""
    rows = []
    for init, t in table.groupby("forget_init", sort=True):
        for gates in gate_order(t["gates"].unique()):
            c = t[(t["gates"] == gates) & (2 * t["solved"] > t["n"])]
            if c.empty:
                rows.append({"forget_init": init, "gates": gates, "length": math.nan, "solved": math.nan,
                             "n": math.nan, "text": "no length"})
                continue
            r = c.loc[c["length"].idxmax()]
            rows.append({"forget_init": init, "gates": gates, "length": int(r["length"]), "solved": int(r["solved"]),
                         "n": int(r["n"]), "text": f"{int(r['length'])} ({int(r['solved'])}/{int(r['n'])})"})
    return pd.DataFrame(rows, columns=["forget_init", "gates", "length", "solved", "n", "text"])


# --- the gradient probe ----------------------------------------------------------------------------

PROBE_COLUMNS = ["run_id", "forget_init", "length", "gates", "seed", "checkpoint", "distance", "n", "zero", "q50"]


def load_probes(results: str | os.PathLike, runs: pd.DataFrame) -> pd.DataFrame:
    """The gradient probe of each run of ``runs`` (`load_lag`) that has a probes.json under
    ``results``: one row per (run, checkpoint, distance d = 0..T-1) from the length bin that holds
    its length T (every test sequence of a generated task has length T), with the number of test
    sequences (``n``), how many got no gradient at T - d (``zero``: below the float32 floor) and
    the median over them of r_d = log10 ||dJ/dh_(T-d)|| - log10 ||dJ/dh_T|| (``q50``, nan where the
    probe has none). A run without probes.json is left out; one whose file cannot be read, or holds
    no bin for its length, is listed in ``attrs["skipped"]``."""
    root = Path(results)
    rows, skipped = [], []
    for _, run in runs.iterrows():
        path = root / run["run_id"] / PROBES
        if not path.is_file():
            continue
        try:
            checkpoints = json.loads(path.read_text())["gradient_decay"]["checkpoints"]
            got = _probe_rows(run, checkpoints)
        except (ValueError, KeyError, TypeError, IndexError) as e:  # JSONDecodeError is a ValueError
            skipped.append(f"{run['run_id']} ({PROBES}: {type(e).__name__} {e})")
            continue
        if not got:
            skipped.append(f"{run['run_id']} ({PROBES}: no length bin holds {run['length']})")
        rows += got
    frame = pd.DataFrame(rows, columns=PROBE_COLUMNS)
    frame.attrs["skipped"] = skipped
    return frame


def _probe_rows(run, checkpoints: dict) -> list[dict]:
    """The rows of `load_probes` of one run, from its probes.json's gradient_decay checkpoints."""
    T = int(run["length"])
    ident = {c: run[c] for c in ("run_id", "forget_init", "length", "gates", "seed")}
    rows = []
    for checkpoint, probe in checkpoints.items():
        b = next((b for b in probe["bins"] if b["lengths"][0] <= T and (b["lengths"][1] is None
                                                                        or T <= b["lengths"][1])), None)
        if b is None:
            continue
        rows += [{**ident, "checkpoint": checkpoint, "distance": int(d), "n": int(b["n"][j]),
                  "zero": int(b["zero"][j]), "q50": math.nan if b["q50"][j] is None else float(b["q50"][j])}
                 for j, d in enumerate(b["distance"]) if d < T]
    return rows


def decay_table(probes: pd.DataFrame) -> pd.DataFrame:
    """The gradient probe per (forget init, length, gate set, checkpoint, distance d): over the seeds
    whose run has a finite median r_d (``seeds``), the median of those medians (``median``, in
    log10 units: 10^median is the typical ratio ||dJ/dh_(T-d)|| / ||dJ/dh_T||), the lowest and the
    highest seed's (``low``, ``high``), and in how many seeds the median test sequence got no
    gradient at all at T - d (``no_gradient``: more than half its sequences below the float32 floor,
    where the probe takes the floor's log, so the r_d there is an upper bound). ``sequences``: the
    fewest test sequences behind a seed's median. Checkpoints in the probe's order (init, epoch1,
    best), gate sets in the lecture's."""
    keys = [*STRATA, "gates", "checkpoint", "distance"]
    cols = [*keys, "seeds", "median", "low", "high", "no_gradient", "sequences"]
    p = probes[np.isfinite(probes["q50"].to_numpy(float))] if len(probes) else probes
    if p.empty:
        return pd.DataFrame(columns=cols)
    p = p.assign(floored=2 * p["zero"] > p["n"])
    table = (p.groupby(keys, sort=False)
             .agg(seeds=("q50", "size"), median=("q50", "median"), low=("q50", "min"), high=("q50", "max"),
                  no_gradient=("floored", "sum"), sequences=("n", "min"))
             .reset_index())
    table["no_gradient"] = table["no_gradient"].astype(int)
    gates, checkpoints = gate_order(table["gates"].unique()), list(dict.fromkeys(p["checkpoint"]))
    ordered = sorted(checkpoints, key=lambda c: list(CHECKPOINT_WORDS).index(c) if c in CHECKPOINT_WORDS else 99)
    rank = {"gates": {g: k for k, g in enumerate(gates)}, "checkpoint": {c: k for k, c in enumerate(ordered)}}
    table = table.sort_values(keys, key=lambda c: c.map(rank[c.name]) if c.name in rank else c, kind="stable")
    return table[cols].reset_index(drop=True)


def probe_reading(decay: pd.DataFrame) -> list[str]:
    """The gradient probe in words, at the longest length probed and d = T/2 (rounded up: the shortest
    distance back to the first marked value of the adding problem): each gate set's median r_d over seeds
    [lowest, highest seed] on the best-on-dev parameters and at initialisation, and how many orders
    of magnitude lie between the full cell's and the gateless cell's medians (a bound where one of
    them got no gradient at all); [] without probes. Descriptions, no test."""
    if decay.empty:
        return []
    cols = _varies(decay)
    claims = []
    for _, s in (decay.groupby(cols, sort=True) if cols else [((), decay)]):
        length = int(s["length"].max())
        d = length - length // 2  # the first marker lies in [0, T // 2): at least this far back from the last step
        at = s[(s["length"] == length) & (s["distance"] == d)]
        if at.empty:
            continue
        where = _where(at.iloc[0], cols)
        lo, hi = int(at["sequences"].min()), int(at["sequences"].max())
        n = f"{lo}" if lo == hi else f"{lo} to {hi}"
        parts = []
        for checkpoint in ("best", "init"):
            c = at[at["checkpoint"] == checkpoint]
            if c.empty:
                continue
            cells = [f"{short(r['gates'])} {_f(r['median'], 1)} [{_f(r['low'], 1)}, {_f(r['high'], 1)}]"
                     + (f" (the median sequence gets no gradient at all in {r['no_gradient']} of {r['seeds']} seeds)"
                        if r["no_gradient"] else "") for _, r in c.iterrows()]
            parts.append(f"{CHECKPOINT_WORDS[checkpoint]}: " + "; ".join(cells))
        if not parts:
            continue
        claims.append(f"Gradient probe, {where}length {length} (figures/gradient_decay): r_d = log10 "
                      f"(||∂J/∂h_(T−d)|| / ||∂J/∂h_T||) at d = {d}, the shortest distance back to the first marked "
                      f"value, each run's median over its {n} test sequences, as the median over seeds [lowest, "
                      "highest seed]; " + "; ".join(parts) + ".")
        gaps = [g for g in (_gap(at, checkpoint) for checkpoint in ("best", "init")) if g]
        if gaps:
            claims.append(_capital(f"{where}at length {length}, d = {d}, the full cell's median r_d against the "
                                   "gateless cell's: " + "; ".join(gaps) + "."))
    return claims


def _gap(at: pd.DataFrame, checkpoint: str) -> str:
    """How far the full cell's median r_d lies above or below the gateless cell's, in orders of magnitude
    at one checkpoint ("" when either is missing, or no gradient at all leaves the order unknown). A
    median with no gradient in at least half the seeds is the floor's: the true one lies below it."""
    c = at[at["checkpoint"] == checkpoint].set_index("gates")
    if FULL not in c.index or "none" not in c.index:
        return ""
    full, none = c.loc[FULL], c.loc["none"]
    gap = float(full["median"] - none["median"])
    floored_full, floored_none = 2 * full["no_gradient"] >= full["seeds"], 2 * none["no_gradient"] >= none["seeds"]
    if floored_full and floored_none:
        return f"{CHECKPOINT_WORDS[checkpoint]} neither gets any gradient"
    if (floored_none and gap <= 0) or (floored_full and gap >= 0):
        return ""  # the floored one's true value lies below the floor's: the order is unknown
    floored = full if floored_full else none if floored_none else None
    side = "above" if gap > 0 else "below"
    floor = ("" if floored is None else f", at the probe's float32 floor: no gradient at all in "
             f"{floored['no_gradient']} of {floored['seeds']} seeds")
    return (f"{CHECKPOINT_WORDS[checkpoint]} {'at least ' if floor else ''}{_f(abs(gap), 1)} orders of magnitude "
            f"{side} ({_f(full['median'], 1)} against {_f(none['median'], 1)}{floor})")


# --- the page --------------------------------------------------------------------------------------

def _g(x, digits: int = 3) -> str:
    """A metric, to ``digits`` significant digits ("–" for nan)."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}g}".replace("-", MINUS)


def _f(x, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}".replace("-", MINUS)


def _p(p: float) -> str:
    return "–" if not math.isfinite(p) else p_text(p).removeprefix("p = ").removeprefix("p ")


def _varies(frame: pd.DataFrame) -> list[str]:
    """The strata other than length that vary (forget init, when the grid crosses it)."""
    return [c for c in STRATA if c != "length" and frame[c].nunique() > 1]


def _where(row, cols: list[str]) -> str:
    return "".join(f"{c.replace('_', ' ')} {row[c]}, " for c in cols)


def _cell_name(gates: str) -> str:
    """A gate set in a sentence: "the gateless cell", "the full cell", else "the i+f cell"."""
    return {"none": "the gateless cell", FULL: "the full cell"}.get(gates, f"the {short(gates)} cell")


def _span(runs: pd.DataFrame, pairs) -> str:
    """What a family's pairs are drawn from: "the 4 lengths × 5 seeds" when every gate set has every
    pair, else the pairs that have both records, with the lengths and seeds they come from."""
    lengths, seeds = sorted(runs["length"].unique()), sorted(runs["seed"].unique())
    if all(int(n) == len(lengths) * len(seeds) for n in pairs):
        return f"the {len(lengths)} length{'s' if len(lengths) != 1 else ''} × {len(seeds)} seed" \
               f"{'s' if len(seeds) != 1 else ''}"
    return (f"the pairs (length, seed) that have both records (lengths {', '.join(map(str, lengths))}; seeds "
            f"{', '.join(map(str, seeds))})")


def primary_markdown(primary: pd.DataFrame) -> str:
    """The primary test's table as Markdown (one row per gate set against the full cell)."""
    cols = _varies(primary)
    head = [*[c.replace("_", " ") for c in cols], "gates", "pairs (length, seed)", "both solved",
            f"only {short(FULL)}", "only the gate set", "neither", f"Δ solve rate vs {short(FULL)} [95% CI]",
            "p exact McNemar", "p (Holm)", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in primary.iterrows():
        diff = "–" if math.isnan(r["diff_vs_full"]) else \
            f"{signed(r['diff_vs_full'], 2)} [{signed(r['diff_ci_low'], 2)}, {signed(r['diff_ci_high'], 2)}]"
        cells = [*[str(r[c]) for c in cols], short(r["gates"]), str(r["pairs"]), str(r["both"]), str(r["only_full"]),
                 str(r["only_gate_set"]), str(r["neither"]), diff, _p(r["p_mcnemar"]), _p(r["p_mcnemar_holm"]),
                 r["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def primary_text(primary: pd.DataFrame, runs: pd.DataFrame) -> str:
    """How the primary test pairs the runs and what its columns are."""
    family = int(primary.groupby("forget_init")["p_mcnemar"].count().max()) if len(primary) else 0
    lengths = ", ".join(str(x) for x in sorted(runs["length"].unique()))
    strata = " One family per forget init." if runs["forget_init"].nunique() > 1 else ""
    return (f"Each gate set against the full cell ({short(FULL)}), solved or not, paired by (length, seed) over "
            f"all the lengths ({lengths}): the runs of one length and seed train in one pack, from the same initial "
            "shared weights on the same batches. A pair needs both records (a missing one drops its pair); a run "
            "that diverged or did not learn counts as unsolved and stays in its pair. The exact McNemar test: of "
            f"the discordant pairs (exactly one of the two solved), how many were {short(FULL)}'s only, against 1/2 "
            "(the two-sided exact binomial test; p = 1 when no pair is discordant), Holm-adjusted over the "
            f"{family} gate sets.{strata} Δ: the gate set's solve rate over the pairs minus {short(FULL)}'s, with "
            "Newcombe's (1998) 95% interval for paired proportions (his method 10: the two Wilson intervals "
            "combined with the pairs' correlation; not adjusted for the multiple comparisons, and it need not agree "
            f"with the test at the edge). Verdict: solves less (more) often when the Holm p < {ALPHA}; "
            "else no difference shown, which means these runs cannot tell, not that the cells are alike. "
            "Every test below this section is secondary.")


def primary_sentences(primary: pd.DataFrame) -> list[str]:
    """One sentence per gate set whose primary verdict is a difference; one sentence when none is
    ([] when no gate set was compared)."""
    if primary.empty:
        return []
    cols = _varies(primary)
    out = []
    for _, s in (primary.groupby(cols, sort=True) if cols else [((), primary)]):
        where = _where(s.iloc[0], cols)
        hit = s[s["verdict"].isin(["solves less often", "solves more often"])]
        for _, r in hit.iterrows():
            name = _cell_name(r["gates"])
            out.append(_capital(
                f"{where}{name} {r['verdict']} than the full cell: of {r['pairs']} pairs (length, seed), only the "
                f"full cell solved in {r['only_full']} and only {name} in {r['only_gate_set']} (both in "
                f"{r['both']}, neither in {r['neither']}); solve rate {_f(r['rate_gate_set'])} against "
                f"{_f(r['rate_full'])}, Δ {signed(r['diff_vs_full'], 2)} (95% CI {signed(r['diff_ci_low'], 2)} to "
                f"{signed(r['diff_ci_high'], 2)}); exact McNemar {p_text(r['p_mcnemar'])}, Holm "
                f"{p_text(r['p_mcnemar_holm'])}."))
        if hit.empty:
            out.append(_capital(f"{where}no gate set solves more or less often than the full cell at Holm p < "
                                f"{ALPHA}: no difference shown, which means these runs cannot tell, not that the "
                                "cells are alike."))
    return out


def primary_claims(primary: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The primary result as the reading's first claims, one per forget init, every number from
    `primary_table`."""
    if primary.empty:
        return ["Primary: no gate set could be paired with the full cell."]
    cols = _varies(primary)
    claims = []
    for key, s in (primary.groupby(cols, sort=True) if cols else [((), primary)]):
        where = _where(s.iloc[0], cols)
        key = key if isinstance(key, tuple) else (key,)
        stratum = runs[np.logical_and.reduce([runs[c] == v for c, v in zip(cols, key)])] if cols else runs
        parts = [f"{_cell_name(r['gates'])} {r['verdict']} than the full cell ({r['both'] + r['only_gate_set']} of "
                 f"{r['pairs']} pairs against {r['both'] + r['only_full']} of {r['pairs']}; exact McNemar, Holm "
                 f"{p_text(r['p_mcnemar_holm'])})"
                 for _, r in s[s["verdict"].isin(["solves less often", "solves more often"])].iterrows()]
        rest = s[s["verdict"] == "no difference shown"]
        if len(rest):
            parts.append(f"no difference shown for {', '.join(short(g) for g in rest['gates'])} (exact "
                         f"McNemar, Holm p ≥ {ALPHA})")
        lost = s[s["verdict"] == "no pair with the full cell"]
        if len(lost):
            parts.append(f"no pair with the full cell for {', '.join(short(g) for g in lost['gates'])}")
        claims.append(f"Primary: {where}over {_span(stratum, s['pairs'])}, " + "; ".join(parts) + ".")
    return claims


def table_markdown(table: pd.DataFrame) -> str:
    """The per-length gate table as Markdown (one row per length x gate set)."""
    cols = _varies(table)
    word = METRIC_WORDS.get(table["metric"].iloc[0], "metric")
    head = [*[c.replace("_", " ") for c in cols], "length", "gates", "solved", "solve rate [95% CI]",
            "median epochs to solve", f"median test {word} [quartiles]", f"Δ rate vs {short(FULL)} [95% CI]",
            "p Fisher (Holm)", "p log-rank (Holm)", "verdict (secondary)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, t in table.iterrows():
        diff = "–" if math.isnan(t["diff_vs_full"]) else \
            f"{signed(t['diff_vs_full'], 2)} [{signed(t['diff_ci_low'], 2)}, {signed(t['diff_ci_high'], 2)}]"
        cells = [*[str(t[c]) for c in cols], str(t["length"]), short(t["gates"]), f"{t['solved']}/{t['n']}",
                 f"{_f(t['rate'])} [{_f(t['rate_low'])}, {_f(t['rate_high'])}]",
                 "not reached" if math.isnan(t["median_epochs"]) else f"{t['median_epochs']:.0f}",
                 f"{_g(t['metric_median'])} [{_g(t['metric_q1'])}, {_g(t['metric_q3'])}]", diff,
                 "–" if math.isnan(t["p_fisher"]) else f"{_p(t['p_fisher'])} ({_p(t['p_fisher_holm'])})",
                 "–" if math.isnan(t["p_logrank"]) else f"{_p(t['p_logrank'])} ({_p(t['p_logrank_holm'])})",
                 t["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def method_text(table: pd.DataFrame, solve: float) -> str:
    """What the table's columns are and how its verdicts are reached (all of them secondary)."""
    metric = table["metric"].iloc[0]
    word, bar = METRIC_WORDS.get(metric, "metric"), _bar(metric)
    family = int(table.groupby(STRATA)["p_fisher"].count().max())
    floor = _fisher_floor(table)
    reach = ("" if math.isnan(floor) else
             f" With these cells' n the smallest Holm p a comparison can reach is {_p(floor)} (0 of n against n of "
             f"n){f', so at α = {ALPHA} none can reject, whatever the data' if floor >= ALPHA else ''}.")
    return (f"Solved: test {word} of the best-on-dev weights {bar} the bar {solve:g} x its trivial baseline "
            "sets (declared before training); a diverged or stuck run counts as unsolved and stays in n. Solve "
            "rate: solved / n with its exact 95% Clopper-Pearson interval. Median epochs to solve: Kaplan-Meier, "
            f"the first epoch whose dev {word} is {bar} the bar of the dev baseline, a run that never gets there "
            "censored at its last epoch (at its epoch budget if it stopped early); \"not reached\" when fewer than "
            f"half are seen to solve. Median test {word} and quartiles: over the runs that have one (not the "
            f"diverged). Against {short(FULL)} at the same length: Δ of solve rates with Newcombe's hybrid-score 95% "
            "interval (independent proportions), Fisher's exact test on the solve counts (two-sided) and the "
            f"log-rank test on the times to solve, each Holm-adjusted over the {family} comparisons of a length; "
            "all of them secondary (the primary test pairs the runs by (length, seed) over all the lengths: "
            f"primary.csv).{reach} Verdict (secondary): solves less (more) often when Fisher's Holm p < {ALPHA}; "
            "else solves later (sooner) when the log-rank's is; else no difference shown, which means these runs "
            "cannot tell, not that the cells are alike.")


def _fisher_floor(table: pd.DataFrame) -> float:
    """The smallest Holm p the per-length Fisher tests can reach at these cells' n: the family size
    times the two-sided p of 0 of n against n of n_full (the most extreme table), at the length where
    that is smallest; nan when no comparison was made."""
    floors = []
    for _, s in table.groupby(STRATA, sort=True):
        tested, full = s[s["p_fisher"].notna()], s[s["gates"] == FULL]
        if tested.empty or full.empty:
            continue
        nf = int(full["n"].iloc[0])
        floors += [min(1.0, len(tested) * float(stats.fisher_exact([[0, int(n)], [nf, 0]]).pvalue))
                   for n in tested["n"]]
    return min(floors) if floors else math.nan


def effects_markdown(effects: pd.DataFrame) -> str:
    """The gates' main effects per length as Markdown ("" when no length has all 8 gate sets)."""
    if effects.empty:
        return ""
    cols = _varies(effects)
    head = [*[c.replace("_", " ") for c in cols], "length", "gate", "outcome", "with", "without",
            "effect (with − without)", "95% CI", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, e in effects.iterrows():
        rate = e["outcome"] == RATE
        n = f"{e['n_with']} / {e['n_without']} runs" if rate else f"{e['n_with']} seeds"
        cells = [*[str(e[c]) for c in cols], str(e["length"]), e["gate"], e["outcome"], _f(e["with"]),
                 _f(e["without"]), signed(e["effect"], 2), f"[{signed(e['ci_low'], 2)}, {signed(e['ci_high'], 2)}]", n]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def apart_markdown(runs: pd.DataFrame) -> str:
    """The runs that diverged or did not learn, one a line, with the trainer's reason ("" if none)."""
    apart = runs[runs["status"].isin(APART)].sort_values(["length", "gates", "seed"])
    if apart.empty:
        return ""
    head = ["run", "length", "gates", "seed", "status", "last epoch", "reason"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in apart.iterrows():
        lines.append("| " + " | ".join([f"`{r['run_id']}`", str(r["length"]), short(r["gates"]), str(r["seed"]),
                                        r["status"].replace("_", " "), str(r["last_epoch"]),
                                        r["failure_reason"] or "–"]) + " |")
    return "\n".join(lines) + "\n"


def lag_reading(table: pd.DataFrame, effects: pd.DataFrame, longest: pd.DataFrame, runs: pd.DataFrame,
                decay: pd.DataFrame | None = None, primary: pd.DataFrame | None = None) -> list[str]:
    """The page's claims, one a bullet, every number from the tables: first the primary test's
    (`primary_claims` of ``primary``; None: `primary_table` of ``runs``), then the secondary ones (and
    the gradient probe's, `probe_reading` of ``decay``, when given)."""
    primary = primary_table(runs) if primary is None else primary
    family = int(table.groupby(STRATA)["p_fisher"].count().max())
    claims = primary_claims(primary, runs)
    claims.append(f"Secondary: at each length, the {family} comparisons of a gate set's solve count with the full "
                  "cell's (Fisher's exact test, Holm within the length), the log-rank tests of the time to solve, the "
                  "gates' main effects and the probe's descriptions.")
    cols = _varies(table)
    for _, s in table.groupby(STRATA, sort=True):
        ref = s[s["gates"] == FULL]
        where = _capital(_where(s.iloc[0], cols)) + ("length" if cols else "Length")
        text = f"{where} {s['length'].iloc[0]} (secondary): "
        if len(ref):
            r = ref.iloc[0]
            text += (f"the full cell solves {r['solved']}/{r['n']} ({_f(r['rate'])}, 95% CI {_f(r['rate_low'])} to "
                     f"{_f(r['rate_high'])})")
        else:
            text += "no full cell ran"
        for verdict, test in (("solves less often", "fisher"), ("solves more often", "fisher"),
                              ("solves later", "logrank"), ("solves sooner", "logrank")):
            hit = s[s["verdict"] == verdict]
            if len(hit):
                test_name = "Fisher's exact test" if test == "fisher" else "log-rank test"
                listed = ", ".join(f"{short(r['gates'])} {r['solved']}/{r['n']} (Holm {p_text(r[f'p_{test}_holm'])})"
                                   for _, r in hit.iterrows())
                text += f"; {verdict.replace('solves', 'solving')} than it ({test_name}): {listed}"
        rest = s[s["verdict"] == "no difference shown"]
        if len(rest):
            text += f"; no difference shown for {', '.join(short(g) for g in rest['gates'])}"
        claims.append(text + ".")
    if not effects.empty:
        for gate in FACTORS:
            for outcome in dict.fromkeys(effects["outcome"]):
                e = effects[(effects["gate"] == gate) & (effects["outcome"] == outcome)]
                digits = 2
                parts = [f"{signed(r['effect'], digits)} at {_where(r, cols)}length {r['length']} (95% CI "
                         f"{signed(r['ci_low'], digits)} to {signed(r['ci_high'], digits)})" for _, r in e.iterrows()]
                how = ("pooled over its 4 gate sets and seeds each side, Newcombe intervals" if outcome == RATE else
                       "paired by seed, t-intervals")
                claims.append(f"Adding the {gate} gate changes the {outcome} by {'; '.join(parts)} ({how}).")
    claims.append("Longest length solved in a majority of a gate set's runs: " + "; ".join(
        f"{_where(r, _varies(longest))}{short(r['gates'])} {r['text']}" for _, r in longest.iterrows()) + ".")
    if decay is not None:
        claims += probe_reading(decay)
    apart = runs[runs["status"].isin(APART)]
    if len(apart):
        n_div, n_stuck = int((apart["status"] == "diverged").sum()), int((apart["status"] == "no_learning").sum())
        claims.append(f"{n_div} run{'s' if n_div != 1 else ''} diverged and {n_stuck} did not learn: each counts as "
                      "unsolved, in its cell's n (listed below).")
    cost = cost_sentence(runs)
    return claims + ([cost] if cost else [])


def page(results: str | os.PathLike, experiment: Experiment | None = None) -> str:
    """The generated page of a lag results directory (what `write` writes as README.md)."""
    exp = experiment if experiment is not None else experiment_for(results)
    runs = _loaded(results, exp)
    table = solve_table(runs)
    return _page(results, exp, runs, table, lag_effects(runs), longest_solved(table),
                 decay_table(load_probes(results, runs)), primary_table(runs))


def _loaded(results, exp: Experiment | None) -> pd.DataFrame:
    runs = load_lag(results, exp)
    if runs.empty:
        skipped = runs.attrs["skipped"]
        raise ValueError(f"{results}: no run records of a generated task"
                         + (f" ({len(skipped)} skipped: {'; '.join(skipped)})" if skipped else ""))
    return runs


def _page(results, exp: Experiment | None, runs: pd.DataFrame, table: pd.DataFrame, effects: pd.DataFrame,
          longest: pd.DataFrame, decay: pd.DataFrame, primary: pd.DataFrame) -> str:
    report = exp.report if exp is not None else {}
    name = Path(results).resolve().name
    solve = runs.attrs["solve"]
    higher = TASKS[runs["task"].iloc[0]].higher_is_better
    word = METRIC_WORDS.get(runs["metric"].iloc[0], "metric")
    base = runs["baseline_test"]
    spread = (f"the test baseline is {_g(base.min())}" if _g(base.min()) == _g(base.max()) else
              f"the test baselines run from {_g(base.min())} to {_g(base.max())}")
    claims = lag_reading(table, effects, longest, runs, decay, primary)
    if higher:
        rule = (f"at least 100 − {solve:g} x (100 − its test baseline), the accuracy of the majority class: the "
                f"same fraction of the baseline's error rate")
    else:
        rule = f"below {solve:g} x its test baseline, the {word} of predicting the training targets' mean"
    lines = [f"# {report.get('title') or name}", ""]
    if report.get("summary"):
        lines += [f"{_capital(report['summary'])}.", ""]
    lines += [f"Generated by `ablation table` from the {len(runs)} run records in this folder (do not edit); "
              f"`ablation grid results/{name}/experiment.toml --out results/{name}` retrains what is missing.", "",
              f"## {PRIMARY_HEADING.format(name=name)}", "", primary_text(primary, runs), "",
              primary_markdown(primary).rstrip("\n"), "", "".join(f"- {c}\n" for c in primary_sentences(primary)),
              "## What \"solved\" means", "",
              f"Declared in the experiment file before training (`[stats] solve = {solve:g}`): a run is solved when "
              f"the test {word} of its best-on-dev weights is {rule} (here {spread}, so the bar lies "
              f"near {_g(float(runs['threshold_test'].median()))}). Its time to solve is the first epoch whose dev "
              f"{word} clears the same bar set by the dev baseline. A run that diverged or did not learn is "
              "unsolved: it stays in its cell's n.", "",
              "## Reading", "", "".join(f"- {c}\n" for c in claims).rstrip("\n"),
              "", f"## {PER_LENGTH_HEADING}", "", table_markdown(table).rstrip("\n"), "", method_text(table, solve), ""]
    if runs.attrs["skipped"]:
        lines += [f"Skipped {len(runs.attrs['skipped'])} records: {'; '.join(runs.attrs['skipped'])}.", ""]
    if not effects.empty:
        lines += ["## Main effects of the gates", "",
                  "The 8 gate sets as a 2^3 design at each length (effects.csv): a gate's main effect is the outcome "
                  "with the gate minus without it. On the solve rate, each side pools its 4 gate sets and their seeds "
                  "(95% hybrid-score interval of a difference of proportions, Newcombe 1998); on the test metric, per "
                  "seed the mean over the 4 gate sets with the gate minus the 4 without, then the mean and 95% "
                  "t-interval over the seeds where all 8 have a test metric.", "",
                  effects_markdown(effects).rstrip("\n"), ""]
    lines += ["## Longest length solved", "", "In a majority (more than half) of a gate set's runs, with how many:", "",
              *[f"- {_where(r, _varies(longest))}{short(r['gates'])}: {r['text']}" for _, r in longest.iterrows()], ""]
    apart = apart_markdown(runs)
    if apart:
        lines += ["## Runs listed apart", "", "Diverged or did not learn: unsolved, and counted in their cells' n.", "",
                  apart.rstrip("\n"), ""]
    shown = [f for f in FIGURES if (Path(results) / "figures" / f"{f}.png").is_file()]
    if shown:
        lines += ["## Figures", "", *[f"![{f.replace('_', ' ')}](figures/{f}.png)" for f in shown], ""]
    return "\n".join(lines)


def write(results: str | os.PathLike, experiment: Experiment | None = None, *, fmt: str = "md") -> str:
    """Write RESULTS/primary.csv (the primary test, `primary_table`), table.{md,csv}, effects.csv,
    the figures (`save_figures`) and the page RESULTS/README.md of a lag grid; returns the ``fmt``
    table ("md" or "csv")."""
    root = Path(results)
    exp = experiment if experiment is not None else experiment_for(root)
    runs = _loaded(root, exp)
    table, effects = solve_table(runs), lag_effects(runs)
    longest, decay, primary = longest_solved(table), decay_table(load_probes(root, runs)), primary_table(runs)
    texts = {"md": table_markdown(table) + "\n" + method_text(table, runs.attrs["solve"]) + "\n",
             "csv": csv_text(table)}
    if fmt not in texts:
        raise ValueError(f"--format {fmt}: a lag table is written as {' or '.join(texts)}")
    for ext, text in texts.items():
        write_if_changed(root / f"table.{ext}", text)
    write_if_changed(root / "effects.csv", csv_text(effects))
    write_if_changed(root / PRIMARY, csv_text(primary))
    _figures(root, table, effects, decay)
    write_if_changed(root / PAGE, _page(root, exp, runs, table, effects, longest, decay, primary))
    return texts[fmt]


# --- figures ---------------------------------------------------------------------------------------

LEGEND_WIDTH = 1.8  # inches right of the panels for the legend


def _legend(fig, handles, labels, **kw) -> None:
    """The legend in a margin right of the panels (off the data), the panels laid out left of it."""
    right = 1 - LEGEND_WIDTH / fig.get_figwidth()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(right, 0.92), **kw, **LEGEND)
    fig.tight_layout(rect=(0, 0, right, 1))


def _dodge(k: int, n: int) -> float:
    """A factor that moves series k of n apart on a log x axis, so their error bars do not overlap."""
    return 10 ** (0.012 * (k - (n - 1) / 2))


def _lengths_axis(ax, lengths) -> None:
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(int(x)) for x in lengths])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("sequence length T (the lag)")
    ax.grid(alpha=0.3)


def plot_solve_rate(table: pd.DataFrame, *, title: str = "Solved runs and test metric against the lag"):
    """Per gate set against the length: the solve rate with its 95% Clopper-Pearson interval (left)
    and the median test metric with its quartiles, log y for an MSE, the trivial baseline and the
    solve bar drawn across (right); one row of panels per forget init. Returns (fig, first axes)."""
    if table.empty:
        return _empty(f"{title}: no runs")
    inits = sorted(table["forget_init"].unique())
    names = gate_order(table["gates"].unique())
    lengths = sorted(table["length"].unique())
    metric = table["metric"].iloc[0]
    word = METRIC_WORDS.get(metric, metric)
    fig, axes = plt.subplots(len(inits), 2, figsize=(11 + LEGEND_WIDTH, 4.4 * len(inits)), squeeze=False)
    for row, init in zip(axes, inits):
        t = table[table["forget_init"] == init]
        for k, g in enumerate(names):
            c = t[t["gates"] == g].sort_values("length")
            if c.empty:
                continue
            x = c["length"].to_numpy(float) * _dodge(k, len(names))
            style = {"color": f"C{k % 10}", "marker": "o", "capsize": 3, "linestyle": "-" if k < 10 else "--"}
            row[0].errorbar(x, c["rate"], yerr=np.nan_to_num([c["rate"] - c["rate_low"], c["rate_high"] - c["rate"]]),
                            label=short(g), **style)
            row[1].errorbar(x, c["metric_median"], yerr=np.nan_to_num(
                [c["metric_median"] - c["metric_q1"], c["metric_q3"] - c["metric_median"]]), **style)
        row[1].axhline(t["baseline_test"].median(), color="0.35", linestyle="--", linewidth=1,
                       label="trivial baseline\n(median over runs)")
        row[1].axhline(t["threshold_test"].median(), color="0.35", linestyle=":", linewidth=1.2,
                       label=f"solve bar ({_bar(metric)}:\nsolved)")
        if metric in LOG_METRICS:
            row[1].set_yscale("log")
        for ax in row:
            _lengths_axis(ax, lengths)
        row[0].set_ylim(-0.04, 1.04)
        row[0].set_ylabel("solve rate (solved / runs)")
        row[1].set_ylabel(f"test {word}")
        where = f" (forget init: {init})" if len(inits) > 1 else ""
        row[0].set_title(f"Solve rate, 95% Clopper-Pearson interval{where}", fontsize=10)
        row[1].set_title(f"Median test {word}, bars from the 1st to the 3rd quartile{where}", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    lines, words = axes[0][1].get_legend_handles_labels()
    fig.suptitle(title)
    _legend(fig, [*handles, *lines], [*labels, *words], title="gate set")
    return fig, axes[0][0]


def plot_lag_effects(effects: pd.DataFrame, *, title: str = "Each gate's main effect against the lag"):
    """The headline: each gate's main effect against the length, with its 95% interval and 0 drawn
    across, on the solve rate (Newcombe) and on the test metric (paired by seed, t-interval); one row
    of panels per forget init. Returns (fig, first axes)."""
    if effects.empty:
        return _empty(f"{title}: no length with all 8 gate sets")
    inits = sorted(effects["forget_init"].unique())
    outcomes = list(dict.fromkeys(effects["outcome"]))
    lengths = sorted(effects["length"].unique())
    fig, axes = plt.subplots(len(inits), len(outcomes), figsize=(6 * len(outcomes) + LEGEND_WIDTH, 4.4 * len(inits)),
                             squeeze=False)
    for row, init in zip(axes, inits):
        for ax, outcome in zip(row, outcomes):
            for k, gate in enumerate(FACTORS):
                e = effects[(effects["forget_init"] == init) & (effects["outcome"] == outcome)
                            & (effects["gate"] == gate)].sort_values("length")
                x = e["length"].to_numpy(float) * _dodge(k, len(FACTORS))
                ax.errorbar(x, e["effect"], yerr=np.nan_to_num([e["effect"] - e["ci_low"], e["ci_high"] - e["effect"]]),
                            color=f"C{k}", marker="o", capsize=3, label=f"{gate} gate")
            ax.axhline(0, color="0.3", linewidth=0.8)
            _lengths_axis(ax, lengths)
            how = "pooled runs, 95% Newcombe interval" if outcome == RATE else "paired by seed, 95% t-interval"
            where = f"\nforget init: {init}" if len(inits) > 1 else ""
            ax.set_title(f"{_capital(outcome)}: with the gate − without ({how}){where}", fontsize=10)
            ax.set_ylabel(f"Δ {outcome}")
    fig.suptitle(title)
    _legend(fig, *axes[0][-1].get_legend_handles_labels())
    return fig, axes[0][0]


def plot_gradient_decay(decay: pd.DataFrame, *, names: list[str] | None = None,
                        title: str = "Vanishing gradients against the lag"):
    """The gradient probe (`decay_table`): the ratio ||∂J/∂h_(T−d)|| / ||∂J/∂h_T|| against the
    distance d back from the last step, log y, one panel per length (columns; one row per forget
    init), one line per gate set (the median over seeds of each run's median over its test sequences)
    on the best-on-dev parameters (solid, its band the lowest to the highest seed) and at
    initialisation (dashed). The y axis stops at `plots.RATIO_FLOOR`: a point below it, or with no
    gradient at all, is drawn on that edge. ``names``: the gate sets whose order gives the colours (the
    other lag figures': all the grid's); None, those in ``decay``. Returns (fig, first axes)."""
    drawn = decay[decay["checkpoint"].isin(DRAWN)] if not decay.empty else decay
    if drawn.empty:
        return _empty(f"{title}: no gradient probes (probes.json) in these records")
    inits = sorted(drawn["forget_init"].unique())
    lengths = sorted(drawn["length"].unique())
    names = gate_order(names if names is not None else drawn["gates"].unique())
    edge = math.log10(RATIO_FLOOR)
    fig, axes = plt.subplots(len(inits), len(lengths), figsize=(3.6 * len(lengths) + LEGEND_WIDTH, 4.0 * len(inits)),
                             squeeze=False, sharey=True)
    for row, init in zip(axes, inits):
        for ax, length in zip(row, lengths):
            cell = drawn[(drawn["forget_init"] == init) & (drawn["length"] == length)]
            for k, g in enumerate(names):
                for checkpoint, style in DRAWN.items():
                    c = cell[(cell["gates"] == g) & (cell["checkpoint"] == checkpoint)].sort_values("distance")
                    if c.empty:
                        continue
                    x = c["distance"].to_numpy(float)
                    ax.plot(x, 10.0 ** c["median"].clip(lower=edge), color=f"C{k % 10}", linestyle=style,
                            linewidth=1.4 if checkpoint == "best" else 1.0,
                            label=short(g) if checkpoint == "best" else None)
                    if checkpoint == "best":
                        ax.fill_between(x, 10.0 ** c["low"].clip(lower=edge), 10.0 ** c["high"].clip(lower=edge),
                                        color=f"C{k % 10}", alpha=0.08, linewidth=0)
            ax.axhline(RATIO_FLOOR, color="0.5", linestyle=":", linewidth=0.9)
            ax.set_yscale("log")
            ax.set_xlim(0, length)
            ax.grid(alpha=0.3)
            ax.set_xlabel("distance back from the last step (d)")
            where = f", forget init {init}" if len(inits) > 1 else ""
            ax.set_title(f"T = {length}{where}", fontsize=10)
        row[0].set_ylabel("||∂J/∂h_(T−d)|| / ||∂J/∂h_T||")
    top = max(float(drawn["high"].max()), 0.0)
    axes[0][0].set_ylim(RATIO_FLOOR / 2, 10.0 ** (top + 0.5))
    seen = {}
    for ax in axes.flat:  # a gate set may be drawn at some lengths only
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    gates = [(seen[short(g)], short(g)) for g in names if short(g) in seen]
    extra = [(plt.Line2D([], [], color="0.3", linestyle=DRAWN["best"]), "best on dev"),
             (plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.2), "lowest to highest\nseed (best on dev)"),
             (plt.Line2D([], [], color="0.3", linestyle=DRAWN["init"]), "at initialisation"),
             (plt.Line2D([], [], color="0.5", linestyle=":", linewidth=0.9),
              f"{RATIO_FLOOR:.0e}: lower ratios\nand no gradient at all")]
    fig.suptitle(f"{title}: median over seeds of each run's median over its test sequences")
    _legend(fig, [h for h, _ in gates + extra], [w for _, w in gates + extra], title="gate set")
    return fig, axes[0][0]


def _figures(root: Path, table: pd.DataFrame, effects: pd.DataFrame, decay: pd.DataFrame) -> list[Path]:
    figs = root / "figures"
    paths = save(plot_solve_rate(table)[0], figs / "solve_rate")
    drawn = {"effects": (plot_lag_effects, effects, {}),
             "gradient_decay": (plot_gradient_decay, decay[decay["checkpoint"].isin(DRAWN)],
                                {"names": list(table["gates"].unique())})}
    for name, (plot, frame, kw) in drawn.items():
        if not frame.empty:
            paths += save(plot(frame, **kw)[0], figs / name)
        else:  # the grid lost a gate set, or no record has probes: no stale figure
            for ext in (".png", ".pdf"):
                (figs / name).with_suffix(ext).unlink(missing_ok=True)
    return paths


def save_figures(results: str | os.PathLike, experiment: Experiment | None = None) -> list[Path]:
    """The lag grid's figures, into RESULTS/figures/: solve_rate, effects and gradient_decay (PNG and
    PDF; gradient_decay when some record has a probes.json)."""
    root = Path(results)
    exp = experiment if experiment is not None else experiment_for(root)
    runs = _loaded(root, exp)
    return _figures(root, solve_table(runs), lag_effects(runs), decay_table(load_probes(root, runs)))
