"""The cross-task summary (ablation/analysis/summary.py): each gate's main effect and its effect in the
full cell, against hand computations on a small frame of values, their shares of the gateless-to-full gap
(Fieller), and the case of a gateless cell that did not learn (the committed results/summary against the
records: tests/test_readings.py)."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ablation.analysis import summary
from ablation.analysis.stats import fieller

GATES = ["none", "output", "input", "input+output", "forget", "input+forget", "forget+output", "input+forget+output"]
FULL = "input+forget+output"


def frame(rng_seed: int = 0, seeds: int = 5) -> pd.DataFrame:
    """Accuracy = 80 + 2 i + 1 f + 0.5 o + i f + noise, seeds x gate sets."""
    rng = np.random.default_rng(rng_seed)
    rows = {}
    for g in GATES:
        i, f, o = ("input" in g), ("forget" in g), ("output" in g)
        rows[g] = 80 + 2 * i + f + 0.5 * o + i * f + rng.normal(0, 0.3, seeds)
    return pd.DataFrame(rows, index=pd.Index(range(1, seeds + 1), name="seed"))


def test_main_effect_and_the_full_cell_by_hand():
    y = frame()
    rows = {r["gate"]: r for r in summary.task_rows(y, "toy", "accuracy")}
    with_f = y[[g for g in GATES if "forget" in g]].mean(axis=1)
    without_f = y[[g for g in GATES if "forget" not in g]].mean(axis=1)
    contrast, gap = (with_f - without_f).to_numpy(), (y[FULL] - y["none"]).to_numpy()
    r = rows["forget"]
    assert r["main"] == pytest.approx(contrast.mean())  # 1 + i f averaged over i: 1.5
    assert r["main"] == pytest.approx(1.5, abs=0.4)
    assert (r["main_share"], r["main_share_low"], r["main_share_high"]) == pytest.approx(fieller(contrast, gap))
    d = (y[FULL] - y["input+output"]).to_numpy()  # the full cell without the forget gate
    assert r["full"] == pytest.approx(d.mean()) and r["full"] == pytest.approx(2.0, abs=0.4)
    assert r["full_share"] == pytest.approx(d.mean() / gap.mean())
    assert r["main_p"] < 0.05 and r["note"] == "" and r["unit"] == "points"


def test_perplexity_is_shown_in_percent_and_shares_stay_on_the_log_scale():
    y = np.log(frame() * 3)  # any positive values: log perplexities
    r = summary.task_rows(y, "lm", "log perplexity")[0]
    raw = summary.task_rows(y, "lm", "log10 MSE")[0]  # the same numbers unconverted
    assert r["main"] == pytest.approx(100 * math.expm1(raw["main"]))
    assert r["main_share"] == pytest.approx(raw["main_share"]) and r["unit"] == "% perplexity"


def test_a_gateless_cell_that_did_not_learn_leaves_only_the_full_cell_effects():
    y = frame()
    y.loc[[1, 2, 4, 5], "none"] = np.nan  # no_learning: not averaged in
    rows = summary.task_rows(y, "toy", "accuracy")
    assert all(math.isnan(r["main"]) and math.isnan(r["main_share"]) and math.isnan(r["full_share"]) for r in rows)
    assert rows[0]["note"] == "the gateless cell completed 1 of 5 seeds: main effects and shares not estimable"
    assert rows[0]["full"] == pytest.approx((y[FULL] - y["forget+output"]).mean())
    table = pd.DataFrame(rows)
    assert "not estimable; each gate in the full cell, in points: input +" in summary.reading(table)[0]


def test_page_and_figure():
    table = pd.DataFrame(summary.task_rows(frame(), "toy", "accuracy")
                         + summary.task_rows(np.log10(frame(1) / 100), "adding, T = 200", "log10 MSE"))
    text = summary.page(table)
    assert "# Which gate matters where" in text and "| toy | input |" in text
    assert "detectably non-zero (Holm over the 7 terms): input, forget" in text
    assert isinstance(summary.plot_summary(table), Figure)
