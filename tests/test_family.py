"""The secondary family: every secondary table's tests read back from its CSV files (the contrasts a
reading tests beyond its table too: contrasts.csv), Benjamini-Hochberg over all of them together, the
lecture's (primary) and the lag study's (its own family) left out."""

import math

import pandas as pd
import pytest

from ablation.analysis.family import family_markdown, secondary_dirs, secondary_family

NAN = math.nan
FULL = "input+forget+output"


def _dir(root, name, reading=None, **csvs):
    d = root / name
    d.mkdir()
    if reading:
        (d / "experiment.toml").write_text(f'[report]\nreading = "{reading}"\n')
    for file, rows in csvs.items():
        pd.DataFrame(rows).to_csv(d / f"{file}.csv", index=False)
    return d


@pytest.fixture
def results(tmp_path):
    table = {"variant": ["vanilla", "X", "Y"], "diff_vs_full": [NAN, -1.0, 0.5], "p_paired": [NAN, 0.01, 0.04],
             "p_holm": [NAN, 0.02, 0.04], "verdict": ["reference", "worse", "worse"]}
    _dir(tmp_path, "a", table=table,  # no experiment file: a generic table, secondary
         effects={"term": ["input"], "effect": [1.5], "p": [0.03], "p_holm": [0.06]})
    _dir(tmp_path, "b", "peepholes", interactions={"gates": ["input"], "a": ["none"], "b": ["full"],
                                                   "change": [1.0], "p": [0.5], "p_holm": [0.5]})
    _dir(tmp_path, "tuning", tuned_table={
        "gates": [FULL, "input"], "delta_change": [NAN, 0.2], "delta_change_p": [NAN, 0.005],
        "delta_change_p_holm": [NAN, 0.005], "vs_default": [0.3, 0.1], "vs_default_p": [0.02, 0.2],
        "vs_default_p_holm": [0.04, 0.2]})
    tiny = {"gates": ["none", FULL], "diff_vs_full": [-3.0, NAN], "p_paired": [1e-6, NAN], "p_holm": [1e-6, NAN],
            "verdict": ["worse", "reference"]}
    _dir(tmp_path, "lecture", "lecture", table=tiny)  # the primary family
    _dir(tmp_path, "lag", "lag", table=tiny)  # a study with its own family
    _dir(tmp_path, "single")  # no table
    return tmp_path


def test_family_by_hand(results):
    assert [d.name for d in secondary_dirs(results)] == ["a", "b", "tuning"]
    f = secondary_family(results)
    assert list(f["table"]) == ["results/a"] * 3 + ["results/b"] + ["results/tuning"] * 3
    assert list(f["kind"]) == ["comparison", "comparison", "effect", "interaction", "tuning change",
                               "tuning vs default", "tuning vs default"]
    assert list(f["label"]) == ["X against vanilla", "Y against vanilla", "input",
                                "gap of i to i+f+o, full against none", "change of the gap of i to i+f+o",
                                "i+f+o tuned against default settings", "i tuned against default settings"]
    assert list(f["p_holm_within"]) == [0.02, 0.04, 0.06, 0.5, 0.005, 0.04, 0.2]
    # m = 7; sorted 0.005, 0.01, 0.02, 0.03, 0.04, 0.2, 0.5 times 7/rank: 0.035, 0.035, 0.0467, 0.0525,
    # 0.056, 0.233, 0.5 (each already no larger than those after it)
    assert list(f["q_bh_all"]) == pytest.approx([0.035, 0.056, 0.0525, 0.5, 0.035, 7 * 0.02 / 3, 7 * 0.2 / 6])
    assert list(f["discovery"]) == [True, False, False, False, True, True, False]
    # the lecture's p = 1e-6 would have been rank 1 of 8, lowering every q: it is not in the family


def test_family_in_words(results):
    text = family_markdown(secondary_family(results))
    assert text.startswith("7 secondary tests in `results/secondary.csv` (by kind: comparison 2, effect 1, "
                           "interaction 1, tuning change 1, tuning vs default 2; by table: a 3, b 1, tuning 3). "
                           "Benjamini-Hochberg over all 7 together finds 3 discoveries at q < 0.05:\n\n")
    assert "- a, comparison: X against vanilla, −1.00 points (p = 0.010, q = 0.035)\n" in text
    assert "- tuning, tuning vs default: i+f+o tuned against default settings, +0.30 points (p = 0.020, q = 0.0467)\n" \
        in text
    # Holm within its table: X (0.02), the tuning change (0.005), i+f+o against its defaults (0.04) and Y (0.04)
    assert text.endswith("Holm within each table finds 4 of the 7; 0 are found by Benjamini-Hochberg only and 1 by "
                         "Holm within its table only.\n")


def test_no_secondary_table(tmp_path):
    assert secondary_family(tmp_path).empty
    assert family_markdown(secondary_family(tmp_path)) == "No secondary table has been written yet.\n"


def test_contrasts_join_the_family(tmp_path):
    """contrasts.csv (the contrasts a reading tests beyond its table) is read as kind "contrast"."""
    _dir(tmp_path, "p", "peepholes", contrasts={
        "label": ["diagonal peepholes against no peepholes", "full peepholes against no peepholes"],
        "estimate": [0.17, -0.1], "ci_low": [0.04, -0.67], "ci_high": [0.29, 0.47], "p": [0.0226, 0.6557],
        "p_holm": [0.0452, 0.6557], "verdict": ["better", "inconclusive"]})
    assert [d.name for d in secondary_dirs(tmp_path)] == ["p"]
    f = secondary_family(tmp_path)
    assert list(f["kind"]) == ["contrast", "contrast"]
    assert list(f["label"]) == ["diagonal peepholes against no peepholes", "full peepholes against no peepholes"]
    assert list(f["estimate"]) == [0.17, -0.1] and list(f["p_holm_within"]) == [0.0452, 0.6557]
    assert list(f["q_bh_all"]) == pytest.approx([0.0452, 0.6557])  # m = 2: 0.0226 x 2/1, 0.6557 x 2/2
    assert family_markdown(f).startswith("2 secondary tests in `results/secondary.csv` (by kind: contrast 2; "
                                         "by table: p 2).")
