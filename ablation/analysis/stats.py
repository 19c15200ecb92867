"""The statistics of the tables: pure functions over numpy arrays (in the manner of rliable), no
torch, no data frames.

The unit of replication is the seed; two rows of a table are paired by seed (same data order,
shared initial weights). At 5 seeds the percentile bootstrap covers a normal mean only about 83%
of the time (tests/test_stats.py), so intervals are Student t-intervals, with bootstrap-t and BCa
from 10 seeds on. Here: intervals, the paired t-test, Holm, Benjamini-Hochberg, TOST, power, the 2^3
factorial effects, fidelity to a reference table, the expected best of k trials, and for solve rates
and times to solve exact binomial and Newcombe intervals, McNemar's exact test, Kaplan-Meier medians
and the log-rank test (docs/statistics.md).
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from scipy import optimize, stats

from ablation.core.config import INTERVALS

CONFIDENCE = 0.95  # the intervals printed in every table
ALPHA = 0.05  # the level of every test (after Holm), and of the two one-sided TOST tests
POWER = 0.8  # the conventional power at which the footer's detectable difference is stated
MIN_BOOTSTRAP_N = 10  # below this the bootstrap's resampling distribution is too coarse to trust
N_BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same records give the same bounds
VERDICTS = ("better", "worse", "equivalent", "inconclusive", "reference")


def _array(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-d array of per-seed values, got shape {x.shape}")
    return x


def p_digits(p: float) -> str:
    """A p-value as printed: 3 decimals, but 4 near the 0.05 threshold, so that the digits show on
    which side it falls (0.0498, 0.0505, not 0.050); "<0.001" below 0.001."""
    if p < 0.001:
        return "<0.001"
    return f"{p:.4f}" if 0.045 <= p < 0.055 else f"{p:.3f}"


# --- intervals --------------------------------------------------------------------------------

def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student t-interval of the mean: mean ± t_{n-1, (1+c)/2} · s/√n; (nan, nan) for n < 2."""
    x = _array(values)
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean() - half), float(x.mean() + half)


def mean_interval(values, method: str = "t", confidence: float = CONFIDENCE, *,
                  n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Interval of the mean by ``method``: "t" (Student), "bootstrap-t" (studentized bootstrap,
    Efron & Tibshirani 1993 ch. 12) or "bca" (bias-corrected and accelerated, ibid. ch. 14).
    The bootstrap methods refuse fewer than MIN_BOOTSTRAP_N values."""
    if method not in INTERVALS:
        raise ValueError(f"interval method {method!r} unknown; valid: {', '.join(INTERVALS)}")
    x = _array(values)
    if method == "t":
        return t_interval(x, confidence)
    if len(x) < MIN_BOOTSTRAP_N:
        raise ValueError(f"a {method} interval needs at least {MIN_BOOTSTRAP_N} seeds, got {len(x)}; "
                         "use the t-interval (interval = \"t\")")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    if method == "bca":
        res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_boot,
                              method="BCa", rng=rng)
        return float(res.confidence_interval.low), float(res.confidence_interval.high)
    n, mean, se = len(x), x.mean(), x.std(ddof=1) / math.sqrt(len(x))
    sample = x[rng.integers(0, n, size=(n_boot, n))]  # (n_boot, n)
    se_star = sample.std(axis=1, ddof=1) / math.sqrt(n)
    keep = se_star > 0  # a resample of one repeated value has no t
    t_star = (sample.mean(axis=1)[keep] - mean) / se_star[keep]
    lo_q, hi_q = np.quantile(t_star, [1 - alpha, alpha])
    return float(mean - lo_q * se), float(mean - hi_q * se)


# --- tests ------------------------------------------------------------------------------------

def paired_test(a, b) -> tuple[float, float]:
    """Mean of a - b over paired seeds and the two-sided paired t-test p-value (nan for n < 2;
    with no spread in the differences, 1 if they are all 0, else 0)."""
    a, b = _array(a), _array(b)
    diff = a - b
    if len(diff) < 2:
        return (float(diff.mean()) if len(diff) else math.nan), math.nan
    if np.all(diff == diff[0]):  # no spread: t is undefined
        return float(diff[0]), (1.0 if diff[0] == 0 else 0.0)
    return float(diff.mean()), float(stats.ttest_rel(a, b).pvalue)


def _adjusted(pvalues, step) -> np.ndarray:
    """``step`` (the m finite p-values sorted ascending -> their adjusted values) applied in place of
    the p-values; NaNs stay NaN and do not count in m."""
    p = _array(pvalues)
    out = np.full_like(p, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if len(idx):
        order = idx[np.argsort(p[idx], kind="stable")]
        out[order] = step(p[order])
    return out


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjustment: the k-th smallest of m p-values becomes
    max_{j<=k} min(1, (m - j + 1) p_(j)). NaNs stay NaN and do not count in m."""
    return _adjusted(pvalues, lambda p: np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p)))


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini & Hochberg's (1995, J. R. Stat. Soc. B 57:289) step-up adjustment: the k-th smallest
    of m p-values becomes the q-value min_{j>=k} min(1, m p_(j) / j). Rejecting where q < α keeps the
    false discovery rate (the expected share of false ones among the rejections) at most α for
    independent or positively dependent tests (Benjamini & Yekutieli 2001). NaNs stay NaN and do not
    count in m."""
    def step(p):
        scaled = len(p) * p / np.arange(1, len(p) + 1)
        return np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])

    return _adjusted(pvalues, step)


def tost(diff, margin: float, alpha: float = ALPHA) -> dict:
    """Two one-sided t-tests of equivalence (Schuirmann 1987) on paired differences: equivalent
    when the (1 - 2α) t-interval of their mean lies inside ±margin. Returns the interval, the
    TOST p-value (the larger of the two one-sided p) and the decision."""
    d = _array(diff)
    if margin <= 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    n = len(d)
    if n < 2 or np.std(d) == 0:
        lo = hi = float(d.mean()) if n else math.nan
        inside = n >= 2 and -margin < lo < margin
        return {"low": lo, "high": hi, "p": 0.0 if inside else (math.nan if n < 2 else 1.0), "equivalent": inside}
    lo, hi = t_interval(d, 1 - 2 * alpha)
    se = d.std(ddof=1) / math.sqrt(n)
    p_low = stats.t.sf((d.mean() + margin) / se, n - 1)  # H0: mean <= -margin
    p_high = stats.t.cdf((d.mean() - margin) / se, n - 1)  # H0: mean >= +margin
    return {"low": lo, "high": hi, "p": float(max(p_low, p_high)), "equivalent": bool(-margin < lo and hi < margin)}


def verdict(diff: float, p_holm: float, equivalent: bool, alpha: float = ALPHA) -> str:
    """`better`/`worse` when the Holm-adjusted paired p < α, `equivalent` when TOST passes,
    `inconclusive` otherwise."""
    if not math.isnan(p_holm) and p_holm < alpha:
        return "better" if diff > 0 else "worse"
    return "equivalent" if equivalent else "inconclusive"


def paired_comparison(a, b, margin: float) -> dict:
    """a - b over paired seeds: Δ, its 95% t-interval, paired p, the std of the differences,
    the TOST 90% interval and decision, and the minimal detectable difference (80% power)."""
    a, b = _array(a), _array(b)
    d = a - b
    diff, p = paired_test(a, b)
    lo, hi = t_interval(d)
    sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    eq = tost(d, margin) if len(d) else {"low": math.nan, "high": math.nan, "p": math.nan, "equivalent": False}
    return {"diff": diff, "diff_ci_low": lo, "diff_ci_high": hi, "p_paired": p, "diff_std": sd,
            "tost_low": eq["low"], "tost_high": eq["high"], "p_tost": eq["p"], "equivalent": eq["equivalent"],
            "mdd": minimal_detectable_difference(len(d), sd), "n_pairs": len(d)}


def fieller(a, b, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The ratio of two paired means, mean(a) / mean(b), and its Fieller (1954) interval: the set of R
    for which mean(a) - R mean(b) (a mean of paired differences a_s - R b_s, so the pairs' covariance
    counts) is not rejected by the two-sided t-test at 1 - ``confidence``, n - 1 degrees of freedom.
    The bounds are nan where that set is not one bounded interval: when mean(b)'s own t-interval holds 0
    (a share of a gap that is not clearly a gap). With b constant it is the t-interval of a, over b."""
    a, b = _array(a), _array(b)
    n = len(a)
    ratio = float(a.mean() / b.mean()) if n and b.mean() != 0 else math.nan
    if n < 2:
        return ratio, math.nan, math.nan
    cov = np.cov(a, b, ddof=1) / n  # the variances and covariance of the two means
    t2 = stats.t.ppf((1 + confidence) / 2, n - 1) ** 2
    # (mean(a) - R mean(b))^2 <= t2 (v_aa - 2 R v_ab + R^2 v_bb): the quadratic q2 R^2 - 2 q1 R + q0 <= 0
    q2 = b.mean() ** 2 - t2 * cov[1, 1]
    q1 = a.mean() * b.mean() - t2 * cov[0, 1]
    q0 = a.mean() ** 2 - t2 * cov[0, 0]
    disc = q1 * q1 - q2 * q0
    if q2 <= 0 or disc < 0:
        return ratio, math.nan, math.nan
    return ratio, float((q1 - math.sqrt(disc)) / q2), float((q1 + math.sqrt(disc)) / q2)


def two_source_interval(x, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The mean of x (n seeds, N test sentences) and its interval counting both sources of variance:
    the seeds and the sampling of the test sentences. With x_si = μ + a_s + b_i + e_si (crossed random
    effects), Var(mean) = σa²/n + σb²/N + σe²/(nN), estimated from the two-way ANOVA mean squares
    (each component kept >= 0); the interval is mean ± t_{n-1} · √Var (n - 1 degrees of freedom: the
    seeds are the scarce source). For a paired comparison x_si is the difference of two runs'
    correctness (in points) on sentence i at seed s. Coverage: tests/test_stats.py."""
    x = np.asarray(x, dtype=float)
    n, N = x.shape
    mean = float(x.mean())
    if n < 2 or N < 2:
        return mean, math.nan, math.nan
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    resid = x - rows[:, None] - cols[None, :] + mean
    ms_rows, ms_cols = N * rows.var(ddof=1), n * cols.var(ddof=1)
    ms_e = float((resid**2).sum() / ((n - 1) * (N - 1)))
    var = (max(ms_rows - ms_e, 0.0) / N / n + max(ms_cols - ms_e, 0.0) / n / N + ms_e / (n * N))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * math.sqrt(var)
    return mean, mean - half, mean + half


# --- power ------------------------------------------------------------------------------------

def paired_power(effect: float, n: int, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs to detect a true mean difference
    ``effect`` when the differences have std ``sd``: under H1, t follows a noncentral t with
    n - 1 df and noncentrality effect·√n/sd."""
    if n < 2 or not sd > 0:
        return math.nan
    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    wrong_side = stats.nct.cdf(-crit, df, nc)  # negligible, and scipy returns nan far in this tail
    return float(stats.nct.sf(crit, df, nc) + (0.0 if math.isnan(wrong_side) else wrong_side))


def minimal_detectable_difference(n: int, sd: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true paired difference the two-sided paired t-test detects with ``power``
    at level α (n pairs, differences with std ``sd``); nan for n < 2 or no spread."""
    if n < 2 or not (isinstance(sd, float | int) and sd > 0 and math.isfinite(sd)):
        return math.nan
    # the normal approximation (z_{1-α/2} + z_power)·sd/√n is a lower bound; the t's heavier
    # tails need more, so bracket from there upward
    low = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd / math.sqrt(n)
    high = low
    while paired_power(high, n, sd, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda e: paired_power(e, n, sd, alpha) - power, low * 0.5, high, xtol=1e-10))


# --- the 2^3 factorial design of the gate table -----------------------------------------------

FACTORS = ("input", "forget", "output")
EFFECTS = tuple(" x ".join(c) for k in (1, 2, 3) for c in itertools.combinations(FACTORS, k))


def factorial_contrasts(cells: dict[tuple[bool, bool, bool], np.ndarray]) -> dict[str, np.ndarray]:
    """Each effect of a 2^3 design (`EFFECTS`) -> its per-seed contrast, (n seeds,).

    ``cells`` maps (input, forget, output) presence to the per-seed values of that gate set,
    every array in the same seed order. With factor codes s = ±1, an effect's per-seed contrast
    is (1/4) Σ_cells s_A·s_B·…·y (Montgomery, Design and Analysis of Experiments, §6.2): for a
    main effect, the mean with the gate minus the mean without it, averaged over the other two
    gates; for A x B, half the change of A's effect when B is added."""
    keys = list(itertools.product((False, True), repeat=3))
    missing = [k for k in keys if k not in cells]
    if missing:
        raise ValueError(f"a 2^3 design needs all 8 gate sets; missing {missing}")
    y = np.stack([_array(cells[k]) for k in keys])  # (8 cells, n seeds)
    signs = np.array([[1 if on else -1 for on in k] for k in keys])  # (8, 3)
    return {name: signs[:, [FACTORS.index(f) for f in name.split(" x ")]].prod(axis=1) @ y / 4 for name in EFFECTS}


def factorial_effects(cells: dict[tuple[bool, bool, bool], np.ndarray]) -> list[dict]:
    """Main effects and interactions of a 2^3 design, paired within seed (`factorial_contrasts`). Each
    effect: its mean over seeds, 95% t-interval, one-sample t-test p against 0 (= a paired test), and
    Holm's adjustment over the 7 effects."""
    rows = []
    for name, contrast in factorial_contrasts(cells).items():
        lo, hi = t_interval(contrast)
        _, p = paired_test(contrast, np.zeros_like(contrast))
        rows.append({"term": name, "effect": float(contrast.mean()), "ci_low": lo, "ci_high": hi, "p": p,
                     "n": len(contrast)})
    for row, ph in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = float(ph)
    return rows


# --- expected best of k trials (Dodge et al. 2019) ------------------------------------------------------------

def expected_max(values, ks) -> list[dict]:
    """The expected best of k trials drawn with replacement from these N values, and its std, for each k:
    with v_(1) <= ... <= v_(N), P(max = v_(i)) = (i/N)^k - ((i-1)/N)^k (Dodge et al. 2019, eq. 1). An
    estimate from the N trials run: it is biased low for k near N (Tang et al. 2020)."""
    v = np.sort(_array(values))
    n = len(v)
    out = []
    for k in ks:
        i = np.arange(1, n + 1)
        w = (i / n) ** k - ((i - 1) / n) ** k
        mean = float(w @ v)
        out.append({"k": int(k), "expected_max": mean, "std": float(np.sqrt(max(w @ v**2 - mean**2, 0.0)))})
    return out


# --- agreement with a reference table ---------------------------------------------------------

# Points within which a cell counts as reproducing the lecture's: about twice a cell's seed-to-seed
# std (0.6-0.8 points at 5 seeds), since the lecture reports one run per cell.
FIDELITY_TOLERANCE = 1.5


def fidelity(reference, ours, tolerance: float = FIDELITY_TOLERANCE) -> dict:
    """How well our numbers reproduce the reference's: rank agreement and distance."""
    r, o = _array(reference), _array(ours)
    keep = np.isfinite(r) & np.isfinite(o)
    r, o = r[keep], o[keep]
    if len(r) < 2:
        return {"n": int(len(r)), "kendall_tau": math.nan, "spearman_rho": math.nan,
                "mean_abs_diff": float(np.abs(r - o).mean()) if len(r) else math.nan,
                "within": int(np.sum(np.abs(r - o) <= tolerance)), "tolerance": tolerance}
    return {"n": int(len(r)), "kendall_tau": float(stats.kendalltau(r, o).statistic),
            "spearman_rho": float(stats.spearmanr(r, o).statistic),
            "mean_abs_diff": float(np.abs(r - o).mean()),
            "within": int(np.sum(np.abs(r - o) <= tolerance)), "tolerance": tolerance}


# --- proportions and times to an event (the long-lag grid: analysis/lag.py) -------------------------------------------

def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper & Pearson 1934) interval of a binomial proportion k/n: the Beta quantiles
    B((1-c)/2; k, n-k+1) and B((1+c)/2; k+1, n-k), 0 and 1 at the ends; (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's (1927) score interval of k/n: the p whose score test |p̂ - p| / √(p(1-p)/n) <= z,
    (p̂ + z²/2n ± z√(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n); (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    z = stats.norm.ppf((1 + confidence) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def newcombe(k1: int, n1: int, k2: int, n2: int, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """p1 - p2 of two independent proportions with Newcombe's (1998) hybrid score interval, his
    method 10: from the Wilson intervals (l1, u1) and (l2, u2), d - √((p1-l1)² + (u2-p2)²) to
    d + √((u1-p1)² + (p2-l2)²). It keeps its coverage near nominal at the small counts and the
    0s and 1s of solve rates, where the Wald interval collapses."""
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1, confidence), wilson(k2, n2, confidence)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def newcombe_paired(both: int, only_first: int, only_second: int, neither: int,
                    confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """p1 - p2 of two proportions measured on the same n pairs, p1 = (both + only_first) / n and
    p2 = (both + only_second) / n, so p1 - p2 = (only_first - only_second) / n, with Newcombe's
    (1998, Stat. Med. 17:2635) interval for paired data, his method 10: square-and-add of the
    Wilson intervals (l1, u1) and (l2, u2) with the correlation of the pair,
    d - √((p1-l1)² - 2φ(p1-l1)(u2-p2) + (u2-p2)²) to d + √((u1-p1)² - 2φ(u1-p1)(p2-l2) + (p2-l2)²),
    where φ = (AD - BC) / √(EFGH) of the 2x2 table (A both, B only first, C only second, D
    neither; E..H its margins), with his correction max(AD - BC - n/2, 0) in place of AD - BC when
    AD > BC, and φ = 0 when a margin is 0. (nan, nan, nan) for n = 0."""
    a, b, c, d_ = (int(x) for x in (both, only_first, only_second, neither))
    n = a + b + c + d_
    if n == 0:
        return math.nan, math.nan, math.nan
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson(a + b, n, confidence), wilson(a + c, n, confidence)
    margins = (a + b) * (c + d_) * (a + c) * (b + d_)
    cross = a * d_ - b * c
    phi = 0.0 if margins == 0 else (max(cross - n / 2, 0.0) if cross > 0 else cross) / math.sqrt(margins)
    lower = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    upper = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    diff = (b - c) / n
    return diff, max(diff - math.sqrt(max(lower, 0.0)), -1.0), min(diff + math.sqrt(max(upper, 0.0)), 1.0)


def mcnemar_exact(only_second: int, discordant: int) -> float:
    """The exact McNemar test (McNemar 1947 in its exact, conditional form): of the ``discordant``
    pairs where exactly one of the two solved, ``only_second`` are the second's; under the null of
    equal solve rates each discordant pair goes either way with probability 1/2, so p is the
    two-sided exact binomial test of only_second of discordant against 1/2
    (scipy.stats.binomtest); 1 when no pair is discordant."""
    if int(discordant) == 0:
        return 1.0
    return float(stats.binomtest(int(only_second), int(discordant), 0.5).pvalue)


def km_median(times, observed) -> float:
    """The Kaplan-Meier (1958) median time to the event: S(t) = Π_{t_i <= t} (1 - d_i / n_i) over the
    distinct event times t_i (d_i events among the n_i still at risk; a run censored at t_i is still
    at risk there), the median the first t at which S falls to 0.5 or below; nan when it never does
    (fewer than half the runs seen to solve)."""
    t, e = np.asarray(times, float), np.asarray(observed, bool)
    s = 1.0
    for u in np.unique(t[e]):
        s *= 1 - np.sum((t == u) & e) / np.sum(t >= u)
        if s <= 0.5 + 1e-12:
            return float(u)
    return math.nan


def logrank(t1, e1, t2, e2) -> tuple[float, float]:
    """The log-rank test (Mantel 1966) of two samples of times to an event (scipy.stats.logrank, on
    right-censored data): (z, two-sided p), z > 0 when the first sample has more events than
    expected, i.e. reaches it sooner. A degenerate comparison (no event in either sample, or every
    event at one time in both) shows no difference: (0, 1); an empty sample: (nan, nan)."""
    t1, t2 = np.asarray(t1, float), np.asarray(t2, float)
    e1, e2 = np.asarray(e1, bool), np.asarray(e2, bool)
    if not len(t1) or not len(t2):
        return math.nan, math.nan
    if not (e1.any() or e2.any()):
        return 0.0, 1.0
    x = stats.CensoredData(uncensored=t1[e1], right=t1[~e1])
    y = stats.CensoredData(uncensored=t2[e2], right=t2[~e2])
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # a zero variance warns before giving nan
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.logrank(x, y)
    if not math.isfinite(r.pvalue):
        return 0.0, 1.0
    return float(r.statistic), float(r.pvalue)
