"""test_matrix.stats against hand-computed cases and scipy called directly on the same numbers."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from test_matrix import stats


def test_paired_matches_hand_computation_with_df_2():
    # d = [1, 2, 3]: mean 2, sd 1, t = 2 * sqrt(3) on 2 degrees of freedom, where the t
    # distribution has the closed form F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    r = stats.paired({1: 11.0, 2: 12.0, 3: 13.0}, {1: 10.0, 2: 10.0, 3: 10.0})
    assert (r.n, r.dropped) == (3, 0)
    assert r.diff == pytest.approx(2.0) and r.sd == pytest.approx(1.0)
    t = 2 * math.sqrt(3)
    assert r.t_p == pytest.approx(2 * (0.5 - t / (2 * math.sqrt(2 + t * t))), rel=1e-9)
    u = 0.975  # the df = 2 quantile in closed form: (2u - 1) / sqrt(2u(1 - u))
    half = (2 * u - 1) / math.sqrt(2 * u * (1 - u)) / math.sqrt(3)
    assert (r.ci_low, r.ci_high) == pytest.approx((2 - half, 2 + half), rel=1e-9)
    assert (r.mean_a, r.mean_b) == (12.0, 10.0)


def test_wilcoxon_exact_hand_cases():
    # five positive differences: only the all-plus sign pattern (and its mirror) is as extreme
    same_sign = stats.paired({k: 11.0 + k for k in range(5)}, {k: 10.0 for k in range(5)})
    assert same_sign.wilcoxon_p == pytest.approx(2 / 32)
    assert stats.wilcoxon_floor(5) == pytest.approx(2 / 32)
    # d = [1, -2, 3, 4, 5]: W- = 2; P(W <= 2) counts the rank subsets {}, {1}, {2}: 3 / 32
    d = [1.0, -2.0, 3.0, 4.0, 5.0]
    mixed = stats.paired(dict(enumerate(d)), dict.fromkeys(range(5), 0.0))
    assert mixed.wilcoxon_p == pytest.approx(6 / 32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_agrees_with_scipy_called_directly(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(97.0, 0.3, 7)
    b = a - 0.2 + rng.normal(0, 0.2, 7)
    r = stats.paired(dict(enumerate(a)), dict(enumerate(b)))
    assert r.t_p == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
    assert r.wilcoxon_p == pytest.approx(sps.wilcoxon(a, b).pvalue, rel=1e-12)
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_unpaired_and_failed_seeds_are_dropped_pairwise_and_counted():
    a = {1: 97.0, 2: 96.0, 3: 98.0, 4: None, 5: 97.5}          # seed 4 failed
    b = {1: 96.0, 2: 95.5, 3: float("nan"), 4: 96.0, 6: 90.0}   # seed 3 NaN, seed 6 only in b
    xs, ys, dropped = stats.pair_values(a, b)
    assert (xs, ys) == ([97.0, 96.0], [96.0, 95.5])
    assert dropped == 4  # seeds 3, 4, 5, 6
    r = stats.paired(a, b)
    assert (r.n, r.dropped) == (2, 4) and r.diff == pytest.approx(0.75)


def test_degenerate_inputs():
    empty = stats.paired({1: 1.0}, {2: 1.0})
    assert empty.n == 0 and empty.dropped == 2 and math.isnan(empty.t_p)
    one = stats.paired({1: 2.0}, {1: 1.0})
    assert one.n == 1 and math.isnan(one.t_p) and math.isnan(one.ci_low)
    identical = stats.paired({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0})
    assert identical.t_p == 1.0 and math.isnan(identical.wilcoxon_p)
    assert stats.verdict(identical.diff, identical.t_p, True) == stats.NO_DIFFERENCE
    assert stats.verdict(math.nan, math.nan, True) == stats.TOO_FEW


def test_holm_hand_case_and_order():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = stats.holm([0.2, math.nan, 0.001, 0.9])
    assert math.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.4) and adjusted[2] == pytest.approx(0.003) and adjusted[3] == pytest.approx(0.9)
    rng = np.random.default_rng(3)
    p = list(rng.uniform(0, 0.2, 12))
    adj = stats.holm(p)
    order = np.argsort(p)
    assert all(np.diff(np.asarray(adj)[order]) >= 0)  # adjusted p-values keep the raw order
    assert all(a >= r for a, r in zip(adj, p)) and max(adj) <= 1.0


def test_verdict_follows_metric_direction():
    assert stats.verdict(0.5, 0.01, higher_is_better=True) == stats.BETTER
    assert stats.verdict(0.5, 0.01, higher_is_better=False) == stats.WORSE   # perplexity went up
    assert stats.verdict(-0.5, 0.01, higher_is_better=False) == stats.BETTER
    assert stats.verdict(0.5, 0.05, higher_is_better=True) == stats.NO_DIFFERENCE


def _direct_power(delta, sd, n, alpha=0.05):
    df, nc = n - 1, delta * math.sqrt(n) / sd
    c = sps.t.ppf(1 - alpha / 2, df)
    return 1.0 - sps.nct.cdf(c, df, nc) + sps.nct.cdf(-c, df, nc)


@pytest.mark.parametrize("sd,n", [(0.3, 5), (1.0, 3), (0.05, 20)])
def test_min_detectable_difference_has_80_percent_power(sd, n):
    mdd = stats.min_detectable_difference(sd, n)
    assert _direct_power(mdd, sd, n) == pytest.approx(0.8, abs=1e-9)
    assert _direct_power(0.99 * mdd, sd, n) < 0.8


def test_power_with_two_pairs_where_scipy_cdf_fails():
    # df = 1: nct.cdf(-c) is NaN for some noncentralities; the power must still be a number
    mdd = stats.min_detectable_difference(1.0, 2)
    assert stats.power(mdd, 1.0, 2) == pytest.approx(0.8, abs=1e-9)
    assert 1.0 - sps.nct.cdf(sps.t.ppf(0.975, 1), 1, mdd * math.sqrt(2)) == pytest.approx(0.8, abs=1e-6)


def test_seeds_needed_matches_direct_search_and_published_sample_sizes():
    # one-sample / paired t-test sample sizes at alpha 0.05 two-sided, power 0.8 (Cohen's
    # d = 1 -> 10 pairs, d = 0.5 -> 34 pairs, as standard power tables give)
    assert stats.seeds_needed(1.0, 1.0) == 10
    assert stats.seeds_needed(0.5, 1.0) == 34
    for delta, sd in ((0.2, 0.28), (0.5, 2.0), (0.1, 0.05)):
        n = stats.seeds_needed(delta, sd)
        direct = next(k for k in range(2, 100000) if _direct_power(delta, sd, k) >= 0.8)
        assert n == direct
    assert stats.seeds_needed(1e-6, 10.0) is None          # beyond MAX_SEEDS
    assert stats.seeds_needed(0.2, math.nan) is None       # spread unknown
