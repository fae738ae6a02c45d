"""The bracketed pass (bracket.py) on CPU as one compiled loop per tensor range (numba).

Through torch, a chunk of the pass took about fifteen kernels (the score's five or six,
then compares, packing, counting, the band's positions), each reading and writing the
whole chunk and each ending in a thread barrier. Here one loop computes the key of every
position, compares it with the bracket, sets the bit of a live position below lo, counts,
and collects the band, in tiles that stay in the first-level cache; a range is split into
blocks that the threads share. The keys are the score functions' own float32 operations in
the same order (abs, min, add, sqrt, multiply: each correctly rounded), so they equal
torch's bit for bit (tested), and the pass places every position exactly as the radix
selection would.

Kinds of key: KEYS reads keys that torch computed into a chunk buffer (every score without
a kernel here, and weights or states stored in 2-byte dtypes); ABS is |w| (magnitude, and
every score before the optimizer has state); BITTER7 is |w| * (min(v, VMAX) + eps)^(1/4);
BITTER0 is w * w * |m| / (sqrt(min(v, VMAX)) + eps), the only kind that reads m.

The recorded bits mark only positions that are alive (`dead_mode` says how the mask shows
a pruned position: exp_avg_sq = +inf, or a bit), so committing them writes only the newly
pruned weights (`scatter`) instead of rewriting every weight and second moment.

The bracketed pass reads every tensor it can through one table of addresses (table_of)
in pieces of ITEM positions (classify_items, then scatter_items to commit): one compiled
call per step of an update instead of one per tensor, and its threads take the pieces in
turn, so a thread that another process holds back delays the call by one piece, where an
even split of each tensor made every call wait for the thread's whole share.

`available()` is False where numba cannot be imported: bracket.py then takes the torch
route, which chooses the same positions more slowly.
"""
from __future__ import annotations

import numpy as np

import importlib.util
import os

KEYS, ABS, BITTER7, BITTER0 = 0, 1, 2, 3
DEAD_NONE, DEAD_STATE, DEAD_BITS = 0, 1, 2
BLOCK = 1 << 15  # positions per parallel work item
TILE = 1024  # positions scored at once: their keys and flags stay in the L1 cache
_GATHER = 0x0102040810204080  # eight 0/1 bytes times this: byte i's bit lands at bit 56 + i
_SUM8 = 0x0101010101010101  # eight 0/1 bytes times this: their sum lands in the top byte


# a table of tensors (table_of): one int64 row per tensor, these columns
T_KIND, T_X, T_M, T_V, T_DM, T_DEAD, T_N, T_BITS, T_TILE = range(9)
TABLE_MAX = 1 << 14  # tensors up to this size go through tables; larger ones fill the threads alone

_kernels = None


def available() -> bool:
    return importlib.util.find_spec("numba") is not None


def kernels():
    """cpu_kernels, imported (and its loops loaded or compiled) on first use."""
    global _kernels
    if _kernels is None:
        import torch
        threads = torch.get_num_threads()
        from lib.pruning import cpu_kernels
        # numba's OpenMP pool starts at its first parallel loop and sets the thread count of
        # the process's OpenMP, torch's included, to all cores: start it now and give torch
        # its count back (a run's results depend on it: CPU_THREADS)
        f, u8 = np.zeros(8, np.float32), np.zeros(1, np.uint8)
        cpu_kernels._scatter(u8, u8[:0].view(np.uint64), False, f.view(np.int32), np.int32(0), f[:0].view(np.int32),
                             np.int32(0))
        torch.set_num_threads(threads)
        _kernels = cpu_kernels
    return _kernels


def warm():
    """Load the compiled loops that numba has cached now, so that the first mask update does
    not pay for it: loading one from the cache takes tens of milliseconds, the first call of
    each in a process. Loops not compiled yet in this checkout are left to their first use
    (compiling all of them takes about a minute, more than a small run uses)."""
    f, u8 = np.ones(64, np.float32), np.zeros(8, np.uint8)
    tab = table_of([(BITTER7, f.ctypes.data, 0, f.ctypes.data, DEAD_STATE, 0, f.size)], np.zeros(1, np.int64))
    calls = {
        "_classify": lambda: classify(BITTER7, f, f, DEAD_STATE, u8, False, 0.5, 1.5, 1e-8, 2.0 ** 127, 0, u8,
                                      np.zeros(512, np.int64), np.zeros(512, np.float32), 512),
        "_gather": lambda: gather(BITTER7, f, f, DEAD_STATE, u8, False, 1e-8, 2.0 ** 127, np.zeros(2, np.int64), 16,
                                  np.zeros(32, np.float32)),
        "_gather_table": lambda: gather_table(tab, np.zeros(1, np.int64), np.zeros(1, np.int64),
                                              np.zeros(1, np.int64), 16, False, 1e-8, 2.0 ** 127,
                                              np.zeros(16, np.float32)),
        "_scatter": lambda: scatter(u8, np.zeros(64, np.int32), 0, np.zeros(64, np.int32), 1),
        "_digit_hist": lambda: window_hist(BITTER7, f, f, DEAD_STATE, u8, 1e-8, 2.0 ** 127, 0, 21, 11,
                                           np.zeros(2048, np.int64), np.zeros(1, np.int64), new_span(),
                                           np.zeros(2, np.int64), tiles=np.zeros(1, np.int32)),
        "_tie_pass": lambda: tie_pass(BITTER7, f, f, DEAD_STATE, u8, 0.5, 1e-8, 2.0 ** 127, 0, 64,
                                      np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(8, np.uint8),
                                      np.zeros((1, 72), np.int64)),
        "_hist_items": lambda: hist_items(tab, np.array([[0, 0, 64]], np.int64), 1e-8, 2.0 ** 127, 0, 21, 11,
                                          np.zeros(2048, np.int64),
                                          np.zeros(1, np.int64), new_span(), np.zeros(2, np.int64), count_tables(11),
                                          np.zeros(1, np.int32)),
        "_classify_items": lambda: classify_items(tab, np.array([[0, 0, 64, 0, 64]], np.int64), False, 0.5, 1.5,
                                                  1e-8, 2.0 ** 127, u8, np.zeros(64, np.int64),
                                                  np.zeros(64, np.float32), 1),
        "_move_band": lambda: move_band(np.zeros(1, np.int64), f[:1], np.zeros(1, np.int64), np.ones(1, np.int64),
                                        np.zeros(1, np.int64), f[1:2], np.zeros(1, np.int64)),
        "_scatter_items": lambda: scatter_items(u8, np.array([[0, 64]], np.int64), np.array([[0, 0, 64]], np.int64),
                                                np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int32),
                                                np.zeros(1, np.int64), 1),
        "_split_at": lambda: kernels()._split_at(f, np.float32(0.5), np.float32(1.5), np.empty(64, np.float32),
                                                 np.zeros(3, np.int64)),
        "_kth_key": lambda: kernels()._kth_key(f[:8].copy(), 1, np.zeros(4, np.int64)),
        "_gather_ranges": lambda: kernels()._gather_ranges(f, np.zeros(1, np.int64), np.ones(1, np.int64), f[:1].copy()),
        "_band_ties": lambda: kernels()._band_ties(f, np.float32(1), np.zeros(1, np.int64), np.ones(1, np.int64),
                                                   np.zeros(1, np.int64)),
        "_band_commit": lambda: kernels()._band_commit(u8, np.zeros(1, np.int64), f, np.float32(0), np.zeros(1, np.int64),
                                                       np.ones(1, np.int64), np.zeros(1, np.int64),
                                                       np.zeros(1, np.int64), np.zeros(1, np.int64),
                                                       np.zeros(1, np.int64), np.zeros(1, np.int64)),
        "_tie_items": lambda: tie_items(tab, np.array([[0, 0, 64, 0, 0]], np.int64), 0.5, 1e-8, 2.0 ** 127,
                                        np.zeros(1, np.int64), np.zeros(8, np.uint8), np.zeros((1, 72), np.int64)),
    }
    for name, call in calls.items():
        if _cached(getattr(kernels(), name)):
            call()


def _cached(dispatcher) -> bool:
    """Whether numba's cache holds compiled code of this loop (its index file exists; an
    internal of numba's, so anything unexpected reads as not cached)."""
    try:
        return os.path.exists(dispatcher._cache._cache_file._index_path)
    except Exception:  # noqa: BLE001 - a numba without this internal: load on first use
        return False


def zeroed(n, dtype):
    """A zeroed numpy array of n elements in torch's memory (so that torch's profiler sees
    what the ledger counts), zeroed on this thread: torch.zeros of this size fills on
    torch's thread pool, and a pool thread that a busy neighbour holds stalls the update
    for a timeslice."""
    import torch
    out = torch.empty(n, dtype=dtype).numpy()
    out.fill(0)
    return out


def gather(kind, x, v, dead_mode, dead_bits, exact, eps, vmax, rows, width, out, m=None):
    """The keys of the `width`-position rows `rows` of one tensor into `out` (numpy float32,
    rows * width), as classify computes them; pruned positions show -inf with `exact`, else
    their natural key (0 for the never-negative scores). `m`: the first moment (BITTER0)."""
    kernels()._gather(kind, x, x[:0] if m is None else m, v, dead_mode, dead_bits, bool(exact), np.float32(eps),
                      np.float32(vmax), rows, int(width), out)


def gather_table(tab, ent, rows, dst, width, exact, eps, vmax, out):
    """gather for many tensors of a table (table_of) in one call: row r is the `width`
    positions from rows[r] * width of entry ent[r], its keys into out (numpy float32) from
    dst[r] * width on."""
    kernels()._gather_table(tab, ent, rows, dst, int(width), bool(exact), np.float32(eps), np.float32(vmax), out)


def block_cap(length: int, band_share: float) -> int:
    """Band entries each block of a `length` range may hold: eight times the share the
    sample expects in the band, at least 512 (a block holding more makes the pass give up)."""
    return int(min(BLOCK, length, max(512, np.ceil(8 * band_share * BLOCK))))


def classify(kind, x, v, dead_mode, dead_bits, exact, lo, hi, eps, vmax, offset, new_bits, pos, keys, cap,
             block=BLOCK, m=None):
    """Classify the positions of one range (numpy arrays; see the module notes), in blocks of
    `block` positions holding at most `cap` band entries each. Returns (below lo, band size,
    -inf keys, new bits, overflowed); unless a block overflowed, the band's positions
    (offset-based) and keys are pos[:band], keys[:band], ascending."""
    stats = np.zeros(5, np.int64)
    kernels()._classify(kind, x, x[:0] if m is None else m, v, dead_mode, dead_bits, bool(exact), np.float32(lo),
                        np.float32(hi), np.float32(eps), np.float32(vmax), int(offset), new_bits, pos, keys, int(cap),
                        int(block), stats)
    return int(stats[0]), int(stats[1]), int(stats[2]), int(stats[3]), bool(stats[4])


# from this share of new positions a word-at-a-time commit beats a byte-at-a-time one (measured)
DENSE_SHARE = 0.03


def scatter(bits, target, pattern: int, second=None, pattern2: int = 0, count=None):
    """target[i] = pattern (and second[i] = pattern2) where bit i of the packed `bits` is
    set (`count`: how many are, if known). The targets are integer views of weight or state
    tensors, so any float dtype takes the pattern of 0 or +inf."""
    if second is None:
        second, pattern2 = target[:0], 0
    dense = count is not None and count > DENSE_SHARE * target.size
    words = bits[:bits.size // 8 * 8].view(np.uint64)
    kernels()._scatter(bits, words, dense, target, target.dtype.type(pattern), second, second.dtype.type(pattern2))


def set_threads(n: int):
    kernels()  # numba's pool first, so that starting it does not change torch's thread count
    import numba
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def digit_hist(kind, x, v, dead_mode, dead_bits, eps, vmax, prefix, used, width, hist, nan, span, tables=None,
               m=None):
    """Add to `hist` (int64, 2**width) the counts of the `width` bits that follow the
    `used`-bit `prefix` in the ordered patterns (`ordered`) of one range's exact keys,
    pruned positions at -inf; keys without that prefix are not counted. Adds the NaN keys
    seen to nan[0]; widens span (int64 [lowest, highest]) to the counted patterns.
    `tables` (from count_tables): the threads' counts, kept over a pass's tensors and
    added to hist by add_tables; without them, this call's own."""
    window_hist(kind, x, v, dead_mode, dead_bits, eps, vmax, prefix << width, 32 - used - width, width, hist, nan,
                span, np.zeros(2, np.int64), tables, m)


def window_hist(kind, x, v, dead_mode, dead_bits, eps, vmax, start, shift, width, hist, nan, span, below,
                tables=None, m=None, tiles=None, tile_slot=-1):
    """digit_hist over a window of the ordered patterns: the keys whose pattern u has
    u >> shift in [start, start + 2**width) are counted in hist[(u >> shift) - start],
    those below it added to below[0] and the -inf keys (pruned positions) to below[1]
    (int64[2]); span and nan as digit_hist. A digit after a `used`-bit prefix is the
    window start = prefix << width, shift = 32 - used - width. With `tiles` (int32, one
    per TILE positions), tiles[k] = how many of tile k's keys went to slot `tile_slot`
    (-1: to any slot, the window's live keys): a tie pass's counts (tie_pass)."""
    if x.size >= 1 << 31:
        raise ValueError("a tensor of 2**31 or more elements is beyond the compiled counts; prune it on the GPU")
    own = tables is None
    if own:
        tables = count_tables(width)
    kernels()._digit_hist(kind, x, x[:0] if m is None else m, v, dead_mode, dead_bits, np.float32(eps),
                          np.float32(vmax), int(start), int(shift), int(width), hist, tables, nan, span, below,
                          -2 if tiles is None else int(tile_slot), _NO_TILES if tiles is None else tiles)
    if own:
        add_tables(tables, hist)


_NO_TILES = np.zeros(0, np.int32)


def tile_count(n: int) -> int:
    return -(-n // TILE)


def tie_pass(kind, x, v, dead_mode, dead_bits, tau, eps, vmax, goff, chunk, quota, ties, new_bits, scratch,
             m=None):
    """Set the bits (packed, numpy uint8) of one tensor's live keys below `tau` and, in each
    `chunk`-position chunk c, of the quota[c] keys equal to tau whose global position
    goff + i has the smallest select.position_hash (equal hashes by position); exact keys,
    so pruned positions are never chosen. ties[c]: how many keys of chunk c equal tau;
    `scratch`: int64 (threads, chunk + 8). Returns how many bits it set."""
    stats = np.zeros(1, np.int64)
    kernels()._tie_pass(kind, x, x[:0] if m is None else m, v, dead_mode, dead_bits, np.float32(tau),
                        np.float32(eps), np.float32(vmax), int(goff), int(chunk), quota, ties, new_bits, scratch, stats)
    return int(stats[0])


def tie_items(tab, items, tau, eps, vmax, goffs, new_bits, scratch):
    """tie_pass over a table's tensors (exact keys) in one call: items (int64 (k, 5)) are
    (entry, a, b, quota, ties) per chunk [a, b) of an entry, goffs[e] the global position of
    entry e's first weight, its bits from byte tab[e, T_BITS] of new_bits; the threads take
    chunks in turn, scratch: int64 (threads, chunk + 8). Returns the bits set per item."""
    out = np.zeros(items.shape[0], np.int64)
    kernels()._tie_items(tab, items, np.zeros(1, np.int64), np.float32(tau), np.float32(eps), np.float32(vmax), goffs,
                         new_bits, scratch, out)
    return out


def count_tables(width: int):
    """Zeroed per-thread count tables for digit_hist (through torch, so its profiler sees
    what the update's ledger counts)."""
    import numba
    import torch
    return torch.zeros((numba.get_num_threads(), 4, (1 << width) + 64), dtype=torch.int32).numpy()


def add_tables(tables, hist):
    hist += tables[:, :, :hist.size].sum(axis=(0, 1), dtype=np.int64)


def new_span():
    """An empty [lowest, highest] for digit_hist."""
    return np.array([0xFFFFFFFF, -1], np.int64)


def ordered(x: float) -> int:
    """The float32 pattern of x as an unsigned integer in float order (NaN beyond +-inf)."""
    p = int(np.array([x], np.float32).view(np.uint32)[0])
    return (~p & 0xFFFFFFFF) if p & 0x80000000 else p | 0x80000000


def from_ordered(u: int) -> float:
    """Inverse of ordered()."""
    p = (u & 0x7FFFFFFF) if u & 0x80000000 else (~u & 0xFFFFFFFF)
    return float(np.array([p], np.uint32).view(np.float32)[0])


def table_of(rows, tile_at=None):
    """The int64 table of tensors for the *_items loops: `rows` are (kind,
    address of x, of m, of v (0: none), dead mode, address of the dead bits (0: none),
    size) of float32 tensors in memory order; a tensor's bits start at byte T_BITS (set by
    the caller), its tile counts at tile_at[k] of a pass's flat tile array."""
    tab = np.zeros((len(rows), 9), np.int64)
    if rows:
        tab[:, :7] = np.array(rows, np.int64)
        if tile_at is not None:
            tab[:, T_TILE] = tile_at
    return tab


def hist_items(tab, items, eps, vmax, start, shift, width, hist, nan, span, below, tables, tiles=None,
               tile_slot=-1):
    """window_hist over pieces of a table's tensors in one call (items: int64 (k, 3) of
    (entry, a, b), a a multiple of TILE, as items_of makes them), the threads taking pieces
    in turn; `tiles`: the pass's flat tile counts (each entry's from tab[:, T_TILE])."""
    kernels()._hist_items(tab, items, np.zeros(1, np.int64), np.float32(eps), np.float32(vmax), int(start),
                          int(shift), int(width), hist, tables, nan, span, below,
                          -2 if tiles is None else int(tile_slot), _NO_TILES if tiles is None else tiles)


ITEM = 1 << 17  # positions per work item of the *_items loops: hundreds per update, taken in turn


def items_of(sizes, piece=ITEM):
    """int64 (items, 3): (entry, a, b) pieces of at most `piece` positions (a multiple of
    64) that cover entries of the given sizes, in entry order."""
    rows = [(e, a, min(n, a + piece)) for e, n in enumerate(sizes) for a in range(0, n, piece)]
    return np.array(rows, np.int64).reshape(-1, 3)


def classify_items(tab, items, exact, lo, hi, eps, vmax, new_bits, pos, keys, threads):
    """classify over pieces of a table's tensors in one call: items (int64 (k, 5)) are
    (entry, a, b, slot, cap), each piece's band in pos / keys from its slot on, at most cap
    (positions from its tensor's start); the threads take pieces in turn. Returns int64
    (k, 4): below lo, band (more than cap: the piece overflowed, nothing beyond cap kept),
    -inf keys, new bits."""
    out = np.zeros((items.shape[0], 4), np.int64)
    kernels()._classify_items(tab, items, bool(exact), np.float32(lo), np.float32(hi), np.float32(eps),
                              np.float32(vmax), new_bits, pos, keys, out, np.zeros(1, np.int64), int(threads))
    return out


def move_band(pos, keys, src, counts, dst_pos, dst_keys, dst):
    """Copy counts[k] band entries from slot src[k] on to dst[k] on, k in order; in place
    (the same arrays) when every dst[k] <= src[k]."""
    # contiguous copies (columns of the pieces' tables are strided): one compiled version,
    # the one warm() loads, not a second one loaded from the cache by the first update
    col = np.ascontiguousarray
    kernels()._move_band(pos, keys, col(src, np.int64), col(counts, np.int64), dst_pos, dst_keys, col(dst, np.int64))


def scatter_items(bits, rows, items, targets, patterns, masks, threads):
    """scatter for many tensors in one call: row r's bits start at byte rows[r, 0] of `bits`
    (a multiple of 8) for rows[r, 1] weights; items (int64 (k, 3)) are (row, a, b) pieces, a
    a multiple of 64. Where a bit is set, targets[r, c] (addresses of float32 arrays, 0:
    none) take patterns[r, c] (int32 bit patterns), and masks[r] (address of a packed uint8
    mask, 0: none) takes the bit by OR. The threads take pieces in turn."""
    words = bits[:bits.size // 8 * 8].view(np.uint64)
    r = rows.copy()
    r[:, 0] //= 8
    kernels()._scatter_items(words, r, items, targets, patterns, masks, np.zeros(1, np.int64), int(threads))
