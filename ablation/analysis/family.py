"""The secondary family: every test of the secondary tables, with its own table's Holm value and
Benjamini-Hochberg (`stats.benjamini_hochberg`) over all of them together (issue #27).

The lecture table's comparisons and effects are the primary tests (Holm within each family), and the
lag study declares its own (`OWN_FAMILY`); every other table's tests are secondary. `secondary_family`
reads them back from the CSV files the tables already wrote (table.csv, effects.csv, interactions.csv,
contrasts.csv, tuned_table.csv): no record is loaded and nothing is recomputed but the q-values. `make tables` writes
the frame as results/secondary.csv (`render.write_secondary`) and counts it in docs/statistics.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ablation.analysis.aggregate import FULL, SHORT, experiment_for, group_columns, group_label, row_key
from ablation.analysis.readings import p_text, signed
from ablation.analysis.stats import ALPHA, benjamini_hochberg
from ablation.core.spec import TASKS

# Readings whose tables are not in the secondary family, with the reason (an experiment's [report] reading).
OWN_FAMILY = {"lecture": "the primary tests", "lag": "a separate study with its own declared primary tests"}
COLUMNS = ["table", "kind", "label", "estimate", "unit", "p", "p_holm_within", "q_bh_all", "discovery"]
# The unit of a table's estimates by its task's metric (core/spec.TaskInfo.metric): accuracy points, or the
# scale the likelihood reading compares on
UNITS = {"perplexity": "log perplexity", "nll": "nats per frame"}


def _name(x: str) -> str:
    return SHORT.get(x, x)


def _comparisons(t: pd.DataFrame) -> pd.DataFrame:
    """table.csv: each row against its group's reference row (paired t-test, Holm over the table)."""
    key, cols = row_key(t), group_columns(t)
    groups = t[cols].astype(str).agg(", ".join, axis=1) if cols else pd.Series("", index=t.index)
    base = {g: _name(t.loc[i, key]) for i, g in groups.items() if t.loc[i, "verdict"] == "reference"}
    tested = t[t["p_paired"].notna()]
    labels = [f"{_name(r[key])} against {base.get(groups[i], '?')}"
              + (f" ({group_label(cols, [r[c] for c in cols])})" if cols else "") for i, r in tested.iterrows()]
    return pd.DataFrame({"kind": "comparison", "label": labels, "estimate": tested["diff_vs_full"],
                         "p": tested["p_paired"], "p_holm_within": tested["p_holm"]})


def _effects(e: pd.DataFrame) -> pd.DataFrame:
    """effects.csv: the 2^3 design's main effects and interactions (Holm over each group's 7 terms)."""
    cols = group_columns(e)
    labels = [r["term"] + (f" ({group_label(cols, [r[c] for c in cols])})" if cols else "") for _, r in e.iterrows()]
    return pd.DataFrame({"kind": "effect", "label": labels, "estimate": e["effect"], "p": e["p"],
                         "p_holm_within": e["p_holm"]})


def _interactions(x: pd.DataFrame) -> pd.DataFrame:
    """interactions.csv: the change of a gate set's gap to the full cell between two kinds (Holm over all)."""
    labels = [f"gap of {_name(r['gates'])} to {_name(FULL)}, {r['b']} against {r['a']}" for _, r in x.iterrows()]
    return pd.DataFrame({"kind": "interaction", "label": labels, "estimate": x["change"], "p": x["p"],
                         "p_holm_within": x["p_holm"]})


def _contrasts(c: pd.DataFrame) -> pd.DataFrame:
    """contrasts.csv: the contrasts a reading tests beyond its table, as its page prints them (the peephole
    kinds averaged over the gate sets; the protocol's training sets and word vectors; Holm over the reading's)."""
    return pd.DataFrame({"kind": "contrast", "label": c["label"], "estimate": c["estimate"], "p": c["p"],
                         "p_holm_within": c["p_holm"]})


def _tuning(t: pd.DataFrame) -> pd.DataFrame:
    """tuned_table.csv, where the tuned runs are paired with the untuned ones: the change of each gap to the
    full cell, and tuned against default settings (Holm over the gate sets, each); none before pairing."""
    parts = []
    for name, kind, words in (("delta_change", "tuning change", "change of the gap of {} to " + _name(FULL)),
                              ("vs_default", "tuning vs default", "{} tuned against default settings")):
        if f"{name}_p" not in t:
            continue
        tested = t[t[f"{name}_p"].notna()]
        parts.append(pd.DataFrame({"kind": kind, "label": [words.format(_name(g)) for g in tested["gates"]],
                                   "estimate": tested[name], "p": tested[f"{name}_p"],
                                   "p_holm_within": tested[f"{name}_p_holm"]}))
    return pd.concat(parts) if parts else pd.DataFrame()


# Each file a table may hold, and how its tests are read (in this order within a table).
SOURCES = {"table.csv": _comparisons, "effects.csv": _effects, "interactions.csv": _interactions,
           "contrasts.csv": _contrasts, "tuned_table.csv": _tuning}


def secondary_dirs(results_root: str | os.PathLike = "results") -> list[Path]:
    """The results directories whose tables are secondary: every one under ``results_root`` with one of
    the files of `SOURCES`, but those whose reading has its own family (`OWN_FAMILY`); by name."""
    out = []
    for d in sorted(p for p in Path(results_root).iterdir() if p.is_dir()):
        if not any((d / f).is_file() for f in SOURCES):
            continue
        exp = experiment_for(d)
        if exp is None or exp.report.get("reading") not in OWN_FAMILY:
            out.append(d)
    return out


def secondary_family(results_root: str | os.PathLike = "results", alpha: float = ALPHA) -> pd.DataFrame:
    """One row per secondary test (`secondary_dirs`): its table (results/<name>), kind (comparison,
    effect, interaction, contrast, tuning change, tuning vs default), label, estimate (Δ, effect or change) and
    its unit (`UNITS`), raw p, the Holm value of its own table's family, and q_bh_all, Benjamini-Hochberg over
    every row of the frame together; `discovery` where q_bh_all < ``alpha``. The p-values are the CSV
    files' (4 decimals)."""
    parts = []
    for d in secondary_dirs(results_root):
        exp = experiment_for(d)
        unit = UNITS.get(TASKS[exp.base.task.name].metric, "points") if exp is not None else "points"
        for file, read in SOURCES.items():
            if (d / file).is_file():
                part = read(pd.read_csv(d / file))
                if len(part):
                    parts.append(part.assign(table=f"results/{d.name}", unit=unit))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame[frame["p"].notna()].reset_index(drop=True)
    frame["q_bh_all"] = benjamini_hochberg(frame["p"].to_numpy(float))
    frame["discovery"] = frame["q_bh_all"] < alpha
    return frame[COLUMNS]


def family_markdown(frame: pd.DataFrame, alpha: float = ALPHA) -> str:
    """The family in words, for docs/statistics.md: how many tests from which tables, how many
    discoveries (each named), and how they differ from the tables' own Holm verdicts."""
    if frame.empty:
        return "No secondary table has been written yet.\n"
    tables = list(dict.fromkeys(frame["table"]))
    per = ", ".join(f"{t.removeprefix('results/')} {int((frame['table'] == t).sum())}" for t in tables)
    kinds = ", ".join(f"{k} {int((frame['kind'] == k).sum())}" for k in dict.fromkeys(frame["kind"]))
    found = frame[frame["discovery"]]
    holm_only = frame[(frame["p_holm_within"] < alpha) & ~frame["discovery"]]
    bh_only = found[~(found["p_holm_within"] < alpha)]
    text = (f"{len(frame)} secondary tests in `results/secondary.csv` (by kind: {kinds}; by table: {per}). "
            f"Benjamini-Hochberg over all {len(frame)} together finds {len(found)} "
            f"discover{'y' if len(found) == 1 else 'ies'} at q < {alpha}"
            + (":" if len(found) else "."))
    lines = [text, ""] + [f"- {r['table'].removeprefix('results/')}, {r['kind']}: {r['label']}, "
                          f"{signed(r['estimate'], 2)} {r['unit']} ({p_text(r['p'])}, {_q(r['q_bh_all'])})"
                          for _, r in found.iterrows()]
    if len(found):
        lines.append("")
    lines.append(f"Holm within each table finds {int((frame['p_holm_within'] < alpha).sum())} of the {len(frame)}; "
                 f"{len(bh_only)} {'is' if len(bh_only) == 1 else 'are'} found by Benjamini-Hochberg only and "
                 f"{len(holm_only)} by Holm within {'its' if len(holm_only) == 1 else 'their'} table only.")
    return "\n".join(lines) + "\n"


def _q(q: float) -> str:
    return "q" + p_text(q).removeprefix("p")
