"""The compiled loops of cpu_pass.py (numba). Imported on first use: loading numba takes
a quarter of a second, which a run that never takes the compiled pass should not pay.
Constants and the meaning of every argument: cpu_pass.py."""
import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from lib.pruning.cpu_pass import (BLOCK, TILE, _GATHER, _SUM8, T_BITS, T_DEAD, T_DM, T_KIND, T_M, T_N,
                                  T_TILE, T_V, T_X)


def _pointer_at(of):
    """An intrinsic: the int64 address as a pointer to `of` (a table of tensors' data)."""
    def typer(typingctx, addr):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(of)))
        return types.CPointer(of)(types.int64), codegen
    return intrinsic(typer)


_f32_at, _u8_at, _i32_at = _pointer_at(types.float32), _pointer_at(types.uint8), _pointer_at(types.int32)


_DEBRUIJN = 0x03F79D71B4CB0A89
_LOW_BIT_AT = np.zeros(64, np.int64)
for _i in range(64):
    _LOW_BIT_AT[((_DEBRUIJN << _i) & (2 ** 64 - 1)) >> 58] = _i


@njit(inline="always")
def _low_bit(word):
    """The index of the lowest set bit of a nonzero uint64: isolated, times a de Bruijn
    sequence, its top six bits name it."""
    low = word & (~word + np.uint64(1))
    return _LOW_BIT_AT[(low * np.uint64(_DEBRUIJN)) >> np.uint64(58)]


@intrinsic
def _take(typingctx, counter):
    """counter[0] += 1 atomically (int64 array); returns the value before: the next work item."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", data, context.get_constant(types.int64, 1), "monotonic")
    return types.int64(counter), codegen


@njit(inline="always")
def _entry(tab, e):
    """(kind, x, m, v, dead mode, dead bits, n) of entry e of a table (cpu_pass.table_of):
    arrays over the tensors' own memory; an absent one is empty."""
    n = tab[e, T_N]
    x = carray(_f32_at(tab[e, T_X]), (n,))
    mm = carray(_f32_at(tab[e, T_M]), (n if tab[e, T_M] else 0,))
    v = carray(_f32_at(tab[e, T_V]), (n if tab[e, T_V] else 0,))
    dead = carray(_u8_at(tab[e, T_DEAD]), ((n + 7) // 8 if tab[e, T_DEAD] else 1,))
    return tab[e, T_KIND], x, mm, v, tab[e, T_DM], dead, n


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
    elif dead_mode == 0 and kind < 2:
        for i in range(m):
            live[i] = (kt[i] != ninf) | (not exact)
    if exact and dead_mode != 0:
        for i in range(m):
            kt[i] = kt[i] if live[i] else ninf

@njit(inline="always")
def _flag(i, kk, alive, lo, hi, kt, lt, nw, bd):
    """Position i's key kk and its flags (_tile_flags); alive: 1 or 0."""
    kt[i] = kk
    below = np.uint8(kk < lo)
    lt[i] = below
    nw[i] = below & alive
    bd[i] = (below | np.uint8(kk >= hi)) ^ np.uint8(1)


@njit(inline="always")
def _tile_flags(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, lo, hi, t0, m, kt, live, lt, nw, bd):
    """The keys of positions [t0, t0 + m) into kt and their flags: below lo (lt), below lo
    and alive (nw), in the band (bd: lo <= key < hi, or NaN, which no compare holds for).
    Where the second moment shows the pruned positions and their keys stay as they are (not
    exact), one loop scores and flags; it read the tile once less than _tile_keys and a
    flag loop after it (6% of a pass)."""
    if dead_mode == 1 and not exact and kind >= 1:
        # one loop per kind: a branch on the kind inside the loop kept it from vectorising
        inf = np.float32(np.inf)
        xs = x[t0:t0 + m]
        vs = v[t0:t0 + m]
        if kind == 2:
            for i in range(m):
                _flag(i, _bitter7(xs[i], vs[i], eps, vmax), np.uint8(vs[i] != inf), lo, hi, kt, lt, nw, bd)
        elif kind == 3:
            ms = mm[t0:t0 + m]
            for i in range(m):
                _flag(i, _bitter0(xs[i], ms[i], vs[i], eps, vmax), np.uint8(vs[i] != inf), lo, hi, kt, lt, nw, bd)
        else:
            for i in range(m):
                _flag(i, abs(xs[i]), np.uint8(vs[i] != inf), lo, hi, kt, lt, nw, bd)
        return
    _tile_keys(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, t0, m, kt, live)
    for i in range(m):
        _flag(i, kt[i], live[i], lo, hi, kt, lt, nw, bd)


@njit(inline="always")
def _classify_range(kind, x, mm, v, dead_mode, dead_bits, exact, lo, hi, eps, vmax, a, b, offset, new_bits,
                    bits_base, pos, keys, base, cap, kt, live, lt, nw, bd, bb):
    """Classify positions [a, b) of one array: the bits of its live keys below lo into
    new_bits from byte bits_base + a // 8 on, its band (at most `cap` entries, positions
    offset + i) into pos / keys from `base` on. Returns (below lo, band, -inf keys, new bits)."""
    gather, sum8, top = np.uint64(_GATHER), np.uint64(_SUM8), np.uint64(56)
    ninf = np.float32(-np.inf)
    one = np.uint8(1)
    lt64, nw64, bd64, bb64 = lt.view(np.uint64), nw.view(np.uint64), bd.view(np.uint64), bb.view(np.uint64)
    c_below = 0
    c_band = 0
    c_ninf = 0
    c_new = 0
    for t0 in range(a, b, TILE):
        m = min(TILE, b - t0)
        _tile_flags(kind, x, mm, v, dead_mode, dead_bits, exact, eps, vmax, lo, hi, t0, m, kt, live, lt, nw, bd)
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
        q0 = bits_base + (t0 >> 3)
        for q in range(words):
            cb += (lt64[q] * sum8) >> top
            cn += (nw64[q] * sum8) >> top
            new_bits[q0 + q] = np.uint8((nw64[q] * gather) >> top)
        c_below += np.int64(cb)
        c_new += np.int64(cn)
        # the band's flags as bits, then one step per set bit: testing each of the tile's
        # 8-byte words for a band entry cost a branch per 8 positions, a fifth of the pass
        for q in range(words):
            bb[q] = np.uint8((bd64[q] * gather) >> top)
        w64 = (words + 7) // 8
        for q in range(words, 8 * w64):
            bb[q] = 0
        for q in range(w64):
            word = bb64[q]
            while word:
                i = 64 * q + _low_bit(word)
                if c_band < cap:
                    pos[base + c_band] = offset + t0 + i
                    keys[base + c_band] = kt[i]
                c_band += 1
                word &= word - np.uint64(1)
    return c_below, c_band, c_ninf, c_new


@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _classify(kind, x, mm, v, dead_mode, dead_bits, exact, lo, hi, eps, vmax, offset, new_bits, pos, keys,
              cap, block, stats):
    n = x.size
    nblk = (n + block - 1) // block
    per = np.zeros((nblk, 4), np.int64)
    for k in prange(nblk):
        a = k * block
        kt = np.empty(TILE, np.float32)
        live = np.ones(TILE, np.uint8)
        lt = np.zeros(TILE, np.uint8)
        nw = np.zeros(TILE, np.uint8)
        bd = np.zeros(TILE, np.uint8)
        bb = np.zeros(TILE // 8, np.uint8)
        c = _classify_range(kind, x, mm, v, dead_mode, dead_bits, exact, lo, hi, eps, vmax, a, min(n, a + block),
                            offset, new_bits, 0, pos, keys, k * cap, cap, kt, live, lt, nw, bd, bb)
        per[k, 0] = c[0]
        per[k, 1] = c[1]
        per[k, 2] = c[2]
        per[k, 3] = c[3]
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
def _gather_table(tab, ent, rows, dst, width, exact, eps, vmax, out):
    # _gather over a table's tensors in one call: row r is positions [rows[r] * width, + width)
    # of entry ent[r], its keys into out from dst[r] * width on
    groups = (rows.size + 255) // 256
    sink = np.zeros(groups, np.float32)
    for g in prange(groups):
        r0, r1 = g * 256, min(rows.size, g * 256 + 256)
        touch = np.float32(0.0)  # as _gather: the group's loads first, so that they overlap
        for r in range(r0, r1):
            kind, x, mm, v, dm, dead, n = _entry(tab, ent[r])
            a = rows[r] * width
            touch += x[a]
            if v.size:
                touch += v[a]
            if mm.size:
                touch += mm[a]
        sink[g] = touch
        for r in range(r0, r1):
            kind, x, mm, v, dm, dead, n = _entry(tab, ent[r])
            _row_keys(kind, x, mm, v, dm, dead, exact, eps, vmax, rows[r] * width, width, out, dst[r] * width)


@njit(inline="always")
def _hist_range(kind, x, mm, v, dead_mode, dead_bits, eps, vmax, a, b, shift, start, width, tab, stride,
                tile_slot, tiles, tile_base, kt, slot, live, acc):
    """_digit_hist's counts of positions [a, b) of one array (a: a multiple of TILE) into
    the table `tab`; adds NaN, -inf and below-window counts to acc[0:3] and narrows the
    counted patterns' [lowest, highest] in acc[3:5]; tiles[tile_base + a // TILE + k]: tile
    k's count for the tie pass when tile_slot >= -1."""
    size = 1 << width
    sh = np.uint32(shift)
    first = np.uint32(start)
    usize = np.uint32(size)
    ninf_u = np.uint32(0x007FFFFF)  # -inf's ordered pattern; NaN's lie below it or above +inf's
    pinf_u = np.uint32(0xFF800000)
    sign = np.uint32(0x80000000)
    ut = kt.view(np.uint32)  # the keys' patterns, in place
    lo_u = np.uint32(acc[3])
    hi_u = np.uint32(acc[4])
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
            tiles[tile_base + t0 // TILE] = ct
        c_nan += cn
        c_neg += cg
        c_low += cl
    acc[0] += c_nan
    acc[1] += c_neg
    acc[2] += c_low
    acc[3] = lo_u
    acc[4] = hi_u


@njit(inline="always")
def _hist_finish(accs, shift, start, width, hist, nan, span_out, below_out):
    """Add the threads' accumulators (_hist_range) to a pass's outputs."""
    for t in range(accs.shape[0]):  # the tables are summed into the counts by the caller, once per pass
        if accs[t, 3] <= accs[t, 4]:
            span_out[0] = min(span_out[0], accs[t, 3])
            span_out[1] = max(span_out[1], accs[t, 4])
    negs = accs[:, 1].sum()
    nan[0] += accs[:, 0].sum()
    below_out[0] += accs[:, 2].sum()
    below_out[1] += negs
    # -inf's ordered pattern is 0x007FFFFF
    if negs and np.uint32((np.uint32(0x007FFFFF) >> np.uint32(shift)) - np.uint32(start)) < np.uint32(1 << width):
        hist[(0x007FFFFF >> shift) - start] += negs


@njit(inline="always")
def _new_accs(threads):
    accs = np.zeros((threads, 5), np.int64)
    accs[:, 3] = 0xFFFFFFFF
    return accs


@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _digit_hist(kind, x, mm, v, dead_mode, dead_bits, eps, vmax, start, shift, width, hist, local, nan, span_out,
                below_out, tile_slot, tile_counts):
    # exact keys (pruned positions -inf); counts the keys whose ordered pattern u has
    # u >> shift in [start, start + 2**width), in slot (u >> shift) - start, and adds the
    # keys below that window to below_out[0], the -inf keys to below_out[1]. A radix digit
    # after a `used`-bit prefix is the window start = prefix << width, shift = 32 - used -
    # width. A tile's keys, their ordered patterns and their table slots are each one
    # vectorised loop; only the increments are one at a time (a scalar loop over all of
    # it ran at 3-5 ns a key, this at about 0.8). Four tables per thread, by position mod
    # 4: runs of equal keys (the pruned ones, ties) would make each count wait for the one
    # before. With tile_slot >= -1, tile_counts[k] gets how many keys of tile k (TILE
    # positions) went to slot tile_slot (-1: to any slot), for the tie pass (_tie_pass).
    # local: int32 (threads, 4, 2**width + 64), the threads' tables (64 spare slots), kept
    # by the caller over all of a pass's tensors
    n = x.size
    threads = local.shape[0]
    accs = _new_accs(threads)
    span = (n + threads - 1) // threads
    span = (span + TILE - 1) // TILE * TILE
    for t in prange(threads):
        a = t * span
        _hist_range(kind, x, mm, v, dead_mode, dead_bits, eps, vmax, a, min(n, a + span), shift, start, width,
                    local[t].reshape(-1), local.shape[2], tile_slot, tile_counts, 0, np.empty(TILE, np.float32),
                    np.empty(TILE, np.int32), np.ones(TILE, np.uint8), accs[t])
    _hist_finish(accs, shift, start, width, hist, nan, span_out, below_out)


@njit(inline="always")
def _hash31(pos):
    """select.position_hash of one global position. Only the low 31 bits of each product
    are kept, so 32-bit unsigned products (wrapping) give the same value, and vectorise."""
    m31 = np.uint32(0x7FFFFFFF)
    h = (np.uint32(pos & 0x7FFFFFFF) * np.uint32(0x2545F491)) & m31
    h ^= h >> np.uint32(15)
    h = (h * np.uint32(0x1B873593)) & m31
    return np.int64(h ^ (h >> np.uint32(13)))


@njit(inline="always")
def _rank_bin(a, m, lo, span, bins, hist, k):
    """(shift, b, keys below bin b): a[:m] counted into hist in bins of 2**shift values from
    lo, the fewest that cover span in `bins` bins; bin b holds the k-th smallest (1-based)."""
    shift = 0
    while (span >> shift) >= bins:
        shift += 1
    hist[:] = 0
    for i in range(m):
        hist[(a[i] - lo) >> shift] += 1
    b = 0
    seen = 0
    while seen + hist[b] < k:
        seen += hist[b]
        b += 1
    return shift, b, seen


@njit(boundscheck=False)
def _select_smallest(a, k):
    """Reorder a (distinct int64) so that its k smallest come first: 1,024 bins over the
    values' range are counted, the values of the bins below the one that holds the k-th
    move to the front, and only that bin's values are partitioned (_quickselect). Hashes
    are spread evenly, so that bin holds about a thousandth of them."""
    n = a.size
    if k <= 0 or k >= n:
        return
    lo = a.min()
    shift, b, seen = _rank_bin(a, n, lo, a.max() - lo, 1024, np.zeros(1024, np.int64), k)
    j = 0
    for i in range(n):  # the bins below b to the front
        if ((a[i] - lo) >> shift) < b:
            a[i], a[j] = a[j], a[i]
            j += 1
    t = j
    for i in range(j, n):  # then bin b
        if ((a[i] - lo) >> shift) == b:
            a[i], a[t] = a[t], a[i]
            t += 1
    _quickselect(a[j:t], k - j)


@njit(boundscheck=False)
def _quickselect(a, k):
    """Reorder a (distinct int64) so that its k smallest come first."""
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


@njit(inline="always")
def _tie_scan(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, a, b, q, bound, below, new_bits, mine, kt,
              live, nw):
    """One read of the chunk [a, b) for _tie_chunk: with `below`, the bits of its live keys
    below tau into new_bits; with q, the sort keys (hash above position) of its keys equal
    to tau whose hash lies below `bound` into mine. Returns (keys kept, bits set)."""
    nw64 = nw.view(np.uint64)
    gather, sum8, top = np.uint64(_GATHER), np.uint64(_SUM8), np.uint64(56)
    k = 0
    new = 0
    for t0 in range(a, b, TILE):
        m = min(TILE, b - t0)
        words = (m + 7) // 8
        _tile_keys(kind, x, mm, v, dead_mode, dead_bits, True, eps, vmax, t0, m, kt, live)
        if below:
            for i in range(m):
                nw[i] = np.uint8(kt[i] < tau) & live[i]
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
            found = 0
            for i in range(m):  # one vectorised loop: the candidates' flags
                f = np.uint8(kt[i] == tau) & np.uint8(_hash31(g0 + i) < bound)
                nw[i] = f
                found += f
            if found:  # collect them a word of 8 flags at a time, skipping empty words
                for i in range(m, words * 8):
                    nw[i] = 0
                for w8 in range(words):
                    if nw64[w8]:
                        for r in range(8):
                            i = 8 * w8 + r
                            if nw[i]:
                                mine[k] = (_hash31(g0 + i) << np.int64(31)) | (g0 + i)
                                k += 1
    return k, new


@njit(inline="always")
def _tie_chunk(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, a, b, q, ties, new_bits, mine, kt, live,
               nw):
    """_tie_pass on the chunk [a, b): returns the bits it set."""
    m31 = np.int64(0x7FFFFFFF)
    every = np.int64(1) << np.int64(31)  # every hash is below it
    bound = every
    if q:
        # q plus 6 standard deviations of a binomial count, as a share of 2**31
        share = min(1.0, (q + 6.0 * np.sqrt(q + 1.0) + 16.0) / max(ties, 1))
        if share < 1.0:
            bound = np.int64(share * 2147483648.0)
    k, new = _tie_scan(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, a, b, q, bound, True, new_bits,
                       mine, kt, live, nw)
    if k < q:  # too few below the bound: all ties, read again
        k, _ = _tie_scan(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, a, b, q, every, False,
                         new_bits, mine, kt, live, nw)
    if q:
        q = min(q, k)  # k >= q unless the keys changed since they were counted (the caller checks the total)
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
        for c in range(t, nch, threads):
            a = c * chunk
            per[c] = _tie_chunk(kind, x, mm, v, dead_mode, dead_bits, tau, eps, vmax, goff, a, min(n, a + chunk),
                                quota[c], ties[c], new_bits, scratch[t], kt, live, nw)
    stats[0] = per.sum()


@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _tie_items(tab, items, taken, tau, eps, vmax, goffs, new_bits, scratch, out):
    # _tie_pass over a table's tensors in one call: items[k] = (entry, a, b, quota, ties), a
    # chunk [a, b) of the entry whose first weight is global position goffs[entry] and whose
    # bits start at byte tab[entry, T_BITS]; out[k] = bits it set. The threads take chunks in
    # turn, each with its own scratch row.
    threads = scratch.shape[0]
    for t in prange(threads):
        kt = np.empty(TILE, np.float32)
        live = np.ones(TILE, np.uint8)
        nw = np.zeros(TILE, np.uint8)
        while True:
            k = _take(taken)
            if k >= items.shape[0]:
                break
            e = items[k, 0]
            kind, x, mm, v, dm, dead, n = _entry(tab, e)
            out[k] = _tie_chunk(kind, x, mm, v, dm, dead, tau, eps, vmax, goffs[e], items[k, 1], items[k, 2],
                                items[k, 3], items[k, 4], new_bits[tab[e, T_BITS]:], scratch[t], kt, live, nw)


# -- many small tensors in one call: a table of their addresses (cpu_pass.table_of) ----------
# A compiled call costs about 10 us (its threads start and meet) whatever its size, which a
# model of thousands of small tensors paid per tensor and pass; here one call takes them all,
# the threads taking its pieces in turn.

@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _hist_items(tab, items, taken, eps, vmax, start, shift, width, hist, local, nan, span_out, below_out, tile_slot,
                tiles):
    # items[k] = (entry, a, b): positions [a, b) of the table's entry (a: a multiple of TILE),
    # counted into the thread's own table; the threads take items in turn (_classify_items)
    threads = local.shape[0]
    accs = _new_accs(threads)
    for t in prange(threads):
        kt = np.empty(TILE, np.float32)
        slot = np.empty(TILE, np.int32)
        live = np.ones(TILE, np.uint8)
        mine = local[t].reshape(-1)
        while True:
            k = _take(taken)
            if k >= items.shape[0]:
                break
            e = items[k, 0]
            kind, x, mm, v, dm, dead, n = _entry(tab, e)
            _hist_range(kind, x, mm, v, dm, dead, eps, vmax, items[k, 1], items[k, 2], shift, start, width, mine,
                        local.shape[2], tile_slot, tiles, tab[e, T_TILE], kt, slot, live, accs[t])
    _hist_finish(accs, shift, start, width, hist, nan, span_out, below_out)


@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _classify_items(tab, items, exact, lo, hi, eps, vmax, new_bits, pos, keys, out, taken, threads):
    # items[k] = (entry, a, b, slot, cap): positions [a, b) of the table's entry, its band (at
    # most cap entries) into pos / keys from `slot` on, positions counted from the entry's
    # start; out[k] = (below lo, band, -inf keys, new bits). Each thread takes the next item
    # when it is done with one (taken[0] counts them out), so a thread that a busy core holds
    # back delays the call by the item it holds, not by a fixed share of the work.
    for t in prange(threads):
        kt = np.empty(TILE, np.float32)
        live = np.ones(TILE, np.uint8)
        lt = np.zeros(TILE, np.uint8)
        nw = np.zeros(TILE, np.uint8)
        bd = np.zeros(TILE, np.uint8)
        bb = np.zeros(TILE // 8, np.uint8)
        while True:
            k = _take(taken)
            if k >= items.shape[0]:
                break
            e = items[k, 0]
            kind, x, mm, v, dm, dead, n = _entry(tab, e)
            c = _classify_range(kind, x, mm, v, dm, dead, exact, lo, hi, eps, vmax, items[k, 1], items[k, 2], 0,
                                new_bits, tab[e, T_BITS], pos, keys, items[k, 3], items[k, 4], kt, live, lt, nw, bd,
                                bb)
            out[k, 0] = c[0]
            out[k, 1] = c[1]
            out[k, 2] = c[2]
            out[k, 3] = c[3]


@njit(boundscheck=False, cache=True, nogil=True)
def _move_band(pos, keys, src, counts, dst_pos, dst_keys, dst):
    # counts[k] entries from src[k] on to dst[k] on, k in order (in place when dst <= src)
    for k in range(src.size):
        s0, d0 = src[k], dst[k]
        for t in range(counts[k]):
            dst_pos[d0 + t] = pos[s0 + t]
            dst_keys[d0 + t] = keys[s0 + t]


@njit(parallel=True, boundscheck=False, cache=True, nogil=True)
def _scatter_items(words, rows, items, targets, patterns, masks, taken, threads):
    # items[k] = (row r, a, b), a a multiple of 64: where bit i of row r's bits (words from
    # rows[r, 0] on, of a tensor of rows[r, 1] weights) is set, i in [a, b), write
    # patterns[r, c] into element i of each int32 array at targets[r, c] (0: none), and OR
    # the bits into the packed mask at masks[r] (0: none); the threads take items in turn
    for t in prange(threads):
        while True:
            k = _take(taken)
            if k >= items.shape[0]:
                break
            r, a, b = items[k, 0], items[k, 1], items[k, 2]
            n, w0 = rows[r, 1], rows[r, 0]
            q0, q1 = a >> 6, (b + 63) >> 6
            if masks[r]:
                mask = carray(_u8_at(masks[r]), ((n + 7) // 8,))
                for q in range(q0, q1):
                    word = words[w0 + q]
                    if word:
                        for y in range(min(8, (n + 7) // 8 - 8 * q)):
                            mask[8 * q + y] |= np.uint8((word >> np.uint64(8 * y)) & np.uint64(0xFF))
            for c in range(targets.shape[1]):
                if targets[r, c] == 0:
                    continue
                tgt = carray(_i32_at(targets[r, c]), (n,))
                pat = patterns[r, c]
                for q in range(q0, q1):
                    word = words[w0 + q]
                    i0 = 64 * q
                    while word:  # one step per set bit (bits past the tensor's end are never set)
                        tgt[i0 + _low_bit(word)] = pat
                        word &= word - np.uint64(1)


# -- the sample's ranks (bracket._rank_values) ---------------------------------------------------

@njit(boundscheck=False, cache=True, nogil=True)
def _split_at(flat, v_lo, v_hi, sub, out):
    # out = [keys < v_lo, keys <= v_lo, keys in (v_lo, v_hi)], those copied into sub in order
    # (a NaN is in none of them, as numpy's compares leave it)
    lt = 0
    le = 0
    k = 0
    for i in range(flat.size):
        x = flat[i]
        lt += x < v_lo
        le += x <= v_lo
        sub[k] = x
        k += (x > v_lo) & (x < v_hi)
    out[0] = lt
    out[1] = le
    out[2] = k


# -- resolving a collected band (resolve_cpu.py) ----------------------------------------------

@njit(boundscheck=False, cache=True, nogil=True)
def _kth_key(keys, k, out):
    # keys: a scratch copy, overwritten by their ordered patterns and reordered. Narrow the
    # range of patterns that holds the k-th smallest (1-based) by 2**11 bins a round (at
    # most three rounds for 32 bits), keeping only the keys of the bin that holds it; out =
    # [its pattern, keys below it, keys equal to it, NaN keys].
    u = keys.view(np.uint32)
    n = u.size
    sign = np.uint32(0x80000000)
    ninf_u = np.uint32(0x007FFFFF)
    pinf_u = np.uint32(0xFF800000)
    lo_u = np.uint32(0xFFFFFFFF)
    hi_u = np.uint32(0)
    nan = 0
    for i in range(n):
        p = u[i]
        q = ~p if p & sign else p | sign
        u[i] = q
        nan += (q < ninf_u) | (q > pinf_u)
        lo_u = min(lo_u, q)
        hi_u = max(hi_u, q)
    out[3] = nan
    if nan or n == 0 or k < 1 or k > n:
        return
    below = 0
    m = n
    kk = k
    hist = np.zeros(2048, np.int64)
    while True:
        span = np.int64(hi_u) - np.int64(lo_u)
        if span == 0:
            out[0], out[1], out[2] = np.int64(lo_u), below, m
            return
        if m <= 64:
            s = np.sort(u[:m])
            val = s[kk - 1]
            first = kk - 1
            while first > 0 and s[first - 1] == val:
                first -= 1
            last = kk - 1
            while last + 1 < m and s[last + 1] == val:
                last += 1
            out[0], out[1], out[2] = np.int64(val), below + first, last - first + 1
            return
        shift, b, seen = _rank_bin(u, m, lo_u, span, 2048, hist, kk)
        below += seen
        kk -= seen
        b_lo = np.uint32(np.int64(lo_u) + (np.int64(b) << shift))
        b_hi = np.uint32(min(np.int64(hi_u), np.int64(b_lo) + (np.int64(1) << shift) - 1))
        j = 0
        for i in range(m):
            q = u[i]
            u[j] = q
            j += (q >= b_lo) & (q <= b_hi)
        m = j
        lo_u = b_lo
        hi_u = b_hi


@njit(boundscheck=False, cache=True, nogil=True)
def _gather_ranges(keys, starts, ends, out):
    # keys[starts[e]:ends[e]] for every e, one after another into out
    o = 0
    for e in range(starts.size):
        for t in range(starts[e], ends[e]):
            out[o] = keys[t]
            o += 1


@njit(boundscheck=False, cache=True, nogil=True)
def _band_ties(keys, tau, starts, ends, out):
    # out[e] = how many of keys[starts[e]:ends[e]] equal tau
    for e in range(starts.size):
        c = 0
        for t in range(starts[e], ends[e]):
            c += keys[t] == tau
        out[e] = c


@njit(boundscheck=False, cache=True, nogil=True)
def _band_commit(bits, pos, keys, tau, starts, ends, bases, goffs, quotas, out, scratch):
    # entry e (keys[starts[e]:ends[e]], positions of a tensor whose bits start at byte
    # bases[e] and whose first weight is global position goffs[e]): set the bits of its keys
    # below tau and of the quotas[e] keys equal to tau with the smallest position hash
    # (equal hashes by position, as _tie_chunk and select.pick_ties choose: the entry's
    # positions ascend, so its index below the hash orders them);
    # out[e] = bits set
    for e in range(starts.size):
        a, b, base, g0 = starts[e], ends[e], bases[e], goffs[e]
        c = 0
        for t in range(a, b):  # no branch: about half the band is below tau, in no order
            p = pos[t]
            below = keys[t] < tau
            bits[base + (p >> 3)] |= np.uint8(below) << np.uint8(p & 7)
            c += below
        q = quotas[e]
        if q:
            k = 0
            for t in range(a, b):
                if keys[t] == tau:
                    scratch[k] = (_hash31(g0 + pos[t]) << np.int64(32)) | np.int64(t - a)
                    k += 1
            sel = scratch[:k]
            if q < k:
                _select_smallest(sel, q)
            for t in range(q):
                p = pos[a + (sel[t] & np.int64(0xFFFFFFFF))]
                bits[base + (p >> 3)] |= np.uint8(1 << (p & 7))
            c += q
        out[e] = c
