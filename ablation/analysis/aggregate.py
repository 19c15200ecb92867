"""The aggregator: run records -> one tidy table -> the gate table with uncertainty.

Pure functions over data frames (in the manner of rliable): `load_runs` reads the records,
the statistics (`ablation/stats.py`) take plain arrays, `gate_table` assembles the table,
`effects_table` reads a full gate grid as a 2^3 design, and the `format_*` functions render
them. Regenerating from the same records gives the same bytes: every input is sorted.

Rows are gate combinations (the lecture's table), or, for an experiment file with
[variants], the named variants in file order, the first being the baseline of the Δ
columns. Honesty rules: an incomplete record (a directory missing a file, or unreadable)
is skipped and counted; a diverged run is listed apart and never averaged in. One primary
test per row: the paired t-test over seeds against the baseline, Holm-adjusted over every
comparison of the table; the verdict follows it (or TOST equivalence within the margin).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablation.analysis.stats import (
    ALPHA,
    FACTORS,
    factorial_effects,
    holm,
    mean_interval,
    minimal_detectable_difference,
    paired_comparison,
    paired_test,
    t_interval,
    two_source_interval,
    verdict,
)
from ablation.core.config import EXPERIMENT_COPY, MARGIN, Experiment, load_experiment
from ablation.core.records import FILES, PROBES, SUMMARY_KEYS, TMP_PREFIX, check_record
from ablation.core.spec import GATES, LECTURE_ORDER, gates_name

FULL = gates_name(GATES)
SHORT = {"none": "none", "output": "o", "input": "i", "input+output": "i+o", "forget": "f",
         "input+forget": "i+f", "forget+output": "f+o", "input+forget+output": "i+f+o"}
MIN_SEEDS = 3  # fewer seeds than this per row and the table says its intervals mean little


# --- reading records --------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """How runs form a table, as their experiment file says (`Layout.of`); the default is the
    lecture's: one row per gate set, compared with the full cell."""

    key: str = "gates"  # what a table row is: "gates", or "variant" for an experiment with [variants]
    baseline: str = FULL  # the row the Δ columns compare with
    order: tuple[str, ...] | None = None  # row order (None: the lecture's gate order)
    groups: tuple[str, ...] | None = None  # config columns that split the table (None: those that vary)
    levels: dict[str, list[str]] = field(default_factory=dict)  # group column -> its values in file order

    @classmethod
    def of(cls, experiment: Experiment | None) -> Layout:
        if experiment is None:
            return cls()
        levels = {f"config.{k}": ["+".join(v) if isinstance(v, list) else str(v) for v in values]
                  for k, values in experiment.axes.items()}
        if not experiment.variants:
            return cls(levels=levels)
        order = tuple(experiment.variants)
        return cls("variant", order[0], order, tuple(f"config.{k}" for k in experiment.axes if k != "train.seed"),
                   levels)


@dataclass
class Runs:
    """Every record under a results directory: complete runs, diverged runs, what was skipped,
    and the `Layout` their table takes."""

    runs: pd.DataFrame  # one row per complete run
    diverged: pd.DataFrame  # one row per diverged run
    curves: pd.DataFrame  # one row per (run, epoch)
    skipped: list[str] = field(default_factory=list)  # incomplete or unreadable records
    root: Path = Path(".")
    layout: Layout = field(default_factory=Layout)

    def probes(self, run_id: str) -> dict | None:
        """A run's probes.json (None for records without one)."""
        path = self.root / run_id / PROBES
        return json.loads(path.read_text()) if path.is_file() else None


def _flat(cfg: dict) -> dict:
    out = {}
    for section, values in cfg.items():
        for k, v in values.items():
            out[f"{section}.{k}"] = "+".join(v) if isinstance(v, list) else v
    return out


def load_runs(results: str | os.PathLike, experiment: Experiment | None = None) -> Runs:
    """Read every record directory directly under ``results``.

    A record that `records.check_record` finds damaged, an unfinished temporary, a folder
    holding records of its own (a backup copy) and, with an ``experiment`` that has
    [variants], a run that matches no variant are skipped, each listed with its reason;
    other folders (figures/, hidden ones such as .broken/ and .slurm/) are not records.
    Each run is labelled with its variant's name (column "variant") when there are variants.
    """
    root = Path(results)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such results directory")
    named = experiment is not None and bool(experiment.variants)
    rows, diverged, curves, skipped = [], [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        rel = d.name
        if rel.startswith(TMP_PREFIX):
            skipped.append(f"{rel} (an unfinished temporary)")
            continue
        if rel.startswith("."):
            continue
        if not any((d / f).exists() for f in FILES):
            inner = sum(1 for _ in d.rglob("config.json"))
            if inner:
                skipped.append(f"{rel}/ (holds {inner} records of its own; records are {root}/<run_id>/)")
            continue
        reason = check_record(d)
        if reason is not None:
            skipped.append(f"{rel} ({reason})")
            continue
        cfg = json.loads((d / "config.json").read_text())
        summary = json.loads((d / "summary.json").read_text())
        metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line]
        label = experiment.label(cfg) if named else None
        if named and label is None:
            skipped.append(f"{rel} (matches no variant of {experiment.name})")
            continue
        row = {"run_id": rel, **{k: summary[k] for k in SUMMARY_KEYS}, **({"variant": label} if named else {}),
               **{k: summary.get(k) for k in COST_KEYS}, "cpu_model": summary.get("machine", {}).get("cpu_model"),
               **{f"config.{k}": v for k, v in _flat(cfg).items()}}
        if summary["status"] != "complete" or not _finite(summary["test_acc"]):
            diverged.append(row)  # diverged or no_learning: listed apart, never averaged in
            continue
        rows.append(row)
        curves += [{**{k: row[k] for k in row if k not in ("test_acc", "dev_acc", "best_epoch")}, **m}
                   for m in metrics]
    cols = ["run_id", *SUMMARY_KEYS]
    runs = Runs(pd.DataFrame(rows, columns=None if rows else cols),
                pd.DataFrame(diverged, columns=None if diverged else cols),
                pd.DataFrame(curves), skipped, root, Layout.of(experiment))
    if rows:  # the curves keep only the config columns that split the table
        cols, _ = table_groups(runs, runs.runs)
        runs.curves = runs.curves.drop(columns=[c for c in runs.curves.columns
                                                if c.startswith("config.") and c not in cols])
    return runs


COST_KEYS = ("wall_seconds", "pack_size", "threads", "device")  # what training cost (absent in the oldest records)


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def varying_columns(runs: pd.DataFrame) -> list[str]:
    """Config columns that vary between runs, other than gates and seed (e.g. peephole)."""
    skip = {"config.model.gates", "config.train.seed"}
    return [c for c in runs.columns if c.startswith("config.") and c not in skip
            and runs[c].astype(str).nunique() > 1]


# --- probes (gradient norms, gate statistics) -------------------------------------------------

MIN_SENTENCES = 50  # a probe point averaged over fewer test sentences is left out


def probe_frames(r: Runs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy frames of every run's probes.json: gradient decay (one row per run, checkpoint,
    sentence-length bin and distance from the last token: the number of sentences and the
    mean and quantiles of their log-ratios, see `probes`) and gate statistics (one row per
    run, gate and position). Points over fewer than MIN_SENTENCES test sentences are dropped;
    records from before probes format 2 give no gradient rows (their single curve mixed
    sentence lengths)."""
    cols, _ = table_groups(r, r.runs) if not r.runs.empty else ([], [])
    grads, gates = [], []
    for _, run in r.runs.iterrows():
        p = r.probes(run["run_id"])
        if p is None:
            continue
        ident = {r.layout.key: run[r.layout.key], "seed": run["seed"], **{c: run[c] for c in cols}}
        for checkpoint, bins in p.get("gradient_decay", {}).get("checkpoints", {}).items():
            for b in bins["bins"]:
                lo, hi = b["lengths"]
                label = f"{lo}-{hi}" if hi is not None else f"{lo}+"
                stats_ = [k for k in b if k not in ("lengths", "distance", "n")]  # zero, mean, q10, ...
                grads += [{**ident, "checkpoint": checkpoint, "lengths": label, "distance": d, "n": n,
                           **{k: b[k][j] for k in stats_}}
                          for j, (d, n) in enumerate(zip(b["distance"], b["n"])) if n >= MIN_SENTENCES]
        for gate, stats_ in p["gates"].items():
            gates += [{**ident, "gate": gate, "position": k, "mean": m, "saturated": sat, "n": n}
                      for k, (m, sat, n) in enumerate(zip(stats_["mean"], stats_["saturated"], p["positions_n"]))
                      if n >= MIN_SENTENCES]
    return pd.DataFrame(grads), pd.DataFrame(gates)


# --- the gate table ---------------------------------------------------------------------------

def gate_order(names) -> list[str]:
    """The lecture's order first, anything else after, alphabetically."""
    names = set(names)
    return [g for g in LECTURE_ORDER if g in names] + sorted(names - set(LECTURE_ORDER))


def row_order(r: Runs, names) -> list[str]:
    """The table's row order for the row names present."""
    if r.layout.order is None:
        return gate_order(names)
    return [v for v in r.layout.order if v in set(names)]


def table_groups(r: Runs, df: pd.DataFrame):
    """(group columns, [(key tuple, rows)]): the table splits by the columns that vary (or the
    experiment's axes, for an experiment with [variants])."""
    cols = varying_columns(df) if r.layout.groups is None else [c for c in r.layout.groups if c in df.columns]
    if not cols:
        return cols, [((), df)]
    groups = [(k if isinstance(k, tuple) else (k,), g) for k, g in df.groupby(cols, sort=True, dropna=False)]

    def rank(item):  # each axis in the experiment file's order (values it does not list last)
        levels = [r.layout.levels.get(c, []) for c in cols]
        return tuple(lv.index(str(v)) if str(v) in lv else len(lv) for lv, v in zip(levels, item[0]))

    return cols, sorted(groups, key=rank)


def gate_table(r: Runs, reference: dict[str, float] | None = None, *, margin: float = MARGIN,
               interval: str = "t") -> pd.DataFrame:
    """One row per (group, gate combination or variant): mean, std and interval of the test
    accuracy over seeds, and the paired comparison with the baseline row of its group (Δ, its
    95% t-interval, paired p, Holm over every comparison in the table, TOST within ±margin,
    the verdict). ``table.attrs`` keeps margin, interval and the size of the Holm family."""
    reference = reference or {}
    df, key = r.runs, r.layout.key
    if df.empty:
        return pd.DataFrame(columns=[key, "lecture", "mean", "std", "ci_low", "ci_high", "n"])
    variants, groups = table_groups(r, df)
    out, clipped = [], []
    for values, group in groups:
        full = group[group[key] == r.layout.baseline].set_index("seed")
        for gates in row_order(r, group[key].unique()):
            g = group[group[key] == gates].sort_values("seed")
            acc = g["test_acc"].to_numpy(float)
            try:
                lo, hi = mean_interval(acc, interval)
            except ValueError as e:
                raise ValueError(f"{r.root}: row {gates!r}: {e}") from None
            if lo < 0 or hi > 100:  # an accuracy's interval: the t-interval of very few seeds can pass 0 or 100
                lo, hi = max(lo, 0.0), min(hi, 100.0)
                clipped.append(gates)
            row = {**dict(zip(variants, values)), key: gates, "lecture": reference.get(gates, math.nan),
                   "mean": acc.mean(), "std": acc.std(ddof=1) if len(acc) > 1 else math.nan,
                   "ci_low": lo, "ci_high": hi, "n": len(acc), "seeds": " ".join(map(str, g["seed"])),
                   "dev_mean": g["dev_acc"].mean(), "best_epoch_mean": g["best_epoch"].mean(),
                   "active_params": int(g["active_params"].iloc[0])}
            row.update(_versus_baseline(g, full, gates == r.layout.baseline, margin, r.root))
            out.append(row)
    table = pd.DataFrame(out)
    table.insert(table.columns.get_loc("p_paired") + 1, "p_holm", holm(table["p_paired"]))
    table.insert(table.columns.get_loc("p_holm") + 1, "verdict", [
        "reference" if is_base else verdict(d, ph, eq) for is_base, d, ph, eq in
        zip(table[key] == r.layout.baseline, table["diff_vs_full"], table["p_holm"], table["equivalent"])])
    table = table.drop(columns="equivalent")
    family = int(table["p_paired"].notna().sum())
    # the smallest difference each row's test detects with 80% power where it must, at Holm's first step
    table["mdd"] = [minimal_detectable_difference(int(n), sd, alpha=ALPHA / max(family, 1))
                    for n, sd in zip(table["n"], table["diff_std"])]
    table.attrs.update(margin=margin, interval=interval, family=family, clipped=clipped)
    return table


def _versus_baseline(g: pd.DataFrame, full: pd.DataFrame, is_baseline: bool, margin: float,
                     root: Path | None = None) -> dict:
    """Paired comparison with the baseline row (the all-gates cell, or the first variant) over
    the seeds both have (columns named *_vs_full for the lecture's table); with ``root``, the
    records' folder, also the interval counting the test sentences, which equivalence needs too."""
    empty = {"diff_vs_full": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "p_paired": math.nan,
             "tost_low": math.nan, "tost_high": math.nan, "diff_std": math.nan, "mdd": math.nan,
             "equivalent": False, "diff_ci_low_sentences": math.nan, "diff_ci_high_sentences": math.nan}
    if is_baseline or full.empty:
        return empty
    g = g.set_index("seed")
    seeds = sorted(set(g.index) & set(full.index))
    if not seeds:
        return empty
    c = paired_comparison(g.loc[seeds, "test_acc"], full.loc[seeds, "test_acc"], margin)
    out = {**empty, "diff_vs_full": c["diff"], **{k: c[k] for k in empty if k in c}}
    if root is not None:  # the paired difference counting the test sentences too (stats.two_source_interval)
        x = np.stack([_correct(root, g.loc[s, "run_id"]) - _correct(root, full.loc[s, "run_id"]) for s in seeds])
        _, out["diff_ci_low_sentences"], out["diff_ci_high_sentences"] = two_source_interval(100 * x)
        _, lo, hi = two_source_interval(100 * x, 1 - 2 * ALPHA)
        out["equivalent"] = bool(out["equivalent"] and -margin < lo and hi < margin)  # both sources inside
    return out


@functools.lru_cache(maxsize=4096)
def _correct_cached(path: str, mtime: float) -> np.ndarray:
    rows = pd.read_csv(path)
    return (rows["label"] == rows["prediction"]).to_numpy(float)


def _correct(root: Path, run_id: str) -> np.ndarray:
    """1.0 where a run's test prediction is right, per test sentence (its predictions.csv)."""
    path = root / run_id / "predictions.csv"
    return _correct_cached(str(path), path.stat().st_mtime)


def row_key(table: pd.DataFrame) -> str:
    """The column naming a table's rows (or a frame's, shaped like one): "variant" or "gates"."""
    return "variant" if "variant" in table.columns else "gates"


def group_columns(table: pd.DataFrame) -> list[str]:
    """The config columns a table (or a frame shaped like one) is split by."""
    return [c for c in table.columns if c.startswith("config.")]


# --- the 2^3 factorial reading of a gate grid -------------------------------------------------

def _presence(gates: str) -> tuple[bool, bool, bool]:
    names = set() if gates == "none" else set(gates.split("+"))
    return tuple(f in names for f in FACTORS)


def effects_table(r: Runs) -> pd.DataFrame:
    """Main effects and interactions of the input, forget and output gates (stats.factorial_effects)
    for every group of an LSTM gate grid that has all 8 gate sets, paired over the seeds all 8
    share; empty when there is no such grid. Holm runs over the 7 terms of each group."""
    cols = ["term", "effect", "ci_low", "ci_high", "p", "p_holm", "n"]
    df = r.runs
    if r.layout.key != "gates" or df.empty:
        return pd.DataFrame(columns=cols)
    group_cols, groups = table_groups(r, df)
    out = []
    for values, g in groups:
        if "config.model.cell" in g and set(g["config.model.cell"]) != {"lstm"}:
            continue
        names = {n for n in g["gates"].unique() if n == "none" or set(n.split("+")) <= set(FACTORS)}
        if len({_presence(n) for n in names}) < 8:
            continue
        by = {n: g[g["gates"] == n].set_index("seed")["test_acc"] for n in names}
        seeds = sorted(set.intersection(*(set(s.index) for s in by.values())))
        if len(seeds) < 2:
            continue
        cells = {_presence(n): s.loc[seeds].to_numpy(float) for n, s in by.items()}
        out += [{**dict(zip(group_cols, values)), **row} for row in factorial_effects(cells)]
    return pd.DataFrame(out, columns=[*group_cols, *cols] if out else cols)


def interaction_table(r: Runs, col: str = "config.model.peephole") -> pd.DataFrame:
    """Does a gate set's gap to the full cell depend on ``col`` (the peephole kind)? For each gate set
    and each pair of ``col``'s values (a, b), per seed, (acc[g, b] - acc[full, b]) - (acc[g, a] - acc[full, a]):
    its mean, 95% t-interval and paired p against 0, Holm over every contrast of the table (a gate
    set x kind interaction, tested directly rather than by comparing two verdicts)."""
    df = r.runs
    if df.empty or col not in df:
        return pd.DataFrame()
    acc = df.set_index([col, "gates", "seed"])["test_acc"].sort_index()
    levels = list(dict.fromkeys(v for v in r.layout.levels.get(col, []) if v in set(df[col].astype(str))))
    levels = levels or sorted(set(df[col].astype(str)))
    out = []
    for g in gate_order(df["gates"].unique()):
        if g == FULL:
            continue
        for i, a in enumerate(levels):
            for b in levels[i + 1:]:
                gaps = {k: acc.loc[(k, g)] - acc.loc[(k, FULL)] for k in (a, b)}
                seeds = sorted(set(gaps[a].index) & set(gaps[b].index))
                d = gaps[b].loc[seeds].to_numpy(float) - gaps[a].loc[seeds].to_numpy(float)
                lo, hi = t_interval(d)
                _, p = paired_test(d, d * 0)
                out.append({"gates": g, "a": a, "b": b, "change": float(d.mean()), "ci_low": lo, "ci_high": hi,
                            "p": p, "n": len(d)})
    table = pd.DataFrame(out)
    if not table.empty:
        table["p_holm"] = holm(table["p"])
    return table


CHANGE_WORDS = {"better": "changed", "worse": "changed", "equivalent": "unchanged"}  # of a gap under tuning


def tuning_change(tuned: pd.DataFrame, untuned: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """Did tuning change the gate table? Both frames: one row per run (gates, seed, test_acc), the tuned runs
    on the untuned runs' seeds. Per gate set, paired by seed: the change of its gap to the full cell,
    (tuned[g] - tuned[full]) - (untuned[g] - untuned[full]), with its 95% t-interval, Holm over the gate
    sets and TOST within ±``margin`` (`delta_change*`); and tuned minus default settings, the defaults
    being an arm of the comparison (`vs_default*`, Holm over every gate set)."""
    a = tuned.set_index(["gates", "seed"])["test_acc"]
    b = untuned.set_index(["gates", "seed"])["test_acc"]
    rows = []
    for g in gate_order(set(tuned["gates"]) & set(untuned["gates"])):
        seeds = sorted(set(a.loc[g].index) & set(b.loc[g].index) & set(a.loc[FULL].index) & set(b.loc[FULL].index))
        if len(seeds) < 2:
            continue
        va, vb = a.loc[g].loc[seeds].to_numpy(float), b.loc[g].loc[seeds].to_numpy(float)
        fa, fb = a.loc[FULL].loc[seeds].to_numpy(float), b.loc[FULL].loc[seeds].to_numpy(float)
        row = {"gates": g, "n_paired": len(seeds)}
        for name, x, y in (("vs_default", va, vb), ("delta_change", va - fa, vb - fb)):
            if name == "delta_change" and g == FULL:
                continue
            c = paired_comparison(x, y, margin)
            row.update({name: c["diff"], f"{name}_ci_low": c["diff_ci_low"], f"{name}_ci_high": c["diff_ci_high"],
                        f"{name}_p": c["p_paired"], f"{name}_equivalent": c["equivalent"]})
        rows.append(row)
    out = pd.DataFrame(rows)
    for name in ("vs_default", "delta_change"):
        if name not in out:
            continue
        out[f"{name}_p_holm"] = holm(out[f"{name}_p"])
        words = CHANGE_WORDS if name == "delta_change" else {}
        out[f"{name}_verdict"] = [
            "" if math.isnan(d) else words.get(v, v) for d, v in
            ((d, verdict(d, ph, bool(eq)) if not math.isnan(d) else "") for d, ph, eq in
             zip(out[name], out[f"{name}_p_holm"], out[f"{name}_equivalent"].fillna(False)))]
        out = out.drop(columns=f"{name}_equivalent")
    return out


def experiment_for(results: str | os.PathLike, experiment: str | os.PathLike | None = None) -> Experiment | None:
    """The experiment a results directory holds: ``experiment`` when given, else the copy the grid
    kept in it (`EXPERIMENT_COPY`); None for a folder without one (single runs)."""
    path = Path(experiment) if experiment else Path(results) / EXPERIMENT_COPY
    if experiment and not path.is_file():
        raise FileNotFoundError(f"--experiment {experiment}: no such file")
    if not path.is_file():
        return None
    exp = load_experiment(path)
    return dataclasses.replace(exp, name=Path(results).resolve().name) if not experiment else exp


def load_table(results: str | os.PathLike, experiment: str | os.PathLike | None = None):
    """(runs, table, reference source) of a results directory, its runs labelled and compared
    with the reference as its experiment file (`experiment_for`) says (margin and interval
    from its [stats] table)."""
    exp = experiment_for(results, experiment)
    r = load_runs(results, exp)
    if exp is None:
        return r, gate_table(r), ""
    return r, gate_table(r, exp.reference, margin=exp.margin, interval=exp.interval), exp.reference_source


def check_results(results: str | os.PathLike) -> None:
    """A clear error for a results directory that is missing or holds no run record."""
    path = Path(results)
    if not path.is_dir():
        raise ValueError(f"{results}: no such results directory")
    if next(path.rglob("config.json"), None) is None:
        raise ValueError(f"{results}: no run records in it (no */config.json); train some with `ablation grid`")


# Group values in words (figures, side-by-side headers, readings); others read "key: value".
WORDS = {"config.model.peephole": {"none": "no peepholes", "diagonal": "diagonal peepholes",
                                   "full": "full peepholes"},
         "config.data.granularity": {"phrases": "trained on phrases", "sentences": "trained on sentences"},
         "config.model.embeddings": {"glove-6b-50d": "GloVe vectors", "random": "random vectors"},
         "config.data.labels": {"binary": "SST-2 (binary)", "fine": "SST-5 (fine-grained)"}}


def group_label(cols: list[str], values) -> str:
    """A group in words: ("config.model.peephole",), ("diagonal",) -> "diagonal peepholes"."""
    return ", ".join(WORDS.get(c, {}).get(str(v), f"{c.rsplit('.', 1)[-1].replace('_', ' ')}: {v}")
                     for c, v in zip(cols, values))
