"""The readings, written by code from the tables: lists of claims, one a bullet, every number from
the records, the wording following the verdicts (a difference the test does not find is "no
detectable difference", never "the same"; "equivalent" only where TOST says so).

Pure functions over the gate table, the factorial effects and the runs frame (`aggregate`'s
tidy frames). `READINGS` holds one per kind of experiment, chosen by its [report] table;
`render` puts them on each results directory's page and in the README's blocks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablation.analysis.aggregate import (
    FULL,
    SHORT,
    group_columns,
    group_label,
    interaction_table,
    row_key,
)
from ablation.analysis.stats import ALPHA, fidelity, holm, p_digits, paired_comparison, verdict
from ablation.core.config import TrainConfig

# --- phrases ----------------------------------------------------------------------------------


MINUS = "−"  # U+2212: a minus sign, not a hyphen ($-$ in LaTeX)


def signed(x: float, digits: int = 1) -> str:
    """+1.2 / −1.2 (a minus sign); "–" for NaN."""
    if x is None or math.isnan(x):
        return "–"
    return f"{x:+.{digits}f}".replace("-", MINUS)


def _n(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}".replace("-", "−")


def p_text(p: float) -> str:
    text = p_digits(p)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def mean_ci(row) -> str:
    """84.6 [83.9, 85.4]: a row's mean and 95% interval."""
    return f"{_n(row['mean'])} [{_n(row['ci_low'])}, {_n(row['ci_high'])}]"


def compare(c: dict, margin: float, digits: int = 1) -> str:
    """What one paired comparison says, in the words of its verdict. ``c`` has diff, diff_ci_low,
    diff_ci_high, p_holm, tost_low, tost_high and verdict (a table row, or `contrast`'s dict)."""
    d, lo, hi = c["diff"], c["diff_ci_low"], c["diff_ci_high"]
    if math.isnan(c["p_holm"]):  # fewer than two paired seeds: no interval, no test
        return f"{signed(d, digits)} points, untested (fewer than two seeds paired with the reference)"
    ci = f"95% CI {signed(lo, digits)} to {signed(hi, digits)}"
    holm_p = f"Holm {p_text(c['p_holm'])}"
    if c["verdict"] in ("better", "worse"):
        return f"{signed(d, digits)} points ({ci}; {holm_p})"
    if c["verdict"] == "equivalent":
        return (f"{signed(d, digits)} points, equivalent within ±{margin:g} (90% CI "
                f"{signed(c['tost_low'], digits)} to {signed(c['tost_high'], digits)})")
    if c["p_paired"] < ALPHA:  # significant alone, not among the family's comparisons
        return (f"{signed(d, digits)} points, not significant after Holm ({ci}; paired {p_text(c['p_paired'])}, "
                f"{holm_p})")
    return f"{signed(d, digits)} points, no detectable difference ({ci}; {holm_p})"


def _row_comparison(row) -> dict:
    return {"diff": row["diff_vs_full"], **{k: row[k] for k in ("diff_ci_low", "diff_ci_high", "p_paired", "p_holm",
                                                                  "tost_low", "tost_high", "verdict")}}


def contrasts(pairs: dict[str, tuple[pd.Series, pd.Series]], margin: float) -> dict[str, dict]:
    """Paired comparisons a - b (each a Series indexed by seed), Holm over the family given,
    each with its verdict."""
    out = {}
    for name, (a, b) in pairs.items():
        seeds = sorted(set(a.index) & set(b.index))
        c = paired_comparison(a.loc[seeds].to_numpy(float), b.loc[seeds].to_numpy(float), margin)
        out[name] = {**c, "diff": c["diff"]}
    for c, ph in zip(out.values(), holm([c["p_paired"] for c in out.values()])):
        c["p_holm"] = float(ph)
        c["verdict"] = verdict(c["diff"], c["p_holm"], c["equivalent"])
    return out


CONTRAST_COLUMNS = ["label", "estimate", "ci_low", "ci_high", "p", "p_holm", "verdict", "tost_low", "tost_high", "n"]


def contrasts_frame(found: dict[str, dict]) -> pd.DataFrame:
    """A reading's contrasts (`CONTRASTS`), one row each in the page's order, as contrasts.csv holds them:
    the label the page words it with, the estimate a - b in points with its 95% t-interval, the paired p,
    the Holm p over the reading's contrasts, the verdict, the TOST 90% interval and the seeds paired."""
    return pd.DataFrame([{"label": k, "estimate": c["diff"], "ci_low": c["diff_ci_low"], "ci_high": c["diff_ci_high"],
                          "p": c["p_paired"], "p_holm": c["p_holm"], "verdict": c["verdict"],
                          "tost_low": c["tost_low"], "tost_high": c["tost_high"], "n": c["n_pairs"]}
                         for k, c in found.items()], columns=CONTRAST_COLUMNS)


def _by_verdict(table: pd.DataFrame, margin: float, base: str = "the full cell") -> list[str]:
    """One claim for every non-reference row, worse first: "`o` against the full cell: worse, −1.2 points (...)."."""
    claims = []
    for v in ("worse", "better", "equivalent", "inconclusive"):
        for _, r in table[table["verdict"] == v].iterrows():
            said = f"{v}, " if v in ("worse", "better") else ""
            claims.append(f"{_capital(_label(table, r))} against {base}: {said}{compare(_row_comparison(r), margin)}.")
    return claims


def _label(table: pd.DataFrame, row) -> str:
    """A row in words: "the gateless cell", "`i+o`", with its group where the table has groups."""
    value = row[row_key(table)]
    name = "the gateless cell" if value == "none" else f"`{SHORT.get(value, value)}`"
    cols = group_columns(table)
    return f"{name} ({group_label(cols, [row[c] for c in cols])})" if cols else name


def _power(table: pd.DataFrame) -> list[str]:
    mdd = table["mdd"].dropna()
    if mdd.empty:
        return []
    family = table.attrs.get("family", len(mdd))
    return [f"With {int(table['n'].median())} seeds the paired t-test detects a difference of about "
            f"{_n(float(mdd.median()))} points with 80% power at Holm's first step (α = {ALPHA}/{family}; median over "
            "rows); smaller true differences often go unseen."]


def _effects_claims(effects: pd.DataFrame, where: str = "") -> list[str]:
    """Main effects, and the interactions, of one group's 2^3 design: one claim each (``where``: the
    group, "With full peepholes, ")."""
    e = effects.set_index("term")
    claims = []
    for gate in ("input", "forget", "output"):
        r = e.loc[gate]
        ci = f"95% CI {signed(r['ci_low'], 2)} to {signed(r['ci_high'], 2)}"
        if r["p_holm"] < ALPHA:
            text = (f"adding the {gate} gate {'raises' if r['effect'] > 0 else 'lowers'} accuracy by "
                    f"{_n(abs(r['effect']), 2)} points ({ci}, Holm {p_text(r['p_holm'])})")
        elif r["p"] < ALPHA:
            text = (f"the {gate} gate's effect, {signed(r['effect'], 2)} points ({ci}, {p_text(r['p'])}), "
                    f"is not significant after Holm (Holm {p_text(r['p_holm'])})")
        else:
            text = (f"the {gate} gate has no detectable effect ({signed(r['effect'], 2)} points, {ci}, "
                    f"Holm {p_text(r['p_holm'])})")
        claims.append(text)
    inter = e.loc[[t for t in e.index if " x " in t]]
    found = inter[inter["p_holm"] < ALPHA]
    if len(found):
        claims += [f"the {t} interaction is {signed(r['effect'], 2)} (95% CI {signed(r['ci_low'], 2)} to "
                   f"{signed(r['ci_high'], 2)}, Holm {p_text(r['p_holm'])})" for t, r in found.iterrows()]
    else:
        big = inter.iloc[int(np.argmax(np.abs(inter["effect"].to_numpy())))]
        claims.append(f"no interaction is detectable (the largest, {big.name}, is {signed(big['effect'], 2)}, "
                      f"95% CI {signed(big['ci_low'], 2)} to {signed(big['ci_high'], 2)})")
    return [_capital(f"{where}{c}") + "." for c in claims]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- one reading per experiment: a list of claims, one a bullet (README, results/<name>/README.md) -----------

# Which claims are primary, declared before looking (the README and each page say so).
PRIMARY = ("Primary tests, declared before looking: the 7 comparisons of a gate set with the full cell and the "
           "7 factorial effects, each family Holm-adjusted. Every other table's tests are secondary: Holm within "
           "their own table, and Benjamini-Hochberg over all of them together (results/secondary.csv).")
# Every secondary page's family, in words without numbers (the counts are docs/statistics.md's, from `family`).
SECONDARY = ("Secondary to the lecture table's primary tests: Holm within this table, and Benjamini-Hochberg over "
             "every secondary table's tests together (q-values in results/secondary.csv, counted in "
             "docs/statistics.md).")


def lecture_reading(table: pd.DataFrame, effects: pd.DataFrame, runs: pd.DataFrame, margin: float) -> list[str]:
    f = fidelity(table["lecture"], table["mean"])
    fid = (f"{f['within']} of {f['n']} cells land within ±{f['tolerance']} points of the lecture's single run "
           f"(mean |Δ| = {_n(f['mean_abs_diff'], 2)}); the orderings agree in rank with Kendall's "
           f"τ = {_n(f['kendall_tau'], 2)} (a description of the means, not a test).")
    return [PRIMARY, fid, *gates_reading(table, effects, runs, margin)]


def gates_reading(table: pd.DataFrame, effects: pd.DataFrame, runs: pd.DataFrame, margin: float) -> list[str]:
    """The 8 gate sets: the full cell, the 2^3 effects and each set's verdict against the full cell."""
    claims = [f"The full cell reaches {mean_ci(table.set_index('gates').loc[FULL])}."]
    if not effects.empty:
        claims += _effects_claims(effects)
    return claims + _by_verdict(table, margin) + _power(table)


def interaction_table_of(runs: pd.DataFrame, kinds: list, col: str) -> pd.DataFrame:
    """`aggregate.interaction_table` of a runs frame, the kinds in the table's order."""
    from ablation.analysis.aggregate import Layout, Runs

    return interaction_table(Runs(runs, runs.iloc[:0], pd.DataFrame(), layout=Layout(levels={col: list(kinds)})), col)


PEEPHOLE = "config.model.peephole"


def peephole_contrasts(table: pd.DataFrame, runs: pd.DataFrame, margin: float) -> dict[str, dict]:
    """Each peephole kind against none (else the first kind), each kind's runs averaged over the gated
    sets per seed, paired by seed, Holm over the kinds: {"diagonal peepholes against no peepholes": ...}."""
    kinds = list(dict.fromkeys(table[PEEPHOLE]))
    base = "none" if "none" in kinds else kinds[0]
    per_seed = runs[runs["gates"] != "none"].groupby([PEEPHOLE, "seed"])["test_acc"].mean()
    label = {k: group_label([PEEPHOLE], [k]) for k in kinds}
    return contrasts({f"{label[k]} against {label[base]}": (per_seed.loc[k], per_seed.loc[base])
                      for k in kinds if k != base}, margin)


def peepholes_reading(table: pd.DataFrame, effects: pd.DataFrame, runs: pd.DataFrame, margin: float,
                      found: dict[str, dict] | None = None) -> list[str]:
    """``found``: `peephole_contrasts` of these records, where the caller has them (`render.write_tables`)."""
    col = PEEPHOLE
    kinds = list(dict.fromkeys(table[col]))
    c = peephole_contrasts(table, runs, margin) if found is None else found
    label = {k: group_label([col], [k]) for k in kinds}
    n_sets = runs.loc[runs["gates"] != "none", "gates"].nunique()
    claims = [f"{_capital(k)}, averaged over the {n_sets} gated cells per seed and paired by seed (Holm over the "
              f"{len(c)} comparisons): {compare(v, margin, 2)}." for k, v in c.items()]
    none = runs[runs["gates"] == "none"].pivot_table(index="seed", columns=col, values="test_acc")
    if len(none.columns) == len(kinds) and bool((none.nunique(axis=1) == 1).all()):
        claims.append(f"The gateless cell's runs are identical under all {len(kinds)} kinds (peepholes feed only "
                      "gates).")
    inter = interaction_table_of(runs, kinds, col)
    if not inter.empty:
        found = inter[inter["p_holm"] < ALPHA]
        pair = lambda x: f"{label[x['b']]} against {label[x['a']]}"  # noqa: E731
        if found.empty:
            big = inter.iloc[int(np.argmin(inter["p"].to_numpy()))]
            claims.append(f"No gate set's gap to the full cell is detectably different between peephole kinds "
                          f"({len(inter)} difference-in-difference contrasts, paired by seed, Holm; interactions.csv): "
                          f"the closest, `{SHORT.get(big['gates'], big['gates'])}` with {pair(big)}, changes it by "
                          f"{signed(big['change'], 2)} points (95% CI {signed(big['ci_low'], 2)} to "
                          f"{signed(big['ci_high'], 2)}; Holm {p_text(big['p_holm'])}).")
        for _, x in found.iterrows():
            claims.append(f"`{SHORT.get(x['gates'], x['gates'])}`'s gap to the full cell changes by "
                          f"{signed(x['change'], 2)} points with {pair(x)} (95% CI {signed(x['ci_low'], 2)} to "
                          f"{signed(x['ci_high'], 2)}; Holm {p_text(x['p_holm'])}; interactions.csv).")
    if not effects.empty:
        for k in kinds:
            e = effects[effects[col] == k]
            if len(e):
                claims += _effects_claims(e, f"with {label[k]}, ")
    return claims


def _params(table: pd.DataFrame, name: str, base: str) -> str:
    t = table.set_index(row_key(table))
    ratio = t.loc[name, "active_params"] / t.loc[base, "active_params"]
    return "" if abs(ratio - 1) < 0.05 else f", with {ratio:.2f}× the parameters"


def variants_reading(table: pd.DataFrame, effects: pd.DataFrame, runs: pd.DataFrame, margin: float) -> list[str]:
    """An experiment of named variants (odyssey, cells): each against the first, by verdict."""
    key = row_key(table)
    base = table.loc[table["verdict"] == "reference", key].iloc[0]
    claims = [f"The reference, {base}, reaches {mean_ci(table.set_index(key).loc[base])}."]
    for v in ("worse", "better", "equivalent", "inconclusive"):
        said = f"{v}, " if v in ("worse", "better") else ""
        claims += [f"{r[key]} against {base}: {said}{compare(_row_comparison(r), margin)}"
                   f"{_params(table, r[key], base)}." for _, r in table[table["verdict"] == v].iterrows()]
    return claims + _power(table)


def odyssey_reading(table, effects, runs, margin) -> list[str]:
    claims = variants_reading(table, effects, runs, margin)
    t = table.set_index("variant")
    known = [v for v in ("CIFG", "NP") if v in t.index]
    if known:
        said = ", ".join(f"{v} {t.loc[v, 'verdict']}" for v in known)
        claims.append(f"Greff et al. (2017) found {' and '.join(known)} harmless on their tasks; here the verdicts "
                      f"are: {said}.")
    return claims


GRANULARITY, EMBEDDINGS = "config.data.granularity", "config.model.embeddings"


def protocol_contrasts(table: pd.DataFrame, runs: pd.DataFrame, margin: float) -> dict[str, dict]:
    """The protocol's 2 x 2 design: each gate set's runs on the second training set against the first, for
    each kind of word vectors, then the second kind of vectors against the first, for each training set;
    paired by seed, Holm over all of them; {} unless both factors have 2 levels."""
    gran, emb = GRANULARITY, EMBEDDINGS
    acc = runs.set_index([gran, emb, "gates", "seed"])["test_acc"].sort_index()
    levels = {c: list(dict.fromkeys(table[c])) for c in (gran, emb)}
    if [len(v) for v in levels.values()] != [2, 2]:
        return {}
    (g0, g1), (e0, e1) = levels[gran], levels[emb]
    gates = list(dict.fromkeys(table["gates"]))
    word = {g: "the full cell" if g == FULL else "the gateless cell" if g == "none" else f"the {SHORT.get(g, g)} cell"
            for g in gates}
    name = {g0: group_label([gran], [g0]), g1: group_label([gran], [g1]),
            e0: group_label([emb], [e0]), e1: group_label([emb], [e1])}
    pairs = {}
    for e in (e0, e1):
        for g in gates:
            pairs[f"{name[g1]} instead of {name[g0].removeprefix('trained ')}, {word[g]} with {name[e]}"] = (
                acc.loc[(g1, e, g)], acc.loc[(g0, e, g)])
    for gr in (g0, g1):
        for g in gates:
            pairs[f"{name[e1]} instead of {name[e0]}, {word[g]} {name[gr]}"] = (acc.loc[(gr, e1, g)],
                                                                               acc.loc[(gr, e0, g)])
    return contrasts(pairs, margin)


def protocol_reading(table: pd.DataFrame, effects: pd.DataFrame, runs: pd.DataFrame, margin: float,
                     found: dict[str, dict] | None = None) -> list[str]:
    """``found``: `protocol_contrasts` of these records, where the caller has them (`render.write_tables`)."""
    c = protocol_contrasts(table, runs, margin) if found is None else found
    if not c:
        return generic_reading(table, effects, runs, margin)
    family = f"paired by seed, Holm over these {len(c)} contrasts"
    claims = [f"{_capital(k)} ({family}): {compare(v, margin)}." for k, v in c.items()]
    claims += [f"The gates' worth {group_label([GRANULARITY, EMBEDDINGS], [r[GRANULARITY], r[EMBEDDINGS]])} "
               f"(gateless against full cell, Holm within the table): {compare(_row_comparison(r), margin)}."
               for _, r in table[table["verdict"] != "reference"].iterrows()]
    return claims


def generic_reading(table: pd.DataFrame, effects: pd.DataFrame, runs: pd.DataFrame, margin: float) -> list[str]:
    base = table.loc[table["verdict"] == "reference", row_key(table)]
    return _by_verdict(table, margin, SHORT.get(base.iloc[0], base.iloc[0]) if len(base) else "the reference")


def cost_sentence(runs: pd.DataFrame, what: str = "runs") -> str:
    """What training the runs cost, from their records: the packs' wall times summed (each member
    records its pack's), in core-hours when the packs ran on one CPU thread each, on the CPU the
    records name; "" if a record predates the cost fields."""
    if runs.empty or "wall_seconds" not in runs or runs["wall_seconds"].isna().any():
        return ""
    hours = float((runs["wall_seconds"] / runs["pack_size"]).sum()) / 3600
    sizes = "/".join(str(int(s)) for s in sorted(runs["pack_size"].unique()))
    devices = set(runs["device"])
    summed = f"the packs' wall times summed, in packs of {sizes}"
    if devices == {"cpu"} and set(runs["threads"]) == {1}:
        cpus = ", ".join(sorted(set(runs["cpu_model"].dropna()))) or "CPU"
        return (f"Training the {len(runs)} {what} took {hours:.1f} core-hours on {cpus} ({summed}, one thread a "
                "pack, one pack a core): divide by the cores you give `ablation grid` for its wall time.")
    where = ", ".join(sorted(map(str, devices)))
    return f"Training the {len(runs)} {what} took {hours:.1f} hours on {where} ({summed})."


def gpu_reading(lines: list[dict]) -> str:
    """The GPU paragraph's figures, from `benchmarks/time_grid.py`'s JSON lines (results/gpu/): each
    timed grid, then, for a number of epochs timed on both devices, the GPU's wall time over the CPU
    cores' (a lower bound where the GPU's grid was stopped before it finished)."""
    def epochs(x: dict) -> int:  # the grid's --set, else the config's default (the lecture file sets none)
        return int(next((s.split("=")[1] for s in x["set"] if s.startswith("train.epochs=")), TrainConfig().epochs))

    def what(x: dict) -> str:
        where = "the GPU" if x["device"] == "cuda" else f"its {x['cpu_count']} CPU cores"
        grid = f"{epochs(x)} epoch{'s' if epochs(x) != 1 else ''} on {where} ({x['workers']} worker processes"
        if x["rc"] != 0:
            return f"{grid}) had not finished after {x['wall_seconds']:.0f} s (stopped there)"
        scan = f"{', '.join(x['scans'])} scan" + (", CUDA graphs" if x.get("cuda_graphs") else "")
        return (f"{grid}, {scan}) took {x['wall_seconds']:.1f} s, {x['complete']} of "
                f"{x['runs']} runs complete, mean test accuracy {x['mean_test_acc']:.1f}")

    if not lines:
        return ""
    done = [x for x in lines if x["rc"] == 0]
    about = next((x for x in done if x["gpu"]), done[0] if done else lines[0])
    torch = about["versions"]["torch"] if about.get("versions") else "?"
    fixed = sorted({s for x in lines for s in x["set"] if not s.startswith("train.epochs=")})
    text = (f"Timed by `benchmarks/time_grid.py` on one {about['gpu'] or 'GPU'} machine (torch {torch}, Triton "
            f"{about['triton']}), the {lines[0]['experiment']} grid's runs for {lines[0]['seeds']} seeds"
            + (f" (`{' '.join(fixed)}`)" if fixed else "") + ": " + "; ".join(map(what, lines)) + ".")
    for n in sorted({epochs(x) for x in lines}):
        cpu = [x for x in done if x["device"] == "cpu" and epochs(x) == n]
        for gpu in [x for x in lines if x["device"] == "cuda" and epochs(x) == n] if cpu else []:
            ratio = gpu["wall_seconds"] / cpu[0]["wall_seconds"]
            bound = "at least " if gpu["rc"] != 0 else ""
            how = " replaying CUDA graphs" if gpu.get("cuda_graphs") else ""
            text += f" For {n} epoch{'s' if n != 1 else ''} the GPU{how} took {bound}{ratio:.1f}× the CPU cores' time."
    return text


def bench_reading(lines: list[dict]) -> str:
    """The speed paragraph's figures, from `benchmarks/bench_grid.py --json` lines (results/bench/): the
    newest portable-numerics line, and the pack's step under `--fast-numerics` where one was timed."""
    newest = {x["numerics"]["numerics"]: x for x in lines}  # later lines replace earlier ones
    if "portable" not in newest:
        return ""
    p = newest["portable"]
    machine = f"{p['cores']}-core {p['numerics']['cpu_model']}"
    peep = "no" if p["peephole"] == "none" else p["peephole"]
    text = (f"Measured by `make bench` on a {machine}, portable numerics ({p['steps']} training steps, best of "
            f"{p['repeats']}; {peep} peepholes): (c) is {p['c_over_a']:.1f}× sequential `nn.LSTM` and "
            f"(b) {p['b_over_a']:.1f}×")
    if "c_one_call_over_autograd" in p:
        text += (f"; the whole step as one C++ call is {p['c_one_call_over_autograd']:.1f}× faster than the same "
                 f"kernels through autograd (`ABLATION_STEP=autograd`) and {p['c_fused_over_python']:.1f}× faster "
                 f"than torch's ops (`ABLATION_SCAN=python`) for the pack of 8, {p['b_one_call_over_autograd']:.1f}× "
                 f"and {p['b_fused_over_python']:.1f}× for a single model (medians of {p['scan_repeats']} "
                 "alternating repetitions)")
    elif "c_fused_over_python" in p:  # a line from before the one-call step
        text += (f"; the fused kernels (scan, matmuls, AdaGrad) make a whole step {p['c_fused_over_python']:.1f}× "
                 f"faster than torch's ops (`ABLATION_SCAN=python`) for the pack of 8 and "
                 f"{p['b_fused_over_python']:.1f}× for a single model (medians of {p['scan_repeats']} alternating "
                 "repetitions)")
    text += f". A step of the pack of 8 took {p['ms_per_batch']['c']:.1f} ms"
    if "fast" in newest:
        f = newest["fast"]
        text += f" with portable numerics and {f['ms_per_batch']['c']:.1f} ms with `--fast-numerics`"
    return text + "."


def _some(gates: list[str]) -> str:
    return _gate_list(gates) if gates else "no gate set"


def _gate_list(gates: list[str]) -> str:
    return ", ".join(SHORT.get(g, g) for g in gates) or "none"


def tuning_reading(tuned: pd.DataFrame, importance: pd.DataFrame, trials_per_set: int,
                   complete_trials: int) -> list[str]:
    """From `tune`'s files: the tuned table against the untuned one (tuned_table.csv), and what share of
    the dev-accuracy variance the gate set explains against the learning rate (fANOVA, importance.csv)."""
    t = tuned.set_index("gates")
    names = [g for g in t.index if g != FULL]
    worse = [g for g in names if t.loc[g, "verdict"] == "worse"]
    claims = [f"Tuned (each gate set's best-on-dev configuration of {trials_per_set} random-search trials, "
              f"retrained on {int(t['n'].min())} fresh seeds), the full cell reaches {mean_ci(t.loc[FULL])} and "
              f"{len(worse)} of {len(names)} gate sets are worse than it (Holm within the tuned table): "
              f"{_gate_list(worse)}."]
    if "untuned_mean" in t and t["untuned_mean"].notna().all():
        worse_untuned = [g for g in names if t.loc[g, "untuned_verdict"] == "worse"]
        test = ("the paired retraining below is that test" if "delta_change_p" in t else
                "nothing here tests whether a gate set's gap to the full cell changed under tuning")
        claims.append(f"Untuned, {len(worse_untuned)} of {len(names)} are worse ({_gate_list(worse_untuned)}). The "
                      f"tuned runs have other seeds than the untuned table, and two verdicts side by side are not a "
                      f"test of whether a gap changed: {test}.")
    if "delta_change_p" in t:  # paired: its tests join the secondary family (`family`)
        claims.insert(0, SECONDARY)
    if "delta_change" in t and t["delta_change"].notna().any():
        n = int(t["n_paired"].min())
        by = {v: [g for g in names if t.loc[g, "delta_change_verdict"] == v] for v in ("changed", "unchanged",
                                                                                         "inconclusive")}
        widest = max(names, key=lambda g: abs(t.loc[g, "delta_change"]))
        claims.append(f"Paired on the untuned table's seeds (n = {n}; Holm over the {len(names)} gate sets): tuning "
                      f"changed the gap to the full cell of {_some(by['changed'])}; left it unchanged within "
                      f"the margin (TOST) for {_some(by['unchanged'])}; inconclusive for "
                      f"{_some(by['inconclusive'])} (the largest change, {SHORT.get(widest, widest)}, "
                      f"{signed(t.loc[widest, 'delta_change'], 2)} points, 95% CI "
                      f"{signed(t.loc[widest, 'delta_change_ci_low'], 2)} to "
                      f"{signed(t.loc[widest, 'delta_change_ci_high'], 2)}).")
        better = [g for g in t.index if t.loc[g, "vs_default_verdict"] == "better"]
        claims.append(f"Against the default settings on the same seeds, tuning found a configuration detectably "
                      f"better for {_some(better)} (Holm over the {len(t)} gate sets).")
    share = importance.set_index("term")

    def pct(term: str) -> str:
        return f"{100 * share.loc[term, 'share']:.0f}% (± {100 * share.loc[term, 'std']:.0f})"

    claims.append(f"Over the {complete_trials} complete trials, fANOVA attributes {pct('gate set')} of the "
                  f"dev-accuracy variance to the gate set and {pct('learning rate')} to the learning rate "
                  f"({pct('forget bias')} to the forget bias, {pct('gate set x learning rate')} to the gate set x "
                  "learning rate interaction; ± the std over the forest's trees).")
    return claims


PROBE_BIN, PROBE_DISTANCE = "21-30", 10  # sentences long enough to look 10 tokens back, and many (~550)
CHECKPOINT_WORDS = {"init": "at initialisation", "epoch1": "after epoch 1", "best": "on the best-on-dev parameters"}


def probes_reading(grads: pd.DataFrame, order: list[str]) -> list[str]:
    """The gradient probe in words: for test sentences of `PROBE_BIN` tokens, the median over
    sentences of ||∂J/∂h_(T−d)|| / ||∂J/∂h_T|| at d = `PROBE_DISTANCE`, as a geometric mean
    over seeds with the lowest and highest seed, by checkpoint and row (the first group of a
    grouped experiment, as in the figure); [] without probes of format 2."""
    if grads.empty:
        return []
    key, cols = row_key(grads), group_columns(grads)
    group = ""
    if cols:
        first = grads[cols].astype(str).agg(", ".join, axis=1).iloc[0]
        group = f" ({group_label(cols, grads[cols].iloc[0].tolist())})"  # the group the sentences speak of
        grads = grads[grads[cols].astype(str).agg(", ".join, axis=1) == first]
    at = grads[(grads["lengths"] == PROBE_BIN) & (grads["distance"] == PROBE_DISTANCE)]
    if at.empty:
        return []
    n = int(at["n"].iloc[0])
    claims = [f"Gradient probes{group}, test sentences of {PROBE_BIN} tokens (n = {n}): the median over sentences "
              f"of ||∂J/∂h_(T−{PROBE_DISTANCE})|| / ||∂J/∂h_T||, {PROBE_DISTANCE} tokens before the last against "
              "the last, as a geometric mean over seeds [lowest seed, highest seed]."]
    for checkpoint, words in CHECKPOINT_WORDS.items():
        c = at[at["checkpoint"] == checkpoint]
        cells = []
        for name in [n for n in order if n in set(c[key])]:
            q = c.loc[c[key] == name, "q50"].to_numpy(float)
            cells.append(f"{SHORT.get(name, name)} {_ratio(q.mean())} [{_ratio(q.min())}, {_ratio(q.max())}]")
        if cells:
            claims.append(f"{_capital(words)}: " + "; ".join(cells) + ".")
    best = at[at["checkpoint"] == "best"]
    zero = (best.groupby(key)["zero"].sum() / best.groupby(key)["n"].sum()).reindex(order).dropna()
    dead = [f"{SHORT.get(n, n)} {100 * f:.0f}%" for n, f in zero.items() if f >= 0.01]
    if dead:
        claims.append(f"Sentences whose gradient {PROBE_DISTANCE} tokens back is exactly zero (on the best-on-dev "
                      "parameters): " + ", ".join(dead) + ".")
    return claims


def _ratio(log10: float) -> str:
    """A ratio from its log10; at the probes' float32 floor it is no gradient at all: 0."""
    return "0×" if log10 <= np.log10(np.finfo(np.float32).tiny) + 1 else f"{10 ** log10:.2g}×"


# The readings by the name an experiment's [report] table gives (core.config.READINGS lists the names).
READINGS = {"gates": gates_reading, "lecture": lecture_reading, "peepholes": peepholes_reading,
            "variants": variants_reading, "odyssey": odyssey_reading, "protocol": protocol_reading,
            "generic": generic_reading}
# The readings that test contrasts no table holds, and the function that computes them ({label: `contrasts`'
# dict}, in the page's order): `render.write_tables` writes them as contrasts.csv, `family` reads it back.
CONTRASTS = {"peepholes": peephole_contrasts, "protocol": protocol_contrasts}
