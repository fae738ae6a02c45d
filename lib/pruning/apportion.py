"""Whole-number pruned counts per layer (per-layer scope and bitter4)."""
from __future__ import annotations

import math


def depth_fractions(sizes, sparsity, cap=0.95) -> list:
    """bitter4's layer sparsities: s_i = min(cap, c * s * (0.7 + 0.6 i/(L-1))), with c chosen so
    that sum(n_i s_i) = s * N (the global count still meets s)."""
    n_layers = len(sizes)
    if n_layers == 0 or sparsity == 0:
        return [0.0] * n_layers
    if n_layers == 1:
        return [float(sparsity)]
    cap = max(cap, sparsity)  # beyond the cap no rescale could reach s: every layer gets s
    grow = [0.7 + 0.6 * i / (n_layers - 1) for i in range(n_layers)]
    goal = sparsity * sum(sizes)

    def total(c):
        return sum(n * min(cap, c * sparsity * g) for n, g in zip(sizes, grow))

    lo, hi = 0.0, cap / (0.7 * sparsity)  # total(hi) = cap * N >= goal
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if total(mid) < goal:
            lo = mid
        else:
            hi = mid
    return [min(cap, hi * sparsity * g) for g in grow]


def apportion(desired, total, lower, upper) -> list:
    """Integers c_i with sum == total, lower_i <= c_i <= upper_i, each as close to desired_i
    as the sum allows (largest remainder). Lower bounds are the counts already pruned:
    masks are monotone, so a layer never gets a count below what it has lost."""
    counts = [min(max(math.floor(d), lo), up) for d, lo, up in zip(desired, lower, upper)]
    diff = total - sum(counts)
    while diff:
        if diff > 0:
            room = [i for i, c in enumerate(counts) if c < upper[i]]
            if not room:
                break
            i = max(room, key=lambda j: (desired[j] - counts[j], -j))
            counts[i] += 1
            diff -= 1
        else:
            room = [i for i, c in enumerate(counts) if c > lower[i]]
            if not room:
                break
            i = max(room, key=lambda j: (counts[j] - desired[j], j))
            counts[i] -= 1
            diff += 1
    return counts
