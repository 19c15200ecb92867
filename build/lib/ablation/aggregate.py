"""The aggregator: run records -> one tidy table -> the gate table with uncertainty.

Pure functions over arrays and data frames (in the manner of rliable): `load_runs` reads
the records, the statistics take plain arrays, `gate_table` assembles the table and the
`format_*` functions render it. Regenerating from the same records gives the same bytes:
the bootstrap has a fixed seed and every input is sorted.

Rows are gate combinations (the lecture's table), or, for an experiment file with
[variants], the named variants in file order, the first being the baseline of the Δ
columns. Honesty rules: an incomplete record (a directory missing a file, or unreadable)
is skipped and counted; a diverged run is listed apart and never averaged in.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .cell import GATES, gates_name
from .config import Experiment, load_experiment
from .records import FILES, PROBES, TMP_PREFIX

# The lecture's column order: none, o, i, i+o, f, i+f, f+o, i+f+o.
LECTURE_ORDER = ["none", "output", "input", "input+output", "forget", "input+forget",
                 "forget+output", "input+forget+output"]
FULL = gates_name(GATES)
SHORT = {"none": "none", "output": "o", "input": "i", "input+output": "i+o", "forget": "f",
         "input+forget": "i+f", "forget+output": "f+o", "input+forget+output": "i+f+o"}
BOOTSTRAP_SEED = 0
N_BOOTSTRAP = 10_000


# --- reading records --------------------------------------------------------------------------

@dataclass
class Runs:
    """Every record under a results directory: complete runs, diverged runs, what was skipped."""

    runs: pd.DataFrame  # one row per complete run
    diverged: pd.DataFrame  # one row per diverged run
    curves: pd.DataFrame  # one row per (run, epoch)
    skipped: list[str] = field(default_factory=list)  # incomplete or unreadable records
    root: Path = Path(".")
    key: str = "gates"  # what a table row is: "gates", or "variant" for an experiment with [variants]
    baseline: str = FULL  # the row the Δ columns compare with
    order: list[str] | None = None  # row order (None: the lecture's gate order)
    groups: list[str] | None = None  # config columns that split the table (None: those that vary)
    levels: dict[str, list[str]] = field(default_factory=dict)  # group column -> its values in file order
    _tests: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)  # predictions.csv, read once

    def _test(self, run_id: str) -> pd.DataFrame:
        if run_id not in self._tests:
            self._tests[run_id] = pd.read_csv(self.root / run_id / "predictions.csv")
        return self._tests[run_id]

    def predictions(self, run_id: str) -> np.ndarray:
        """Test-set predictions of one run, in test-set order."""
        return self._test(run_id)["prediction"].to_numpy()

    def labels(self, run_id: str) -> np.ndarray:
        return self._test(run_id)["label"].to_numpy()

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
    """Read every record directory under ``results`` (recursively).

    With an ``experiment`` that has [variants], each run is labelled with its variant's
    name (column "variant"); a run that matches none is skipped and counted.
    """
    root = Path(results)
    named = experiment is not None and bool(experiment.variants)
    rows, diverged, curves, skipped = [], [], [], []
    for d in sorted(p.parent for p in root.rglob("config.json")):
        rel = str(d.relative_to(root))
        if any(part.startswith(TMP_PREFIX) for part in d.parts):
            skipped.append(rel)
            continue
        try:
            if not all((d / f).is_file() for f in FILES):
                raise FileNotFoundError
            cfg = json.loads((d / "config.json").read_text())
            summary = json.loads((d / "summary.json").read_text())
            metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line]
        except (OSError, ValueError):
            skipped.append(rel)
            continue
        label = experiment.label(cfg) if named else None
        if named and label is None:
            skipped.append(rel)
            continue
        row = {"run_id": rel, "gates": summary["gates"], "seed": summary["seed"],
               **({"variant": label} if named else {}),
               "status": summary["status"], "test_acc": summary["test_acc"], "dev_acc": summary["dev_acc"],
               "best_epoch": summary["best_epoch"], "active_params": summary["active_params"],
               **{f"config.{k}": v for k, v in _flat(cfg).items()}}
        if summary["status"] != "complete" or not _finite(summary["test_acc"]):
            diverged.append(row)
            continue
        rows.append(row)
        curves += [{**{k: row[k] for k in row if k not in ("test_acc", "dev_acc", "best_epoch")}, **m}
                   for m in metrics]
    cols = ["run_id", "gates", "seed", "status", "test_acc", "dev_acc", "best_epoch", "active_params"]
    runs = Runs(pd.DataFrame(rows, columns=None if rows else cols),
                pd.DataFrame(diverged, columns=None if diverged else cols),
                pd.DataFrame(curves), skipped, root)
    if experiment is not None:
        runs.levels = {f"config.{k}": ["+".join(v) if isinstance(v, list) else str(v) for v in values]
                       for k, values in experiment.axes.items()}
    if named:
        runs.key, runs.order = "variant", list(experiment.variants)
        runs.baseline = runs.order[0]
        runs.groups = [f"config.{k}" for k in experiment.axes if k != "train.seed"]
    if rows:  # the curves keep only the config columns that split the table
        cols, _ = table_groups(runs, runs.runs)
        runs.curves = runs.curves.drop(columns=[c for c in runs.curves.columns
                                                if c.startswith("config.") and c not in cols])
    return runs


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def variant_columns(runs: pd.DataFrame) -> list[str]:
    """Config columns that vary between runs, other than gates and seed (e.g. peephole)."""
    skip = {"config.model.gates", "config.train.seed"}
    return [c for c in runs.columns if c.startswith("config.") and c not in skip
            and runs[c].astype(str).nunique() > 1]


# --- statistics (pure, on arrays) -------------------------------------------------------------

def bootstrap_ci(values, *, confidence: float = 0.95, n_boot: int = N_BOOTSTRAP,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over seeds; (nan, nan) for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_test(a, b) -> tuple[float, float]:
    """Mean of a - b over paired seeds and the two-sided paired t-test p-value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    if len(diff) < 2:
        return (float(diff.mean()) if len(diff) else math.nan), math.nan
    if np.all(diff == diff[0]):  # no spread: t is undefined
        return float(diff[0]), (1.0 if diff[0] == 0 else 0.0)
    return float(diff.mean()), float(stats.ttest_rel(a, b).pvalue)


def mcnemar(labels, pred_a, pred_b) -> tuple[int, int, float]:
    """Exact McNemar test: (a right & b wrong, a wrong & b right, two-sided p-value)."""
    y, a, b = (np.asarray(v) for v in (labels, pred_a, pred_b))
    n01 = int(np.sum((a == y) & (b != y)))
    n10 = int(np.sum((a != y) & (b == y)))
    if n01 + n10 == 0:
        return n01, n10, 1.0
    return n01, n10, float(stats.binomtest(n01, n01 + n10, 0.5).pvalue)


def fidelity(reference, ours, tolerance: float = 1.5) -> dict:
    """How well our numbers reproduce the reference's: rank agreement and distance."""
    r, o = np.asarray(reference, dtype=float), np.asarray(ours, dtype=float)
    keep = np.isfinite(r) & np.isfinite(o)
    r, o = r[keep], o[keep]
    if len(r) < 2:
        return {"n": int(len(r)), "kendall_tau": math.nan, "spearman_rho": math.nan,
                "mean_abs_diff": float(np.abs(r - o).mean()) if len(r) else math.nan,
                "within": int(np.sum(np.abs(r - o) <= tolerance)), "tolerance": tolerance}
    return {"n": int(len(r)), "kendall_tau": float(stats.kendalltau(r, o).statistic),
            "spearman_rho": float(stats.spearmanr(r, o).statistic),
            "mean_abs_diff": float(np.abs(r - o).mean()),
            "within": int(np.sum(np.abs(r - o) <= tolerance)), "tolerance": tolerance}


# --- probes (gradient norms, gate statistics) -------------------------------------------------

MIN_SENTENCES = 50  # a probe point averaged over fewer test sentences is left out


def probe_frames(r: Runs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy frames of every run's probes.json: gradient norms (one row per run and distance
    from the last token) and gate statistics (one row per run, gate and position). Points
    over fewer than MIN_SENTENCES test sentences are dropped."""
    cols, _ = table_groups(r, r.runs) if not r.runs.empty else ([], [])
    grads, gates = [], []
    for _, run in r.runs.iterrows():
        p = r.probes(run["run_id"])
        if p is None:
            continue
        ident = {r.key: run[r.key], "seed": run["seed"], **{c: run[c] for c in cols}}
        g = p["grad_norm"]
        grads += [{**ident, "distance": d, "log10_norm": v, "n": n}
                  for d, v, n in zip(g["distance"], g["log10_mean"], g["n"]) if n >= MIN_SENTENCES]
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
    if r.order is None:
        return gate_order(names)
    return [v for v in r.order if v in set(names)]


def table_groups(r: Runs, df: pd.DataFrame):
    """(group columns, [(key tuple, rows)]): the table splits by the columns that vary (or the
    experiment's axes, for an experiment with [variants])."""
    cols = variant_columns(df) if r.groups is None else [c for c in r.groups if c in df.columns]
    if not cols:
        return cols, [((), df)]
    groups = [(k if isinstance(k, tuple) else (k,), g) for k, g in df.groupby(cols, sort=True, dropna=False)]

    def rank(item):  # each axis in the experiment file's order (values it does not list last)
        levels = [r.levels.get(c, []) for c in cols]
        return tuple(lv.index(str(v)) if str(v) in lv else len(lv) for lv, v in zip(levels, item[0]))

    return cols, sorted(groups, key=rank)


def gate_table(r: Runs, reference: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per (group, gate combination or variant) with the columns of README's table."""
    reference = reference or {}
    df, key = r.runs, r.key
    if df.empty:
        return pd.DataFrame(columns=[key, "lecture", "mean", "std", "ci_low", "ci_high", "n"])
    variants, groups = table_groups(r, df)
    out = []
    for values, group in groups:
        full = group[group[key] == r.baseline].set_index("seed")
        for gates in row_order(r, group[key].unique()):
            g = group[group[key] == gates].sort_values("seed")
            acc = g["test_acc"].to_numpy(float)
            lo, hi = bootstrap_ci(acc)
            row = {**dict(zip(variants, values)), key: gates, "lecture": reference.get(gates, math.nan),
                   "mean": acc.mean(), "std": acc.std(ddof=1) if len(acc) > 1 else math.nan,
                   "ci_low": lo, "ci_high": hi, "n": len(acc), "seeds": " ".join(map(str, g["seed"])),
                   "dev_mean": g["dev_acc"].mean(), "best_epoch_mean": g["best_epoch"].mean(),
                   "active_params": int(g["active_params"].iloc[0])}
            row.update(_versus_baseline(r, g, full, gates == r.baseline))
            out.append(row)
    table = pd.DataFrame(out)
    return table.astype({"mcnemar_b": "Int64", "mcnemar_c": "Int64"})


def _versus_baseline(r: Runs, g: pd.DataFrame, full: pd.DataFrame, is_baseline: bool) -> dict:
    """Paired comparison with the baseline row (the all-gates cell, or the first variant) over
    the seeds both have (columns named *_vs_full for the lecture's table)."""
    empty = {"diff_vs_full": math.nan, "p_paired": math.nan, "mcnemar_b": math.nan,
             "mcnemar_c": math.nan, "p_mcnemar": math.nan}
    if is_baseline or full.empty:
        return empty
    g = g.set_index("seed")
    seeds = sorted(set(g.index) & set(full.index))
    if not seeds:
        return empty
    diff, p = paired_test(g.loc[seeds, "test_acc"], full.loc[seeds, "test_acc"])
    y = np.concatenate([r.labels(full.loc[s, "run_id"]) for s in seeds])
    a = np.concatenate([r.predictions(g.loc[s, "run_id"]) for s in seeds])
    b = np.concatenate([r.predictions(full.loc[s, "run_id"]) for s in seeds])
    n01, n10, pm = mcnemar(y, a, b)
    return {"diff_vs_full": diff, "p_paired": p, "mcnemar_b": n01, "mcnemar_c": n10, "p_mcnemar": pm}


def row_key(table: pd.DataFrame) -> str:
    """The column naming a table's rows (or a frame's, shaped like one): "variant" or "gates"."""
    return "variant" if "variant" in table.columns else "gates"


def group_columns(table: pd.DataFrame) -> list[str]:
    """The config columns a table (or a frame shaped like one) is split by."""
    return [c for c in table.columns if c.startswith("config.")]


# --- rendering --------------------------------------------------------------------------------

DISPLAY = [("key", "gates"), ("lecture", "lecture"), ("mean", "mean"), ("std", "std"),
           ("ci", "95% CI"), ("n", "n"), ("dev_mean", "dev"), ("best_epoch_mean", "best ep."),
           ("active_params", "params"), ("diff_vs_full", "Δ vs i+f+o"), ("p_paired", "p (paired t)"),
           ("p_mcnemar", "p (McNemar)")]


def _fmt(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _p(x) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def display_rows(table: pd.DataFrame, baseline: str = FULL) -> tuple[list[str], list[list[str]]]:
    variants, key_col = group_columns(table), row_key(table)
    names = {"key": key_col, "diff_vs_full": f"Δ vs {SHORT.get(baseline, baseline)}"}
    shown = [(k, name) for k, name in DISPLAY if k != "lecture" or table["lecture"].notna().any()]
    header = [c.removeprefix("config.") for c in variants] + [names.get(k, name) for k, name in shown]
    rows = []
    for _, t in table.iterrows():
        cells = [str(t[c]) for c in variants]
        for key, _ in shown:
            if key == "key":
                cells.append(str(t[key_col]))
            elif key == "ci":
                cells.append(f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]")
            elif key.startswith("p_"):
                cells.append(_p(t[key]))
            elif key == "diff_vs_full":
                cells.append("–" if math.isnan(t[key]) else f"{t[key]:+.1f}")
            elif key == "best_epoch_mean":
                cells.append(_fmt(float(t[key]), 1))
            else:
                cells.append(_fmt(t[key]))
        rows.append(cells)
    return header, rows


def fidelity_line(table: pd.DataFrame) -> str:
    f = fidelity(table["lecture"], table["mean"])
    if f["n"] == 0:
        return ""
    return (f"Fidelity to the lecture over {f['n']} cells: Kendall's τ = {_fmt(f['kendall_tau'], 2)}, "
            f"Spearman's ρ = {_fmt(f['spearman_rho'], 2)}, mean |Δ| = {_fmt(f['mean_abs_diff'], 2)} points, "
            f"{f['within']}/{f['n']} cells within ±{f['tolerance']}.")


def counts_line(r: Runs) -> str:
    line = f"{len(r.runs)} complete runs; {len(r.skipped)} incomplete records skipped; {len(r.diverged)} diverged"
    if len(r.diverged):
        listed = ", ".join(f"{g} (seed {s})" for g, s in zip(r.diverged["gates"], r.diverged["seed"]))
        line += f" (not averaged in: {listed})"
    return line + "."


def pivot_markdown(table: pd.DataFrame) -> str:
    """For a table split into groups: the means side by side, "mean [CI]", one column per group."""
    cols, key = group_columns(table), row_key(table)
    if not cols or table.empty:
        return ""
    label = table[cols].astype(str).agg(", ".join, axis=1)
    groups = list(dict.fromkeys(label))
    names = list(dict.fromkeys(table[key]))
    cells = {(lab, t[key]): f"{_fmt(t['mean'])} [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]"
             for lab, (_, t) in zip(label, table.iterrows())}
    head = [key] + groups
    lines = [f"Side by side ({', '.join(c.removeprefix('config.') for c in cols)}): mean test accuracy [95% CI].", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join([SHORT.get(n, n)] + [cells.get((g, n), "–") for g in groups]) + " |" for n in names]
    return "\n".join(lines)


def format_markdown(table: pd.DataFrame, r: Runs, source: str = "") -> str:
    header, rows = display_rows(table, r.baseline)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [counts_line(r)]
    pivot = pivot_markdown(table)
    if pivot:
        notes.insert(0, pivot)
    fid = fidelity_line(table)
    if fid:
        notes.insert(0, fid)
    if source:
        notes.append(f"Lecture column: {source}.")
    base = SHORT.get(r.baseline, r.baseline)
    notes.append("Test accuracy (%) over seeds: mean, sample std, 95% percentile-bootstrap CI of the mean; "
                 f"Δ and the paired t-test compare each row with {base} on the same seeds (same data order "
                 "and shared initial weights); McNemar's exact test pools their test predictions over those seeds.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def format_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.4f", lineterminator="\n")


def format_latex(table: pd.DataFrame, baseline: str = FULL) -> str:
    header, rows = display_rows(table, baseline)
    esc = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "–": "--", "Δ": r"$\Delta$", "<": r"$<$",
           "+": "+"}

    def tex(s: str) -> str:
        return "".join(esc.get(ch, ch) for ch in s)

    left = 1 + len(group_columns(table))  # group columns and the row name
    lines = [r"\begin{tabular}{" + "l" * left + "r" * (len(header) - left) + "}",
             r"\toprule", " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def experiment_for(results: str | os.PathLike, experiment: str | os.PathLike | None = None) -> Experiment | None:
    """The experiment file of a results directory (default experiments/<dir name>.toml), if any."""
    path = Path(experiment) if experiment else Path("experiments") / f"{Path(results).resolve().name}.toml"
    return load_experiment(path) if path.is_file() else None


def _reference(exp: Experiment | None) -> tuple[dict[str, float], str]:
    return (exp.reference, exp.reference_source) if exp else ({}, "")


def reference_for(results: str | os.PathLike, experiment: str | os.PathLike | None = None):
    """(reference numbers, source) from the experiment file (default experiments/<dir name>.toml)."""
    return _reference(experiment_for(results, experiment))


def load_table(results: str | os.PathLike, experiment: str | os.PathLike | None = None):
    """(runs, table, reference source) of a results directory, its runs labelled and compared
    with the reference as its experiment file (`experiment_for`) says."""
    exp = experiment_for(results, experiment)
    r = load_runs(results, exp)
    reference, source = _reference(exp)
    return r, gate_table(r, reference), source


def write_tables(results: str | os.PathLike, *, fmt: str = "md",
                 experiment: str | os.PathLike | None = None) -> str:
    """Write RESULTS/table.{md,csv,tex}; returns the text of ``fmt``."""
    r, table, source = load_table(results, experiment)
    texts = {"md": format_markdown(table, r, source), "csv": format_csv(table),
             "tex": format_latex(table, r.baseline)}
    for ext, text in texts.items():
        (Path(results) / f"table.{ext}").write_text(text, encoding="utf-8")
    return texts[fmt]
