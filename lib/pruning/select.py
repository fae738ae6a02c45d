"""Exact choice of the weights to keep, without a concatenated copy of all scores.

A `source` exposes the scores of the weights in scope chunk by chunk: `sizes` (elements
per tensor), `chunk` (elements per chunk, a multiple of 8), `keys(j, a, b)` (float32
scores of tensor j's flat positions [a, b), -inf at pruned positions) and
`sample(j, idx)` (the same at given positions). `find_cut` returns a Cut that keeps
exactly `keep` of the `alive` positions:

1. a random sample (seeded per update, so runs are repeatable) brackets the threshold
   in [lo, hi] with high probability;
2. one pass counts the keys above hi and stores the few keys inside [lo, hi];
3. the exact threshold is the right order statistic of the stored keys; equal keys at
   the threshold are broken by position (first ones pruned).

A missed bracket (rare) only costs another pass: the bracket is narrowed by counts,
bisecting the float order when the band would not fit in memory.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import torch

INF = float("inf")
FMAX = float(torch.finfo(torch.float32).max)
# bytes per element of the working set of one chunk while scoring and counting
# (key, score temporaries, two bool masks); checked against torch's profiler in tests
CHUNK_WORK_BYTES = 24


@dataclass
class Cut:
    """Prune every live position with key < tau, plus the first ties[(j, a)] positions with
    key == tau in chunk (j, a); or every live position when prune_all."""
    tau: float = -INF
    ties: dict = field(default_factory=dict)
    prune_all: bool = False
    passes: int = 0


class Ledger:
    """Running and peak bytes of the temporaries of one mask update."""

    def __init__(self):
        self.now = 0
        self.peak = 0

    def hold(self, n: int):
        self.now += int(n)
        self.peak = max(self.peak, self.now)

    def free(self, n: int):
        self.now -= int(n)


def chunks(source):
    for j, n in enumerate(source.sizes):
        for a in range(0, n, source.chunk):
            yield j, a, min(a + source.chunk, n)


def _ordered(x: float) -> int:
    i = struct.unpack("<i", struct.pack("<f", x))[0]
    return i if i >= 0 else -(i & 0x7FFFFFFF)


def _from_ordered(k: int) -> float:
    bits = k if k >= 0 else (-k) | 0x80000000
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def next_up(x: float) -> float:
    """The next float32 above x (x a float32 value)."""
    return INF if x == INF else _from_ordered(_ordered(x) + 1)


def next_down(x: float) -> float:
    return -INF if x == -INF else _from_ordered(_ordered(x) - 1)


def _bracket(source, keep, alive, *, sample_size, z, generator, ledger):
    total = sum(source.sizes)
    if total <= sample_size:
        return -FMAX, INF  # small enough to hold every key of the band at once
    live = []
    for j, n in enumerate(source.sizes):
        k = max(1, round(sample_size * n / total))
        idx = torch.randint(n, (k,), generator=generator)
        keys = source.sample(j, idx)
        live.append(keys[keys > -INF])
        ledger.hold(idx.numel() * 8 + keys.numel() * 4)
    live = torch.cat(live)
    nv = live.numel()
    if nv == 0:
        return -FMAX, INF
    frac = (alive - keep) / alive  # share of the live weights that goes
    rank = frac * nv
    sd = math.sqrt(nv * frac * (1.0 - frac)) + 1.0
    k_lo, k_hi = math.floor(rank - z * sd), math.ceil(rank + z * sd)
    lo = float(torch.kthvalue(live, k_lo).values) if k_lo >= 1 else -FMAX
    hi = float(torch.kthvalue(live, k_hi).values) if k_hi <= nv else INF
    return max(lo, -FMAX), hi


def _count(source, lo, hi, cap, ledger):
    """#keys > hi, #keys in [lo, hi], [(j, a, #band keys in chunk)], and the band keys per
    chunk [(j, a, keys)] (None when there are more than `cap`)."""
    n_gt = n_band = 0
    per_chunk, band_vals = [], []
    held = 0
    for j, a, b in chunks(source):
        ledger.hold((b - a) * CHUNK_WORK_BYTES)
        key = source.keys(j, a, b)
        gt = key > hi
        n_gt += int(torch.count_nonzero(gt))
        band = key.ge(lo).logical_and_(gt.logical_not_())
        nb = int(torch.count_nonzero(band))
        if nb:
            n_band += nb
            per_chunk.append((j, a, nb))
            if band_vals is not None and n_band <= cap:
                vals = key[band]
                band_vals.append((j, a, vals))
                held += vals.numel() * 4
                ledger.hold(vals.numel() * 4)
            else:
                band_vals = None
        ledger.free((b - a) * CHUNK_WORK_BYTES)
    ledger.free(held)
    return n_gt, n_band, per_chunk, band_vals


def _first(per_chunk, drop) -> dict:
    """Spread `drop` tied prunes over the chunks in position order."""
    ties = {}
    for j, a, c in per_chunk:
        if drop <= 0:
            break
        ties[(j, a)] = min(c, drop)
        drop -= ties[(j, a)]
    return ties


def _resolve(band_vals, n_band, r) -> Cut:
    """Keep the r largest of the band keys (0 < r < n_band)."""
    allv = torch.cat([v for _, _, v in band_vals])
    tau_t = torch.kthvalue(allv, n_band - r + 1).values  # the r-th largest: the smallest kept
    greater = int(torch.count_nonzero(allv > tau_t))
    equal = [(j, a, int(torch.count_nonzero(v == tau_t))) for j, a, v in band_vals]
    drop = sum(c for _, _, c in equal) - (r - greater)  # equal keys that go: the first ones
    return Cut(tau=float(tau_t), ties=_first([e for e in equal if e[2]], drop))


def find_cut(source, keep, alive, *, generator, sample_size=1 << 19, z=4.0, band_cap=None,
             ledger=None) -> Cut:
    """The Cut that leaves exactly `keep` of the `alive` live positions of `source`."""
    ledger = ledger or Ledger()
    if keep >= alive:
        return Cut()
    if keep <= 0:
        return Cut(prune_all=True)
    total = sum(source.sizes)
    cap = band_cap or max(sample_size, total // 64)
    lo, hi = _bracket(source, keep, alive, sample_size=sample_size, z=z, generator=generator, ledger=ledger)
    low, high = -FMAX, INF  # what the counts have proven about the threshold so far
    for passes in range(1, 200):
        n_gt, n_band, per_chunk, band_vals = _count(source, lo, hi, cap, ledger)
        r = keep - n_gt
        if (r < 0 and hi == INF) or (r > n_band and lo <= -FMAX):
            break  # fewer finite keys than live weights: NaN in the weights or the state
        if r < 0:  # the threshold is above the band
            low = next_up(hi)
            lo, hi = low, high
        elif r > n_band:  # below it
            high = next_down(lo)
            lo, hi = low, high
        elif band_vals is None and lo == hi:  # one value, many ties: counts suffice
            return Cut(tau=lo, ties=_first(per_chunk, n_band - r), passes=passes)
        elif band_vals is None:  # inside, but too many keys to hold: bisect the float order
            low, high = lo, hi
            lo = _from_ordered((_ordered(lo) + _ordered(min(hi, FMAX))) // 2 + 1)
            lo = min(lo, hi)
        else:
            if r == n_band:
                cut = Cut(tau=lo)
            elif r == 0:
                cut = Cut(tau=next_up(hi))
            else:
                cut = _resolve(band_vals, n_band, r)
            cut.passes = passes
            return cut
    raise RuntimeError("pruning threshold search did not converge; the scores are not finite numbers "
                       "(check the weights and the optimizer state for NaN)")
