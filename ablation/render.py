"""The tables and readings as text and files: Markdown, CSV and LaTeX renderers, the files
`ablation table` writes (`write_tables`) and the README's generated blocks (`update_readme`).

The numbers come from `aggregate.py` (records -> tables, pure), the prose from
`readings.py`; this module only lays them out and writes them, so the README cannot drift
from the records (`make tables`, tests/test_readings.py).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd

from .aggregate import (
    FULL,
    MARGIN,
    MIN_SEEDS,
    SHORT,
    Runs,
    check_results,
    effects_table,
    group_columns,
    group_label,
    load_runs,
    load_table,
    probe_frames,
    row_key,
)
from .readings import (
    MINUS,
    READINGS,
    bench_reading,
    cost_sentence,
    generic_reading,
    gpu_reading,
    probes_reading,
    signed,
    tuning_reading,
)
from .stats import ALPHA, POWER, fidelity, minimal_detectable_difference

INTERVAL_NAMES = {"t": "95% Student t-interval", "bootstrap-t": "95% bootstrap-t interval",
                  "bca": "95% BCa bootstrap interval"}

# --- tables as text --------------------------------------------------------------------------------

DISPLAY = [("key", "gates"), ("lecture", "lecture"), ("mean", "mean"), ("std", "std"),
           ("ci", "95% CI"), ("n", "n"), ("dev_mean", "dev"), ("best_epoch_mean", "best ep."),
           ("active_params", "params"), ("diff_vs_full", "Δ vs i+f+o"), ("diff_ci", "95% CI of Δ"),
           ("p_paired", "p (paired t)"), ("p_holm", "p (Holm)"), ("verdict", "verdict")]


def _fmt(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}".replace("-", MINUS)
    return str(x)


def _p(x) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def display_rows(table: pd.DataFrame, baseline: str = FULL) -> tuple[list[str], list[list[str]]]:
    groups, key_col = group_columns(table), row_key(table)
    names = {"key": key_col, "diff_vs_full": f"Δ vs {SHORT.get(baseline, baseline)}"}
    shown = [(k, name) for k, name in DISPLAY if k != "lecture" or table["lecture"].notna().any()]
    header = [c.removeprefix("config.") for c in groups] + [names.get(k, name) for k, name in shown]
    rows = []
    for _, t in table.iterrows():
        cells = [str(t[c]) for c in groups]
        for key, _ in shown:
            if key == "key":
                cells.append(str(t[key_col]))
            elif key == "ci":
                cells.append(f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]")
            elif key == "diff_ci":
                cells.append("–" if math.isnan(t["diff_ci_low"]) else
                             f"[{signed(t['diff_ci_low'])}, {signed(t['diff_ci_high'])}]")
            elif key.startswith("p_"):
                cells.append(_p(t[key]))
            elif key == "diff_vs_full":
                cells.append(signed(t[key]))
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
    """How many runs the table averages, and each record it does not: skipped, diverged, no learning."""
    line = f"{len(r.runs)} complete runs; {len(r.skipped)} incomplete records skipped"
    if r.skipped:
        line += f" ({'; '.join(r.skipped)})"
    status = r.diverged["status"] if len(r.diverged) else pd.Series([], dtype=object)
    stuck = status == "no_learning"
    line += f"; {int((~stuck).sum())} diverged"
    if stuck.any():
        line += f"; {int(stuck.sum())} did not learn"
    if len(r.diverged):
        key = r.layout.key if r.layout.key in r.diverged else "gates"
        listed = ", ".join(f"{g} (seed {s}{', no learning' if st == 'no_learning' else ''})"
                           for g, s, st in zip(r.diverged[key], r.diverged["seed"], status))
        line += f" (not averaged in: {listed})"
    return line + "."


def pivot_markdown(table: pd.DataFrame) -> str:
    """For a table split into groups: the means side by side, "mean [CI]", one column per group."""
    cols, key = group_columns(table), row_key(table)
    if not cols or table.empty:
        return ""
    label = [group_label(cols, v) for v in table[cols].itertuples(index=False)]
    groups = list(dict.fromkeys(label))
    names = list(dict.fromkeys(table[key]))
    cells = {(lab, t[key]): f"{_fmt(t['mean'])} [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]"
             for lab, (_, t) in zip(label, table.iterrows())}
    head = [key] + groups
    method = INTERVAL_NAMES[table.attrs.get("interval", "t")]
    lines = [f"Side by side: mean test accuracy [{method}].", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join([SHORT.get(n, n)] + [cells.get((g, n), "–") for g in groups]) + " |" for n in names]
    return "\n".join(lines)



def few_seeds_line(table: pd.DataFrame) -> str:
    """A warning for rows with fewer than MIN_SEEDS seeds ("" when there are none)."""
    few = table[table["n"] < MIN_SEEDS]
    if few.empty:
        return ""
    key = row_key(table)
    listed = ", ".join(f"{SHORT.get(k, k)} (n = {n})" for k, n in zip(few[key], few["n"]))
    return (f"Warning: fewer than {MIN_SEEDS} seeds in {listed}: with so few seeds the intervals are "
            "very wide (or undefined) and the tests have almost no power.")


def method_line(table: pd.DataFrame, baseline: str) -> str:
    """The footer: interval, primary test, Holm family, verdict rule, margin, detectable difference."""
    margin, interval = table.attrs.get("margin", MARGIN), table.attrs.get("interval", "t")
    family = table.attrs.get("family", int(table["p_paired"].notna().sum()))
    base = SHORT.get(baseline, baseline)
    groups = " (across all groups)" if group_columns(table) else ""
    text = (f"Test accuracy (%) over seeds: mean, sample std and the {INTERVAL_NAMES[interval]} of the mean. "
            f"Primary test: the paired t-test over seeds of each row against {base} in its group (same seeds: "
            "same data order and shared initial weights); Δ is their mean paired difference with its 95% "
            f"t-interval, and p (Holm) adjusts the {family} comparisons of this table together{groups} "
            f"(Holm's step-down). Verdict: better or worse when p (Holm) < {ALPHA}; equivalent when the "
            f"90% t-interval of the paired difference lies inside ±{margin:g} points (TOST, margin δ = "
            f"{margin:g}); inconclusive otherwise.")
    mdd = table["mdd"].dropna() if "mdd" in table else pd.Series(dtype=float)
    if len(mdd):
        sd, n = float(table["diff_std"].dropna().median()), int(table.loc[mdd.index, "n"].median())
        text += (f" Power: with n = {n} seeds and the median std of the paired differences, {_fmt(sd, 2)} "
                 f"points, the smallest true difference this test detects with {POWER:.0%} power "
                 f"(α = {ALPHA}, before Holm) is {_fmt(minimal_detectable_difference(n, sd), 1)} points "
                 "(per row: column mdd of table.csv).")
    return text


def effects_markdown(effects: pd.DataFrame) -> str:
    """The factorial effects as a Markdown block ("" when there are none)."""
    if effects.empty:
        return ""
    cols = group_columns(effects)
    head = (["group"] if cols else []) + ["term", "effect", "95% CI", "p", "p (Holm)"]
    lines = ["Factorial effects of the gates (the 8 gate sets as a 2^3 design; effects.csv): a main effect is "
             "the mean change from adding that gate, averaged over the other two; an interaction A x B is half "
             "the change of A's effect when B is added. Per seed, then mean and 95% t-interval over seeds; "
             "p: one-sample t-test against 0; p (Holm): over the 7 terms"
             + (" of each group." if cols else "."), "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, e in effects.iterrows():
        cells = ([group_label(cols, [e[c] for c in cols])] if cols else []) + [
            e["term"], signed(e["effect"], 2), f"[{signed(e['ci_low'], 2)}, {signed(e['ci_high'], 2)}]",
            _p(e["p"]), _p(e["p_holm"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_markdown(table: pd.DataFrame, r: Runs, source: str = "", effects: pd.DataFrame | None = None) -> str:
    header, rows = display_rows(table, r.layout.baseline)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [fidelity_line(table), pivot_markdown(table),
             effects_markdown(effects) if effects is not None else "", few_seeds_line(table), counts_line(r),
             f"Lecture column: {source}." if source else "", method_line(table, r.layout.baseline)]
    return "\n".join(lines) + "\n\n" + "\n\n".join(n for n in notes if n) + "\n"


def format_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.4f", lineterminator="\n")


def format_latex(table: pd.DataFrame, baseline: str = FULL) -> str:
    header, rows = display_rows(table, baseline)
    esc = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "–": "--", "Δ": r"$\Delta$", "<": r"$<$",
           MINUS: "$-$"}

    def tex(s: str) -> str:
        return "".join(esc.get(ch, ch) for ch in s)

    left = 1 + len(group_columns(table))  # group columns and the row name
    lines = [r"\begin{tabular}{" + "l" * left + "r" * (len(header) - left) + "}",
             r"\toprule", " & ".join(tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"



# --- files ------------------------------------------------------------------------------------

def write_tables(results: str | os.PathLike, *, fmt: str = "md",
                 experiment: str | os.PathLike | None = None) -> str:
    """Write RESULTS/table.{md,csv,tex} and, for a full gate grid, RESULTS/effects.csv; returns
    the text of ``fmt``."""
    check_results(results)
    r, table, source = load_table(results, experiment)
    if r.runs.empty:
        raise ValueError(f"{results}: no complete run records ({counts_line(r)})")
    effects = effects_table(r)
    texts = {"md": format_markdown(table, r, source, effects), "csv": format_csv(table),
             "tex": format_latex(table, r.layout.baseline)}
    for ext, text in texts.items():
        (Path(results) / f"table.{ext}").write_text(text, encoding="utf-8")
    path = Path(results) / "effects.csv"
    if not effects.empty:
        path.write_text(format_csv(effects), encoding="utf-8")
    elif path.exists():  # the grid lost a gate set: no stale effects
        path.unlink()
    return texts[fmt]


# --- README blocks ----------------------------------------------------------------------------

def readme_blocks(results: str | os.PathLike,
                  experiment: str | os.PathLike | None = None) -> dict[tuple[str, str], str]:
    """{("table", KEY): table.md's text, ("reading", KEY): the reading}, KEY being ``results``
    as given (the README's markers name the directory the same way)."""
    for name, reading in TIMINGS.items():  # results/gpu, results/bench: timings, no run records
        if (Path(results) / name).exists():
            lines = [json.loads(x) for x in (Path(results) / name).read_text().splitlines() if x.strip()]
            return {("reading", str(results).rstrip("/")): reading(lines) + "\n"}
    check_results(results)
    if (Path(results) / TUNED_TABLE).exists():
        return tuning_blocks(results)
    r, table, source = load_table(results, experiment)
    if r.runs.empty:
        raise ValueError(f"{results}: no complete run records")
    effects = effects_table(r)
    margin = table.attrs.get("margin", 0.5)
    reading = READINGS.get(Path(results).resolve().name, generic_reading)(table, effects, r.runs, margin)
    key = str(results).rstrip("/")
    cost = cost_sentence(pd.concat([r.runs, r.diverged]))
    reading = f"{reading} {cost}" if cost else reading
    blocks = {("table", key): format_markdown(table, r, source, effects), ("reading", key): reading + "\n"}
    probes = probes_reading(probe_frames(r)[0], list(dict.fromkeys(table[row_key(table)])))
    if probes:
        blocks[("probes", key)] = probes + "\n"
    return blocks


TUNED_TABLE = "tuned_table.csv"  # what marks a results directory as `ablation tune`'s
# Files of timings (one JSON line a measurement) that mark a results directory, and their readings:
# whole grids on one device (benchmarks/time_grid.py, scripts/gpu_check.sh) and `make bench`.
TIMINGS = {"grid_times.jsonl": gpu_reading, "bench.jsonl": bench_reading}


def tuning_blocks(results: str | os.PathLike) -> dict[tuple[str, str], str]:
    """{("table", KEY): tuned_table.md, ("reading", KEY): `readings.tuning_reading`}, from the
    files `tune.run_tuning` wrote into ``results``."""
    root, key = Path(results), str(results).rstrip("/")
    trials = pd.read_csv(root / "trials.csv")
    per_set = int(trials.groupby("model.gates").size().max())
    complete = int((trials["state"] == "COMPLETE").sum())
    reading = tuning_reading(pd.read_csv(root / TUNED_TABLE), pd.read_csv(root / "importance.csv"), per_set, complete)
    for part, what in (("trials", "search trials"), ("selected", "selection runs")):
        r = load_runs(root / part)  # only the records' costs: no table to compute
        cost = cost_sentence(pd.concat([r.runs, r.diverged]), what)
        reading = f"{reading} {cost}" if cost else reading
    return {("table", key): (root / "tuned_table.md").read_text(encoding="utf-8"), ("reading", key): reading + "\n"}


MARKER = re.compile(r"<!-- (table|reading|probes): (\S+) -->\n(.*?)<!-- /\1 -->", re.S)


def read_blocks(text: str) -> dict[tuple[str, str], str]:
    """The blocks a README holds: {(kind, key): content}."""
    return {(m[1], m[2]): m[3] for m in MARKER.finditer(text)}


def fill_blocks(text: str, blocks: dict[tuple[str, str], str], where: str = "README") -> str:
    """``text`` with each of ``blocks`` that has markers in it replaced; an error if none has,
    or if one starts and never ends."""
    found = read_blocks(text)
    for kind, key in blocks:
        start = f"<!-- {kind}: {key} -->"
        if start in text and (kind, key) not in found:
            raise ValueError(f"{where}: '{start}' has no '<!-- /{kind} -->' after it to end the block")
    present = [b for b in blocks if b in found]
    if not present:
        wanted = " or ".join(f"'<!-- {k}: {key} -->'" for k, key in blocks)
        raise ValueError(f"{where}: no {wanted} marker to fill")

    def put(m):
        b = (m[1], m[2])
        return f"<!-- {m[1]}: {m[2]} -->\n{blocks[b]}<!-- /{m[1]} -->" if b in blocks else m[0]

    return MARKER.sub(put, text)


def update_readme(readme: str | os.PathLike, results: str | os.PathLike,
                  experiment: str | os.PathLike | None = None) -> None:
    """Fill README's blocks for ``results`` (generated, not typed)."""
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    path.write_text(fill_blocks(text, readme_blocks(results, experiment), str(path)), encoding="utf-8")
