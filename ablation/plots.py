"""Figures from the aggregated runs. Each plot function takes data and returns (fig, ax);
none calls plt.show(), so they render headless in tests and scripts (matplotlib falls back
to Agg without a display) and inline in notebooks."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .aggregate import gate_order, gate_table, load_runs, reference_for

SHORT = {"none": "none", "output": "o", "input": "i", "input+output": "i+o", "forget": "f",
         "input+forget": "i+f", "forget+output": "f+o", "input+forget+output": "i+f+o"}


def short(gates: str) -> str:
    return SHORT.get(gates, gates)


def plot_accuracy(table: pd.DataFrame, runs: pd.DataFrame, *, title: str = "SST-2 test accuracy"):
    """Mean test accuracy per gate combination with its 95% CI, each seed a dot, the lecture an x."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    order = gate_order(table["gates"])
    t = table.set_index("gates").loc[order]
    x = np.arange(len(order))
    err = np.vstack([t["mean"] - t["ci_low"], t["ci_high"] - t["mean"]])
    ax.errorbar(x, t["mean"], yerr=np.nan_to_num(err), fmt="o", color="C0", capsize=4, label="ours: mean, 95% CI")
    rng = np.random.default_rng(0)  # fixed jitter: same figure every time
    for k, gates in enumerate(order):
        acc = runs.loc[runs["gates"] == gates, "test_acc"].to_numpy()
        ax.scatter(k + 0.18 + rng.uniform(-0.05, 0.05, len(acc)), acc, s=12, color="C0", alpha=0.45,
                   label="ours: one seed" if k == 0 else None)
    if t["lecture"].notna().any():
        ax.scatter(x, t["lecture"], marker="x", s=60, color="C3", zorder=3, label="lecture")
    ax.set_xticks(x, [short(g) for g in order])
    ax.set_xlabel("gates present")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig, ax


def plot_learning_curves(curves: pd.DataFrame, *, title: str = "Dev accuracy by epoch"):
    """Dev accuracy per epoch: mean over seeds and a ±1 std band, one line per gate combination."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for k, gates in enumerate(gate_order(curves["gates"].unique())):
        c = curves[curves["gates"] == gates].groupby("epoch")["dev_acc"]
        mean, std = c.mean(), c.std(ddof=1).fillna(0)
        ax.plot(mean.index, mean, color=f"C{k}", label=short(gates))
        ax.fill_between(mean.index, mean - std, mean + std, color=f"C{k}", alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(ncol=4, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig, ax


def save(fig, path: Path) -> list[Path]:
    """PNG and PDF; the PDF without a creation date, so reruns give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=150, metadata={"Software": None})
    fig.savefig(out[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return out


def save_figures(results: str | os.PathLike, *, experiment: str | os.PathLike | None = None) -> list[Path]:
    """All figures for a results directory, into RESULTS/figures/."""
    results = Path(results)
    r = load_runs(results)
    if r.runs.empty:
        raise ValueError(f"{results}: no complete run records to plot")
    reference, _ = reference_for(results, experiment)
    table = gate_table(r, reference)
    figs = results / "figures"
    paths = save(plot_accuracy(table, r.runs)[0], figs / "accuracy")
    paths += save(plot_learning_curves(r.curves)[0], figs / "learning_curves")
    return paths
