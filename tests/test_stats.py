"""The statistics module: each function on a hand-computed case, bad inputs, and the
coverage of the intervals simulated (the percentile bootstrap fails where the t-interval holds)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from ablation.analysis import stats

T_2_975 = 4.302652729911275  # Student t, 2 df, 97.5% quantile (tables: 4.303)
T_2_95 = 2.919985580355516  # Student t, 2 df, 95% quantile (tables: 2.920)


def test_t_interval_hand_computed():
    # [1, 2, 3]: mean 2, s = 1, n = 3: 2 ± 4.3027 / √3
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == (pytest.approx(2 - T_2_975 / math.sqrt(3)), pytest.approx(2 + T_2_975 / math.sqrt(3)))
    assert stats.t_interval([84.0] * 5) == (84.0, 84.0)
    assert all(math.isnan(v) for v in stats.t_interval([85.0]))
    assert stats.mean_interval([1.0, 2.0, 3.0]) == (lo, hi)  # "t" is the default method


def test_bootstrap_intervals_need_ten_values():
    with pytest.raises(ValueError, match="at least 10 seeds, got 5"):
        stats.mean_interval([1.0, 2, 3, 4, 5], "bca")
    with pytest.raises(ValueError, match="at least 10 seeds"):
        stats.mean_interval([1.0, 2, 3, 4, 5], "bootstrap-t")
    with pytest.raises(ValueError, match="valid: t, bootstrap-t, bca"):
        stats.mean_interval([1.0, 2, 3], "percentile")
    x = np.arange(20.0)  # mean 9.5, se 1.32: all three intervals about ±2.8 around 9.5
    t = stats.mean_interval(x, "t")
    for method in ("bootstrap-t", "bca"):
        lo, hi = stats.mean_interval(x, method)
        assert lo < 9.5 < hi and abs((hi - lo) - (t[1] - t[0])) < 1.0
        assert stats.mean_interval(x, method) == (lo, hi)  # fixed seed: same bounds every time


def test_paired_t_test_hand_computed():
    # differences 1, 2, 3: mean 2, sd 1, t = 2√3 with 2 df; P(|T| > t) = 1 - t/√(2 + t²) = 0.0742
    diff, p = stats.paired_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert diff == 2.0
    assert p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-9)
    assert stats.paired_test([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)
    assert stats.paired_test([2.0, 3.0], [1.0, 2.0]) == (1.0, 0.0)


def test_holm_step_down_monotone_capped():
    # m = 3 (the NaN does not count): 0.01·3 = 0.03; 0.03·2 = 0.06; 0.04·1 = 0.04 -> raised to 0.06
    p = stats.holm([0.01, 0.04, 0.03, math.nan])
    assert p[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(p[3])
    assert list(stats.holm([0.5, 0.6])) == [1.0, 1.0]  # capped at 1
    assert list(stats.holm([0.2])) == [0.2]  # one test: unchanged
    assert len(stats.holm([])) == 0


def test_benjamini_hochberg_step_up_hand_computed():
    # m = 5 (the NaN does not count); sorted 0.005, 0.01, 0.03, 0.04, 0.5 times m/rank:
    # 0.025, 0.025, 0.05, 0.05, 0.5, each the min of itself and those above it
    q = stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005, math.nan, 0.5])
    assert q[[0, 1, 2, 3, 5]] == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5]) and math.isnan(q[4])
    # step-up: 0.01·3/1 = 0.03 and 0.02·3/2 = 0.03 fall to the largest's 0.021·3/3 (Holm keeps 0.03)
    assert stats.benjamini_hochberg([0.01, 0.02, 0.021]) == pytest.approx([0.021] * 3)
    assert list(stats.benjamini_hochberg([0.2])) == [0.2]  # one test: unchanged
    assert list(stats.benjamini_hochberg([0.7, 0.7])) == [0.7, 0.7]  # ties share their q
    assert len(stats.benjamini_hochberg([])) == 0 and all(map(math.isnan, stats.benjamini_hochberg([math.nan])))


def test_benjamini_hochberg_agrees_with_scipy():
    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 93):
        p = np.concatenate([rng.uniform(0, 1, m), rng.uniform(0, 0.01, m // 3)])
        q = stats.benjamini_hochberg(p)
        assert q == pytest.approx(sps.false_discovery_control(p, method="bh"), abs=1e-12)
        assert (q >= p).all() and (q <= 1).all()
        order = np.argsort(p)
        assert (np.diff(q[order]) >= -1e-15).all()  # monotone in p
        assert (q <= stats.holm(p) + 1e-15).all()  # never stricter than Holm
    with_nan = np.array([0.04, math.nan, 0.001, 0.3])
    q = stats.benjamini_hochberg(with_nan)
    assert q[[0, 2, 3]] == pytest.approx(sps.false_discovery_control(with_nan[[0, 2, 3]])) and math.isnan(q[1])


def test_tost_hand_computed():
    # differences -0.1, 0, 0.1: mean 0, sd 0.1; 90% interval 0 ± 2.92·0.1/√3 = ±0.1686
    d = [-0.1, 0.0, 0.1]
    half = T_2_95 * 0.1 / math.sqrt(3)
    e = stats.tost(d, margin=0.5)
    assert (e["low"], e["high"]) == (pytest.approx(-half), pytest.approx(half)) and e["equivalent"]
    # TOST p: the larger one-sided p, t = (0 ± 0.5)/(0.1/√3) with 2 df
    assert e["p"] == pytest.approx(sps.t.sf(0.5 / (0.1 / math.sqrt(3)), 2))
    assert not stats.tost(d, margin=0.15)["equivalent"]  # 0.1686 > 0.15
    assert not stats.tost([1.0, 1.2, 1.1], margin=0.5)["equivalent"]
    with pytest.raises(ValueError, match="margin must be > 0"):
        stats.tost(d, margin=0)


def test_verdicts():
    assert stats.verdict(+1.0, 0.01, False) == "better"
    assert stats.verdict(-1.0, 0.049, True) == "worse"
    assert stats.verdict(0.1, 0.5, True) == "equivalent"
    assert stats.verdict(0.1, 0.5, False) == "inconclusive"
    assert stats.verdict(0.1, math.nan, False) == "inconclusive"
    c = stats.paired_comparison([85.0, 86.0, 84.0], [84.9, 86.1, 84.0], margin=0.5)
    assert c["diff"] == pytest.approx(0.0) and c["equivalent"] and c["n_pairs"] == 3


def test_power_and_minimal_detectable_difference():
    # large n: the normal approximation (z_.975 + z_.8)·sd/√n = 2.8016/100
    assert stats.minimal_detectable_difference(10_000, 1.0) == pytest.approx(2.80159 / 100, rel=1e-3)
    # n = 5 pairs: t_{4,.975} = 2.776 and the noncentral t needs noncentrality 3.761 = d·√5,
    # so d = 1.682 sd (above the normal approximation's 2.80/√5 = 1.253: t has heavier tails)
    mdd = stats.minimal_detectable_difference(5, 1.0)
    assert mdd == pytest.approx(1.682, abs=1e-3)
    assert stats.paired_power(mdd, 5, 1.0) == pytest.approx(0.8, abs=1e-6)
    assert stats.minimal_detectable_difference(5, 2.0) == pytest.approx(2 * mdd)  # scales with sd
    # simulated: paired t-tests at that true difference reject about 80% of the time
    rng = np.random.default_rng(1)
    d = rng.normal(mdd, 1.0, size=(20_000, 5))
    p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
    assert np.mean(p < 0.05) == pytest.approx(0.8, abs=0.012)
    assert math.isnan(stats.minimal_detectable_difference(1, 1.0))
    assert math.isnan(stats.minimal_detectable_difference(5, 0.0))


def test_factorial_effects_hand_computed():
    # y = 80 + a·i + 1·f + 0.5·o + 0.3·i·f (0/1 indicators), the input gate's worth a varying
    # by seed (2.0 - 0.1, 2.0, 2.0 + 0.1). Main effect of i = mean with i - mean without =
    # a + 0.3·P(f) = a + 0.15; of f = 1 + 0.3/2 = 1.15; of o = 0.5. i x f = half the change of
    # i's effect when f is added = 0.3/2 = 0.15; every other interaction 0.
    a = np.array([1.9, 2.0, 2.1])
    seed = np.array([0.0, 0.7, -0.4])  # a seed's offset cancels in every contrast
    cells = {(i, f, o): 80 + seed + a * i + f + 0.5 * o + 0.3 * i * f
             for i in (False, True) for f in (False, True) for o in (False, True)}
    rows = {r["term"]: r for r in stats.factorial_effects(cells)}
    assert list(rows) == ["input", "forget", "output", "input x forget", "input x output",
                          "forget x output", "input x forget x output"]
    assert rows["input"]["effect"] == pytest.approx(2.15)
    half = T_2_975 * 0.1 / math.sqrt(3)  # the per-seed contrasts 2.05, 2.15, 2.25 have sd 0.1
    assert (rows["input"]["ci_low"], rows["input"]["ci_high"]) == (pytest.approx(2.15 - half),
                                                                   pytest.approx(2.15 + half))
    assert rows["forget"]["effect"] == pytest.approx(1.15) and rows["output"]["effect"] == pytest.approx(0.5)
    assert rows["input x forget"]["effect"] == pytest.approx(0.15)
    for term in ("input x output", "forget x output", "input x forget x output"):
        assert rows[term]["effect"] == pytest.approx(0.0, abs=1e-12)
    assert rows["input"]["p"] < 0.01 and rows["input"]["p_holm"] >= rows["input"]["p"]
    ps = [r["p"] for r in rows.values()]
    assert [r["p_holm"] for r in rows.values()] == pytest.approx(list(stats.holm(ps)))
    del cells[(True, True, True)]
    with pytest.raises(ValueError, match="all 8 gate sets"):
        stats.factorial_effects(cells)


def _percentile_bootstrap(x: np.ndarray, rng, n_boot: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap the aggregator used before (one interval per row of x)."""
    idx = rng.integers(0, x.shape[1], size=(n_boot, x.shape[1]))
    means = x[:, idx].mean(axis=2)  # (reps, n_boot)
    return np.quantile(means, 0.025, axis=1), np.quantile(means, 0.975, axis=1)


@pytest.mark.parametrize("n", [5, 20])
def test_t_interval_coverage_and_percentile_bootstrap_undercoverage(n):
    """4000 normal samples of size n (true mean 0): the 95% t-interval covers 93-97% of the
    time (binomial sd of the estimate 0.34%); at n = 5 the percentile bootstrap does not."""
    rng = np.random.default_rng(2026)
    x = rng.normal(0.0, 1.0, size=(4000, n))
    half = sps.t.ppf(0.975, n - 1) * x.std(axis=1, ddof=1) / math.sqrt(n)
    lo, hi = x.mean(1) - half, x.mean(1) + half
    assert stats.t_interval(x[0]) == (pytest.approx(lo[0]), pytest.approx(hi[0]))  # the same interval
    assert 0.93 <= np.mean((lo < 0) & (0 < hi)) <= 0.97
    if n == 5:
        blo, bhi = np.concatenate([np.stack(_percentile_bootstrap(c, rng)) for c in np.split(x, 8)], axis=1)
        assert np.mean((blo < 0) & (0 < bhi)) < 0.93  # about 0.83


def test_expected_max_by_hand():
    """Values 1, 2, 3: k = 1 is the mean; k = 2 draws with replacement: P(max=1) = 1/9, P(2) = 3/9, P(3) = 5/9."""
    rows = stats.expected_max([3.0, 1.0, 2.0], [1, 2])
    assert rows[0]["expected_max"] == pytest.approx(2.0) and rows[0]["std"] == pytest.approx((2 / 3) ** 0.5)
    assert rows[1]["expected_max"] == pytest.approx((1 + 6 + 15) / 9)
    assert rows[1]["std"] == pytest.approx(((1 + 12 + 45) / 9 - (22 / 9) ** 2) ** 0.5)


def test_p_values_near_the_threshold_show_the_digits_that_decide():
    assert stats.p_digits(0.0498) == "0.0498" and stats.p_digits(0.0505) == "0.0505"
    assert stats.p_digits(0.2) == "0.200" and stats.p_digits(0.0004) == "<0.001"


def test_two_source_interval_covers_at_the_sizes_we_have():
    """Simulated x_si = μ + a_s + b_i + e_si with seed, sentence and residual spread of the size the records
    show (a two-run paired difference of 0/±1 per sentence is noisier still): the 95% interval covers μ close
    to 95% of the time at 5 and at 20 seeds, where the seeds-only t-interval falls short."""
    rng = np.random.default_rng(0)
    for n in (5, 20):
        hits = seeds_only = 0
        reps = 300
        for _ in range(reps):
            x = 0.3 + rng.normal(0, 0.5, (n, 1)) + rng.normal(0, 3.0, (1, 400)) + rng.normal(0, 2.0, (n, 400))
            _, lo, hi = stats.two_source_interval(x)
            hits += lo <= 0.3 <= hi
            lo, hi = stats.t_interval(x.mean(axis=1))
            seeds_only += lo <= 0.3 <= hi
        assert 0.92 <= hits / reps <= 0.985, (n, hits / reps)
        assert seeds_only / reps < hits / reps  # the sentences' share of the variance, which it ignores


def test_fieller_by_hand_and_its_coverage():
    """With a constant denominator Fieller's interval is the t-interval of a over b; with correlated pairs
    of the size of a gate's effect against the gateless-to-full gap it covers the true ratio about 95% of
    the time at 5 seeds; a denominator whose own interval holds 0 gives no bounded interval."""
    a = np.array([1.0, 1.4, 0.8, 1.2, 1.1])
    r, lo, hi = stats.fieller(a, np.full(5, 4.0))
    t_lo, t_hi = stats.t_interval(a)
    assert (r, lo, hi) == pytest.approx((a.mean() / 4, t_lo / 4, t_hi / 4))
    assert math.isnan(stats.fieller(a, np.array([1.0, -1.0, 2.0, -2.0, 0.5]))[1])
    rng = np.random.default_rng(1)
    hits, reps = 0, 2000
    for _ in range(reps):
        gap = rng.normal(10.0, 2.0, 5)
        effect = 0.4 * gap + rng.normal(0, 0.8, 5)  # true ratio 0.4, the pairs correlated through the gap
        _, lo, hi = stats.fieller(effect, gap)
        hits += lo <= 0.4 <= hi
    assert 0.93 <= hits / reps <= 0.97
