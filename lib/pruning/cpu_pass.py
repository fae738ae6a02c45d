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
every score before the optimizer has state); BITTER7 is |w| * (min(v, VMAX) + eps)^(1/4).

The recorded bits mark only positions that are alive (`dead_mode` says how the mask shows
a pruned position: exp_avg_sq = +inf, or a bit), so committing them writes only the newly
pruned weights (`scatter`) instead of rewriting every weight and second moment.

`available()` is False where numba cannot be imported: bracket.py then takes the torch
route, which chooses the same positions more slowly.
"""
from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is in requirements.txt
    numba = None

KEYS, ABS, BITTER7 = 0, 1, 2
DEAD_NONE, DEAD_STATE, DEAD_BITS = 0, 1, 2
BLOCK = 1 << 15  # positions per parallel work item
TILE = 1024  # positions scored at once: their keys and flags stay in the L1 cache
# stats written by classify
BELOW, BAND, NEG_INF, NEW, OVERFLOW = range(5)
_GATHER = 0x0102040810204080  # eight 0/1 bytes times this: byte i's bit lands at bit 56 + i
_SUM8 = 0x0101010101010101  # eight 0/1 bytes times this: their sum lands in the top byte


def available() -> bool:
    return numba is not None


if numba is not None:
    @njit(inline="always")
    def _bitter7(w, v, eps, vmax):
        vc = vmax if v > vmax else v  # NaN stays NaN, as torch.clamp leaves it
        return abs(w) * np.sqrt(np.sqrt(vc + eps))

    @njit(parallel=True, boundscheck=False, cache=True, nogil=True)
    def _classify(kind, x, v, dead_mode, dead_bits, exact, lo, hi, eps, vmax, offset, new_bits, pos, keys,
                  cap, stats):
        n = x.size
        nblk = (n + BLOCK - 1) // BLOCK
        per = np.zeros((nblk, 4), np.int64)
        gather, sum8, top = np.uint64(_GATHER), np.uint64(_SUM8), np.uint64(56)
        inf = np.float32(np.inf)
        ninf = np.float32(-np.inf)
        zero = np.float32(0.0)
        one = np.uint8(1)
        for k in prange(nblk):
            a = k * BLOCK
            b = min(n, a + BLOCK)
            kt = np.empty(TILE, np.float32)
            live = np.ones(TILE, np.uint8)
            lt = np.zeros(TILE, np.uint8)
            nw = np.zeros(TILE, np.uint8)
            bd = np.zeros(TILE, np.uint8)
            lt64, nw64, bd64 = lt.view(np.uint64), nw.view(np.uint64), bd.view(np.uint64)
            c_below = 0
            c_band = 0
            c_ninf = 0
            c_new = 0
            base = k * cap
            for t0 in range(a, b, TILE):
                m = min(TILE, b - t0)
                xs = x[t0:t0 + m]
                if kind == 2:  # v is the score's and shows the pruned positions (dead_mode 1)
                    vs = v[t0:t0 + m]
                    for i in range(m):
                        vi = vs[i]
                        kt[i] = _bitter7(xs[i], vi, eps, vmax)
                        live[i] = vi != inf
                elif kind == 1:
                    for i in range(m):
                        kt[i] = abs(xs[i])
                else:
                    for i in range(m):
                        kt[i] = xs[i] + zero  # -0.0 becomes +0.0, as the torch keys do
                if dead_mode == 1 and kind != 2:
                    vs = v[t0:t0 + m]
                    for i in range(m):
                        live[i] = vs[i] != inf
                elif dead_mode == 2:
                    q0 = t0 >> 3
                    for q in range((m + 7) // 8):
                        byte = dead_bits[q0 + q]
                        for r in range(8):
                            live[8 * q + r] = ((byte >> r) & 1) ^ 1
                elif dead_mode == 0 and exact:
                    for i in range(m):
                        live[i] = kt[i] != ninf
                if exact and dead_mode != 0:
                    for i in range(m):
                        kt[i] = kt[i] if live[i] else ninf
                for i in range(m):
                    kk = kt[i]
                    below = np.uint8(kk < lo)
                    outside = below | np.uint8(kk >= hi)
                    lt[i] = below
                    nw[i] = below & live[i]
                    bd[i] = outside ^ one  # lo <= key < hi, and NaN (no compare holds for it)
                if exact:
                    ni = 0
                    for i in range(m):
                        ni += kt[i] == ninf
                    c_ninf += ni
                words = (m + 7) // 8
                for i in range(m, words * 8):
                    lt[i] = 0
                    nw[i] = 0
                    bd[i] = 0
                cb = np.uint64(0)
                cn = np.uint64(0)
                q0 = (t0 - 0) >> 3
                for q in range(words):
                    cb += (lt64[q] * sum8) >> top
                    cn += (nw64[q] * sum8) >> top
                    new_bits[q0 + q] = np.uint8((nw64[q] * gather) >> top)
                c_below += cb
                c_new += cn
                for q in range(words):
                    if bd64[q]:
                        for r in range(8):
                            i = 8 * q + r
                            if bd[i]:
                                if c_band < cap:
                                    pos[base + c_band] = offset + t0 + i
                                    keys[base + c_band] = kt[i]
                                c_band += 1
            per[k, 0] = c_below
            per[k, 1] = c_band
            per[k, 2] = c_ninf
            per[k, 3] = c_new
        below = 0
        band = 0
        neg = 0
        new = 0
        over = 0
        for k in range(nblk):
            below += per[k, 0]
            neg += per[k, 2]
            new += per[k, 3]
            if per[k, 1] > cap:
                over = 1
        if over == 0:  # move each block's band down to one run (never onto unread entries)
            for k in range(nblk):
                c = per[k, 1]
                src = k * cap
                for t in range(c):
                    pos[band + t] = pos[src + t]
                    keys[band + t] = keys[src + t]
                band += c
        stats[0] = below
        stats[1] = band
        stats[2] = neg
        stats[3] = new
        stats[4] = over

    @njit(parallel=True, boundscheck=False, cache=True, nogil=True)
    def _scatter(bits, target, pattern, second, pattern2):
        n = target.size
        nq = bits.size
        both = second.size > 0
        for g in prange((nq + 4095) // 4096):
            for q in range(g * 4096, min(nq, (g + 1) * 4096)):
                byte = bits[q]
                if byte:
                    for r in range(8):
                        i = 8 * q + r
                        if (byte >> r) & 1 and i < n:
                            target[i] = pattern
                            if both:
                                second[i] = pattern2


    @njit(parallel=True, boundscheck=False, cache=True, nogil=True)
    def _gather(kind, x, v, dead_mode, dead_bits, exact, eps, vmax, rows, width, out):
        ninf = np.float32(-np.inf)
        inf = np.float32(np.inf)
        zero = np.float32(0.0)
        for r in prange(rows.size):
            a = rows[r] * width
            for t in range(width):
                i = a + t
                if kind == 2:
                    key = _bitter7(x[i], v[i], eps, vmax)
                elif kind == 1:
                    key = abs(x[i])
                else:
                    key = x[i] + zero
                if exact:
                    if dead_mode == 1:
                        if v[i] == inf:
                            key = ninf
                    elif dead_mode == 2:
                        if (dead_bits[i >> 3] >> (i & 7)) & 1:
                            key = ninf
                out[r * width + t] = key


def gather(kind, x, v, dead_mode, dead_bits, exact, eps, vmax, rows, width, out):
    """The keys of the `width`-position rows `rows` of one tensor into `out` (numpy float32,
    rows * width), as classify computes them; pruned positions show -inf with `exact`, else
    their natural key (0 for the never-negative scores)."""
    _gather(kind, x, v, dead_mode, dead_bits, bool(exact), np.float32(eps), np.float32(vmax), rows, int(width), out)


def block_cap(length: int, band_share: float) -> int:
    """Band entries each block of a `length` range may hold: eight times the share the
    sample expects in the band, at least 512 (a block holding more makes the pass give up)."""
    return int(min(BLOCK, length, max(512, np.ceil(8 * band_share * BLOCK))))


def classify(kind, x, v, dead_mode, dead_bits, exact, lo, hi, eps, vmax, offset, new_bits, pos, keys, cap):
    """Classify the positions of one range (numpy arrays; see the module notes). Returns
    (below lo, band size, -inf keys, new bits, overflowed); the band's positions
    (offset-based) and keys are pos[:band], keys[:band], ascending."""
    stats = np.zeros(5, np.int64)
    _classify(kind, x, v, dead_mode, dead_bits, bool(exact), np.float32(lo), np.float32(hi), np.float32(eps),
              np.float32(vmax), int(offset), new_bits, pos, keys, int(cap), stats)
    return int(stats[0]), int(stats[1]), int(stats[2]), int(stats[3]), bool(stats[4])


def scatter(bits, target, pattern: int, second=None, pattern2: int = 0):
    """target[i] = pattern (and second[i] = pattern2) where bit i of the packed `bits` is
    set. The targets are integer views of weight or state tensors, so any float dtype
    takes the pattern of 0 or +inf."""
    if second is None:
        second, pattern2 = target[:0], 0
    _scatter(bits, target, target.dtype.type(pattern), second, second.dtype.type(pattern2))


def set_threads(n: int):
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
