"""The generated readings: wording that follows the verdicts, README markers, and the README
holding exactly what the code generates from the committed records."""

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from ablation.analysis import summary
from ablation.analysis.family import secondary_family
from ablation.analysis.readings import CONTRAST_COLUMNS, SECONDARY, compare, cost_sentence, tuning_reading
from ablation.analysis.render import (
    bullets,
    docs_blocks,
    fill_blocks,
    format_csv,
    index_block,
    page,
    read_blocks,
    readme_blocks,
)

ROOT = Path(__file__).resolve().parents[1]


def _c(diff, lo, hi, p, ph, verdict, tl=math.nan, th=math.nan):
    return {"diff": diff, "diff_ci_low": lo, "diff_ci_high": hi, "p_paired": p, "p_holm": ph,
            "tost_low": tl, "tost_high": th, "verdict": verdict}


def test_wording_follows_the_verdict():
    assert compare(_c(-3.1, -3.6, -2.6, 1e-4, 4e-4, "worse"), 0.5) == \
        "−3.1 points (95% CI −3.6 to −2.6; Holm p < 0.001)"
    assert compare(_c(0.01, -1.05, 1.07, 0.98, 0.98, "inconclusive"), 0.5) == \
        "+0.0 points, no detectable difference (95% CI −1.1 to +1.1; Holm p = 0.980)"
    assert compare(_c(-1.8, -3.1, -0.5, 0.017, 0.069, "inconclusive"), 0.5) == \
        "−1.8 points, not significant after Holm (95% CI −3.1 to −0.5; paired p = 0.017, Holm p = 0.069)"
    eq = compare(_c(-0.04, -0.3, 0.2, 0.7, 1.0, "equivalent", -0.26, 0.19), 0.5, 2)
    assert eq == "−0.04 points, equivalent within ±0.5 (90% CI −0.26 to +0.19)"
    for text in (eq, compare(_c(0.01, -1.05, 1.07, 0.98, 0.98, "inconclusive"), 0.5)):
        assert "same" not in text and "indistinguishable" not in text


def test_cost_sentence_sums_each_pack_once():
    # two packs of 2 (600 s and 1200 s: each member records its pack's time) and one of 1 (360 s)
    runs = pd.DataFrame({"wall_seconds": [600, 600, 1200, 1200, 360], "pack_size": [2, 2, 2, 2, 1],
                         "threads": 1, "device": "cpu", "cpu_model": "X"})
    assert cost_sentence(runs) == ("Training the 5 runs took 0.6 core-hours on X (the packs' wall times summed, "
                                   "in packs of 1/2, one thread a pack, one pack a core): divide by the cores you "
                                   "give `ablation grid` for its wall time.")
    gpu = cost_sentence(runs.assign(device="NVIDIA H200"))
    assert gpu.startswith("Training the 5 runs took 0.6 hours on NVIDIA H200")
    assert cost_sentence(runs.assign(wall_seconds=[600, None, 1200, 1200, 360])) == ""  # a record without the field


def test_tuning_reading_says_whether_the_verdicts_survive():
    tuned = pd.DataFrame({"gates": ["none", "input", "input+forget+output"], "mean": [80.0, 84.0, 85.0],
                          "ci_low": [79.0, 83.0, 84.5], "ci_high": [81.0, 85.0, 85.5], "n": 10,
                          "verdict": ["worse", "inconclusive", "reference"], "untuned_mean": [79.0, 83.5, 84.7],
                          "untuned_verdict": ["worse", "worse", "reference"]})
    imp = pd.DataFrame({"term": ["gate set", "learning rate", "forget bias", "gate set x learning rate"],
                        "share": [0.125, 0.5, 0.02, 0.1], "std": [0.03, 0.1, 0.01, 0.04]})
    claims = tuning_reading(tuned, imp, 24, 190)
    assert claims[0] == ("Tuned (each gate set's best-on-dev configuration of 24 random-search trials, retrained on "
                         "10 fresh seeds), the full cell reaches 85.0 [84.5, 85.5] and 1 of 2 gate sets are worse than "
                         "it (Holm within the tuned table): none.")
    assert claims[1].startswith("Untuned, 2 of 2 are worse (none, i). The tuned runs have other seeds")
    assert not any("τ" in c for c in claims)
    assert claims[2].endswith("fANOVA attributes 12% (± 3) of the dev-accuracy variance to the gate set and 50% (± 10) "
                              "to the learning rate (2% (± 1) to the forget bias, 10% (± 4) to the gate set x learning "
                              "rate interaction; ± the std over the forest's trees).")
    assert not any("survive" in c for c in claims)  # no inference from comparing two verdicts


def test_fill_blocks_replaces_only_its_markers():
    text = ("a\n<!-- table: results/x -->\nold\n<!-- /table -->\nb\n<!-- reading: results/x -->\n<!-- /reading -->\n"
            "<!-- reading: probes -->\nkeep\n<!-- /reading -->\n")
    out = fill_blocks(text, {("table", "results/x"): "T\n", ("reading", "results/x"): "R\n"})
    assert read_blocks(out) == {("table", "results/x"): "T\n", ("reading", "results/x"): "R\n",
                                ("reading", "probes"): "keep\n"}
    assert out.startswith("a\n") and "\nb\n" in out
    with pytest.raises(ValueError, match="no '<!-- table: results/y -->' or '<!-- reading: results/y -->' marker"):
        fill_blocks(text, {("table", "results/y"): "", ("reading", "results/y"): ""})


def test_table_command_fills_a_readme(tmp_path, monkeypatch):
    from _helpers import LECTURE, fake_grid

    from ablation import cli

    fake_grid(tmp_path / "res", {g: [80 + len(g) / 10 + s for s in (0.0, 0.3, -0.2)] for g in LECTURE})
    monkeypatch.chdir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- reading: res -->\n<!-- /reading -->\n")
    assert cli.main(["table", "res", "--readme", str(readme)]) == 0
    reading = read_blocks(readme.read_text())[("reading", "res")]
    assert reading.startswith("- Secondary to the lecture table's primary tests")  # generic: no [report]
    assert "\n- The gateless cell against i+f+o: worse, " in reading
    assert (tmp_path / "res" / "README.md").read_text().startswith("# res\n")  # the page
    readme.write_text("no markers\n")
    assert cli.main(["table", "res", "--readme", str(readme)]) == 2


# as the Makefile lists them
TABLES = ["lecture", "peepholes", "odyssey", "cells", "protocol", "fine", "lag", "mnist1d", "lm", "chorales",
          "tuned_paired"]


def test_readme_pages_and_docs_hold_what_the_records_generate(tmp_path, monkeypatch):
    """The README's blocks, every results directory's page and the docs' generated blocks are what
    `make tables` writes from the records, from any working directory: nothing can drift."""
    monkeypatch.chdir(tmp_path)  # nothing may depend on the working directory
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = read_blocks(text)
    dirs = [str(ROOT / "results" / d) for d in [*TABLES, "tuning"]]
    assert set(blocks) == {("table", "results/lecture"), ("reading", "results/lecture"), ("index", "results"),
                           summary.MARKER}
    across = summary.summary_table(ROOT / "results")
    assert blocks[summary.MARKER] == bullets(summary.reading(across)), "README is stale: run `make tables`"
    assert (ROOT / "results/summary/README.md").read_text(encoding="utf-8") == summary.page(across), \
        "results/summary/README.md is stale: run `make tables`"
    assert (ROOT / "results/summary/summary.csv").read_text(encoding="utf-8") == format_csv(across)
    generated = {kind: content for (kind, _), content in readme_blocks(ROOT / "results/lecture").items()}
    assert blocks[("table", "results/lecture")] == generated["table"], "README is stale: run `make tables`"
    assert blocks[("reading", "results/lecture")] == generated["reading"], "README is stale: run `make tables`"
    assert blocks[("index", "results")] == index_block(dirs)[("index", "results")], "README is stale"
    for d in [*TABLES, "tuning"]:
        page_file = ROOT / "results" / d / "README.md"
        assert page_file.read_text(encoding="utf-8") == page(ROOT / "results" / d), \
            f"results/{d}/README.md is stale: run `make tables`"
    for name, generated in docs_blocks(ROOT / "results").items():  # docs/statistics.md's counts the family
        held = read_blocks((ROOT / "docs" / name).read_text(encoding="utf-8"))
        for (kind, key), content in generated.items():
            assert held[(kind, key)] == content, f"docs/{name} block {key} is stale: run `make tables`"
    family = secondary_family(ROOT / "results")
    assert (ROOT / "results/secondary.csv").read_text(encoding="utf-8") == format_csv(family), \
        "results/secondary.csv is stale: run `make tables`"
    assert not {"results/lecture", "results/lag"} & set(family["table"])
    assert set(family["table"]) >= {f"results/{d}" for d in TABLES if d not in ("lecture", "lag")}


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 160 and max(map(len, lines)) <= 400
    first = "\n".join(lines[:60])
    assert "make reproduce" in first and "make test" in first


def test_probes_reading_by_hand():
    """Two seeds of two cells: the geometric mean over seeds of each run's median ratio at
    d = 10 in the 21-30 bin, the lowest and highest seed, and zero-gradient sentences."""
    from ablation.analysis.readings import probes_reading

    rows = []
    for seed, (full, none) in enumerate([(-1.0, -3.0), (-0.5, -40.0)], 1):
        for gates, q50, zero in (("input+forget+output", full, 0), ("none", none, 300 if seed == 2 else 0)):
            for checkpoint in ("init", "best"):
                rows.append({"gates": gates, "seed": seed, "checkpoint": checkpoint, "lengths": "21-30",
                             "distance": 10, "n": 500, "zero": zero, "q50": q50})
    text = " ".join(probes_reading(pd.DataFrame(rows), ["none", "input+forget+output"]))
    assert "(n = 500)" in text
    # i+f+o: 10^mean(-1, -0.5) = 0.18, seeds 0.1 and 0.32; none: 10^-21.5, and seed 2 at the float32 floor: 0
    assert "At initialisation: none 3.2e-22× [0×, 0.001×]; i+f+o 0.18× [0.1×, 0.32×]." in text
    assert "exactly zero (on the best-on-dev parameters): none 30%." in text
    assert probes_reading(pd.DataFrame(), ["none"]) == []


def test_committed_tables_are_honest():
    """Every committed table: intervals at least as wide as the t-interval of its own mean, std
    and n; p_holm is Holm over its p_paired; verdicts follow p_holm; no McNemar; every full
    gate grid has its effects.csv."""
    import numpy as np
    import pandas as pd
    from scipy import stats as sps

    from ablation.analysis.aggregate import experiment_for
    from ablation.analysis.stats import holm
    from ablation.core.spec import LECTURE_ORDER

    tables = sorted(ROOT.glob("results/*/table.csv"))
    assert len(tables) >= 5
    for path in tables:
        exp = experiment_for(path.parent)
        if exp is not None and exp.report.get("reading") in ("lag", "likelihood"):  # tests/test_lag_analysis.py,
            continue  # tests/test_likelihood.py: solve rates, log perplexities
        t = pd.read_csv(path)
        assert {"p_paired", "p_holm", "verdict"} <= set(t.columns) and not any("mcnemar" in c for c in t.columns)
        half = sps.t.ppf(0.975, t["n"] - 1) * t["std"] / np.sqrt(t["n"])
        wide = (t["ci_high"] - t["ci_low"] >= 2 * half - 2e-4) | (t["n"] < 2)  # CSV keeps 4 decimals; n = 1: none
        assert wide.all(), path
        p = t["p_paired"].dropna()
        assert np.allclose(t["p_holm"].dropna(), holm(p), atol=len(p) * 1e-4), path
        tested = t[t["verdict"] != "reference"]
        assert ((tested["p_holm"] < 0.05) == tested["verdict"].isin(["better", "worse"])).all(), path
        if "gates" in t and set(LECTURE_ORDER) <= set(t["gates"]) and (t["n"] >= 2).all():  # the 2^3 design
            effects = pd.read_csv(path.with_name("effects.csv"))
            cols = [c for c in t.columns if c.startswith("config.")]
            assert len(effects) == 7 * (len(t[cols].drop_duplicates()) if cols else 1), path


def test_reproduce_cost_by_hand(tmp_path):
    """One seed's pack of 8 retrained in 330 s: the lecture grid's 160 runs are 20 such packs, 1.8 core-hours."""
    from ablation.analysis.render import reproduce_cost

    assert reproduce_cost(tmp_path / "none", 160) == ""
    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text('{"pack_size": 8, "wall_seconds": 330.0, "seed": 1, "versions": {"git": '
                                    '"0123456789abcdef"}, "machine": {"cpu_model": "Test CPU"}}')
    text = reproduce_cost(tmp_path, 160)
    assert text.startswith("Retrained at commit 0123456 (results/bench/reproduce: seed 1's pack of 8 on Test CPU")
    assert "a pack takes 330 s, so the grid's 20 packs take about 1.8 core-hours today: 0.9 hours on 2 cores" in text


def test_gpu_reading_by_hand():
    """Each timed grid in order, and the ratio only for epochs timed on both devices: a lower bound
    ("at least") where the GPU's grid was stopped unfinished."""
    from ablation.analysis.readings import gpu_reading

    def line(device, epochs, rc, wall, **kw):
        return {"experiment": "lecture", "device": device, "rc": rc,
                "set": ["model.embeddings=random", f"train.epochs={epochs}"],
                "wall_seconds": wall, "workers": 5, "seeds": 5, "cpu_count": 16, "triton": "3.6.0",
                "runs": 40, "complete": 40 if rc == 0 else 0, "scans": ["triton" if device == "cuda" else "fused-cpp"],
                "gpu": "H200" if device == "cuda" else None, "mean_test_acc": 82.04,
                "versions": {"torch": "2.11.0+cu130"}, **kw}

    text = gpu_reading([line("cuda", 2, "timeout", 150.0), line("cpu", 2, 0, 100.0), line("cuda", 1, 0, 120.0)])
    assert text.startswith("Timed by `benchmarks/time_grid.py` on one H200 machine (torch 2.11.0+cu130, Triton 3.6.0)")
    assert "2 epochs on the GPU (5 worker processes) had not finished after 150 s (stopped there)" in text
    assert "2 epochs on its 16 CPU cores (5 worker processes, fused-cpp scan) took 100.0 s, 40 of 40" in text
    assert "mean test accuracy 82.0" in text and "1 epoch on the GPU (5 worker processes, triton scan)" in text
    assert text.endswith("For 2 epochs the GPU took at least 1.5× the CPU cores' time.")
    both = gpu_reading([line("cuda", 2, 0, 50.0), line("cpu", 2, 0, 100.0)])
    assert both.endswith("For 2 epochs the GPU took 0.5× the CPU cores' time.")
    assert gpu_reading([]) == ""


def test_bench_reading_by_hand():
    """The newest portable line's ratios, and the pack's step with --fast-numerics where timed."""
    from ablation.analysis.readings import bench_reading

    def line(mode, c_ms, **kw):
        return {"numerics": {"numerics": mode, "cpu_model": "AMD EPYC"}, "steps": 400, "repeats": 3, "scan_repeats": 5,
                "peephole": "none", "cores": 2, "ms_per_batch": {"a": 5.0, "b": 1.7, "c": c_ms}, "b_over_a": 3.02,
                "c_over_a": 7.07, **kw}

    old, new = line("portable", 9.0), line("portable", 5.78, c_fused_over_python=2.23, b_fused_over_python=2.64)
    text = bench_reading([old, new, line("fast", 7.56)])
    assert text.startswith("Measured by `make bench` on a 2-core AMD EPYC, portable numerics (400 training steps, "
                           "best of 3; no peepholes): (c) is 7.1× sequential `nn.LSTM` and (b) 3.0×; the fused")
    assert "2.2× faster than torch's ops" in text and "2.6× for a single model (medians of 5 alternating" in text
    assert text.endswith("A step of the pack of 8 took 5.8 ms with portable numerics and 7.6 ms with "
                         "`--fast-numerics`.")
    assert bench_reading([old]).endswith("(b) 3.0×. A step of the pack of 8 took 9.0 ms.")
    assert bench_reading([line("fast", 7.0)]) == ""
    one_call = line("portable", 1.7, c_fused_over_python=3.41, b_fused_over_python=2.9, c_one_call_over_autograd=2.04,
                    b_one_call_over_autograd=1.55)
    assert ("; the whole step as one C++ call is 2.0× faster than the same kernels through autograd "
            "(`ABLATION_STEP=autograd`) and 3.4× faster than torch's ops (`ABLATION_SCAN=python`) for the pack of 8, "
            "1.6× and 2.9× for a single model (medians of 5 alternating repetitions).") in bench_reading([one_call])


def test_tuning_reading_tests_the_change_when_paired():
    tuned = pd.DataFrame({"gates": ["none", "input", "input+forget+output"], "mean": [80.0, 84.0, 85.0],
                          "ci_low": [79.0, 83.0, 84.5], "ci_high": [81.0, 85.0, 85.5], "n": 20,
                          "verdict": ["worse", "inconclusive", "reference"], "untuned_mean": [79.0, 83.5, 84.7],
                          "untuned_verdict": ["worse", "worse", "reference"], "n_paired": 20,
                          "delta_change": [0.1, 0.8, math.nan], "delta_change_p": [0.4, 0.001, math.nan],
                          "delta_change_ci_low": [-0.2, 0.3, math.nan],
                          "delta_change_ci_high": [0.4, 1.3, math.nan],
                          "delta_change_verdict": ["unchanged", "changed", ""],
                          "vs_default_verdict": ["inconclusive", "inconclusive", "inconclusive"]})
    imp = pd.DataFrame({"term": ["gate set", "learning rate", "forget bias", "gate set x learning rate"],
                        "share": [0.125, 0.5, 0.02, 0.1], "std": [0.03, 0.1, 0.01, 0.04]})
    claims = tuning_reading(tuned, imp, 24, 190)
    assert claims[0] == SECONDARY  # paired, its tests join the secondary family; unpaired, they had no raw p
    assert ("Paired on the untuned table's seeds (n = 20; Holm over the 2 gate sets): tuning changed the gap to the "
            "full cell of i; left it unchanged within the margin (TOST) for none; inconclusive for no gate set (the "
            "largest change, i, +0.80 points, 95% CI +0.30 to +1.30).") in claims
    assert ("Against the default settings on the same seeds, tuning found a configuration detectably better for "
            "no gate set (Holm over the 3 gate sets).") in claims


NUMBER = r"([+−]?\d+\.\d+)"


def _printed(page_text: str, label: str) -> dict:
    """The numbers a page prints for one contrast (`readings.compare`'s words), each with its half unit
    of the last digit printed; its verdict read from the words."""
    from ablation.analysis.readings import _capital

    lines = [x for x in page_text.splitlines() if x.startswith(f"- {_capital(label)} (") or
             x.startswith(f"- {_capital(label)}, ")]
    assert len(lines) == 1, (label, lines)
    said = lines[0].split("): ", 1)[1]

    def num(pattern):
        m = re.search(pattern, said)
        if m is None:
            return None
        if m[1] == "<":
            return {"below": float(m[2])}
        text = m[m.lastindex].replace("−", "-")
        return {"value": float(text), "half": 0.5 * 10 ** -len(text.split(".")[1])}

    out = {"estimate": num(rf"^{NUMBER} points"), "ci_low": num(rf"95% CI {NUMBER} to"),
           "ci_high": num(rf"95% CI {NUMBER} to {NUMBER}"), "p_holm": num(r"Holm p (<|=) (\d\.\d+)"),
           "p": num(r"paired p (<|=) (\d\.\d+)"), "tost_low": num(rf"90% CI {NUMBER} to"),
           "tost_high": num(rf"90% CI {NUMBER} to {NUMBER}")}
    if "equivalent within" in said:
        out["verdict"] = "equivalent"
    elif "no detectable difference" in said or "not significant after Holm" in said:
        out["verdict"] = "inconclusive"
    else:
        out["verdict"] = "better" if out["estimate"]["value"] > 0 else "worse"
    return out


def _assert_prints(page_text: str, contrasts: pd.DataFrame) -> None:
    """Each row of a contrasts.csv is on the page, every number the page prints of it that row's (to the
    digits printed; the CSV keeps 4 decimals), its verdict the same."""
    for _, row in contrasts.iterrows():
        printed = _printed(page_text, row["label"])
        assert printed.pop("verdict") == row["verdict"], row["label"]
        shown = {k: v for k, v in printed.items() if v is not None}
        assert {"estimate", "p_holm"} <= set(shown), (row["label"], shown)
        for column, v in shown.items():
            if "below" in v:
                assert row[column] < v["below"] + 5e-5, (row["label"], column)
            else:
                assert abs(row[column] - v["value"]) <= v["half"] + 5e-5 + 1e-12, (row["label"], column, v)


@pytest.mark.parametrize("name, family", [("peepholes", "(Holm over the 2 comparisons)"),
                                          ("protocol", "Holm over these 8 contrasts")])
def test_committed_contrasts_are_what_the_pages_print(name, family):
    """results/<name>/contrasts.csv holds every contrast the page prints beyond its table, with the
    numbers it prints, and they are in the secondary family (results/secondary.csv), kind "contrast"."""
    import numpy as np

    from ablation.analysis.stats import holm

    text = (ROOT / "results" / name / "README.md").read_text(encoding="utf-8")
    contrasts = pd.read_csv(ROOT / "results" / name / "contrasts.csv")
    assert list(contrasts.columns) == CONTRAST_COLUMNS
    assert text.count(family) == len(contrasts) > 0  # every contrast the page prints has its row
    _assert_prints(text, contrasts)
    assert np.allclose(contrasts["p_holm"], holm(contrasts["p"]), atol=len(contrasts) * 1e-4)  # Holm over its rows
    family_rows = pd.read_csv(ROOT / "results/secondary.csv").query(f"table == 'results/{name}' and kind == 'contrast'")
    assert list(family_rows["label"]) == list(contrasts["label"])
    assert list(family_rows["p"]) == list(contrasts["p"])
    assert list(family_rows["p_holm_within"]) == list(contrasts["p_holm"])


def test_write_tables_writes_the_contrasts_the_page_prints(tmp_path):
    """A peepholes grid: write_tables writes contrasts.csv, whose numbers the page prints and the
    secondary family reads (kind "contrast"); a reading without contrasts leaves none stale."""
    from _helpers import LECTURE, fake_grid

    from ablation.analysis.render import write_tables

    out = tmp_path / "peep"
    for kind, shift in (("none", (0.0, 0.0, 0.0)), ("diagonal", (0.4, 0.1, 0.7))):
        fake_grid(out, {g: [80 + len(g) / 10 + s + d for s, d in zip((0.0, 0.3, -0.2), shift)] for g in LECTURE},
                  peephole=kind)
    gates = ", ".join(f'"{g}"' for g in LECTURE)
    (out / "experiment.toml").write_text(f'[grid]\n"model.peephole" = ["none", "diagonal"]\n"model.gates" = '
                                         f'[{gates}]\n"train.seed" = [1, 2, 3]\n[report]\nreading = "peepholes"\n')
    write_tables(out)
    contrasts = pd.read_csv(out / "contrasts.csv")
    assert list(contrasts["label"]) == ["diagonal peepholes against no peepholes"]
    assert contrasts.loc[0, "estimate"] == pytest.approx(0.4) and contrasts.loc[0, "n"] == 3
    _assert_prints((out / "README.md").read_text(encoding="utf-8"), contrasts)
    family = secondary_family(tmp_path)
    found = family[family["kind"] == "contrast"]
    assert list(found["label"]) == ["diagonal peepholes against no peepholes"]
    assert list(found["table"]) == ["results/peep"] and list(found["p_holm_within"]) == list(contrasts["p_holm"])
    (out / "experiment.toml").unlink()  # a generic reading: no contrasts, so no contrasts.csv
    write_tables(out)
    assert not (out / "contrasts.csv").exists()
