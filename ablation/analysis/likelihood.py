"""The gate table of a next-step model ([report] reading "likelihood"): a language model's test perplexity
(experiments/lm.toml) or a piano-roll model's test NLL per frame (experiments/chorales.toml), each gate set
against the full cell, and the gates' main effects, all on the scale of a mean negative log-likelihood.

Perplexity is exp of the mean per-token cross-entropy (the lecture's definition), so its log is a mean
NLL, as the NLL per frame is one already; differences on that scale are differences of mean losses (for
perplexity, ratios). Everything is computed there (`Scale`) and shown back in the metric's own terms:

- a gate set's value: the mean over seeds of the scale (for perplexity the geometric mean), with its 95%
  t-interval, mapped back;
- against the full cell, paired by seed (a pack's members share initial weights and batches): d = the
  gate set's scale minus the full cell's, its 95% t-interval and paired t-test, Holm over the table's
  comparisons; equivalence (TOST) when the 90% interval of d lies inside ±`Scale.bound` ([stats] margin:
  percent of perplexity, or nats per frame). A positive d is a higher loss: worse. Perplexity's d is
  shown as the percentage change of perplexity;
- the gates' main effects and interactions (`stats.factorial_effects`) on the scale, paired by seed over
  the seeds all 8 gate sets share.

Only complete runs are summarised; a diverged run, or one whose dev metric never beat the trivial model's
(no_learning), is listed apart. The trivial model (the records' `baseline_test`: the unigram model, or each
note's frequency) gives the scale. Pure functions over one frame of runs (`load`), then the page (`write`,
`page`) and figures (`save_figures`) that `ablation table` and `ablation plot` write. No torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ablation.analysis.aggregate import FULL, SHORT, _presence, experiment_for, gate_order
from ablation.analysis.files import csv_text, finite, record_dirs, write_if_changed
from ablation.analysis.plots import CI_LABEL, LEGEND, save
from ablation.analysis.readings import SECONDARY, _capital, cost_sentence, p_text, signed
from ablation.analysis.stats import (
    FACTORS,
    factorial_effects,
    holm,
    p_digits,
    paired_comparison,
    t_interval,
    verdict,
)
from ablation.core.config import MARGIN, Experiment

RECORD_FILES = ("config.json", "summary.json")
PAGE = "README.md"
FIGURES = ("test_metric", "effects")
COLUMNS = ["run_id", "gates", "seed", "metric", "status", "failure_reason", "test_metric", "dev_metric",
           "baseline_dev", "baseline_test", "best_epoch", "active_params", "wall_seconds", "pack_size", "threads",
           "device", "cpu_model"]


@dataclass(frozen=True)
class Scale:
    """How a metric is compared: on the log for perplexity (a mean NLL per token), as it is for an NLL per
    frame; and how a level and a difference on that scale are shown."""

    metric: str  # a record's metric: "perplexity" or "nll"
    name: str  # in words
    log: bool  # compare the metric's log
    trivial: str  # the trivial model (the records' baseline_test), as the figure's legend names it
    trivial_value: str  # its value, in the reading's words

    def of(self, x):
        """Metric values -> the scale."""
        return np.log(x) if self.log else np.asarray(x, dtype=float)

    def level(self, v: float) -> float:
        """A mean on the scale -> the metric (perplexity's geometric mean)."""
        return math.exp(v) if self.log and math.isfinite(v) else v

    def diff(self, d: float) -> float:
        """A difference on the scale as shown: perplexity's as its percentage change; an NLL's in nats."""
        return 100 * math.expm1(d) if self.log and math.isfinite(d) else d

    def bound(self, margin: float) -> float:
        """[stats] margin (percent of perplexity, or nats per frame) on the scale."""
        return math.log1p(margin / 100) if self.log else margin

    def level_text(self, x: float) -> str:
        return "–" if not math.isfinite(x) else f"{x:.1f}" if self.log else f"{x:.3f}"

    def diff_text(self, d: float) -> str:
        return signed(d, 1) + "%" if self.log else signed(d, 3)


SCALES = {"perplexity": Scale("perplexity", "perplexity", True, "unigram model", "the unigram model's perplexity"),
          "nll": Scale("nll", "NLL per frame", False, "each note's frequency",
                       "the NLL per frame of each note's frequency")}


# --- reading records -------------------------------------------------------------------------------

def load(results: str | os.PathLike) -> pd.DataFrame:
    """One row per run record under ``results`` (`COLUMNS`): gate set, seed, metric, status, test and dev
    metric of the best-on-dev weights, the trivial model's, and the cost. A record `records.check_record`
    rejects, a temporary, or a record of a task whose metric has no `Scale` is skipped and listed with its
    reason in ``attrs["skipped"]``; ``attrs["scale"]`` is the records' `Scale`."""
    root = Path(results)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such results directory")
    rows, skipped = [], []
    for d, reason in record_dirs(root, RECORD_FILES):
        summary = json.loads((d / "summary.json").read_text()) if reason is None else {}
        if reason is None and summary.get("metric") not in SCALES:
            reason = f"a record of task {summary.get('task', 'sst')!r}, not measured in {' or '.join(SCALES)}"
        if reason is not None:
            skipped.append(f"{d.name} ({reason})")
            continue
        rows.append({"run_id": d.name, **{k: summary.get(k) for k in COLUMNS[1:6]},
                     **{k: finite(summary.get(k)) for k in COLUMNS[6:10]},
                     **{k: summary.get(k) for k in COLUMNS[10:16]},
                     "cpu_model": summary.get("machine", {}).get("cpu_model")})
    runs = pd.DataFrame(rows, columns=COLUMNS)
    metrics = sorted(set(runs["metric"]))
    if len(metrics) > 1:
        raise ValueError(f"{results}: records of different metrics ({', '.join(metrics)}); one folder is one task")
    runs.attrs.update(skipped=skipped, scale=SCALES[metrics[0]] if metrics else SCALES["perplexity"])
    return runs


def complete(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that are summarised: complete, with a finite positive test metric."""
    return runs[(runs["status"] == "complete") & (runs["test_metric"] > 0)]


# --- the table and the effects ---------------------------------------------------------------------

def table(runs: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """One row per gate set: the test metric's mean on the scale over seeds, mapped back (`value`; for
    perplexity the geometric mean), with its 95% t-interval (`ci_low`, `ci_high`), the dev metric alike,
    and the paired comparison with the full cell on the scale (`diff_vs_full`, its interval, `p_paired`,
    Holm over the table as `p_holm`, `verdict`), shown as `Scale.diff` (`shown_*`). ``margin``: the
    equivalence margin, `Scale.bound`'s."""
    scale = runs.attrs["scale"]
    done = complete(runs)
    full = done[done["gates"] == FULL].set_index("seed")["test_metric"]
    out = []
    for gates in gate_order(runs["gates"].unique()):
        g = done[done["gates"] == gates].sort_values("seed")
        v = scale.of(g["test_metric"].to_numpy(float))
        lo, hi = t_interval(v) if len(v) > 1 else (math.nan, math.nan)
        row = {"gates": gates, "value": scale.level(v.mean()) if len(v) else math.nan,
               "ci_low": scale.level(lo), "ci_high": scale.level(hi), "n": len(v),
               "seeds": " ".join(map(str, g["seed"])),
               "dev_value": scale.level(scale.of(g["dev_metric"].to_numpy(float)).mean()) if len(g) else math.nan,
               "best_epoch_mean": g["best_epoch"].mean(),
               "active_params": runs.loc[runs["gates"] == gates, "active_params"].iloc[0],
               "diff_vs_full": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "p_paired": math.nan,
               "equivalent": False, "n_pairs": 0}
        seeds = sorted(set(g["seed"]) & set(full.index))
        if gates != FULL and len(seeds) >= 2:
            c = paired_comparison(scale.of(g.set_index("seed").loc[seeds, "test_metric"]),
                                  scale.of(full.loc[seeds]), scale.bound(margin))
            row.update(diff_vs_full=c["diff"], diff_ci_low=c["diff_ci_low"], diff_ci_high=c["diff_ci_high"],
                       p_paired=c["p_paired"], equivalent=c["equivalent"], n_pairs=len(seeds))
        out.append(row)
    t = pd.DataFrame(out)
    t["p_holm"] = holm(t["p_paired"])
    t["verdict"] = ["reference" if name == FULL else "untested" if math.isnan(d)
                    else verdict(-d, ph, eq)  # a lower loss is better
                    for name, d, ph, eq in zip(t["gates"], t["diff_vs_full"], t["p_holm"], t["equivalent"])]
    for col in ("diff_vs_full", "diff_ci_low", "diff_ci_high"):
        t[col.replace("diff", "shown")] = [scale.diff(x) for x in t[col]]
    t.attrs.update(margin=margin, scale=scale)
    return t.drop(columns="equivalent")


def effects(runs: pd.DataFrame) -> pd.DataFrame:
    """The 2^3 design's main effects and interactions on the scale (`stats.factorial_effects`, Holm over
    the 7 terms), over the seeds where all 8 gate sets completed; `shown`, `shown_ci_low`, `shown_ci_high`:
    the same as `Scale.diff`. Empty with fewer than 2 such seeds."""
    scale = runs.attrs["scale"]
    cols = ["term", "effect", "ci_low", "ci_high", "p", "n", "p_holm", "shown", "shown_ci_low", "shown_ci_high"]
    done = complete(runs)
    by = {_presence(n): g.set_index("seed")["test_metric"] for n, g in done.groupby("gates")
          if n == "none" or set(n.split("+")) <= set(FACTORS)}
    seeds = sorted(set.intersection(*(set(s.index) for s in by.values()))) if len(by) == 8 else []
    if len(seeds) < 2:
        return pd.DataFrame(columns=cols)
    e = pd.DataFrame(factorial_effects({k: scale.of(s.loc[seeds].to_numpy(float)) for k, s in by.items()}))
    for col in ("effect", "ci_low", "ci_high"):
        e[{"effect": "shown"}.get(col, f"shown_{col}")] = [scale.diff(x) for x in e[col]]
    return e[cols]


# --- the page --------------------------------------------------------------------------------------

def _name(gates: str) -> str:
    return {"none": "the gateless cell", FULL: "the full cell"}.get(gates, f"`{SHORT.get(gates, gates)}`")


def comparison_claims(t: pd.DataFrame) -> list[str]:
    """One claim per gate set against the full cell, in the verdict's words."""
    scale, out = t.attrs["scale"], []
    for _, r in t[t["verdict"] != "reference"].iterrows():
        if r["verdict"] == "untested":
            out.append(f"{_capital(_name(r['gates']))} against the full cell: untested (fewer than two seeds "
                       "paired with the full cell completed).")
            continue
        words = {"better": f"lower {scale.name}", "worse": f"higher {scale.name}", "equivalent": "equivalent",
                 "inconclusive": "no detectable difference"}[r["verdict"]]
        out.append(f"{_capital(_name(r['gates']))} against the full cell: {words}, "
                   f"{scale.diff_text(r['shown_vs_full'])}{'' if scale.log else ' nats'} "
                   f"(95% CI {scale.diff_text(r['shown_ci_low'])} to "
                   f"{scale.diff_text(r['shown_ci_high'])}; Holm {p_text(r['p_holm'])}).")
    return out


def effect_claims(e: pd.DataFrame, scale: Scale) -> list[str]:
    """The three main effects, one claim each: what adding the gate does to the metric."""
    out = []
    for _, r in e[e["term"].isin(FACTORS)].iterrows():
        found = r["p_holm"] < 0.05
        what = ("lowers" if r["effect"] < 0 else "raises") if found else "has no detectable effect on"
        out.append(f"Adding the {r['term']} gate {what} {scale.name}: {scale.diff_text(r['shown'])} averaged over "
                   f"the other two gates (95% CI {scale.diff_text(r['shown_ci_low'])} to "
                   f"{scale.diff_text(r['shown_ci_high'])}; Holm {p_text(r['p_holm'])} over the 7 terms, "
                   f"n = {int(r['n'])} seeds).")
    return out




def reading(runs: pd.DataFrame, t: pd.DataFrame, e: pd.DataFrame, epochs: int | None = None) -> list[str]:
    """The page's claims, one a bullet: the scale, each comparison, the main effects, whether the runs were
    still improving at the last of their ``epochs``, the cost."""
    scale, done = t.attrs["scale"], complete(runs)
    row = t.set_index("gates")
    trivial = float(done["baseline_test"].iloc[0]) if len(done) else math.nan
    text = f"On the test set {scale.trivial_value} is {scale.level_text(trivial)}"
    for gates in (FULL, "none"):
        if gates in row.index and row.loc[gates, "n"] > 0:
            r = row.loc[gates]
            text += (f"; {_name(gates)} reaches {scale.level_text(r['value'])} [{scale.level_text(r['ci_low'])}, "
                     f"{scale.level_text(r['ci_high'])}] (n = {int(r['n'])})")
        elif gates in row.index:
            text += f"; {_name(gates)} completed no run"
    how = ("geometric means over seeds, 95% t-intervals of the mean log" if scale.log
           else "means over seeds, 95% t-intervals")
    claims = [SECONDARY, f"{text} ({how})."] + comparison_claims(t) + effect_claims(e, scale)
    last = int((done["best_epoch"] == epochs).sum()) if epochs else 0
    if last:
        claims.append(f"{last} of the {len(done)} complete runs had their best dev {scale.name} in the last epoch "
                      f"({epochs}): these compare the gate sets at a fixed budget, not at convergence.")
    cost = cost_sentence(runs)
    return claims + ([cost] if cost else [])


def table_markdown(t: pd.DataFrame) -> str:
    scale = t.attrs["scale"]
    head = (f"| gates | test {scale.name} | 95% CI | n | dev {scale.name} | best ep. | params | Δ vs i+f+o "
            "| 95% CI of Δ | p (paired t) | p (Holm) | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for _, r in t.iterrows():
        tested = math.isfinite(r["shown_vs_full"])
        rows.append(f"| {r['gates']} | {scale.level_text(r['value'])} | [{scale.level_text(r['ci_low'])}, "
                    f"{scale.level_text(r['ci_high'])}] | {int(r['n'])} | {scale.level_text(r['dev_value'])} | "
                    f"{r['best_epoch_mean']:.1f} | {int(r['active_params'])} | "
                    + (f"{scale.diff_text(r['shown_vs_full'])} | [{scale.diff_text(r['shown_ci_low'])}, "
                       f"{scale.diff_text(r['shown_ci_high'])}] | {p_digits(r['p_paired'])} | {p_digits(r['p_holm'])} "
                       if tested else "– | – | – | – ")
                    + f"| {r['verdict']} |")
    return head + "\n".join(rows) + "\n"


def method_text(t: pd.DataFrame) -> str:
    scale, family = t.attrs["scale"], int(t["p_paired"].notna().sum())
    if scale.log:
        what = ("Test perplexity (exp of the mean per-token cross-entropy over the test sentences' targets, `</s>` "
                "included) of each run's best-on-dev weights: the geometric mean over seeds with the 95% t-interval "
                "of the mean log perplexity, exponentiated. Δ: the paired difference of log perplexities against "
                "i+f+o over the seeds both completed, shown as the change of perplexity in %")
        margin = f"±{t.attrs['margin']:g}% of perplexity"
    else:
        what = ("Test NLL per frame (the per-note Bernoulli negative log-likelihood summed over the notes, in nats, "
                "averaged over the test set's frames) of each run's best-on-dev weights: the mean over seeds with "
                "its 95% t-interval. Δ: the paired difference against i+f+o over the seeds both completed, in nats")
        margin = f"±{t.attrs['margin']:g} nats per frame"
    return (f"{what}; p (Holm) adjusts the {family} comparisons of this table together. Verdict: lower or higher "
            f"{scale.name} when p (Holm) < 0.05; equivalent when the 90% t-interval of the difference lies inside "
            f"{margin} (TOST); inconclusive otherwise. table.csv holds the differences on the compared scale "
            "(diff_*) and as shown (shown_*).")


def effects_markdown(e: pd.DataFrame, scale: Scale) -> str:
    head = (f"| term | change of {scale.name} | 95% CI | p | p (Holm) | n |\n|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {r['term']} | {scale.diff_text(r['shown'])} | [{scale.diff_text(r['shown_ci_low'])}, "
        f"{scale.diff_text(r['shown_ci_high'])}] | {p_digits(r['p'])} | {p_digits(r['p_holm'])} | {int(r['n'])} |"
        for _, r in e.iterrows()) + "\n"


def apart_text(runs: pd.DataFrame) -> str:
    apart = runs[~runs["run_id"].isin(complete(runs)["run_id"])]
    listed = ", ".join(f"{r['gates']} (seed {r['seed']}, {r['status']})" for _, r in apart.iterrows())
    return (f"{len(runs) - len(apart)} complete runs; {len(apart)} listed apart, not averaged in"
            + (f": {listed}." if listed else ".")
            + (f" Skipped: {'; '.join(runs.attrs['skipped'])}." if runs.attrs.get("skipped") else ""))


def _page(root: Path, exp: Experiment | None, runs, t, e) -> str:
    scale = t.attrs["scale"]
    report = exp.report if exp is not None else {}
    name = root.resolve().name
    lines = [f"# {report.get('title') or name}", ""]
    if report.get("summary"):
        lines += [_capital(report["summary"]) + ".", ""]
    lines += [f"Generated by `ablation table` from the {len(runs)} run records in this folder (do not edit); "
              f"`ablation grid results/{name}/experiment.toml --out results/{name}` retrains what is missing.", "",
              "## Reading", ""]
    lines += [f"- {c}" for c in reading(runs, t, e, exp.base.train.epochs if exp is not None else None)]
    lines += ["", "## Table", "", table_markdown(t), apart_text(runs), "", method_text(t), ""]
    if not e.empty:
        on = "log perplexity" if scale.log else scale.name
        lines += [f"## Main effects and interactions (on {on})", "", effects_markdown(e, scale),
                  f"Each term's per-seed contrast of {on} (Montgomery §6.2; a main effect is the mean with the gate "
                  "minus the mean without it, averaged over the other two gates), its mean over seeds"
                  + (" as the change of perplexity in %" if scale.log else " in nats") + " with its 95% t-interval; "
                  "Holm over the 7 terms.", ""]
    lines += ["## Figures", ""] + [f"![{f}](figures/{f}.png)" for f in FIGURES] + [""]
    return "\n".join(lines)


def _loaded(root: Path, exp: Experiment | None):
    runs = load(root)
    if complete(runs).empty:
        raise ValueError(f"{root}: no complete run records of a next-step task ({apart_text(runs)})")
    return runs, table(runs, exp.margin if exp is not None else MARGIN), effects(runs)


def page(results: str | os.PathLike, experiment: Experiment | None = None) -> str:
    root = Path(results)
    exp = experiment if experiment is not None else experiment_for(root)
    return _page(root, exp, *_loaded(root, exp))


def write(results: str | os.PathLike, experiment: Experiment | None = None, *, fmt: str = "md") -> str:
    """Write RESULTS/table.{md,csv}, effects.csv, the figures and the page RESULTS/README.md; returns the
    ``fmt`` table ("md" or "csv")."""
    root = Path(results)
    exp = experiment if experiment is not None else experiment_for(root)
    runs, t, e = _loaded(root, exp)
    texts = {"md": table_markdown(t) + "\n" + method_text(t) + "\n", "csv": csv_text(t)}
    if fmt not in texts:
        raise ValueError(f"--format {fmt}: this table is written as {' or '.join(texts)}")
    for ext, text in texts.items():
        write_if_changed(root / f"table.{ext}", text)
    write_if_changed(root / "effects.csv", csv_text(e))
    _figures(root, runs, t, e)
    write_if_changed(root / PAGE, _page(root, exp, runs, t, e))
    return texts[fmt]


# --- figures ---------------------------------------------------------------------------------------

def plot_test_metric(runs: pd.DataFrame, t: pd.DataFrame, *, title: str | None = None):
    """Each gate set's seeds (dots) and mean with its 95% interval (bar), the trivial model's value as a
    dashed line; perplexity on a log axis."""
    scale, done = t.attrs["scale"], complete(runs)
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    for k, (_, r) in enumerate(t.iterrows()):
        seeds = done[done["gates"] == r["gates"]]["test_metric"]
        ax.scatter([k] * len(seeds), seeds, s=10, color="0.6", zorder=2, label="a seed" if k == 0 else None)
        if r["n"] > 1:
            ax.errorbar(k, r["value"], yerr=[[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]], fmt="o",
                        color="C0", capsize=3, zorder=3,
                        label=CI_LABEL + (" (log scale)" if scale.log else "") if k == 0 else None)
    if len(done):
        ax.axhline(done["baseline_test"].iloc[0], color="C3", ls="--", lw=1, label=scale.trivial)
    if scale.log:
        ax.set_yscale("log")
    ax.set_xticks(range(len(t)), [SHORT.get(g, g) for g in t["gates"]])
    ax.set_xlabel("gates")
    ax.set_ylabel(f"test {scale.name}")
    ax.set_title(title or f"Test {scale.name} by gate set")
    ax.legend(**LEGEND)
    return fig


def plot_effects(e: pd.DataFrame, scale: Scale, *, title: str | None = None):
    """The 7 terms' change of the metric with 95% intervals; below 0, the gate lowers the loss."""
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    ys = np.arange(len(e))[::-1]
    if len(e):
        ax.errorbar(e["shown"], ys, xerr=[e["shown"] - e["shown_ci_low"], e["shown_ci_high"] - e["shown"]],
                    fmt="o", color="C0", capsize=3)
    ax.axvline(0, color="0.5", lw=1)
    ax.set_yticks(ys, [term.replace(" x ", " × ") for term in e["term"]])
    ax.set_xlabel(f"change of test {scale.name} ({'%' if scale.log else 'nats'}), 95% t-interval")
    ax.set_title(title or f"Each gate's effect on {scale.name}")
    return fig


def _figures(root: Path, runs, t, e) -> list[Path]:
    out = root / "figures"
    return save(plot_test_metric(runs, t), out / FIGURES[0]) + save(plot_effects(e, t.attrs["scale"]),
                                                                     out / FIGURES[1])


def save_figures(results: str | os.PathLike, experiment: Experiment | None = None) -> list[Path]:
    root = Path(results)
    return _figures(root, *_loaded(root, experiment if experiment is not None else experiment_for(root)))
