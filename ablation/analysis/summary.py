"""Which gate matters where: each gate's effect on every task of the harness, in the task's own unit and
as a share of that task's gateless-to-full gap, as one table (results/summary/summary.csv), one figure
and a generated reading (the page, and a block of the README).

Each task (`SOURCES`) gives one value per run in its own unit: test accuracy in points (SST-2, SST-5,
MNIST-1D), log10 test MSE on the adding problem at the longest length the full cell solves in most
seeds (all runs with a test MSE, as that page's effects), log test perplexity for the language model,
test NLL per frame for the chorales.
Per task and gate, paired by seed:

- the main effect (`stats.factorial_effects`, over the seeds where all 8 gate sets have a value; its
  Holm p over the design's 7 terms, as on the task's own page): the mean with the gate minus the mean
  without it, averaged over the other two gates;
- in the full cell: the full cell minus the full cell without the gate (the task's table compares the
  same two rows);
- each as a share of the gap, the full cell minus the gateless cell on the same seeds: the ratio of the
  two paired means with Fieller's 95% interval (`stats.fieller`), which counts their covariance; a share
  near 1 is a gate that alone carries the whole gap, and near 0 one that adds nothing to the others.

Where a task's gateless cell did not learn (no_learning runs are never averaged in), neither its main
effects nor any share are estimable, and the table says so. No torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ablation.analysis import lag, likelihood
from ablation.analysis.aggregate import FULL, _presence, experiment_for, load_runs
from ablation.analysis.files import write_if_changed
from ablation.analysis.plots import LEGEND, save
from ablation.analysis.readings import MINUS, signed
from ablation.analysis.render import bullets, fill_blocks, format_csv
from ablation.analysis.stats import (
    ALPHA,
    FACTORS,
    factorial_contrasts,
    factorial_effects,
    fieller,
    p_digits,
    paired_test,
    t_interval,
)

FOLDER = "summary"  # under the results root
MARKER = ("reading", "results/summary")  # the README block this module fills


@dataclass(frozen=True)
class Source:
    task: str  # as the summary names it
    folder: str  # its results directory under the results root
    outcome: str  # "accuracy", "log10 MSE" or "log perplexity": what one run's value is


SOURCES = (Source("SST-2", "lecture", "accuracy"), Source("SST-5", "fine", "accuracy"),
           Source("adding", "lag", "log10 MSE"), Source("language model", "lm", "log perplexity"),
           Source("chorales", "chorales", "NLL per frame"), Source("MNIST-1D", "mnist1d", "accuracy"))
UNITS = {"accuracy": "points", "log10 MSE": "log10 MSE", "log perplexity": "% perplexity",
         "NLL per frame": "nats per frame"}


def values(root: Path, source: Source) -> tuple[pd.DataFrame, str]:
    """(seeds x gate sets of one value per run in the source's outcome, where: the task in words)."""
    if source.outcome == "accuracy":
        runs = load_runs(root, experiment_for(root)).runs
        return runs.pivot_table(index="seed", columns="gates", values="test_acc", aggfunc="first"), source.task
    if source.outcome in ("log perplexity", "NLL per frame"):
        runs = likelihood.load(root)
        scale = runs.attrs["scale"]
        y = likelihood.complete(runs).pivot_table(index="seed", columns="gates", values="test_metric", aggfunc="first")
        return y.apply(scale.of), source.task
    runs = lag.load_lag(root)
    runs = runs[runs["forget_init"] == "constant"]
    full = runs[runs["gates"] == FULL].groupby("length")["solved"].agg(["sum", "count"])
    solved = full[2 * full["sum"] > full["count"]].index
    if solved.empty:
        raise ValueError(f"{root}: the full cell solves no length in most of its seeds; no length to summarise")
    longest = int(solved.max())
    at = runs[(runs["length"] == longest) & (runs["test_metric"] > 0)]
    return np.log10(at.pivot_table(index="seed", columns="gates", values="test_metric", aggfunc="first")), \
        f"{source.task}, T = {longest}"


def _shown(outcome: str, x: float) -> float:
    """A difference in the source's outcome as the summary shows it (log perplexity as % of perplexity)."""
    return 100 * math.expm1(x) if outcome == "log perplexity" and math.isfinite(x) else x


def task_rows(y: pd.DataFrame, task: str, outcome: str) -> list[dict]:
    """One row per gate: its main effect and its effect in the full cell, each with a 95% interval and
    its share of the gateless-to-full gap (Fieller), or nan with the reason in ``note``."""
    names = {_presence(g): g for g in y.columns if g == "none" or set(g.split("+")) <= set(FACTORS)}
    whole = y[list(names.values())].dropna() if len(names) == 8 else y.iloc[:0]
    cells = {k: whole[g].to_numpy(float) for k, g in names.items()}
    effects = {r["term"]: r for r in factorial_effects(cells)} if len(whole) >= 2 else {}
    contrasts = factorial_contrasts(cells) if effects else {}
    note = "" if effects else (f"the gateless cell completed {int(y['none'].notna().sum()) if 'none' in y else 0} "
                               f"of {len(y)} seeds: main effects and shares not estimable")
    rows = []
    for j, gate in enumerate(FACTORS):
        row = {"task": task, "outcome": outcome, "unit": UNITS[outcome], "gate": gate, "note": note}
        e = effects.get(gate)
        gap = (whole[FULL] - whole["none"]).to_numpy(float) if e is not None else None
        row.update(_part("main", e["effect"] if e else math.nan, e["ci_low"] if e else math.nan,
                         e["ci_high"] if e else math.nan, e["p_holm"] if e else math.nan,
                         len(whole) if e else 0, contrasts.get(gate), gap, outcome))
        without = names[tuple(on and k != j for k, on in enumerate((True, True, True)))]
        pair = y[[FULL, without, "none"] if "none" in y else [FULL, without]].dropna(subset=[FULL, without])
        d = (pair[FULL] - pair[without]).to_numpy(float)
        lo, hi = t_interval(d) if len(d) > 1 else (math.nan, math.nan)
        _, p = paired_test(pair[FULL], pair[without]) if len(d) > 1 else (math.nan, math.nan)
        both = pair.dropna()
        row.update(_part("full", float(d.mean()) if len(d) else math.nan, lo, hi, p, len(d),
                         (both[FULL] - both[without]).to_numpy(float) if e is not None else None,
                         (both[FULL] - both["none"]).to_numpy(float) if e is not None else None, outcome))
        rows.append(row)
    return rows


def _part(name: str, effect, lo, hi, p, n, a, gap, outcome) -> dict:
    share = fieller(a, gap) if a is not None and len(a) >= 2 else (math.nan,) * 3
    return {name: _shown(outcome, effect), f"{name}_low": _shown(outcome, lo), f"{name}_high": _shown(outcome, hi),
            f"{name}_p": p, f"{name}_n": n, f"{name}_share": share[0], f"{name}_share_low": share[1],
            f"{name}_share_high": share[2]}


def summary_table(results_root: str | os.PathLike = "results") -> pd.DataFrame:
    """The summary over `SOURCES` present under ``results_root``: one row per (task, gate)."""
    rows = []
    for source in SOURCES:
        root = Path(results_root) / source.folder
        if root.is_dir() and any(root.glob("*/summary.json")):
            y, task = values(root, source)
            rows += task_rows(y, task, source.outcome)
    return pd.DataFrame(rows)


# --- the reading, the page and the figure ----------------------------------------------------------

def _share(row, name: str) -> str:
    if not math.isfinite(row[f"{name}_share"]):
        return "–"
    lo, hi = row[f"{name}_share_low"], row[f"{name}_share_high"]
    bounds = f"[{_whole(lo)}, {_whole(hi)}]" if math.isfinite(lo) else "[unbounded]"
    return f"{_whole(row[f'{name}_share'])}% {bounds}"


def _whole(share: float) -> str:
    return f"{100 * share:.0f}".replace("-", MINUS)


def _effect(row, name: str) -> str:
    if not math.isfinite(row[name]):
        return "–"
    digits = 2 if row["outcome"] in ("log10 MSE", "NLL per frame") else 1
    return f"{signed(row[name], digits)} [{signed(row[f'{name}_low'], digits)}, {signed(row[f'{name}_high'], digits)}]"


def reading(table: pd.DataFrame) -> list[str]:
    """One claim per task: each gate's main effect as a share of the gap and which main effects are
    detectably non-zero (Holm), or its effect in the full cell where the shares are not estimable. No
    ranking of the gates: that would be a claim about their differences, which nothing here tests."""
    out = []
    for task, t in table.groupby("task", sort=False):
        seeds = int(t["main_n"].max() or t["full_n"].max())
        if t["note"].iloc[0]:
            parts = [f"{r['gate']} {_effect(r, 'full')}" for _, r in t.iterrows()]
            out.append(f"{task} ({seeds} seeds): {t['note'].iloc[0]}; each gate in the full cell, in "
                       f"{t['unit'].iloc[0]}: {', '.join(parts)}.")
            continue
        parts = [f"{r['gate']} {_share(r, 'main')}" for _, r in t.iterrows()]
        found = [r["gate"] for _, r in t.iterrows() if r["main_p"] < ALPHA]
        out.append(f"{task} ({seeds} seeds): each gate's main effect as a share of the gap: {', '.join(parts)}; "
                   f"detectably non-zero (Holm over the 7 terms): {', '.join(found) or 'none'}.")
    return out


def table_markdown(table: pd.DataFrame) -> str:
    head = ("| task | gate | main effect [95% CI] | Holm p | share of the gap | in the full cell [95% CI] "
            "| share of the gap | unit | seeds |\n|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {r['task']} | {r['gate']} | {_effect(r, 'main')} | "
        f"{p_digits(r['main_p']) if math.isfinite(r['main_p']) else '–'} | {_share(r, 'main')} | "
        f"{_effect(r, 'full')} | {_share(r, 'full')} | {r['unit']} | {r['main_n'] or r['full_n']} |"
        for _, r in table.iterrows()) + "\n"


def plot_summary(table: pd.DataFrame, *, title: str = "Which gate matters where"):
    """Per task, each gate's share of the gateless-to-full gap with its Fieller interval: its main effect
    (filled) and its effect in the full cell (hollow); an unbounded interval is drawn to the frame."""
    tasks = list(dict.fromkeys(table["task"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.75 * len(tasks) + 1.4), layout="constrained")
    limits = (-0.5, 1.5)
    for j, gate in enumerate(FACTORS):
        for name, fill in (("main", True), ("full", False)):
            rows = table[(table["gate"] == gate) & table[f"{name}_share"].notna()]
            ys = [len(tasks) - 1 - tasks.index(t) + 0.25 * (1 - j) + (0.07 if fill else -0.07) for t in rows["task"]]
            x = rows[f"{name}_share"].clip(*limits)
            lo = rows[f"{name}_share_low"].fillna(limits[0]).clip(*limits)
            hi = rows[f"{name}_share_high"].fillna(limits[1]).clip(*limits)
            ax.errorbar(x, ys, xerr=[x - lo, hi - x], fmt="o", color=f"C{j}", mfc=f"C{j}" if fill else "white",
                        capsize=2, label=f"{gate} ({'main effect' if fill else 'in the full cell'})")
    for k, task in enumerate(tasks):
        note = table[table["task"] == task]["note"].iloc[0]
        if note:
            ax.text(0.5, len(tasks) - 1 - k, note, ha="center", va="center", fontsize=7, color="0.3")
    ax.axvline(0, color="0.5", lw=1)
    ax.axvline(1, color="0.5", lw=1, ls=":")
    ax.set_xlim(*limits)
    ax.set_ylim(-0.5, len(tasks) - 0.5)
    ax.set_yticks(range(len(tasks)), tasks[::-1])
    ax.set_xlabel("share of the gateless-to-full gap (95% Fieller interval)")
    ax.set_title(title)
    ax.legend(**LEGEND, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def page(table: pd.DataFrame) -> str:
    lines = ["# Which gate matters where", "",
             "Generated by `make tables` from the run records of "
             + ", ".join(f"results/{s.folder}" for s in SOURCES) + " (`ablation/analysis/summary.py`; do not edit).",
             "", "## Reading", ""]
    lines += [f"- {c}" for c in reading(table)]
    lines += ["", "## Table", "", table_markdown(table),
              "Main effect: the mean with the gate minus the mean without it, averaged over the other two gates "
              "(paired by seed over the seeds all 8 gate sets completed; Holm over the 2^3 design's 7 terms, as on "
              "each task's page). In the full cell: the full cell minus the full cell without the gate, paired by "
              "seed. Share of the gap: either effect over the full cell's gain on the gateless cell on the same "
              "seeds, with Fieller's 95% interval for a ratio of paired means (unbounded where the gap's own "
              "interval holds 0). Units: accuracy points; log10 test MSE on the adding problem at the longest "
              "length the full cell solves in most seeds (lower is better: a helpful gate's effect is negative, "
              "its share positive); the change of test perplexity in % for the language model, and of the test "
              "NLL per frame in nats for the chorales (lower is better for both).",
              "", "## Figure", "", "![shares](figures/summary.png)", ""]
    return "\n".join(lines)


def write_summary(results_root: str | os.PathLike = "results", readme: str | os.PathLike | None = "README.md"):
    """Write RESULTS_ROOT/summary/{summary.csv, README.md, figures/summary.*} and, with ``readme``, its
    generated block; returns the table."""
    table = summary_table(results_root)
    out = Path(results_root) / FOLDER
    out.mkdir(exist_ok=True)
    write_if_changed(out / "summary.csv", format_csv(table))
    write_if_changed(out / "README.md", page(table))
    save(plot_summary(table), out / "figures" / "summary")
    if readme is not None:
        text = Path(readme).read_text(encoding="utf-8")
        write_if_changed(Path(readme), fill_blocks(text, {MARKER: bullets(reading(table))}, str(readme)))
    return table
