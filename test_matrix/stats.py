"""Paired statistics across seeds: is a difference between two configurations real?

Seed k of every configuration starts from the same initial weights and sees the same data
order (lib/training/seeding.py; the report checks the runs' start digests), so configurations are
compared pair by pair on the per-seed differences d_k = a_k - b_k, not as two independent
samples: the seed-to-seed noise that both runs share cancels.

Pure functions on plain numbers; scipy provides the distributions and the tests.
- paired(a, b): mean difference, 95% confidence interval (Student t), paired t-test and
  Wilcoxon signed-rank p-values, over the seeds present and usable in both.
- holm(pvalues): Holm's step-down adjustment over one family of comparisons.
- verdict(...): better / worse / no detectable difference at the 5% level.
- min_detectable_difference / seeds_needed: the two-sided paired t-test's power from the
  noncentral t distribution, with the spread of the differences seen in the sweep.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 100_000  # seeds_needed gives up (returns None) beyond this
BETTER, WORSE, NO_DIFFERENCE, TOO_FEW = "better", "worse", "no detectable difference", "too few pairs"


@dataclass(frozen=True)
class Paired:
    n: int                # seeds used (present, finite, in both)
    dropped: int          # seeds present in only one of the two, or unusable in one
    mean_a: float
    mean_b: float
    diff: float           # mean of a_k - b_k
    sd: float             # sample standard deviation (n-1) of the differences
    ci_low: float
    ci_high: float
    t_p: float            # two-sided paired t-test p-value; nan when n < 2
    wilcoxon_p: float     # two-sided Wilcoxon signed-rank p-value; nan when not computable


def pair_values(a: dict, b: dict) -> tuple[list, list, int]:
    """(a values, b values, dropped): the keys (seeds) both have with a finite value, in key order.

    A seed that only one side has, or whose value is missing/NaN on either side (a failed
    or unfinished run), is dropped from both and counted once.
    """
    usable = lambda v: v is not None and isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    both = sorted(k for k in set(a) & set(b) if usable(a[k]) and usable(b[k]))
    dropped = len(set(a) | set(b)) - len(both)
    return [float(a[k]) for k in both], [float(b[k]) for k in both], dropped


def _t_p(d: np.ndarray, sd: float) -> float:
    if len(d) < 2:
        return math.nan
    if sd == 0.0:
        # Every seed moved by exactly the same amount: no spread to test against. No
        # difference at all is certainly not significant; a constant non-zero one is.
        return 1.0 if d[0] == 0.0 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _wilcoxon_p(d: np.ndarray) -> float:
    if len(d) < 2 or not np.any(d != 0):
        return math.nan
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired(a: dict, b: dict, alpha: float = ALPHA) -> Paired:
    """Compare configuration a with b on the seeds both completed (a and b: seed -> value)."""
    xs, ys, dropped = pair_values(a, b)
    n = len(xs)
    if n == 0:
        return Paired(0, dropped, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    x, y = np.asarray(xs), np.asarray(ys)
    d = x - y
    diff = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if n > 1:
        half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        low, high = diff - half, diff + half
    else:
        low = high = math.nan
    return Paired(n, dropped, float(x.mean()), float(y.mean()), diff, sd, low, high, _t_p(d, sd), _wilcoxon_p(d))


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided exact Wilcoxon p-value n pairs can give (all signs alike): 2 / 2^n."""
    return min(1.0, 2.0 / 2 ** n)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order; NaN entries stay NaN and are not counted.

    The i-th smallest of m p-values (i from 0) is multiplied by m - i, then made
    non-decreasing along that order and capped at 1.
    """
    valid = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    order = sorted(valid, key=lambda i: pvalues[i])
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(diff: float, p_adjusted: float, higher_is_better: bool, alpha: float = ALPHA) -> str:
    """How a compares with b: better, worse, or no detectable difference at level alpha."""
    if p_adjusted is None or math.isnan(p_adjusted) or math.isnan(diff):
        return TOO_FEW
    if p_adjusted >= alpha or diff == 0.0:
        return NO_DIFFERENCE
    return BETTER if (diff > 0) == higher_is_better else WORSE


def _power(effect: float, n, alpha: float) -> np.ndarray:
    """Power at standardized effect |delta| / sd for pair counts n (an array), two-sided."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * np.sqrt(n)
    # The far tail P(T < -c) as P(T' > c) with T' of noncentrality -nc: the same number,
    # but scipy's nct.cdf returns NaN there for some large nc at df = 1.
    return stats.nct.sf(critical, df, nc) + stats.nct.sf(critical, df, -nc)



def power(delta: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs for a true mean difference delta."""
    if n < 2 or not sd > 0:
        return math.nan
    return float(_power(delta / sd, [n], alpha)[0])


@functools.lru_cache(maxsize=4096)
def _unit_mdd(n: int, alpha: float, target: float) -> float:
    high = 1.0
    while power(high, 1.0, n, alpha) < target:  # power grows with delta: bracket, then solve
        high *= 2
    return float(optimize.brentq(lambda delta: power(delta, 1.0, n, alpha) - target, 0.0, high, xtol=1e-13))


def min_detectable_difference(sd: float, n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest true mean difference the paired t-test detects with probability `target`.

    Power depends on delta / sd only, so this is sd times the value for sd = 1 (cached per n).
    """
    if n < 2 or not sd > 0 or math.isnan(sd):
        return math.nan
    return sd * _unit_mdd(int(n), alpha, target)


def seeds_needed(delta: float, sd: float, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """The fewest pairs (seeds) whose paired t-test detects `delta` with probability `target`.

    None when the spread is unknown (fewer than 2 pairs, or none at all) or more than
    MAX_SEEDS would be needed. Power grows with n; the search starts from the normal
    approximation and evaluates a window of n at once.
    """
    if not sd > 0 or math.isnan(sd) or not delta:
        return None
    effect = abs(delta) / sd
    if _power(effect, [MAX_SEEDS], alpha)[0] < target:
        return None
    z = stats.norm.ppf(1 - alpha / 2)
    guess = int(min(MAX_SEEDS, max(2, ((z + stats.norm.ppf(target)) / effect) ** 2 + z * z / 2)))
    low, high = max(2, guess - 8), min(MAX_SEEDS, guess + 8)
    while True:
        ns = np.arange(low, high + 1)
        enough = _power(effect, ns, alpha) >= target
        if not enough[-1]:          # window too low: move up
            low, high = high + 1, min(MAX_SEEDS, high + 2 * len(ns))
        elif enough[0] and low > 2:  # window too high: move down
            low, high = max(2, low - 2 * len(ns)), low
        else:
            return int(ns[np.argmax(enough)])
