"""Resolving the bracketed pass's band on CPU through compiled loops (cpu_kernels).

The band holds the keys in [lo, hi) with their positions: one array pair per compiled call
of the pass, split into entries, one per chunk of a tensor, as the radix route collects
them (tie quotas go per entry). select._resolve resolves such a band through torch: it
joins every key and position again and sorts out ties with several temporaries (about 22
bytes a key), and a partition of a few hundred thousand keys took milliseconds. Here:

1. tau, the r-th smallest key: a copy of the keys (4 bytes a key) as ordered patterns,
   narrowed by 2**11 bins a round to the bin that holds it, at most three rounds
   (cpu_kernels._kth_key), which also counts the keys below and equal to it and the NaNs;
2. the ties at tau of each entry and each entry's share of the ties to prune
   (select.tie_quota, every entry at once);
3. one loop per call sets the bits of its keys below tau and of each entry's quota of ties
   with the smallest position hash (select.pick_ties's choice).

Both routes choose the same positions (tests/test_pruning_compiled.py).
"""
from __future__ import annotations

import numpy as np
import torch

from lib.pruning import cpu_pass

RESOLVE_BYTES = 4  # per band key: the patterns' copy
TIE_BYTES = 8  # per tied key of the entry being chosen from: hash and index


class Band:
    """One pass's band: the calls' (positions, keys) arrays and the entries (tensor, call,
    start, end) that split them by chunk, in tensor order once `sort` ran."""

    def __init__(self):
        self.calls = []
        self.entries = []
        self.size = 0

    def add(self, i, a, b, pos, keys, chunk, start=0, end=None):
        """Tensor i's band at ascending positions pos[start:end] in [a, b) (the arrays are
        kept, not copied): one entry per chunk of the tensor."""
        end = pos.size if end is None else end
        if not self.calls or self.calls[-1][0] is not pos:
            self.calls.append((pos, keys))
        c = len(self.calls) - 1
        cuts = (start + np.searchsorted(pos[start:end], np.arange(a - a % chunk + chunk, b, chunk))).tolist()
        for s, e in zip([start, *cuts], [*cuts, end]):
            if e > s:
                self.entries.append((i, c, s, e))
        self.size += end - start

    def sort(self):
        self.entries.sort(key=lambda entry: entry[0])  # stable: chunk order within a tensor

    def by_call(self):
        """Per call: (entry numbers, starts, ends) of its entries."""
        out = {}
        for n, (_, c, s, e) in enumerate(self.entries):
            out.setdefault(c, []).append((n, s, e))
        return {c: tuple(np.array(col, np.int64) for col in zip(*rows)) for c, rows in out.items()}


def resolve(source, sel, band, r, bits, byte_at, ledger):
    """Set in `bits` (packed, tensor i's from byte byte_at[i]) the bits of the r lowest keys
    of `band`, ties at the cut chosen as select._resolve chooses them; sets sel's tau, ties
    and tie_drops. Returns the bits set per tensor (list), or None if the band holds a NaN
    (nothing set then)."""
    k = cpu_pass.kernels()
    calls = band.by_call()
    ledger.hold(band.size * RESOLVE_BYTES)
    try:
        scratch = torch.empty(band.size, dtype=torch.float32).numpy()  # torch's: its profiler sees it
        o = 0
        for c, (_, starts, ends) in calls.items():
            n = int((ends - starts).sum())
            k._gather_ranges(band.calls[c][1], starts, ends, scratch[o:o + n])
            o += n
        out = np.zeros(4, np.int64)
        k._kth_key(scratch, int(r), out)
        del scratch
    finally:
        ledger.free(band.size * RESOLVE_BYTES)
    if out[3]:
        return None
    sel.collected = True
    done = [0] * len(source.sizes)
    if not r:
        return done
    tau = np.float32(cpu_pass.from_ordered(int(out[0])))
    sel.tau, sel.ties, sel.tie_drops = float(tau), int(out[2]), int(r - out[1])
    quotas = np.zeros(len(band.entries), np.int64)
    if sel.tie_drops:
        ties = np.zeros(len(band.entries), np.int64)
        for c, (nums, starts, ends) in calls.items():
            part = np.zeros(nums.size, np.int64)
            k._band_ties(band.calls[c][1], tau, starts, ends, part)
            ties[nums] = part
        seen = np.cumsum(ties) - ties  # select.tie_quota, every entry at once
        quotas = (sel.tie_drops * (seen + ties)) // sel.ties - (sel.tie_drops * seen) // sel.ties
    tensor = np.array([i for i, _, _, _ in band.entries], np.int64)
    most = int(ties.max()) if sel.tie_drops else 0
    ledger.hold(most * TIE_BYTES)
    try:
        scratch = torch.empty(most, dtype=torch.int64).numpy()
        counts = np.zeros(len(band.entries), np.int64)
        bases = np.asarray(byte_at, np.int64)[tensor]
        goffs = np.asarray(source.offsets, np.int64)[tensor]
        for c, (nums, starts, ends) in calls.items():
            part = np.zeros(nums.size, np.int64)
            pos, keys = band.calls[c]
            k._band_commit(bits, pos, keys, tau, starts, ends, bases[nums], goffs[nums], quotas[nums], part, scratch)
            counts[nums] = part
    finally:
        ledger.free(most * TIE_BYTES)
    for i, cnt in zip(tensor.tolist(), counts.tolist()):
        done[i] += cnt
    return done
