"""The radix selection of select.py through cpu_pass's compiled loops (CPU).

Models too small for the sampled bracket (their band would not fit the memory budget), and
updates whose bracket missed, used to take the torch radix route: two or three passes of
about fifteen kernels per chunk. Here each pass is one compiled loop per tensor (one per
table of small tensors, cpu_pass.table_of):

1. count the first digit (16 or 11 bits, select's digits) of every exact key's ordered
   pattern (pruned positions at -inf; cpu_pass.ordered), then the next digit inside the bin
   that holds the cut, and so on, stopping as soon as the cut's bin holds at most `cap` keys.
   With a `window` (lo, hi) from the bracket's sample, the first pass instead counts the
   keys below the window and 2**max(digits) equal bins of patterns across it (window_of):
   on ordinary inputs the cut's bin then holds few keys, and step 2 follows at once;
2. bracket._compiled_pass with [lo, hi) = that bin's value range: the keys below are the
   recorded bits, the bin's keys are the band, and resolve_cpu settles the cut there with
   the same threshold, tie quotas and tie hash as every other route;
3. a bin that is one value held by more than `cap` keys (massive exact ties; seen from the
   lowest and highest pattern a pass counted) is pruned by the compiled tie pass (_ties):
   the pass that counted the bin also counted its keys per tile, which gives each chunk's
   tie quota as select.prune_at_tau spreads them, and cpu_pass.tie_pass prunes the same
   positions that route would (it runs where a tensor has no compiled loop).

So an update takes 2 to 4 passes here, never more than the torch radix route's bound; a NaN,
a live -inf, or a bin that outgrows a block's share returns None having pruned nothing, and
the torch route runs (and refuses a NaN with its error).
"""
from __future__ import annotations

import numpy as np
import torch

from lib.pruning import cpu_pass, score_registry, scores

POS_INF = 0xFF800000  # +inf's ordered pattern; -inf's is 0x007FFFFF
THREADS = 2  # counting threads at most: each adds four tables of counts


def hist_bytes(digits) -> int:
    """The counts of a digit (int64) and the threads' tables (four int32 each, 64 spare)."""
    return (8 + 16 * THREADS) * (1 << max(digits)) + 16 * 64 * THREADS


def available(source) -> bool:
    return source.device.type == "cpu" and cpu_pass.available() and hasattr(source, "cpu_inputs")


def _count(source, start, shift, width, hist, nan, span, below, sel, tiles=None, tile_slot=-1):
    """One counting pass (cpu_pass.window_hist) over every tensor of `source`; with `tiles`
    (one int32 array per tensor), each tile's count of keys in slot `tile_slot`."""
    none_f, none_u8 = np.zeros(1, np.float32), np.zeros(1, np.uint8)
    tables = cpu_pass.count_tables(width)  # one set for the pass: a model of many small tensors
    args = (scores.EPS, score_registry.VMAX, start, shift, width, hist, nan, span, below, tables)
    table = source.cpu_table(True) if hasattr(source, "cpu_table") else None
    in_table = ()
    if table is not None:  # every tensor it can read in one call, in pieces the threads take in turn
        idx, tab = table
        in_table = set(idx)
        if tiles is not None:
            tab[:, cpu_pass.T_TILE] = tiles.at[idx]
        cpu_pass.hist_items(tab, cpu_pass.items_of(tab[:, cpu_pass.T_N].tolist()), *args,
                            tiles=None if tiles is None else tiles.flat, tile_slot=tile_slot)
        sel.chunk_visits += sum(-(-source.sizes[i] // source.chunk) for i in idx)
    for i, n in enumerate(source.sizes):
        if i in in_table:
            continue
        inputs = source.cpu_inputs(i, True)
        if inputs is not None:
            kind, x, v, dead_mode, dead, m = _unpack(inputs)
            cpu_pass.window_hist(kind, x, v, dead_mode, dead, *args, m=m,
                                 tiles=None if tiles is None else tiles[i], tile_slot=tile_slot)
            sel.chunk_visits += -(-n // source.chunk)
            continue
        for a in range(0, n, source.chunk):  # the source's exact keys: pruned positions at -inf
            b = min(a + source.chunk, n)
            cpu_pass.window_hist(cpu_pass.KEYS, source.keys(i, a, b, True).numpy(), none_f, cpu_pass.DEAD_NONE,
                                 none_u8, *args, tiles=None if tiles is None else tiles[i][a // cpu_pass.TILE:],
                                 tile_slot=tile_slot)
            sel.chunk_visits += 1
    cpu_pass.add_tables(tables, hist)
    sel.passes += 1


_NONE_F, _NONE_U8 = np.zeros(1, np.float32), np.zeros(1, np.uint8)


def _unpack(inputs):
    """(kind, x, v, dead_mode, dead bits, m) of a source's cpu_inputs, as the loops take them:
    v is the array that shows pruned positions when the mask lives in exp_avg_sq."""
    kind, x, m, v, dead_mode, dead = inputs
    if dead_mode == cpu_pass.DEAD_STATE:
        v = dead
    return (kind, x, _NONE_F if v is None else v, dead_mode, dead if dead_mode == cpu_pass.DEAD_BITS else _NONE_U8,
            m)


class _Tiles(list):
    """Per tensor, its tiles' counts (int32, one per cpu_pass.TILE positions): views of one
    array `flat`, tensor i's from flat[at[i]] on."""

    def __init__(self, source, ledger):
        counts = [cpu_pass.tile_count(n) for n in source.sizes]
        self.at = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.bytes = 4 * int(self.at[-1])
        ledger.hold(self.bytes)
        self.flat = torch.zeros(int(self.at[-1]), dtype=torch.int32).numpy()  # torch's, for its profiler
        super().__init__(self.flat[self.at[i]:self.at[i + 1]] for i in range(len(counts)))


def window_of(lo: float, hi: float, width: int) -> tuple:
    """(start, shift): the window of 2**width bins of 2**shift ordered patterns each that
    holds [lo, hi], the narrowest such."""
    u_lo, u_hi = cpu_pass.ordered(lo), cpu_pass.ordered(hi)
    shift = 0
    while (u_hi >> shift) - (u_lo >> shift) >= 1 << width:
        shift += 1
    return u_lo >> shift, shift


def _refuse(nan, below, dead_total) -> bool:
    """A NaN, or a -inf among the live keys: the torch route refuses them."""
    return bool(nan[0]) or int(below[1]) != dead_total


def compiled_radix(source, count, dead, sel, *, cap, digits, ledger, finish, compiled_pass, window=None):
    """Prune the `count` lowest live keys of `source` (module notes) counting `digits`
    (select.WIDE or NARROW), or return None having pruned nothing; or (tau, ties, ties to
    prune) when the cut is one value with more than `cap` ties. `window`: (lo, hi), a value
    range the sample says holds the cut: its first pass counts 2**max(digits) bins over
    that range instead of the first digit (module notes)."""
    total = sum(source.sizes)
    if total >= 1 << 31:
        return None  # the threads' int32 counts hold a pass of fewer weights: the torch route
    dead_total = sum(dead)
    goal = dead_total + count
    prefix, used, r, in_range = 0, 0, goal, total
    tiles = None  # per tile, the keys of the cut's bin, from the pass that counted them
    ledger.hold(hist_bytes(digits))
    held = hist_bytes(digits)
    try:
        cpu_pass.set_threads(min(THREADS, torch.get_num_threads()))
        if window is not None:
            width = max(digits)
            start, shift = window_of(*window, width)
            hist, nan, span, below = _new_counts(width)
            # a window one pattern per slot (a bracket of one value, say) may cut among the
            # ties of its lowest value: count them per tile for the tie pass
            w_tiles = _Tiles(source, ledger) if shift == 0 else None
            held += 0 if w_tiles is None else w_tiles.bytes
            _count(source, start, shift, width, hist, nan, span, below, sel, w_tiles, 0)
            if _refuse(nan, below, dead_total):
                return None
            cum = np.cumsum(hist)
            low = int(below[0])
            if low < goal <= low + int(cum[-1]):  # else the window missed: count from the first digit
                d = int(np.searchsorted(cum, goal - low))
                in_range, r = int(hist[d]), goal - low - (int(cum[d - 1]) if d else 0)
                prefix, used = start + d, 32 - shift
                tiles = w_tiles if d == 0 else None
        widths = list(digits) if used == 0 else [min(max(digits), 32 - used - k) for k in range(0, 32 - used,
                                                                                             max(digits))]
        for width in widths:
            if used and in_range <= cap:
                break
            hist, nan, span, below = _new_counts(width)
            if used and tiles is None:
                tiles = _Tiles(source, ledger)  # the bin's keys per tile: its ties, if it is one value
                held += tiles.bytes
            _count(source, prefix << width, 32 - used - width, width, hist, nan, span, below, sel,
                   tiles if used else None)
            if used and span[0] == span[1]:  # every key of the cut's bin is one value: tau
                return _ties(source, cpu_pass.from_ordered(int(span[0])), in_range, r, tiles, dead, sel, ledger,
                             finish, goal)
            if used == 0 and _refuse(nan, below, dead_total):
                return None
            cum = np.cumsum(hist)
            d = int(np.searchsorted(cum, r))  # the first bin whose running count reaches r
            below_bin = int(cum[d - 1]) if d else 0
            in_range, r = int(hist[d]), r - below_bin
            prefix, used = (prefix << width) | d, used + width
        first = prefix << (32 - used)
        after = first + (1 << (32 - used))
        lo = cpu_pass.from_ordered(first)
        hi = cpu_pass.from_ordered(after) if after <= POS_INF else float("inf")
        if in_range <= cap:
            ledger.free(held)
            held = 0
            hist = nan = span = below = cum = tiles = None  # freed as the ledger says, before the pass
            return compiled_pass(source, dead, sel, goal, lo, hi, cap, True, ledger, finish,
                                 in_range / total, bracketed=False)
        # one value (all 32 bits fixed), too many ties to collect
        if tiles is None:  # the window's cut was not its lowest slot: count that value's keys per tile
            tiles = _Tiles(source, ledger)
            held += tiles.bytes
            hist, nan, span, below = _new_counts(0)
            _count(source, first, 0, 0, hist, nan, span, below, sel, tiles, 0)
        return _ties(source, lo, in_range, r, tiles, dead, sel, ledger, finish, goal)
    finally:
        ledger.free(held)


def _ties(source, tau, ties, drops, tiles, dead, sel, ledger, finish, goal):
    """The cut is `tau`, held by `ties` keys of which `drops` go: prune every live key below
    tau and the chosen ties in one compiled pass (tie_pass), the tie quotas per chunk from
    the tiles' counts exactly as select.prune_at_tau spreads them; or (tau, ties, drops) for
    select.prune_at_tau when a tensor has no compiled loop."""
    inputs = [source.cpu_inputs(i, True) for i in range(len(source.sizes))]
    chunk = source.chunk
    if any(x is None for x in inputs) or chunk % cpu_pass.TILE:
        return tau, ties, drops
    per_chunk = chunk // cpu_pass.TILE  # chunks are whole tiles (multiples of MIN_CHUNK)
    t_c = [np.add.reduceat(t.astype(np.int64), np.arange(0, t.size, per_chunk)) for t in tiles]
    flat = np.concatenate(t_c)
    seen = np.concatenate([[0], np.cumsum(flat)[:-1]])
    quota = (drops * (seen + flat)) // ties - (drops * seen) // ties  # select.tie_quota, every chunk at once
    if int(flat.sum()) != ties or int(quota.sum()) != drops:
        raise RuntimeError("pruning scores changed between passes (NaN in the weights or the optimizer state?)")
    threads = min(THREADS, torch.get_num_threads())
    work = sum(-(-n // 64) * 8 for n in source.sizes) + threads * (chunk + 8) * 8
    ledger.hold(work)
    try:
        scratch = torch.empty((threads, chunk + 8), dtype=torch.int64).numpy()
        sel.tau, sel.ties, sel.tie_drops = tau, ties, drops
        table = source.cpu_table(True) if hasattr(source, "cpu_table") else None
        if table is not None and len(table[0]) == len(source.sizes):  # one call, chunks taken in turn
            idx, tab = table
            byte_at = np.concatenate([[0], np.cumsum([-(-n // 64) * 8 for n in source.sizes])[:-1]])
            tab[:, cpu_pass.T_BITS] = byte_at[idx]
            items = cpu_pass.items_of(source.sizes, chunk)
            items = np.column_stack([items, quota, flat])
            bits = cpu_pass.zeroed(work - threads * (chunk + 8) * 8, torch.uint8)
            done = cpu_pass.tie_items(tab, items, tau, scores.EPS, score_registry.VMAX,
                                      np.asarray(source.offsets, np.int64), bits, scratch)
            new = np.bincount(items[:, 0], weights=done, minlength=len(idx)).astype(np.int64).tolist()
            sel.chunk_visits += items.shape[0]
            sel.passes += 1
            source.prune_table(idx, tab, bits, new, threads)
            return finish(sel, {(i, 0): dead[i] + new[e] for e, i in enumerate(idx)}, dead, goal)
        at = 0
        new = []
        bits = []
        for i, n in enumerate(source.sizes):
            kind, x, v, dead_mode, dead_bits, m = _unpack(inputs[i])
            b = cpu_pass.zeroed(-(-n // 64) * 8, torch.uint8)
            q = quota[at:at + t_c[i].size]
            at += t_c[i].size
            new.append(cpu_pass.tie_pass(kind, x, v, dead_mode, dead_bits, tau, scores.EPS, score_registry.VMAX,
                                         source.offsets[i], chunk, np.ascontiguousarray(q), t_c[i], b, scratch,
                                         m=m))
            bits.append(b)
            sel.chunk_visits += t_c[i].size
        sel.passes += 1
        for i, b in enumerate(bits):
            if new[i]:
                source.prune_bits(i, b[:-(-source.sizes[i] // 8)], new[i])
        return finish(sel, {(i, 0): dead[i] + c for i, c in enumerate(new)}, dead, goal)
    finally:
        ledger.free(work)


def _new_counts(width):
    # torch's, for its profiler
    return (torch.zeros(1 << width, dtype=torch.int64).numpy(), np.zeros(1, np.int64), cpu_pass.new_span(),
            np.zeros(2, np.int64))
