"""Exact choice of the weights to keep, without a concatenated copy of all scores.

A `source` exposes the scores of the weights in scope chunk by chunk: `sizes` (elements
per tensor), `chunk` (elements per chunk, a multiple of 16), `floor` (pruned positions
score at most this: -inf, or 0 for scores that are never negative, where a pruned
weight's 0 needs no extra pass to mark it), `keys(j, a, b)` (float32 scores of tensor
j's flat positions [a, b)) and
`sample(j, start, stride)` (the same at positions start, start + stride, ...). `find_cut` returns a Cut that keeps
exactly `keep` of the `alive` positions:

1. a strided sample at a random offset (seeded per update: repeatable) brackets the threshold
   in [lo, hi] with high probability;
2. one pass counts the keys above hi and records the few keys inside [lo, hi] with
   their positions; with `commit`, the same pass already prunes every key below lo, so
   no second pass over the weights is needed;
3. the band's keys are ranked exactly; equal keys at the threshold are broken by
   position (first ones pruned), and the band's losers are pruned by position.

A bracket missed on the high side only costs another pass. Committing below lo is
irreversible, so lo sits 6 standard deviations of the sample quantile low (odds of a
miss about 1e-9 per update); should it still miss, the band is kept whole and the
update ends `overshoot` weights short (reported, and far inside the SPEC's 0.1% of N).
Without commit, a missed bracket is narrowed by counts, bisecting the float order when
the band would not fit in memory.

Speed notes (CPU): torch's comparisons written into float buffers and float sums run
several times faster than its bool masks with count_nonzero/masked_select, whose
per-element branches mispredict on random masks; numpy's bool comparisons, counts and
flatnonzero are faster still on a chunk in cache, so the counting pass uses them on
CPU (torch's float flags only for the commit) and `positions` elsewhere.
"""
from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field

import torch

INF = float("inf")
FMAX = float(torch.finfo(torch.float32).max)
ROW = 16
# bytes per element of one chunk's working set while scoring and counting (key, score
# temporaries, two float buffers); checked against torch's profiler in tests
CHUNK_WORK_BYTES = 24


class NeedExact(Exception):
    """The threshold lies at or below a source's floor: score pruned positions -inf instead."""


@dataclass
class Cut:
    """Prune every live position with key < tau, the positions drop_flat[j] (ascending,
    within tensor j), and the first ties[(j, a)] positions with key == tau in chunk (j, a);
    or every live position when prune_all. Everything below `committed` is pruned already.
    `drop` gives drop_flat chunk by chunk: {(j, a): chunk-local positions}."""
    tau: float = -INF
    drop_flat: dict = field(default_factory=dict)
    ties: dict = field(default_factory=dict)
    prune_all: bool = False
    passes: int = 0
    committed: float = -INF
    overshoot: int = 0
    chunk: int = 1
    _drop: dict = field(default=None, repr=False, compare=False)

    @property
    def drop(self) -> dict:
        if self._drop is None:
            self._drop = {}
            for j, flat in self.drop_flat.items():
                ids, counts = torch.unique_consecutive(torch.div(flat, self.chunk, rounding_mode="floor"),
                                                       return_counts=True)
                for c, part in zip(ids.tolist(), torch.split(flat, counts.tolist())):
                    self._drop[(j, c * self.chunk)] = part - c * self.chunk
        return self._drop

    def needs_pass(self) -> bool:
        """Whether positions below tau, or ties, remain to be pruned by a pass over the keys."""
        return self.prune_all or bool(self.ties) or self.tau > self.committed


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


def count(flags: torch.Tensor) -> int:
    """Number of ones in a 0/1 float tensor (exact: chunks hold fewer than 2**24 elements)."""
    return int(flags.sum())


def positions(flags: torch.Tensor) -> torch.Tensor:
    """Indices (ascending) of the ones of a sparse 0/1 float tensor.

    nonzero() scans element by element; summing the tensor viewed as ROW rows first is
    vectorized and finds the few columns that hold any one, then only those are scanned."""
    n = flags.numel()
    m = n - n % ROW
    out = []
    if m:
        grid = flags[:m].view(ROW, -1)
        cols = grid.sum(dim=0).nonzero().view(-1)
        hit = grid.index_select(1, cols).nonzero()
        # nonzero lists the hits row by row and the columns ascend: positions come out sorted
        out.append(cols.index_select(0, hit[:, 1]).add_(hit[:, 0], alpha=grid.shape[1]))
    if n > m:
        out.append(flags[m:].nonzero().view(-1) + m)  # the tail comes after the grid
    if not out:
        return torch.zeros(0, dtype=torch.long, device=flags.device)
    return out[0] if len(out) == 1 else torch.cat(out)


def _prime_at_least(n: int) -> int:
    n = max(2, n)
    while any(n % d == 0 for d in range(2, int(n ** 0.5) + 1)):
        n += 1
    return n


def _quantiles(values: torch.Tensor, ks) -> list:
    """The k-th smallest values (1-based k), all in one selection pass on CPU."""
    if values.device.type == "cpu":
        import numpy as np
        part = np.partition(values.numpy(), [k - 1 for k in ks])
        return [float(part[k - 1]) for k in ks]
    return [float(torch.kthvalue(values, k).values) for k in ks]


def _bracket(source, keep, alive, *, sample_size, z_lo, z_hi, generator, ledger):
    """[lo, hi] around the threshold from a strided sample: a prime stride never lines up
    with a row length, the offset is random, and unlike random gathers it streams."""
    total = sum(source.sizes)
    if total <= sample_size:
        return -FMAX, INF  # small enough to hold every key of the band at once
    stride = _prime_at_least(total // sample_size)
    live, held = [], 0
    for j, n in enumerate(source.sizes):
        start = int(torch.randint(min(stride, n), (1,), generator=generator))
        keys = source.sample(j, start, stride)
        live.append(keys[keys > source.floor])
        held += keys.numel() * 13  # keys, scratch, the live mask
        ledger.hold(keys.numel() * 13)
    live = torch.cat(live)
    ledger.hold(live.numel() * 8)  # and the partition's copy
    nv = live.numel()
    lo, hi = -FMAX, INF
    if nv:
        frac = (alive - keep) / alive  # share of the live weights that goes
        rank = frac * nv
        sd = math.sqrt(nv * frac * (1.0 - frac)) + 1.0
        k_lo, k_hi = math.floor(rank - z_lo * sd), math.ceil(rank + z_hi * sd)
        ks = [k for k in (k_lo, k_hi) if 1 <= k <= nv]
        q = dict(zip(ks, _quantiles(live, ks)))
        lo = max(q.get(k_lo, -FMAX), -FMAX)
        hi = q.get(k_hi, INF)
    ledger.free(held + live.numel() * 8)
    return lo, hi


def _count(source, lo, hi, cap, ledger, commit=None):
    """#keys > hi, #keys in [lo, hi], #keys < lo, [(j, a, #band keys)], [(j, a, positions
    in tensor j, keys)] of the band (None when it holds more than `cap` keys), and the
    bytes the band holds in `ledger` (the caller frees them). With `commit`, every position
    with key < lo is pruned on the way: commit(j, a, b, keep, n_pruned), keep 1.0 / 0.0.
    A NaN key would count as below lo."""
    n_gt = n_band = n_below = 0
    per_chunk, band = [], []
    held = 0
    dev = None
    for j, a, b in chunks(source):
        n = b - a
        ledger.hold(n * CHUNK_WORK_BYTES)
        key = source.keys(j, a, b)
        if dev != key.device:
            dev = key.device
            use_np = dev.type == "cpu" and key.dtype == torch.float32
            if use_np:
                import numpy as np
                ge_buf, gt_buf = np.empty(source.chunk, dtype=bool), np.empty(source.chunk, dtype=bool)
                keep_buf = torch.empty(source.chunk, device=dev)
            else:
                flag_buf = torch.empty(2 * source.chunk, device=dev)
        if use_np:
            # numpy compares into bool arrays, counts them and lists a sparse one's ones
            # several times faster than torch does on the CPU (one thread, and the chunk
            # is in cache); the kept flags the commit needs stay float
            kn = key.numpy()
            ge, gt = np.greater_equal(kn, lo, out=ge_buf[:n]), np.greater(kn, hi, out=gt_buf[:n])
            c_ge, c_gt = int(np.count_nonzero(ge)), int(np.count_nonzero(gt))
            keep = torch.ge(key, lo, out=keep_buf[:n]) if commit is not None else None
        else:
            flags = flag_buf[:2 * n].view(2, n)
            keep = torch.ge(key, lo, out=flags[0])
            torch.gt(key, hi, out=flags[1])
            c_ge, c_gt = (int(c) for c in flags.sum(dim=1).tolist())
        n_gt += c_gt
        n_below += n - c_ge
        if commit is not None:
            commit(j, a, b, keep, n - c_ge)
        nb = c_ge - c_gt  # each key > hi is >= lo too
        if nb:
            n_band += nb
            per_chunk.append((j, a, nb))
            if band is not None and n_band <= cap:
                if use_np:
                    idx = np.flatnonzero(np.greater(ge, gt, out=ge))
                    val = torch.from_numpy(kn[idx])
                    idx += a
                    pos = torch.from_numpy(idx)
                else:
                    pos = positions(flags[0].sub_(flags[1]))  # the commit is done with them
                    val = key.index_select(0, pos)
                    pos.add_(a)
                band.append((j, a, pos, val))  # positions within tensor j
                held += pos.numel() * 12
                ledger.hold(pos.numel() * 12)
            else:
                band = None
        ledger.free(n * CHUNK_WORK_BYTES)
    return n_gt, n_band, n_below, per_chunk, band, held


def _first(per_chunk, drop) -> dict:
    """Spread `drop` tied prunes over the chunks in position order."""
    ties = {}
    for j, a, c in per_chunk:
        if drop <= 0:
            break
        ties[(j, a)] = min(c, drop)
        drop -= ties[(j, a)]
    return ties


def _resolve(band, n_band, r, lo, chunk, ledger) -> Cut:
    """Keep the r largest band keys (0 <= r <= n_band), ties broken by position."""
    cut = Cut(tau=lo, chunk=chunk)  # every key below the band goes
    if r == n_band:
        return cut
    # the keys, their partition's copy, flags, then the drops (at most the band's positions)
    ledger.hold(n_band * 18)
    goes = None
    if r > 0:
        allv = torch.cat([v for _, _, _, v in band])  # in position order: chunks, then ascending
        tau = _quantiles(allv, [n_band - r + 1])[0]  # the r-th largest: the smallest kept
        greater = int(torch.count_nonzero(allv > tau))
        eq = allv == tau
        ties = int(torch.count_nonzero(eq)) - (r - greater)  # equal keys that go: the first ones
        goes = torch.lt(allv, tau, out=eq) if ties <= 0 else _goes_with_ties(allv, tau, eq, ties)
        del allv, eq
    at = 0
    for j, group in itertools.groupby(band, key=lambda e: e[0]):  # a tensor's chunks are adjacent
        pos = [e[2] for e in group]
        pos = pos[0] if len(pos) == 1 else torch.cat(pos)
        if goes is not None:
            at, pos = at + pos.numel(), pos[goes[at:at + pos.numel()]]
        if pos.numel():
            cut.drop_flat[j] = pos
    ledger.free(n_band * 18)
    return cut


def _goes_with_ties(allv, tau, eq, ties):
    """allv < tau, and the first `ties` positions of allv == tau (`eq`, reused)."""
    first = eq.nonzero().view(-1)[:ties]
    goes = torch.lt(allv, tau, out=eq)
    goes[first] = True
    return goes


def find_cut(source, keep, alive, *, generator, commit=None, sample_size=1 << 19, z=3.0, z_commit=6.0,
             band_cap=None, ledger=None) -> Cut:
    """The Cut that leaves exactly `keep` of the `alive` live positions of `source`.

    With `commit(j, a, b, keep_flags, n_pruned)`, positions below the bracket are pruned during the
    counting pass (see the module notes); the Cut then says what is left to do."""
    ledger = ledger or Ledger()
    if keep >= alive:
        return Cut()
    if keep <= 0:
        return Cut(prune_all=True)
    total = sum(source.sizes)
    cap = band_cap or max(sample_size, total // 64)
    first = next_up(source.floor)  # the lowest key that counts as live
    optimistic = commit is not None and total > sample_size
    lo, hi = _bracket(source, keep, alive, sample_size=sample_size, z_lo=z_commit if optimistic else z,
                      z_hi=z, generator=generator, ledger=ledger)
    lo = max(lo, first)
    hi = max(hi, lo)
    low, high = first, INF  # what the counts have proven about the threshold so far
    committed = -INF
    for passes in range(1, 200):
        # below a proven bound (or the sample's 6-sigma low end, on the first pass) is safe to
        # prune now; never at the floor, where live weights may score exactly 0
        safe = lo > first and (lo == low or (optimistic and passes == 1))
        this_commit = commit if commit is not None and safe else None
        n_gt, n_band, n_below, per_chunk, band, held = _count(source, lo, hi, cap, ledger, this_commit)
        if this_commit is not None:
            committed = max(committed, lo)
        # what lies below lo is pruned already when it is all dead: no pass needed for it
        settled = max(committed, lo) if n_below == total - alive else committed
        r = keep - n_gt
        if band is None or not 0 <= r <= n_band:
            ledger.free(held)  # the band is not resolved: dropped
        if r > n_band and committed >= lo:  # the threshold was below the committed bracket
            return Cut(tau=lo, passes=passes, committed=committed, overshoot=r - n_band)
        if r > n_band and lo <= first and source.floor > -INF:
            raise NeedExact()  # live weights scoring exactly 0 must be ranked too
        if (r < 0 and hi == INF) or (r > n_band and lo <= first):
            break  # fewer finite keys than live weights: NaN in the weights or the state
        if r < 0:  # the threshold is above the band
            low = next_up(hi)
            lo, hi = low, high
        elif r > n_band:  # below it
            high = next_down(lo)
            lo, hi = low, high
        elif band is None and lo == hi:  # one value, many ties: counts suffice
            return Cut(tau=lo, ties=_first(per_chunk, n_band - r), passes=passes, committed=settled)
        elif band is None:  # inside, but too many keys to hold: bisect the float order
            low, high = lo, hi
            lo = min(_from_ordered((_ordered(lo) + _ordered(min(hi, FMAX))) // 2 + 1), hi)
        else:
            cut = _resolve(band, n_band, r, lo, source.chunk, ledger)
            ledger.free(held)
            cut.passes, cut.committed = passes, settled
            return cut
    raise RuntimeError("pruning threshold search did not converge; the scores are not finite numbers "
                       "(check the weights and the optimizer state for NaN)")
