"""Tests for the rank statistics of the canary judge (services.analyzer.judge.statistics).

Covers mann_whitney_u against scipy.stats.mannwhitneyu (method="auto") on
seeded random samples of sizes 1..60 with and without ties, every
alternative, both the exact and the asymptotic branch, plus hand-worked cases;
hodges_lehmann's estimate against a brute-force median of pairwise
differences, its interval against hand-computed R ``wilcox.test`` values and,
on random data, against scipy by test inversion (a shift lies strictly inside
the interval exactly when the Mann-Whitney test of ``x - shift`` against
``y`` does not reject); and the IQR fence and NaN helpers.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats  # type: ignore[import-untyped]

from services.analyzer.judge.statistics import (
    CIMethod,
    MannWhitneyResult,
    handle_nans,
    hodges_lehmann,
    iqr_outliers_removed,
    mann_whitney_u,
    percentile,
)

pytestmark = pytest.mark.timeout(60)

REL = 1e-9


def _close(ours: float, theirs: float) -> bool:
    return ours == theirs or abs(ours - theirs) <= REL * abs(theirs)


def _sample(rng: random.Random, size: int, *, ties: bool, shift: float) -> list[float]:
    if ties:
        return [float(rng.randint(0, 6) + round(shift)) for _ in range(size)]
    return [rng.gauss(shift, 1.0) for _ in range(size)]


# --- Mann-Whitney U ---------------------------------------------------------------------------


def test_hand_worked_exact_case() -> None:
    # All of x below all of y: U = 0; exact P(U <= 0) = 1 / C(6, 3) = 1/20, two-sided 0.1.
    result = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert result.u == 0.0
    assert result.method == "exact"
    assert result.p_value == pytest.approx(0.1, rel=1e-12)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], alternative="less").p_value == pytest.approx(0.05, rel=1e-12)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], alternative="greater").p_value == pytest.approx(1.0)
    assert mann_whitney_u([4, 5, 6], [1, 2, 3]).u == 9.0


def test_hand_worked_tied_case() -> None:
    # x=[1,2,2], y=[2,3,4]: ranks 1 | 3 3 3 | 5 6, R1 = 1+3+3 = 7, U1 = 7 - 6 = 1, mu = 4.5.
    # One tie group of 3: sigma = sqrt(9/12 * (7 - 24/30)) = sqrt(4.65).
    # Two-sided: z = (max(1, 8) - 4.5 - 0.5) / sigma = 1.391217, p = 2 * (1 - Phi(z)) = 0.164160.
    result = mann_whitney_u([1, 2, 2], [2, 3, 4])
    assert result.u == 1.0
    assert result.method == "asymptotic"
    assert result.p_value == pytest.approx(
        2 * (1 - statistics.NormalDist().cdf(3 / math.sqrt(4.65))), rel=1e-12
    )
    assert result.p_value == pytest.approx(0.164160, abs=1e-6)
    # R's signed deviate: (U1 - mu + 0.5) / sigma for U1 below the mean.
    assert result.z == pytest.approx(-3 / math.sqrt(4.65), rel=1e-12)


def test_all_values_tied() -> None:
    result = mann_whitney_u([5, 5], [5, 5, 5])
    assert (result.u, result.p_value, result.z) == (3.0, 1.0, 0.0)
    assert stats.mannwhitneyu([5, 5], [5, 5, 5]).pvalue == 1.0


def test_agrees_with_scipy_on_random_samples() -> None:
    rng = random.Random(20240611)
    branches = {"exact": 0, "asymptotic": 0}
    worst = 0.0
    for case in range(700):
        if case % 3 == 0:  # small samples reach scipy's exact branch
            n_x, n_y = rng.randint(1, 8), rng.randint(1, 60)
        else:
            n_x, n_y = rng.randint(1, 60), rng.randint(1, 60)
        ties = case % 2 == 0
        x = _sample(rng, n_x, ties=ties, shift=0.0)
        y = _sample(rng, n_y, ties=ties, shift=rng.choice([0.0, 0.5, 2.0]))
        for alternative in ("two-sided", "less", "greater"):
            ours = mann_whitney_u(x, y, alternative=alternative)
            theirs = stats.mannwhitneyu(x, y, alternative=alternative, method="auto")
            assert _close(ours.u, float(theirs.statistic)), (x, y, alternative)
            assert _close(ours.p_value, float(theirs.pvalue)), (x, y, alternative, ours, theirs)
            branches[ours.method] += 1
            if theirs.pvalue > 0:
                worst = max(worst, abs(ours.p_value - theirs.pvalue) / theirs.pvalue)
    assert branches["exact"] > 300 and branches["asymptotic"] > 300
    assert worst < REL


@pytest.mark.parametrize("n_x, n_y", [(8, 8), (8, 9), (9, 8), (9, 9), (1, 60), (60, 1), (8, 60)])
def test_method_boundary_matches_scipy(n_x: int, n_y: int) -> None:
    # scipy's 'auto': asymptotic once both samples exceed 8 values, else exact unless there are ties.
    rng = random.Random(n_x * 100 + n_y)
    x = [rng.random() for _ in range(n_x)]
    y = [rng.random() + 0.2 for _ in range(n_y)]
    ours = mann_whitney_u(x, y)
    assert ours.method == ("asymptotic" if n_x > 8 and n_y > 8 else "exact")
    assert _close(ours.p_value, float(stats.mannwhitneyu(x, y).pvalue))
    exact = float(stats.mannwhitneyu(x, y, method="exact").pvalue)
    if ours.method == "exact":
        assert _close(ours.p_value, exact)


def test_tiny_p_values_keep_relative_accuracy() -> None:
    x = [float(i) for i in range(60)]
    y = [float(i) + 1000 for i in range(60)]
    ours = mann_whitney_u(x, y)
    theirs = float(stats.mannwhitneyu(x, y).pvalue)
    assert theirs < 1e-15
    assert _close(ours.p_value, theirs)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(-5, 5) | st.floats(-1e6, 1e6), min_size=1, max_size=25),
    st.lists(st.integers(-5, 5) | st.floats(-1e6, 1e6), min_size=1, max_size=25),
)
def test_property_matches_scipy(x: list[float], y: list[float]) -> None:
    ours = mann_whitney_u(x, y)
    theirs = stats.mannwhitneyu(x, y)
    assert _close(ours.u, float(theirs.statistic))
    assert _close(ours.p_value, float(theirs.pvalue))
    swapped = mann_whitney_u(y, x)
    assert swapped.u == len(x) * len(y) - ours.u
    assert swapped.p_value == pytest.approx(ours.p_value, rel=1e-12)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        mann_whitney_u([math.nan], [1.0])
    with pytest.raises(ValueError, match="alternative"):
        mann_whitney_u([1.0], [2.0], alternative="bigger")  # type: ignore[arg-type]


def test_result_is_a_json_struct() -> None:
    result = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert msgspec.json.decode(msgspec.json.encode(result), type=MannWhitneyResult) == result


# --- Hodges-Lehmann ---------------------------------------------------------------------------

# Hand-worked case: x = canary, y = baseline, no ties across the combined sample.
HL_X = [3.0, 5.0, 8.0, 10.0, 14.0]
HL_Y = [1.0, 2.0, 4.0, 6.0, 7.0]
# The 25 differences x[i] - y[j], sorted (D1..D25):
HL_DIFFS = [-4, -3, -2, -1, -1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 6, 6, 7, 7, 8, 8, 9, 10, 12, 13]


def test_hand_worked_interval_matches_r_exact_branch() -> None:
    """R: wilcox.test(x, y, conf.int = TRUE, conf.level = c) with m = n = 5, no ties, so exact.

    Null distribution of U for m = n = 5 (C(10, 5) = 252 arrangements, the
    standard Mann-Whitney table): P(U <= 1) = 2/252 = .0079,
    P(U <= 2) = 4/252 = .0159, P(U <= 3) = 7/252 = .0278,
    P(U <= 4) = 12/252 = .0476, P(U <= 5) = 19/252 = .0754.
    qwilcox(alpha/2) is the smallest q with P(U <= q) >= alpha/2 and R returns
    [D(q), D(mn + 1 - q)]:
      conf .90: alpha/2 = .05  -> q = 5 -> [D5, D21] = [-1, 8]
      conf .95: alpha/2 = .025 -> q = 3 -> [D3, D23] = [-2, 10]
      conf .98: alpha/2 = .01  -> q = 2 -> [D2, D24] = [-3, 12]
    The estimate is median(D) = D13 = 4.
    """
    assert sorted(a - b for a in HL_X for b in HL_Y) == HL_DIFFS
    assert hodges_lehmann(HL_X, HL_Y, 0.90) == (4.0, -1.0, 8.0)
    assert hodges_lehmann(HL_X, HL_Y, 0.95) == (4.0, -2.0, 10.0)
    assert hodges_lehmann(HL_X, HL_Y, 0.98) == (4.0, -3.0, 12.0)
    # R's p-value for the same data: W = U1 = 20, 2 * P(U <= 5) = 38/252.
    assert mann_whitney_u(HL_X, HL_Y).p_value == pytest.approx(38 / 252, rel=1e-12)


def test_hand_worked_interval_asymptotic_branch() -> None:
    """Kayenta's MannWhitney.scala / R's asymptotic branch on the same data.

    sigma = sqrt(m n (m + n + 1) / 12) = sqrt(275 / 12) = 4.7871 (no ties).
    The lower end is D(k) for the smallest k with (mn/2 - k - 0.5) / sigma <= z,
    i.e. k = ceil(12 - z sigma); the upper end D(k') with k' = ceil(13 + z sigma).
      conf .95: z sigma = 1.95996 * 4.7871 = 9.3826  -> k = 3, k' = 23 -> [-2, 10]
      conf .90: z sigma = 1.64485 * 4.7871 = 7.8741  -> k = 5, k' = 21 -> [-1, 8]
      conf .98: z sigma = 2.32635 * 4.7871 = 11.1365 -> k = 1, k' = 25 -> [-4, 13]
    At 98% the approximation is wider than the exact [-3, 12].
    """
    assert hodges_lehmann(HL_X, HL_Y, 0.95, method="asymptotic") == (4.0, -2.0, 10.0)
    assert hodges_lehmann(HL_X, HL_Y, 0.90, method="asymptotic") == (4.0, -1.0, 8.0)
    assert hodges_lehmann(HL_X, HL_Y, 0.98, method="asymptotic") == (4.0, -4.0, 13.0)


def test_small_samples_fall_back_to_the_full_range() -> None:
    # m = 2, n = 2: P(U <= 0) = 1/6 > .01, so qwilcox is 0 and R uses q = 1: [min, max] of the differences.
    assert hodges_lehmann([10.0, 11.0], [1.0, 2.0], 0.98) == (9.0, 8.0, 10.0)
    assert hodges_lehmann([3.0], [1.0], 0.98) == (2.0, 2.0, 2.0)


def test_constant_samples_collapse_the_interval() -> None:
    # Every difference is 3: the shift is known exactly, no noise needed (Kayenta adds Gaussian noise).
    assert hodges_lehmann([5.0, 5.0, 5.0], [2.0, 2.0], 0.98) == (3.0, 3.0, 3.0)


def test_estimate_is_the_median_of_pairwise_differences() -> None:
    rng = random.Random(7)
    for case in range(200):
        x = _sample(rng, rng.randint(1, 40), ties=case % 2 == 0, shift=1.0)
        y = _sample(rng, rng.randint(1, 40), ties=case % 2 == 0, shift=0.0)
        brute = statistics.median([a - b for a in x for b in y])
        for method in ("auto", "asymptotic"):
            estimate, lower, upper = hodges_lehmann(x, y, 0.95, method=method)
            assert estimate == pytest.approx(brute, rel=1e-12, abs=1e-12)
            assert lower <= estimate <= upper


@pytest.mark.parametrize("method", ["exact", "asymptotic"])
def test_interval_inverts_the_scipy_test(method: CIMethod) -> None:
    """A shift d strictly between two pairwise differences lies inside the interval
    exactly when scipy's Mann-Whitney test of x - d against y (same method) has p >= alpha.
    """
    rng = random.Random(99 if method == "exact" else 100)
    checked = 0
    for case in range(25 if method == "exact" else 60):
        ties = method == "asymptotic" and case % 2 == 0
        x = _sample(rng, rng.randint(2, 12), ties=ties, shift=0.7)
        y = _sample(rng, rng.randint(2, 12), ties=ties, shift=0.0)
        confidence = rng.choice([0.8, 0.9, 0.95, 0.98])
        _, lower, upper = hodges_lehmann(x, y, confidence, method=method)
        diffs = sorted({a - b for a in x for b in y})
        for left, right in itertools.pairwise(diffs):
            d = (left + right) / 2
            p = float(stats.mannwhitneyu([a - d for a in x], y, method=method).pvalue)
            assert (lower < d < upper) == (p >= (1 - confidence) * (1 - 1e-12)), (x, y, confidence, d, p)
            checked += 1
    assert checked > 400


def test_auto_method_follows_r() -> None:
    rng = random.Random(5)
    x = [rng.gauss(1, 1) for _ in range(49)]
    y = [rng.gauss(0, 1) for _ in range(30)]
    assert hodges_lehmann(x, y, 0.95) == hodges_lehmann(x, y, 0.95, method="exact")
    big = [*x, rng.gauss(1, 1)]  # 50 values: asymptotic
    assert hodges_lehmann(big, y, 0.95) == hodges_lehmann(big, y, 0.95, method="asymptotic")
    tied = [*x[:-1], x[0]]  # a tie: asymptotic
    assert hodges_lehmann(tied, y, 0.95) == hodges_lehmann(tied, y, 0.95, method="asymptotic")


def test_hodges_lehmann_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="confidence"):
        hodges_lehmann([1.0], [2.0], 1.0)
    with pytest.raises(ValueError, match="infinities"):
        hodges_lehmann([math.inf], [2.0], 0.9)
    with pytest.raises(ValueError, match="empty"):
        hodges_lehmann([1.0], [], 0.9)


# --- IQR fences and NaN strategies ------------------------------------------------------------


def test_percentile_is_numpy_linear() -> None:
    rng = random.Random(11)
    for _ in range(50):
        values = [rng.gauss(0, 10) for _ in range(rng.randint(1, 30))]
        for p in (0, 1, 25, 50, 75, 99, 100):
            assert percentile(values, p) == pytest.approx(float(stats.scoreatpercentile(values, p)), abs=1e-9)


def test_iqr_outliers_removed() -> None:
    values = [10.0, 11, 12, 13, 14, 15, 16, 17, 18, 19, 1000]
    # Q1 = 12.5, Q3 = 17.5, IQR = 5 -> fences [-2.5, 32.5] with k = 3; 1000 is out.
    assert iqr_outliers_removed(values, 3.0, reduce_sensitivity=False) == values[:-1]
    # Kayenta's reduced sensitivity widens the upper fence to the 99th percentile (901.9): 1000 still out.
    assert iqr_outliers_removed(values) == values[:-1]
    # 0..19 plus 200 and 300: Q1 = 5.25, Q3 = 15.75, upper fence 15.75 + 3 * 10.5 = 47.25 drops both;
    # the 99th percentile, 200 + 0.79 * 100 = 279, widens the fence so 200 stays.
    spread = [*map(float, range(20)), 200.0, 300.0]
    assert iqr_outliers_removed(spread, reduce_sensitivity=False) == spread[:-2]
    assert iqr_outliers_removed(spread) == spread[:-1]
    assert iqr_outliers_removed([]) == []
    with pytest.raises(ValueError):
        iqr_outliers_removed([1.0], 0)


def test_nan_strategies() -> None:
    values = [1.0, math.nan, 3.0]
    assert handle_nans(values, "remove") == [1.0, 3.0]
    assert handle_nans(values, "replace") == [1.0, 0.0, 3.0]
    with pytest.raises(ValueError):
        handle_nans(values, "keep")  # type: ignore[arg-type]
