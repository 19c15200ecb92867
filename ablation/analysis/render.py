"""The tables and readings as text and files: Markdown, CSV and LaTeX renderers, the files
`ablation table` writes (`write_tables`: the tables and each results directory's page), the README's
generated blocks (`update_readme`: the headline table, its reading, the index), the secondary family's
file (`write_secondary`) and the docs pages' blocks (`update_docs`).

The numbers come from `aggregate.py` (records -> tables, pure), the prose from `readings.py`;
this module only lays them out and writes them, so no page can drift from the records
(`make tables`, tests/test_readings.py).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd

from ablation.analysis.aggregate import (
    FULL,
    MIN_SEEDS,
    SHORT,
    Runs,
    check_results,
    effects_table,
    experiment_for,
    gate_order,
    group_columns,
    group_label,
    interaction_table,
    load_runs,
    load_table,
    probe_frames,
    row_key,
    varying_columns,
)
from ablation.analysis.family import family_markdown, secondary_family
from ablation.analysis.files import csv_text, write_if_changed
from ablation.analysis.readings import (
    CONTRASTS,
    MINUS,
    READINGS,
    SECONDARY,
    _capital,
    bench_reading,
    contrasts_frame,
    cost_sentence,
    gpu_reading,
    probes_reading,
    signed,
    tuning_reading,
)
from ablation.analysis.stats import (
    ALPHA,
    POWER,
    expected_max,
    fidelity,
    minimal_detectable_difference,
    p_digits,
)
from ablation.core.config import MARGIN

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
    return p_digits(x)


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
    """A warning for rows with fewer than MIN_SEEDS seeds, and for intervals cut at 0 or 100 ("" if neither)."""
    few, key = table[table["n"] < MIN_SEEDS], row_key(table)
    parts = []
    if not few.empty:
        listed = ", ".join(f"{SHORT.get(k, k)} (n = {n})" for k, n in zip(few[key], few["n"]))
        parts.append(f"Warning: fewer than {MIN_SEEDS} seeds in {listed}: with so few seeds the intervals are "
                     "very wide (or undefined) and the tests have almost no power.")
    clipped = table.attrs.get("clipped", [])
    if clipped:
        parts.append(f"The intervals of {', '.join(SHORT.get(k, k) for k in clipped)} passed 0 or 100 and are cut "
                     "there (an accuracy cannot).")
    return " ".join(parts)


def method_line(table: pd.DataFrame, baseline: str) -> str:
    """The footer: interval, primary test, Holm family, verdict rule, margin, detectable difference."""
    margin, interval = table.attrs.get("margin", MARGIN), table.attrs.get("interval", "t")
    family = table.attrs.get("family", int(table["p_paired"].notna().sum()))
    base = SHORT.get(baseline, baseline)
    groups = " (across all groups)" if group_columns(table) else ""
    text = (f"Test accuracy (%) over seeds: mean, sample std and the {INTERVAL_NAMES[interval]} of the mean. "
            f"Primary test: the paired t-test over seeds of each row against {base} in its group (same seeds: "
            "same data order and shared initial weights); Δ is their mean paired difference with its 95% "
            f"t-interval, and p (Holm) adjusts the {family} comparison{'s' if family != 1 else ''} of this table "
            f"together{groups} "
            f"(Holm's step-down). Verdict: better or worse when p (Holm) < {ALPHA}; equivalent when the "
            f"90% t-interval of the paired difference lies inside ±{margin:g} points (TOST, margin δ = "
            f"{margin:g}), and so does its 90% interval counting the test sentences as a second source of "
            "variance (seeds x sentences crossed; the 95% one is diff_ci_*_sentences in table.csv); "
            "inconclusive otherwise.")
    mdd = table["mdd"].dropna() if "mdd" in table else pd.Series(dtype=float)
    if len(mdd):
        sd, n = float(table["diff_std"].dropna().median()), int(table.loc[mdd.index, "n"].median())
        text += (f" Power: with n = {n} seeds and the median std of the paired differences, {_fmt(sd, 2)} "
                 f"points, the smallest true difference this test detects with {POWER:.0%} power at Holm's first "
                 f"step (α = {ALPHA}/{family}) is {_fmt(minimal_detectable_difference(n, sd, alpha=ALPHA / family), 1)}"
                 f" points, {_fmt(minimal_detectable_difference(n, sd), 1)} before Holm (per row, at Holm's first "
                 "step: column mdd of table.csv).")
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
    return csv_text(table, "%.4f")


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



# --- files: the tables and the page of a results directory -----------------------------------------

PAGE = "README.md"  # each results directory's generated page (GitHub renders it)
# the page's figures, in this order: those that `ablation plot` (or `tune`, `table`) drew
FIGURES = ("accuracy", "interactions", "learning_curves", "gradient_norms", "gate_statistics", "dev_vs_lr",
           "expected_max", "importance")


def own_reading(exp):
    """The module of a reading that writes its own tables, page and figures (``write``, ``page``,
    ``save_figures``): the long-lag grid's solve rates (analysis/lag.py) and a next-step model's perplexity
    or NLL per frame (analysis/likelihood.py), by the experiment's [report] reading; None for the rest."""
    from ablation.analysis import lag, likelihood

    return {"lag": lag, "likelihood": likelihood}.get(exp.report.get("reading")) if exp is not None else None


def write_tables(results: str | os.PathLike, *, fmt: str = "md",
                 experiment: str | os.PathLike | None = None) -> str:
    """Write RESULTS/table.{md,csv,tex}, for a full gate grid RESULTS/effects.csv, where the reading tests
    contrasts no table holds RESULTS/contrasts.csv (`readings.CONTRASTS`, the numbers its page prints), and
    the page RESULTS/README.md; returns the text of ``fmt`` (for `ablation tune`'s directory, only its page)."""
    if (Path(results) / TUNED_TABLE).exists():
        curves = expected_max_table(pd.read_csv(Path(results) / "trials.csv"))
        write_if_changed(Path(results) / "expected_max.csv", format_csv(curves))
        from ablation.analysis.plots import plot_expected_max, save

        save(plot_expected_max(curves)[0], Path(results) / "figures" / "expected_max")
        write_if_changed(Path(results) / PAGE, tuning_page(results))
        return ""
    check_results(results)
    exp = experiment_for(results, experiment)
    if (own := own_reading(exp)) is not None:
        return own.write(results, exp, fmt=fmt)
    r, table, source = load_table(results, experiment)
    if r.runs.empty:
        raise ValueError(f"{results}: no complete run records ({counts_line(r)})")
    if exp is None and len(table) > 1 and (table["n"] == 1).all():
        write_if_changed(Path(results) / PAGE, single_runs_page(results, r))
        return (f"{results}: {len(r.runs)} single runs of different configs, one seed each: nothing to tabulate "
                f"(listed in {Path(results) / PAGE})\n")
    effects = effects_table(r)
    texts = {"md": format_markdown(table, r, source, effects), "csv": format_csv(table),
             "tex": format_latex(table, r.layout.baseline)}
    for ext, text in texts.items():
        write_if_changed(Path(results) / f"table.{ext}", text)
    path = Path(results) / "effects.csv"
    if not effects.empty:
        write_if_changed(path, format_csv(effects))
    elif path.exists():  # the grid lost a gate set: no stale effects
        path.unlink()
    if exp is not None and exp.report.get("reading") == "peepholes":  # its reading tests the interactions
        write_if_changed(Path(results) / "interactions.csv", format_csv(interaction_table(r)))
    found = reading_contrasts(exp, r, table)  # computed once: contrasts.csv and the page print the same
    path = Path(results) / CONTRASTS_CSV
    if found:
        write_if_changed(path, format_csv(contrasts_frame(found)))
    elif path.exists():  # the reading tests no contrast now: none stale
        path.unlink()
    claims, probes = _claims(results, exp, r, table, effects, found)  # the records as loaded above, not again
    write_if_changed(Path(results) / PAGE, _page(results, exp, r, table, source, effects, claims, probes))
    return texts[fmt]


def bullets(claims: list[str]) -> str:
    return "".join(f"- {c}\n" for c in claims)


def reading_claims(results: str | os.PathLike, experiment: str | os.PathLike | None = None):
    """(runs, table, reference source, effects, the reading's claims, the probes' claims) of a results
    directory, its reading the one its experiment's [report] names."""
    r, table, source = load_table(results, experiment)
    if r.runs.empty:
        raise ValueError(f"{results}: no complete run records")
    effects = effects_table(r)
    return (r, table, source, effects,
            *_claims(results, experiment_for(results, experiment), r, table, effects))


CONTRASTS_CSV = "contrasts.csv"  # a results directory's contrasts that no table holds (`reading_contrasts`)


def _reading_name(exp) -> str:
    return (exp.report.get("reading") if exp is not None else None) or "generic"


def reading_contrasts(exp, r: Runs, table: pd.DataFrame) -> dict[str, dict] | None:
    """The contrasts the experiment's reading tests beyond its table (`readings.CONTRASTS`: {label:
    `readings.contrasts`' dict}, {} where it has none for these records), None for a reading without."""
    name = _reading_name(exp)
    return CONTRASTS[name](table, r.runs, table.attrs.get("margin", MARGIN)) if name in CONTRASTS else None


def _claims(results, exp, r: Runs, table: pd.DataFrame, effects: pd.DataFrame,
            found: dict[str, dict] | None = None) -> tuple[list[str], list[str]]:
    """The reading's claims and the probes' claims of loaded records (`reading_claims`); ``found``: their
    `reading_contrasts`, where the caller has computed them (else the reading does)."""
    name = _reading_name(exp)
    extra = {"found": found} if found is not None else {}
    claims = READINGS[name](table, effects, r.runs, table.attrs.get("margin", MARGIN), **extra)
    claims = claims if name == "lecture" else [SECONDARY, *claims]
    cost = cost_sentence(pd.concat([r.runs, r.diverged]))
    claims += shared_runs(results, r)
    probes = probes_reading(probe_frames(r)[0], list(dict.fromkeys(table[row_key(table)])))
    fresh = reproduce_cost(Path(results).parent / FRESH, len(exp.runs())) if name == "lecture" and exp else ""
    return claims + [c for c in (cost, fresh) if c], probes


FRESH = "bench/reproduce"  # under the results root: one seed's pack of the lecture grid, retrained at a recent commit


def reproduce_cost(fresh: Path, runs: int) -> str:
    """What `make reproduce` (``runs`` runs) costs today, from the records of one seed's pack retrained
    at a recent commit (``fresh``, `FRESH`): its wall time x the packs the grid needs; "" without them."""
    first = next(iter(sorted(fresh.glob("*/summary.json"))), None)  # every member records its pack's wall time
    if first is None:
        return ""
    s = json.loads(first.read_text())
    packs = math.ceil(runs / s["pack_size"])
    hours = packs * s["wall_seconds"] / 3600
    return (f"Retrained at commit {s['versions']['git'][:7]} (results/{FRESH}: seed {s['seed']}'s pack of "
            f"{s['pack_size']} on {s['machine']['cpu_model']}, one thread), a pack takes {s['wall_seconds']:.0f} s, "
            f"so the grid's {packs} packs take about {hours:.1f} core-hours today: {hours / 2:.1f} hours on 2 cores.")


def shared_runs(results: str | os.PathLike, r: Runs) -> list[str]:
    """One claim naming the sibling results directories that hold records of the same runs (the same
    run ids: the same config and seed, so the same numbers): such tables are not independent evidence."""
    here = Path(results).resolve()
    mine = set(r.runs["run_id"]) if not r.runs.empty else set()
    shared = [(other.name, len(mine & {d.name for d in other.iterdir() if d.is_dir()}))
              for other in sorted(p for p in here.parent.iterdir() if p.is_dir() and p != here)]
    listed = ", ".join(f"{n} with results/{name}" for name, n in shared if n)
    return [f"Of these {len(mine)} runs, some are also records of other folders (the same run ids: the same "
            f"configs and seeds, so the same numbers; those tables are not independent evidence): {listed}."] \
        if listed else []


def page(results: str | os.PathLike, experiment: str | os.PathLike | None = None) -> str:
    """The generated page of a results directory: title, what varies, the reading (one claim a
    bullet), the table with its effects and notes, the probes and the figures."""
    if (Path(results) / TUNED_TABLE).exists():
        return tuning_page(results)
    exp = experiment_for(results, experiment)
    if (own := own_reading(exp)) is not None:
        return own.page(results, exp)
    return _page(results, exp, *reading_claims(results, experiment))


def _page(results, exp, r: Runs, table: pd.DataFrame, source: str, effects: pd.DataFrame, claims: list[str],
          probes: list[str]) -> str:
    report = exp.report if exp is not None else {}
    name = Path(results).resolve().name
    title = report.get("title") or name
    lines = [f"# {title}", ""]
    if report.get("summary"):
        lines += [f"{_capital(report['summary'])}.", ""]
    lines += [f"Generated by `ablation table` from the {len(r.runs) + len(r.diverged)} run records in this folder "
              f"(do not edit); `ablation grid results/{name}/experiment.toml --out results/{name}` retrains what is "
              "missing.", "",
              "## Reading", "", bullets(claims).rstrip("\n"), "", "## Table", "",
              format_markdown(table, r, source, effects).rstrip("\n"), ""]
    if probes:
        lines += ["## Gradient probes", "", bullets(probes).rstrip("\n"), ""]
    return "\n".join(lines + _figures(results))


def single_runs_page(results: str | os.PathLike, r: Runs) -> str:
    """The page of a folder of single runs (results/single): one line per run, what sets it apart."""
    varying = [c for c in varying_columns(pd.concat([r.runs, r.diverged])) if c != "config.model.gates"]
    head = ["run", "gates", *[c.removeprefix("config.") for c in varying], "test", "dev", "best epoch"]
    lines = [f"# {Path(results).resolve().name}", "", "Single runs, one seed each, of different configs (no table: "
             "nothing is replicated). Generated by `ablation table` from the records in this folder (do not edit); "
             "each keeps its checkpoint, so `ablation predict` and `ablation evaluate` work on it.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, x in pd.concat([r.runs, r.diverged]).sort_values("run_id").iterrows():
        cells = [f"`{x['run_id']}`", SHORT.get(x["gates"], x["gates"]), *[str(x[c]) for c in varying],
                 _fmt(x["test_acc"], 2), _fmt(x["dev_acc"], 2), str(x["best_epoch"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _figures(results) -> list[str]:
    shown = [f for f in FIGURES if (Path(results) / "figures" / f"{f}.png").is_file()]
    if not shown:
        return []
    return ["## Figures", "", *[f"![{f.replace('_', ' ')}](figures/{f}.png)" for f in shown], ""]


def _rel(results) -> str:
    return str(results).rstrip("/")


# --- the README's blocks ---------------------------------------------------------------------------

def headline_markdown(table: pd.DataFrame, baseline: str = FULL) -> str:
    """The README's compact gate table: gates, lecture, mean [95% CI], Δ vs the full cell [95% CI], verdict."""
    lecture = table["lecture"].notna().any()
    head = ["gates", *(["lecture"] if lecture else []), "mean [95% CI]", f"Δ vs {SHORT.get(baseline, baseline)} "
            "[95% CI]", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, t in table.iterrows():
        diff = "–" if math.isnan(t["diff_vs_full"]) else (f"{signed(t['diff_vs_full'])} "
                                                          f"[{signed(t['diff_ci_low'])}, {signed(t['diff_ci_high'])}]")
        cells = [SHORT.get(t["gates"], t["gates"]), *([_fmt(t["lecture"])] if lecture else []),
                 f"{_fmt(t['mean'])} [{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]", diff, t["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def readme_blocks(results: str | os.PathLike,
                  experiment: str | os.PathLike | None = None) -> dict[tuple[str, str], str]:
    """A results directory's blocks for a README (or a docs page), KEY being ``results`` as given:
    {("table", KEY): the compact table, ("reading", KEY): the reading's claims}; for a folder of
    timings (results/bench, results/gpu), {("reading", KEY): its paragraph}."""
    key = _rel(results)
    for name, reading in TIMINGS.items():  # results/gpu, results/bench: timings, no run records
        if (Path(results) / name).exists():
            lines = [json.loads(x) for x in (Path(results) / name).read_text().splitlines() if x.strip()]
            return {("reading", key): reading(lines) + "\n"}
    _, table, _, _, claims, _ = reading_claims(results, experiment)
    return {("table", key): headline_markdown(table), ("reading", key): bullets(claims)}


def index_block(dirs: list[str | os.PathLike]) -> dict[tuple[str, str], str]:
    """{("index", "results"): one line per results directory (all under results/): its title linked to
    its page, what varies and how many run records it holds (titles from the [report] tables)."""
    head = ["experiment", "what varies", "records"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|"]
    for d in dirs:
        exp = experiment_for(d)
        report = exp.report if exp is not None else {}
        n = sum(1 for _ in Path(d).rglob("summary.json"))
        name = Path(d).resolve().name
        lines.append(f"| [{report.get('title', name)}](results/{name}/{PAGE}) | {report.get('summary', '')} | {n} |")
    return {("index", "results"): "\n".join(lines) + "\n"}


TUNED_TABLE = "tuned_table.csv"  # what marks a results directory as `ablation tune`'s
# Files of timings (one JSON line a measurement) that mark a results directory, and their readings:
# whole grids on one device (benchmarks/time_grid.py, scripts/gpu_check.sh) and `make bench`.
TIMINGS = {"grid_times.jsonl": gpu_reading, "bench.jsonl": bench_reading}


def expected_max_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per gate set, the expected best dev accuracy of k random trials, k = 1 .. its number of complete
    trials, with its std (`stats.expected_max`, Dodge et al. 2019)."""
    done = trials[trials["state"] == "COMPLETE"]
    rows = []
    for g in gate_order(done["model.gates"].unique()):
        v = done.loc[done["model.gates"] == g, "dev_acc"].to_numpy(float)
        rows += [{"gates": g, **row} for row in expected_max(v, range(1, len(v) + 1))]
    return pd.DataFrame(rows)


def tuning_page(results: str | os.PathLike) -> str:
    """The page of `ablation tune`'s results directory, from the files `tune.run_tuning` wrote."""
    root = Path(results)
    trials = pd.read_csv(root / "trials.csv")
    per_set = int(trials.groupby("model.gates").size().max())
    complete = int((trials["state"] == "COMPLETE").sum())
    claims = tuning_reading(pd.read_csv(root / TUNED_TABLE), pd.read_csv(root / "importance.csv"), per_set, complete)
    curves = expected_max_table(trials).set_index(["gates", "k"])
    first, last = 1, int(curves.index.get_level_values("k").max())
    claims.append(f"Expected best dev accuracy of k random trials (Dodge et al. 2019; expected_max.csv, biased low as "
                  f"k nears the {last} trials run): " + "; ".join(
                      f"{SHORT.get(g, g)} {curves.loc[(g, first), 'expected_max']:.1f} at k = {first}, "
                      f"{curves.loc[(g, last), 'expected_max']:.1f} at k = {last}"
                      for g in dict.fromkeys(curves.index.get_level_values("gates"))) + ".")
    for part, what in (("trials", "search trials"), ("selected", "selection runs")):
        r = load_runs(root / part)  # only the records' costs: no table to compute
        cost = cost_sentence(pd.concat([r.runs, r.diverged]), what)
        claims += [cost] if cost else []
    exp = experiment_for(results)
    title = (exp.report.get("title") if exp is not None else None) or "Tuning"
    lines = [f"# {title}", "", "Generated by `ablation tune` from the study, the trials' and the selection's "
             "records in this folder (do not edit).", "", "## Reading", "", bullets(claims).rstrip("\n"), "",
             "## Table", "", (root / "tuned_table.md").read_text(encoding="utf-8").rstrip("\n"), ""]
    return "\n".join(lines + _figures(results))


MARKER = re.compile(r"<!-- (table|reading|probes|index): (\S+) -->\n(.*?)<!-- /\1 -->", re.S)


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


def update_readme(readme: str | os.PathLike, results: str | os.PathLike | list,
                  experiment: str | os.PathLike | None = None) -> None:
    """Fill ``readme``'s blocks for ``results`` (one directory, or several: then also the index of
    them) from the records (generated, not typed)."""
    dirs = results if isinstance(results, list) else [results]
    blocks = {}
    text = Path(readme).read_text(encoding="utf-8")
    for d in dirs:
        if len(dirs) == 1 or f": {_rel(d)} -->" in text:
            blocks.update(readme_blocks(d, experiment))
    if len(dirs) > 1:
        blocks.update(index_block(dirs))
    write_if_changed(Path(readme), fill_blocks(text, blocks, str(readme)))


SECONDARY_CSV = "secondary.csv"  # under the results root: every secondary test with its q-value (`family`)


def write_secondary(results_root: str | os.PathLike = "results") -> pd.DataFrame:
    """Write RESULTS_ROOT/secondary.csv, the secondary family (`family.secondary_family`) read from
    the tables' CSV files, so run it after they are written (`make tables` does); returns the frame."""
    frame = secondary_family(results_root)
    write_if_changed(Path(results_root) / SECONDARY_CSV, format_csv(frame))
    return frame


def docs_blocks(results_root: str | os.PathLike = "results") -> dict[str, dict[tuple[str, str], str]]:
    """The generated blocks of the docs pages, by page: the config keys (docs/config.md), the
    timings of results/gpu and results/bench (docs/performance.md) and the secondary family's
    counts and discoveries (docs/statistics.md, from the tables' CSV files as secondary.csv is)."""
    from ablation.core.config import reference_markdown

    perf = {}
    for name in ("gpu", "bench"):  # keyed results/<name> as the page's markers, wherever results_root is
        perf.update({(kind, f"results/{name}"): v for (kind, _), v in readme_blocks(Path(results_root) / name).items()})
    family = {("reading", f"results/{SECONDARY_CSV}"): family_markdown(secondary_family(results_root))}
    return {"config.md": {("table", "config"): reference_markdown()}, "performance.md": perf,
            "statistics.md": family}


def update_docs(docs: str | os.PathLike = "docs", results_root: str | os.PathLike = "results") -> None:
    """Fill the docs pages' generated blocks (`docs_blocks`)."""
    for page_name, blocks in docs_blocks(results_root).items():
        path = Path(docs) / page_name
        write_if_changed(path, fill_blocks(path.read_text(encoding="utf-8"), blocks, str(path)))
