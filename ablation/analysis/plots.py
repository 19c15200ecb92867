"""Figures from the aggregated runs. Each plot function takes data and returns (fig, ax);
none calls plt.show(), so they render headless in tests and scripts (matplotlib falls back
to Agg without a display) and inline in notebooks.

Rows are gate combinations or named variants (the frame's ``key`` column: "gates" or
"variant"); when an experiment splits into groups (e.g. peephole kinds), accuracy shows one
series per group and the curve plots one panel per group. Groups are named in words
(`aggregate.group_label`), legends sit outside the data and say what each band or bar is.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ablation.analysis.aggregate import (
    SHORT,
    effects_table,
    group_columns,
    group_label,
    load_table,
    probe_frames,
    row_key,
)
from ablation.analysis.stats import FACTORS
from ablation.core.spec import CELL_GATES

LEGEND = {"fontsize": 8}
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}  # right of the axes
CI_LABEL = "95% t-interval of the mean"


def short(name: str) -> str:
    return SHORT.get(name, name)


def _panels(df: pd.DataFrame, cols: list[str]):
    """[(title, rows)] for each group of ``cols`` (one untitled panel without groups)."""
    if not cols:
        return [("", df)]
    return [(group_label(cols, k if isinstance(k, tuple) else (k,)), g)
            for k, g in df.groupby(cols, sort=False, dropna=False)]  # in the order rows come


def _axes(n: int, width: float = 8, height: float = 4.2, per_row: int = 3, legend_width: float = 0.0):
    """n panels sharing the y axis, at most ``per_row`` to a row (``legend_width`` inches more
    on the right for a legend outside them)."""
    cols, rows = min(n, per_row), -(-n // per_row)
    fig, axes = plt.subplots(rows, cols, figsize=((width if n == 1 else 4.2 * cols) + legend_width, height * rows),
                             squeeze=False, sharey=True)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def plot_accuracy(table: pd.DataFrame, runs: pd.DataFrame, *, title: str = "SST-2 test accuracy"):
    """Mean test accuracy per row with its 95% t-interval, each seed a dot, the lecture an x;
    one series per group, side by side; the legend right of the axes."""
    key, cols = row_key(table), group_columns(table)
    order = list(dict.fromkeys(table[key]))
    panels = _panels(table, cols)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(order) + 1) + 2.5, 4.2))
    width = 0.7 / len(panels)
    rng = np.random.default_rng(0)  # fixed jitter: same figure every time
    for j, (label, t) in enumerate(panels):
        t = t.set_index(key).reindex(order)
        x = np.arange(len(order)) + (j - (len(panels) - 1) / 2) * width
        err = np.vstack([t["mean"] - t["ci_low"], t["ci_high"] - t["mean"]])
        ax.errorbar(x, t["mean"], yerr=np.nan_to_num(err), fmt="o", color=f"C{j}", capsize=3,
                    label=f"{label or 'ours'}: mean, {CI_LABEL}")
        sel = runs
        for c in cols:
            sel = sel[sel[c].astype(str) == str(t[c].dropna().iloc[0])]
        for k, name in enumerate(order):
            acc = sel.loc[sel[key] == name, "test_acc"].to_numpy()
            ax.scatter(x[k] + width * 0.3 + rng.uniform(-0.03, 0.03, len(acc)), acc, s=10, color=f"C{j}",
                       alpha=0.4, label="one seed (one dot each)" if j == 0 and k == 0 else None)
    lecture = table.drop_duplicates(key).set_index(key).reindex(order)["lecture"]
    if lecture.notna().any():
        ax.scatter(np.arange(len(order)), lecture, marker="x", s=60, color="C3", zorder=3, label="lecture (one run)")
    ax.set_xticks(np.arange(len(order)), [short(g) for g in order])
    ax.set_xlabel("gates present" if key == "gates" else "variant")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(top=min(ax.get_ylim()[1], 100))  # an accuracy; an interval past 100 is cut at the axis
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(**OUTSIDE, **LEGEND)
    fig.tight_layout()
    return fig, ax


def plot_learning_curves(curves: pd.DataFrame, *, title: str = "Dev accuracy by epoch"):
    """Dev accuracy per epoch: the mean over seeds, one line per row with a light band of ±1 std,
    one panel per group; whole epochs on the x axis, accuracy at most 100."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    key = row_key(curves)

    def panel(ax, df):
        for k, name in enumerate(dict.fromkeys(df[key])):
            c = df[df[key] == name].groupby("epoch")["dev_acc"]
            mean, std = c.mean(), c.std(ddof=1).fillna(0)
            ax.plot(mean.index, mean, color=f"C{k}", label=short(name), linewidth=1.5, marker="o", markersize=2.5)
            ax.fill_between(mean.index, mean - std, np.minimum(mean + std, 100), color=f"C{k}", alpha=0.06,
                            linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(top=min(ax.get_ylim()[1], 100))
        ax.grid(alpha=0.3)

    band = Patch(color="0.5", alpha=0.15, linewidth=0, label="line: mean over seeds\nband: ±1 std")
    return _panel_figure(curves, title, "dev accuracy (%)", panel, extra=[band])


RATIO_FLOOR = 1e-8  # below this the gradient has vanished for any purpose; the axis stops there
CHECKPOINT_NAMES = {"init": "at initialisation", "epoch1": "after epoch 1", "best": "best on dev"}


def plot_gradient_norms(grads: pd.DataFrame, *, title: str = "Vanishing gradients, measured",
                        order: list[str] | None = None):
    """The per-sentence ratio ||∂J/∂h_{T-d}|| / ||∂J/∂h_T|| against the distance d from the
    last token (log scale): one panel per checkpoint (columns) and sentence-length bin (rows),
    one line per row of the table (the median log-ratio over sentences, averaged over seeds:
    robust to the sentences that get no gradient at all), its band the 10-90% spread over
    sentences (averaged over seeds), and the number of sentences behind each point in grey
    (right axis). The y axis stops at `RATIO_FLOOR`. The first group only, when the
    experiment has several. Frames come from `aggregate.probe_frames`."""
    if grads.empty:
        return _empty(f"{title}: no gradient probes (format 2) in these records")
    key, cols = row_key(grads), group_columns(grads)
    label, df = _panels(grads, cols)[0]
    rows = order or list(dict.fromkeys(df[key]))
    checkpoints = [c for c in CHECKPOINT_NAMES if c in set(df["checkpoint"])]
    bins = list(dict.fromkeys(df["lengths"]))
    fig, axes = plt.subplots(len(bins), len(checkpoints), figsize=(4.2 * len(checkpoints), 2.9 * len(bins)),
                             squeeze=False, sharex="row", sharey=True)
    for i, lengths in enumerate(bins):
        for j, checkpoint in enumerate(checkpoints):
            ax = axes[i][j]
            cell = df[(df["lengths"] == lengths) & (df["checkpoint"] == checkpoint)]
            for k, name in enumerate(rows):
                c = cell[cell[key] == name].groupby("distance")[["q50", "q10", "q90"]].mean()
                if c.empty:
                    continue
                colour = f"C{k % 10}"
                ax.plot(c.index, 10.0 ** c["q50"], color=colour, linestyle="-" if k < 10 else "--",
                        label=short(name))
                ax.fill_between(c.index, 10.0 ** c["q10"], 10.0 ** c["q90"], color=colour, alpha=0.07,
                                linewidth=0)
            ax.set_yscale("log")
            ax.set_ylim(max(10.0 ** df["q10"].min(), RATIO_FLOOR), 2 * 10.0 ** df["q90"].max())
            ax.grid(alpha=0.3, which="both")
            n = cell.groupby("distance")["n"].first()
            twin = ax.twinx()
            twin.step(n.index, n, where="mid", color="0.6", linewidth=0.8)
            twin.set_ylim(0, None)
            twin.tick_params(labelsize=7, colors="0.5")
            if j == len(checkpoints) - 1:
                twin.set_ylabel("sentences", color="0.5", fontsize=8)
            if i == 0:
                ax.set_title(CHECKPOINT_NAMES[checkpoint], fontsize=10)
            if j == 0:
                ax.set_ylabel(f"length {lengths}\nratio to d = 0")
            if i == len(bins) - 1:
                ax.set_xlabel("distance from the last token (d)")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines() if not h.get_label().startswith("_")}
    handles = {n: handles[n] for n in map(short, rows) if n in handles}
    band = plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.2)
    count = plt.Line2D([], [], color="0.6", linewidth=0.8)
    fig.legend([*handles.values(), band, count],
               [*handles.keys(), "10-90% of sentences (line: median)", "sentences at d (right axis)"],
               loc="lower center", ncol=min(len(handles) + 2, 6), **LEGEND)
    fig.suptitle(f"{title}: ||∂J/∂h_(T−d)|| / ||∂J/∂h_T|| per test sentence{f' ({label})' if label else ''}")
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(handles) // 6), 1, 1))
    return fig, axes[0][0]


def _panel_figure(df: pd.DataFrame, title: str, ylabel: str, panel, extra=()):
    """One panel per group of ``df`` (`_panels`), drawn by ``panel(ax, rows)``, sharing the y
    axis; the legend (plus the ``extra`` handles) in a margin right of the panels. Returns (fig, first axes)."""
    panels = _panels(df, group_columns(df))
    legend_width = 2.0  # inches
    fig, axes = _axes(len(panels), legend_width=legend_width)
    for ax, (label, rows) in zip(axes, panels):
        panel(ax, rows)
        ax.set_title(label or title, fontsize=10)
    axes[0].set_ylabel(ylabel)
    handles, labels = axes[-1].get_legend_handles_labels()
    right = 1 - legend_width / fig.get_figwidth()
    fig.legend([*handles, *extra], [*labels, *(h.get_label() for h in extra)], loc="upper left",
               bbox_to_anchor=(right, 0.9), **LEGEND)
    if len(panels) > 1:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, right, 1))
    return fig, axes[0]


def plot_gate_statistics(gates: pd.DataFrame, *, title: str = "Gate activations by position",
                         order: list[str] | None = None):
    """Mean activation (solid) and fraction saturated (dashed) of each gate by position from
    the start of the sentence, averaged over seeds; one panel per gate, one colour per row
    (the first group only, when the experiment has several). ``order``: the rows whose
    colours the other figures use, in their order (the gateless rows have no panel here)."""
    if gates.empty:
        return _empty(f"{title}: no gated cells or no probes in these records")
    key, cols = row_key(gates), group_columns(gates)
    label, df = _panels(gates, cols)[0]
    canonical = [g for kind in CELL_GATES.values() for g in kind]
    names = sorted(set(df["gate"]), key=canonical.index)
    rows = order or list(dict.fromkeys(df[key]))  # one colour per row, the same in every panel
    fig, axes = _axes(len(names), height=4.0)
    for ax, gate in zip(axes, names):
        g = df[df["gate"] == gate]
        for k, name in enumerate(rows):
            stats = g[g[key] == name].groupby("position")[["mean", "saturated"]].mean()
            if stats.empty:
                continue
            ax.plot(stats.index, stats["mean"], color=f"C{k % 10}", label=short(name))
            ax.plot(stats.index, stats["saturated"], color=f"C{k % 10}", linestyle=":", alpha=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("position in the sentence")
        ax.set_title(f"{gate} gate", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean activation (—), fraction saturated (···)")
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines() if not h.get_label().startswith("_")}
    handles = {n: handles[n] for n in map(short, rows) if n in handles}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 9), **LEGEND)
    fig.suptitle(f"{title}{f' ({label})' if label else ''}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig, axes[0]


def plot_interactions(table: pd.DataFrame, *, title: str = "Do the gates matter together?"):
    """The 2^3 gate design as an interaction plot: mean test accuracy against the forget gate
    (off/on), one line per input gate (off/on), one panel per output gate (off/on), each point
    with its 95% t-interval; one row of panels per group that has all 8 gate sets. Parallel
    lines mean no interaction."""
    cols = group_columns(table)
    groups = []
    for label, t in _panels(table, cols):
        t = t.set_index("gates")
        cells = {tuple(f in (set() if g == "none" else set(g.split("+"))) for f in FACTORS): g for g in t.index}
        if len(cells) == 8 and all(g == "none" or set(g.split("+")) <= set(FACTORS) for g in t.index):
            groups.append((label, t, cells))
    if not groups:
        return _empty(f"{title}: no group with all 8 gate sets")
    fig, axes = plt.subplots(len(groups), 2, figsize=(9.5, 3.8 * len(groups)), squeeze=False, sharey=True)
    for row, (label, t, cells) in zip(axes, groups):
        for ax, out in zip(row, (False, True)):
            for k, inp in enumerate((False, True)):
                names = [cells[(inp, fg, out)] for fg in (False, True)]
                m = t.loc[names]
                err = np.vstack([m["mean"] - m["ci_low"], m["ci_high"] - m["mean"]])
                ax.errorbar([0 + 0.04 * k, 1 + 0.04 * k], m["mean"], yerr=np.nan_to_num(err), color=f"C{k}",
                            marker="o", capsize=3, label=f"input gate {'on' if inp else 'off'}")
            ax.set_xticks([0, 1], ["forget gate off", "forget gate on"])
            ax.set_xlim(-0.4, 1.4)
            ax.set_title(f"{label + chr(10) if label else ''}output gate {'on' if out else 'off'}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        row[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(handles, [f"{lab}: mean, {CI_LABEL}" for lab in labels], **OUTSIDE, **LEGEND)
    fig.suptitle(title)
    fig.tight_layout()
    return fig, axes[0][0]


def _like(df: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``df``'s rows in the table's order of groups and rows (so panels and colours follow it)."""
    if df.empty:
        return df
    cols = [c for c in group_columns(table) if c in df.columns] + [row_key(table)]
    order = {tuple(map(str, k)): n for n, k in enumerate(table[cols].itertuples(index=False))}
    rank = df[cols].astype(str).apply(lambda row: order.get(tuple(row), len(order)), axis=1)
    return df.iloc[np.argsort(rank.to_numpy(), kind="stable")]


def _empty(title: str):
    fig, ax = plt.subplots(figsize=(8, 2))
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
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
    r, table, _ = load_table(results, experiment)
    if r.runs.empty:
        raise ValueError(f"{results}: no complete run records to plot")
    figs = results / "figures"
    labels = r.runs["config.data.labels"] if "config.data.labels" in r.runs else pd.Series(["binary"])
    sst = "SST-5" if set(labels) == {"fine"} else "SST-2" if set(labels) == {"binary"} else "SST"
    paths = save(plot_accuracy(table, r.runs, title=f"{sst} test accuracy")[0], figs / "accuracy")
    if not effects_table(r).empty:
        paths += save(plot_interactions(table)[0], figs / "interactions")
    paths += save(plot_learning_curves(_like(r.curves, table))[0], figs / "learning_curves")
    grads, gates = (_like(f, table) for f in probe_frames(r))
    order = list(dict.fromkeys(table[row_key(table)]))
    if not grads.empty:
        paths += save(plot_gradient_norms(grads, order=order)[0], figs / "gradient_norms")
    else:  # no format-2 probes: a figure from an older format would misread them
        for ext in (".png", ".pdf"):
            (figs / "gradient_norms").with_suffix(ext).unlink(missing_ok=True)
    if not gates.empty:
        paths += save(plot_gate_statistics(gates, order=order)[0], figs / "gate_statistics")
    return paths


def plot_tuning_landscape(trials: pd.DataFrame, spec, *, key: str = "train.lr",
                          title: str = "Dev accuracy against learning rate, every tuning trial"):
    """Each complete trial a dot (x: ``key`` on a log scale if it was searched so), one colour
    per gate set, and a line through the median of each of 6 equal bins of x; ``spec`` a
    `tune.TuneSpec`. The most telling picture of a search: is the ordering the same at
    every rate, or does each gate set have a rate of its own?"""
    done = trials[trials["state"] == "COMPLETE"]
    if done.empty or key not in done:
        return _empty(f"{title}: no complete trials")
    param = next(p for p in spec.params if p.key == key)
    edges = (np.geomspace if param.log else np.linspace)(param.low, param.high, 7)
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    names = list(dict.fromkeys(done["model.gates"])) if "model.gates" in done else [None]
    order = [g for g in SHORT if g in names] + [g for g in names if g not in SHORT]
    for k, name in enumerate(order):
        d = done if name is None else done[done["model.gates"] == name]
        colour = f"C{k % 10}"
        ax.scatter(d[key], d["dev_acc"], s=12, color=colour, alpha=0.45)
        bins = np.clip(np.digitize(d[key], edges) - 1, 0, len(edges) - 2)
        means = d.groupby(bins)["dev_acc"].median()  # a median: one collapsed trial does not drag the line
        centres = np.sqrt(edges[:-1] * edges[1:]) if param.log else (edges[:-1] + edges[1:]) / 2
        ax.plot(centres[means.index], means, color=colour, label=short(name) if name else "trials")
    if param.log:
        ax.set_xscale("log")
    ax.set_xlabel({"train.lr": "AdaGrad learning rate"}.get(key, key))
    ax.set_ylabel("best dev accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="gate set (dots: trials;\nline: median trial in each\nsixth of the x range)", loc="center left",
              bbox_to_anchor=(1.01, 0.5), **LEGEND)
    fig.tight_layout()
    return fig, ax


def plot_expected_max(curves: pd.DataFrame, *, title: str = "Expected best dev accuracy of k random trials"):
    """Per gate set, the expected maximum dev accuracy of k trials with a ±1 std band (Dodge et al. 2019);
    ``curves`` as `render.expected_max_table`."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    for j, (g, c) in enumerate(curves.groupby("gates", sort=False)):
        ax.plot(c["k"], c["expected_max"], color=f"C{j % 10}", label=short(g))
        ax.fill_between(c["k"], c["expected_max"] - c["std"], np.minimum(c["expected_max"] + c["std"], 100),
                        color=f"C{j % 10}", alpha=0.08, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k, trials of the random search")
    ax.set_ylabel("expected best dev accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="gate set (band: ±1 std)", loc="center left", bbox_to_anchor=(1.01, 0.5), **LEGEND)
    fig.tight_layout()
    return fig, ax


def plot_importance(rows: list[dict], *, title: str = "What the dev accuracy depends on (fANOVA)"):
    """Each term's share of the variance of dev accuracy, ± its std over the forest's trees."""
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(df) + 1.4))
    y = np.arange(len(df))[::-1]
    ax.barh(y, df["share"], xerr=df["std"], color="C0", alpha=0.8, capsize=3, label="share ± std over trees")
    ax.set_yticks(y, df["term"])
    ax.set_xlabel("share of variance")
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", **LEGEND)
    fig.tight_layout()
    return fig, ax
