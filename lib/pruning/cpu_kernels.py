"""The compiled loops of cpu_pass.py (numba). Imported on first use: loading numba takes
a quarter of a second, which a run that never takes the compiled pass should not pay.
Constants and the meaning of every argument: cpu_pass.py."""
import numpy as np
from numba import njit, prange

from lib.pruning.cpu_pass import BLOCK, TILE, _GATHER, _SUM8


@njit(inline="always")
def _bitter7(w, v, eps, vmax):
    vc = vmax if v > vmax else v  # NaN stays NaN, as torch.clamp leaves it
    return abs(w) * np.sqrt(np.sqrt(vc + eps))

@njit(inline="always")
def _bitter0(w, m, v, eps, vmax):
    vc = vmax if v > vmax else v
    return (w * w) * abs(m) / (np.sqrt(vc) + eps)


@njit(inline="always")
def _tile_keys(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, t0, m, kt, live):
    """The keys of positions [t0, t0 + m) into kt, and into live whether each position is
    alive (where the mask shows it); with `exact`, a pruned position's key is -inf. Each
    loop has one job and no branch on the data, so the compiler vectorises it."""
    inf = np.float32(np.inf)
    ninf = np.float32(-np.inf)
    xs = x[t0:t0 + m]
    if kind == 2:  # v is the score's and shows the pruned positions (dead_mode 1)
        vs = v[t0:t0 + m]
        for i in range(m):
            vi = vs[i]
            kt[i] = _bitter7(xs[i], vi, eps, vmax)
            live[i] = vi != inf
    elif kind == 3:  # as kind 2, and m is the first moment
        vs = v[t0:t0 + m]
        ms = mm[t0:t0 + m]
        for i in range(m):
            vi = vs[i]
            kt[i] = _bitter0(xs[i], ms[i], vi, eps, vmax)
            live[i] = vi != inf
    elif kind == 1:
        for i in range(m):
            kt[i] = abs(xs[i])
    else:
        for i in range(m):
            kt[i] = xs[i] + np.float32(0.0)  # -0.0 becomes +0.0, as the torch keys do
    if dead_mode == 1 and kind < 2:
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

@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _classify(kind, x, mm, v, dead_mode, dead_bits, exact, lo, hi, eps, vmax, offset, new_bits, pos, keys,
              cap, block, stats):
    n = x.size
    nblk = (n + block - 1) // block
    per = np.zeros((nblk, 4), np.int64)
    gather, sum8, top = np.uint64(_GATHER), np.uint64(_SUM8), np.uint64(56)
    ninf = np.float32(-np.inf)
    one = np.uint8(1)
    for k in prange(nblk):
        a = k * block
        b = min(n, a + block)
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
            _tile_keys(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, t0, m, kt, live)
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
            q0 = t0 >> 3
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
        band += per[k, 1]
        if per[k, 1] > cap:
            over = 1
    if over == 0:  # move each block's band down to one run (never onto unread entries)
        band = 0
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
def _scatter(bits, words, dense, target, pattern, second, pattern2):
    n = target.size
    both = second.size > 0
    if dense:  # a word of 64 at a time: masked stores, no branch per byte that fails half the time
        nw = words.size
        for g in prange((nw + 511) // 512):
            for q in range(g * 512, min(nw, (g + 1) * 512)):
                word = words[q]
                if word:
                    a = 64 * q
                    m = min(64, n - a)
                    t = target[a:a + m]
                    for r in range(m):
                        if (word >> np.uint64(r)) & np.uint64(1):
                            t[r] = pattern
                    if both:
                        s = second[a:a + m]
                        for r in range(m):
                            if (word >> np.uint64(r)) & np.uint64(1):
                                s[r] = pattern2
        first = 8 * words.size
    else:
        first = 0
    nq = bits.size
    for g in prange((nq - first + 4095) // 4096):
        for q in range(first + g * 4096, min(nq, first + (g + 1) * 4096)):
            byte = bits[q]
            if byte:
                for r in range(8):
                    i = 8 * q + r
                    if (byte >> r) & 1 and i < n:
                        target[i] = pattern
                        if both:
                            second[i] = pattern2


@njit(inline="always")
def _key_at(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, i):
    """Position i's key, one at a time (the sample, the counting passes); with `exact` a
    pruned position's is -inf."""
    if kind == 2:
        key = _bitter7(x[i], v[i], eps, vmax)
    elif kind == 3:
        key = _bitter0(x[i], mm[i], v[i], eps, vmax)
    elif kind == 1:
        key = abs(x[i])
    else:
        key = x[i] + np.float32(0.0)  # -0.0 becomes +0.0, as the torch keys do
    if exact:
        if dead_mode == 1:
            key = np.float32(-np.inf) if v[i] == np.float32(np.inf) else key
        elif dead_mode == 2:
            key = np.float32(-np.inf) if (dead_bits[i >> 3] >> (i & 7)) & 1 else key
    return key


@njit(inline="always")
def _row_keys(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, a, width, out, o):
    for t in range(width):
        out[o + t] = _key_at(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, a + t)

@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _gather(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, rows, width, out):
    groups = (rows.size + 255) // 256
    sink = np.zeros(groups, np.float32)
    for g in prange(groups):
        r0, r1 = g * 256, min(rows.size, g * 256 + 256)
        # touch the group's rows first: the loads of this tight loop overlap, so the
        # memory latency is paid about once per group instead of once per row
        touch = np.float32(0.0)
        for r in range(r0, r1):
            touch += x[rows[r] * width]
            if kind >= 2 or dead_mode == 1:
                touch += v[rows[r] * width]
            if kind == 3:
                touch += mm[rows[r] * width]
        sink[g] = touch
        for r in range(r0, r1):
            _row_keys(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, rows[r] * width, width, out, r * width)


@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _digit_hist(kind, x, mm, v, dead_mode, dead_bits, eps, vmax, start, shift, width, hist, local, nan, span_out,
                below_out, tile_slot, tile_counts):
    # exact keys (pruned positions -inf); counts the keys whose ordered pattern u has
    # u >> shift in [start, start + 2**width), in slot (u >> shift) - start, and adds the
    # keys below that window to below_out[0], the -inf keys to below_out[1]. A radix digit
    # after a `used`-bit prefix is the window start = prefix << width, shift = 32 - used -
    # width. A tile's keys, their ordered patterns and their table slots are each one
    # vectorised loop; only the increments are one at a time (a scalar loop over all of it
    # ran at 3-5 ns a key, this at about 0.8). Four tables per thread, by position mod 4: runs of equal keys
    # (the pruned ones, ties) would make each count wait for the one before. With
    # tile_slot >= -1, tile_counts[k] gets how many keys of tile k (TILE positions) went to
    # slot tile_slot (-1: to any slot), for the tie pass (_tie_pass).
    n = x.size
    size = 1 << width
    # local: int32 (threads, 4, 2**width + 64), the threads' tables (64 spare slots: see below),
    # kept by the caller over all of a pass's tensors
    threads = local.shape[0]
    stride = local.shape[2]
    nans = np.zeros(threads, np.int64)
    negs = np.zeros(threads, np.int64)
    lows = np.zeros(threads, np.int64)
    umin = np.full(threads, 0xFFFFFFFF, np.int64)
    umax = np.full(threads, -1, np.int64)
    sh = np.uint32(shift)
    first = np.uint32(start)
    usize = np.uint32(size)
    ninf_u = np.uint32(0x007FFFFF)  # -inf's ordered pattern; NaN's lie below it or above +inf's
    pinf_u = np.uint32(0xFF800000)
    sign = np.uint32(0x80000000)
    span = (n + threads - 1) // threads
    span = (span + TILE - 1) // TILE * TILE
    for t in prange(threads):
        a = t * span
        b = min(n, a + span)
        tab = local[t].reshape(-1)
        kt = np.empty(TILE, np.float32)
        ut = kt.view(np.uint32)  # the keys' patterns, in place
        slot = np.empty(TILE, np.int32)
        live = np.ones(TILE, np.uint8)
        lo_u = np.uint32(0xFFFFFFFF)
        hi_u = np.uint32(0)
        c_nan = 0
        c_neg = 0
        c_low = 0
        for t0 in range(a, b, TILE):
            m = min(TILE, b - t0)
            _tile_keys(kind, x, mm, v, dead_mode, dead_bits, True, eps, vmax, t0, m, kt, live)
            cn = 0
            cg = 0
            cl = 0
            for i in range(m):
                # the pattern as an unsigned integer in the keys' order: a negative pattern
                # (sign bit set) inverted, a positive one with its sign bit set
                p = ut[i]
                u = p ^ (np.uint32(np.int32(p) >> 31) | sign)
                ut[i] = u
                cn += (u > pinf_u) | (u < ninf_u)
            for i in range(m):
                u = ut[i]
                d = (u >> sh) - first  # wraps round to a large number below the window
                ok = d < usize
                neg = u == ninf_u
                cg += neg
                cl += (u >> sh) < first
                # -inf (the pruned positions, most of them late in the ramp) is counted in a
                # register, and so are keys outside the window: their increments go round
                # spare slots that are never read
                slot[i] = (d if ok and not neg else size + (i & 63)) + (i & 3) * stride
                lo_u = min(lo_u, u if ok else np.uint32(0xFFFFFFFF))
                hi_u = max(hi_u, u if ok else np.uint32(0))
            for i in range(m):
                tab[slot[i]] += 1
            if tile_slot >= -1:
                ct = 0
                for i in range(m):
                    e = slot[i] - (i & 3) * stride
                    ct += (e == tile_slot) if tile_slot >= 0 else (e < size)
                tile_counts[t0 // TILE] = ct
            c_nan += cn
            c_neg += cg
            c_low += cl
        nans[t] = c_nan
        negs[t] = c_neg
        lows[t] = c_low
        umin[t] = lo_u
        umax[t] = hi_u
    for t in range(threads):  # the tables are summed into the counts by the caller, once per pass
        if umax[t] >= 0 and umin[t] <= umax[t]:
            span_out[0] = min(span_out[0], umin[t])
            span_out[1] = max(span_out[1], umax[t])
    nan[0] += nans.sum()
    below_out[0] += lows.sum()
    below_out[1] += negs.sum()
    if negs.sum() and np.uint32((ninf_u >> sh) - first) < usize:  # -inf's ordered pattern is 0x007FFFFF
        hist[(0x007FFFFF >> shift) - start] += negs.sum()


@njit(inline="always")
def _hash31(pos):
    """select.position_hash of one global position."""
    m31 = np.int64(0x7FFFFFFF)
    h = ((pos & m31) * np.int64(0x2545F491)) & m31
    h ^= h >> np.int64(15)
    h = (h * np.int64(0x1B873593)) & m31
    return h ^ (h >> np.int64(13))


@njit(boundscheck=False)
def _select_smallest(a, k):
    """Reorder a (distinct int64) so that its k smallest come first (quickselect)."""
    lo = 0
    hi = a.size - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        # median of three as the pivot
        x, y, z = a[lo], a[mid], a[hi]
        piv = max(min(x, y), min(max(x, y), z))
        i, j = lo, hi
        while i <= j:
            while a[i] < piv:
                i += 1
            while a[j] > piv:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k - 1 <= j:
            hi = j
        elif k - 1 >= i:
            lo = i
        else:
            break


@njit(boundscheck=False, nogil=True)
def _tie_chunk(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, a, b, q, ties, new_bits, mine, kt, live,
               nw, hk):
    """_tie_pass on the chunk [a, b): returns the bits it set."""
    nw64 = nw.view(np.uint64)
    gather, sum8, top = np.uint64(_GATHER), np.uint64(_SUM8), np.uint64(56)
    m31 = np.int64(0x7FFFFFFF)
    new = 0
    bound = np.int64(1) << np.int64(31)  # every hash is below it
    if q:
        # q plus 6 standard deviations of a binomial count, as a share of 2**31
        share = min(1.0, (q + 6.0 * np.sqrt(q + 1.0) + 16.0) / max(ties, 1))
        if share < 1.0:
            bound = np.int64(share * 2147483648.0)
    k = 0
    for attempt in range(2):
        k = 0
        for t0 in range(a, b, TILE):
            m = min(TILE, b - t0)
            _tile_keys(kind, x, mm, v, dead_mode, dead_bits, True, eps, vmax, t0, m, kt, live)
            if attempt == 0:
                for i in range(m):
                    nw[i] = np.uint8(kt[i] < tau) & live[i]
                words = (m + 7) // 8
                for i in range(m, words * 8):
                    nw[i] = 0
                cn = np.uint64(0)
                q0 = t0 >> 3
                for w8 in range(words):
                    cn += (nw64[w8] * sum8) >> top
                    new_bits[q0 + w8] |= np.uint8((nw64[w8] * gather) >> top)
                new += np.int64(cn)
            if q:
                g0 = goff + t0
                for i in range(m):  # one vectorised loop: the candidates' flags and sort keys
                    h = _hash31(g0 + i)
                    hk[i] = (h << np.int64(31)) | (g0 + i)
                    nw[i] = (kt[i] == tau) & (h < bound)
                for i in range(m):
                    mine[k] = hk[i]
                    k += nw[i]  # kept by advancing k
        if k >= q:
            break
        bound = np.int64(1) << np.int64(31)  # too few below the bound: all ties, read again
    if q:
        sel = mine[:k]
        if q < k:
            _select_smallest(sel, q)
        for e in range(q):
            p = (sel[e] & m31) - goff
            new_bits[p >> 3] |= np.uint8(1 << (p & 7))
        new += q
    return new


@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _tie_pass(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, chunk, quota, ties, new_bits, scratch,
              stats):
    # the chunks of one tensor (exact keys): set the bit of every live key below tau, and
    # of the quota[c] keys equal to tau in chunk c (ties[c] of them) whose global position
    # goff + i has the smallest hash (ties of hashes by position: the hash, shifted, above
    # the position). The hashes are uniform, so a chunk first keeps only the ties whose
    # hash lies below a bound that the quota's smallest pass by a wide margin, and chooses
    # among those; in the rare chunk where too few pass, it reads its keys again.
    n = x.size
    nch = (n + chunk - 1) // chunk
    threads = scratch.shape[0]
    per = np.zeros(nch, np.int64)
    for t in prange(threads):
        kt = np.empty(TILE, np.float32)
        live = np.ones(TILE, np.uint8)
        nw = np.zeros(TILE, np.uint8)
        hk = np.empty(TILE, np.int64)
        for c in range(t, nch, threads):
            a = c * chunk
            per[c] = _tie_chunk(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, a, min(n, a + chunk),
                                quota[c], ties[c], new_bits, scratch[t], kt, live, nw, hk)
    stats[0] = per.sum()
