"""One scoring pass for an exact mask update on ordinary inputs: a sampled bracket.

`bracketed(source, goal, ...)` tries to settle select.prune_lowest's cut in a single pass
over the scores; when it cannot, it returns None having pruned nothing, and the radix
selection (select.py) runs as before. So an update costs one pass on ordinary inputs and
at most 1 + the radix bound on any input (docs/pruning-selection.md).

1. Sample: score SAMPLE_KEYS positions in blocks of BLOCK neighbours, one block drawn
   uniformly at random from each of as many equal strata of all blocks (seeded by the
   caller's step mixed by a hash, so no stride lines up with rows, and a new draw every
   update). Pruned positions show their dead key, below every live key, as they count.
   From the sample, take a bracket [lo, hi) around the rank of the cut, Z standard errors
   wide on either side; the standard error comes from the spread of the blocks, so
   neighbours that resemble one another widen it instead of fooling it.
2. One pass: per chunk, the keys below lo are recorded as bits (1 per weight) and
   counted, the keys in [lo, hi) are collected with their positions (at most `cap`);
   a NaN fails every compare and so lands in the band, where it is seen. Nothing is
   pruned. A source with `squared_keys` (bitter7: w^2 * sqrt(v + eps), one square root
   instead of two) is placed by them against the squared bounds widened by
   score_registry.SQUARED_REL; the positions they cannot place (the widened band) get
   their exact keys from `keys_of` once per tensor at the end of the pass, so every
   position lands where its exact key puts it (squared_thresholds says when it is safe).
3. When the count below lo and the band together hold the cut, it is resolved among the
   band's keys exactly as the radix route resolves a collected bin (select._resolve, or
   its compiled twin resolve_cpu on CPU: the same tau, tie quota and tie hash, so the
   same positions go); then the recorded bits
   are pruned chunk by chunk (pruned positions below lo again: harmless), without
   scoring again. Otherwise (the bracket missed, the band overflowed, a NaN, a -inf
   among the live keys) the bits are dropped.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lib.pruning import cpu_pass, resolve_cpu, score_registry, scores
from lib.pruning.masks import _alive_table, pack_bits


def resolve_bytes(band, keys):
    from lib.pruning.select import resolve_bytes as of
    return of(band, keys)

BLOCK = 32  # neighbours scored together: two 64-byte lines of float32 weights per draw (16 cost more
# random reads, which wait on memory, for no narrower band: 5% of an update at 28M, measured)
SAMPLE_KEYS = 1 << 18  # a wider band to classify (about 0.9% of the weights at the ramp's middle) for half the
# random reads and ranking of 2**19 (measured: 2.93x against 3.09x a fused step at 28M)
WINDOW_SAMPLE_KEYS = 1 << 14  # for a window of the compiled radix selection (bracketed)
Z = 4.5  # standard errors either side: a miss (one more pass) about once in 150,000 updates
def sample_rows(total_rows: int, blocks: int, seed: int) -> torch.Tensor:
    """`blocks` ascending row indices in [0, total_rows): one uniform draw from each of
    `blocks` equal strata."""
    g = torch.Generator().manual_seed(seed % (1 << 63))
    start = torch.arange(blocks + 1, dtype=torch.int64) * total_rows // blocks
    width = (start[1:] - start[:-1]).double()
    return start[:-1] + (torch.rand(blocks, generator=g, dtype=torch.float64) * width).long()


def mix_seed(step: int, count: int) -> int:
    """A 63-bit seed from the caller's step and the count to prune (splitmix64's finaliser)."""
    z = (step * 0x9E3779B97F4A7C15 + count * 0xBF58476D1CE4E5B9 + 1) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) >> 1


def _sample(source, seed, ledger, sample_keys):
    """(keys of the sample as a (blocks, BLOCK) float32 array, or None if nothing to sample)."""
    rows = [n // BLOCK for n in source.sizes]
    total = sum(rows)
    # at most 1/16 of the positions: a layer scored alone (scope = layer) samples a share of itself
    blocks = min(total // 16, sample_keys // BLOCK)
    if blocks < 64:
        return None
    ledger.hold(blocks * 40)  # drawing the rows: int64 and float64 temporaries, at most 5 per block
    picked = sample_rows(total, blocks, seed)
    ledger.free(blocks * 32)
    starts = torch.tensor([0] + list(np.cumsum(rows)), dtype=torch.int64)
    ledger.hold(blocks * BLOCK * 4)  # the keys
    held = blocks * BLOCK * 4 + blocks * 8  # freed with the rows drawn
    keys = torch.empty(blocks, BLOCK, dtype=torch.float32, device=source.device)
    step = max(1, source.chunk // BLOCK)  # rows scored at once: the chunk buffers hold them
    edges = torch.searchsorted(picked, starts).tolist()
    compiled = FUSED and source.device.type == "cpu" and cpu_pass.available() and hasattr(source, "cpu_inputs")
    exact = source.dead_key is None
    # the tensors of the compiled pass's table in one call (cpu_pass.gather_table)
    table = source.cpu_table(exact) if compiled and hasattr(source, "cpu_table") else None
    in_table = set()
    if table is not None:
        idx, tab = table
        in_table = set(idx)
        entry = np.full(len(rows), -1, np.int64)
        entry[idx] = np.arange(len(idx))
        ledger.hold(blocks * 40)  # each row's tensor, entry, row within it and place: int64 temporaries
        pick = picked.numpy()
        tensor = np.searchsorted(starts.numpy()[1:], pick, side="right")
        mine = np.flatnonzero(entry[tensor] >= 0)
        cpu_pass.gather_table(tab, entry[tensor[mine]], pick[mine] - starts.numpy()[tensor[mine]], mine, BLOCK,
                              exact, scores.EPS, score_registry.VMAX, keys.view(-1).numpy())
        del tensor, mine
        ledger.free(blocks * 40)
    for j in range(len(rows)):
        lo, hi = edges[j], edges[j + 1]
        if j in in_table:
            continue
        inputs = source.cpu_inputs(j, exact) if compiled and hi > lo else None
        if inputs is not None:  # one compiled loop scores the tensor's rows in place
            kind, x, m, v, dead_mode, dead = inputs
            if dead_mode == cpu_pass.DEAD_STATE:
                v = dead
            cpu_pass.gather(kind, x, v if v is not None else x[:0], dead_mode,
                            dead if dead_mode == cpu_pass.DEAD_BITS else _NO_BITS, exact, scores.EPS,
                            score_registry.VMAX, (picked[lo:hi] - starts[j]).numpy(), BLOCK,
                            keys[lo:hi].view(-1).numpy(), m=m)
            continue
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            r = (picked[a:b] - starts[j]).to(source.device)
            keys[a:b] = source.keys_at(j, r, BLOCK).view(-1, BLOCK)
    return keys, held


_NO_BITS = np.zeros(1, np.uint8)
PILOT_Z = 8.0  # the pilot (one key per block) only narrows where the sample's ranks are looked up


def _rank_values(keys, ranks, floor):
    """Values of the sample (a (blocks, BLOCK) array) at ascending `ranks` (0-based; a rank
    below 0 gives `floor`, one past the end +inf), without partitioning all of it: a pilot
    of one key per block names a value range holding the wanted ranks, and only the
    sample's keys inside it are partitioned (all of them when the pilot missed). Keys
    equal to the range's lower end (the pruned ones' dead key, say) are counted, not
    partitioned."""
    m, blocks = keys.numel(), keys.shape[0]
    inside = [r for r in ranks if 0 <= r < m]
    if not inside:
        return [floor if r < 0 else math.inf for r in ranks]
    flat = keys.view(-1).cpu().numpy()
    pilot = flat[::BLOCK].copy()
    se = math.sqrt(max(blocks * 0.25, 1.0))
    p_lo = int(math.floor(inside[0] / m * blocks - PILOT_Z * se)) - 1
    p_hi = int(math.ceil(inside[-1] / m * blocks + PILOT_Z * se)) + 1
    want = [r for r in (p_lo, p_hi) if 0 <= r < blocks]
    if want:
        pilot.partition(want)
    v_lo = float(pilot[p_lo]) if p_lo >= 0 else -math.inf
    v_hi = float(pilot[p_hi]) if p_hi < blocks else math.inf
    c_lt, c_le, sub = _split_at(flat, v_lo, v_hi)
    out = {}
    for r in inside:
        if c_lt <= r < c_le:
            out[r] = v_lo
    rest = [r for r in inside if r not in out]
    if rest:
        if c_le <= rest[0] and rest[-1] < c_le + sub.size:
            sub.partition([r - c_le for r in rest])
            out.update((r, float(sub[r - c_le])) for r in rest)
        else:  # the pilot missed: partition the whole sample
            whole = flat.copy()
            whole.partition(rest)
            out.update((r, float(whole[r])) for r in rest)
    return [floor if r < 0 else math.inf if r >= m else out[r] for r in ranks]


def _split_at(flat, v_lo, v_hi):
    """(keys < v_lo, keys <= v_lo, the keys strictly between v_lo and v_hi in order): one
    compiled read of the sample where numba is there (five numpy passes took most of a
    bracket's 2 ms)"""
    if cpu_pass.available():
        sub = np.empty(flat.size, np.float32)
        out = np.zeros(3, np.int64)
        cpu_pass.kernels()._split_at(flat, np.float32(v_lo), np.float32(v_hi), sub, out)
        return int(out[0]), int(out[1]), sub[:out[2]]
    return (int(np.count_nonzero(flat < v_lo)), int(np.count_nonzero(flat <= v_lo)),
            flat[(flat > v_lo) & (flat < v_hi)])


def _bracket_of(keys, goal_frac, z, floor):
    """(lo, hi, share of the sample in [lo, hi)) around rank goal_frac of the sample, z
    standard errors either side."""
    m, blocks = keys.numel(), keys.shape[0]
    q = min(max(goal_frac, 0.0), 1.0)
    k = min(int(q * m), m - 1)
    (x,) = _rank_values(keys, [k], floor)
    # the rank's standard error from the spread of the blocks' shares below the cut's
    # value, never below that of independent draws
    # numpy, on this thread: a torch op this size runs on torch's thread pool, and a pool
    # thread that a busy neighbour holds stalled the update for a timeslice (25 ms)
    share = np.count_nonzero(keys.cpu().numpy() < np.float32(x), axis=1).astype(np.float64)
    var = float(share.var(ddof=1)) if blocks > 1 else 0.0
    se = math.sqrt(max(var * blocks, q * (1 - q) * m, 1.0))
    lo_rank, hi_rank = int(math.floor(k - z * se)) - 1, int(math.ceil(k + z * se)) + 1
    lo, hi = _rank_values(keys, [lo_rank, hi_rank], floor)
    return lo, hi, (min(hi_rank, m) - max(lo_rank, 0)) / m


def bracketed(source, count, dead, sel, *, cap, seed, ledger, z=None, sample_keys=SAMPLE_KEYS, resolve, finish,
              windows=False):
    """Prune `count` live positions in one scoring pass, or return None having pruned
    nothing (module notes). `resolve`, `finish`: select's, so both routes agree. With
    `windows`, a bracket whose band would not fit in `cap` (or that the dead keys' value
    holds) comes back as a (lo, hi) window for the compiled radix selection's first pass,
    which counts fine bins over it instead of collecting it (radix_cpu.py)."""
    z = Z if z is None else z
    dead_total = sum(dead)
    total = sum(source.sizes)
    goal = dead_total + count
    exact = source.dead_key is None
    floor = -math.inf if exact else source.dead_key
    q = goal / total
    too_wide = 2 * z * math.sqrt(q * (1 - q) / max(sample_keys, 1)) * total > cap
    if too_wide and not windows:
        return None  # the band of even independent draws would not fit: not worth a sample
    # a window needs no narrow bracket (its 2**11 bins split a wide one finely): a smaller sample
    got = _sample(source, seed, ledger, min(sample_keys, WINDOW_SAMPLE_KEYS) if too_wide else sample_keys)
    if got is None:
        return None
    keys, held = got
    try:
        ledger.hold(keys.numel())  # the flags of the blocks' shares below the cut
        lo, hi, band_frac = _bracket_of(keys, q, z, floor)
        if windows and lo <= floor < hi:
            # a window from the dead keys' value up would spread its bins over every
            # octave below the cut: start it one octave below the lowest sampled key above
            # that value (the keys below the window, live keys equal to the dead keys'
            # value among them, are counted exactly; if the cut is among them, it missed)
            ledger.hold(keys.numel() * 5)
            flat = keys.cpu().numpy().reshape(-1)
            low = float(np.min(flat, initial=np.inf, where=flat > floor))
            ledger.free(keys.numel() * 5)
            lo = min(hi, low / 2 if low > 0 else 2 * low)
    finally:
        n_keys = keys.numel()
        del keys
        got = None  # it holds the keys too: they must go before the pass, as the ledger says
        ledger.free(held + n_keys)
    # keys below lo are all pruned, so lo must lie above the dead keys (and the live keys
    # equal to them): at least the next float32 above the floor
    lo_live = max(lo, float(np.nextafter(np.float32(floor), np.float32(1.0))))
    if too_wide or band_frac * total > cap or hi <= lo_live:
        # too wide, or the cut among the dead keys' value (a pass could only miss); the
        # window's keys are exact (pruned positions at -inf), so its lower end may be the floor
        return (lo, hi) if windows else None
    if FUSED and source.device.type == "cpu" and cpu_pass.available():
        return _compiled_pass(source, dead, sel, goal, lo_live, hi, cap, exact, ledger, finish, band_frac)
    return _one_pass(source, dead, sel, goal, lo_live, hi, cap, exact, ledger, resolve, finish)


def reads_in_place(source) -> bool:
    """Whether the sample and the pass read every tensor of `source` in place, through the
    compiled loops' table: they then need none of the source's chunk buffers."""
    if not (FUSED and source.device.type == "cpu" and cpu_pass.available() and hasattr(source, "cpu_table")):
        return False
    table = source.cpu_table(source.dead_key is None)
    return table is not None and len(table[0]) == len(source.sizes)


# the compiled pass on CPU (cpu_pass.py); tests switch it off to exercise the torch route
FUSED = True
RANGE = 1 << 22  # positions per compiled call: bounds the blocks' band scratch
SCRATCH_BYTES = 12  # per band slot of a call's blocks: int64 position, float32 key


def _compiled_pass(source, dead, sel, goal, lo, hi, cap, exact, ledger, finish, band_frac, bracketed=True):
    """_one_pass through cpu_pass: one compiled loop per tensor range (the source's own
    inputs when it has `cpu_inputs`, else its keys chunk by chunk), new bits only, the band
    resolved by resolve_cpu, committed by `prune_bits`."""
    byte_at, nbytes = [], 0
    for n in source.sizes:  # each tensor's bits start on an 8-byte word
        byte_at.append(nbytes)
        nbytes += -(-n // 64) * 8
    # every tensor the loops can read in one call through a table, in pieces the threads
    # take in turn (cpu_pass.classify_items); the others one call per range
    table = source.cpu_table(exact) if hasattr(source, "cpu_table") else None
    in_table = () if table is None else set(table[0])
    rest = [n for i, n in enumerate(source.sizes) if i not in in_table]
    span = min(RANGE, max(rest)) if rest else 0
    slots = -(-span // cpu_pass.BLOCK) * cpu_pass.block_cap(span, band_frac) if span else 0
    items = None if table is None else piece_slots(table[1], band_frac)
    work = nbytes + (slots + (0 if items is None else _slot_count(items))) * SCRATCH_BYTES
    ledger.hold(work)
    held = 0
    try:
        threads = torch.get_num_threads()
        cpu_pass.set_threads(threads)
        # torch's allocations, so its profiler sees what the ledger counts
        bits = cpu_pass.zeroed(nbytes, torch.uint8)
        pos_buf = torch.empty(slots, dtype=torch.int64).numpy()
        key_buf = torch.empty(slots, dtype=torch.float32).numpy()
        none_f, none_u8 = np.zeros(1, np.float32), np.zeros(1, np.uint8)
        band, in_band, n_lo, n_neg = resolve_cpu.Band(), 0, 0, 0
        below, new = [0] * len(source.sizes), [0] * len(source.sizes)
        sel.passes += 1  # an abandoned pass counts too
        if table is not None:
            idx, tab = table
            tab[:, cpu_pass.T_BITS] = np.asarray(byte_at, np.int64)[idx]
            got = _classify_pieces(tab, items, (exact, lo, hi, scores.EPS, score_registry.VMAX, bits), threads,
                                   cap, sel, ledger)
            if got is None:
                return None
            out, pos_t, key_t, at, grown = got
            work += grown
            in_band = int(out[:, 1].sum())
            first = np.searchsorted(items[:, 0], np.arange(len(idx)))  # each entry's first piece
            per = np.add.reduceat(out, first, axis=0)
            e_at = at[first]
            n_lo, n_neg = int(per[:, 0].sum()), int(per[:, 2].sum())
            for e, i in enumerate(idx):
                below[i], new[i] = int(per[e, 0]), int(per[e, 3])
                sel.chunk_visits += -(-source.sizes[i] // source.chunk)
            for e in np.flatnonzero(per[:, 1]).tolist():
                band.add(idx[e], 0, source.sizes[idx[e]], pos_t, key_t, source.chunk, int(e_at[e]),
                         int(e_at[e] + per[e, 1]))
        for i, n in enumerate(source.sizes):
            if i in in_table:
                continue
            inputs = source.cpu_inputs(i, exact) if hasattr(source, "cpu_inputs") else None
            step = RANGE if inputs is not None else source.chunk
            for a in range(0, n, step):
                b = min(a + step, n)
                if inputs is not None:
                    kind, x, m, v, dead_mode, dead_arr = inputs
                    x, v = x[a:b], v[a:b] if v is not None else none_f
                    m = m[a:b] if m is not None else None
                else:  # the source's keys, pruned positions as its keys show them
                    kind, x, m, v, dead_mode, dead_arr = cpu_pass.KEYS, source.keys(i, a, b, exact).numpy(), None, \
                        none_f, cpu_pass.DEAD_NONE, None
                dead_part = dead_arr[a // 8:] if dead_mode == cpu_pass.DEAD_BITS else none_u8
                if dead_mode == cpu_pass.DEAD_STATE:
                    v = dead_arr[a:b]
                cap_b = cpu_pass.block_cap(b - a, band_frac)
                sel.chunk_visits += -(-(b - a) // source.chunk)
                args = (kind, x, v, dead_mode, dead_part, exact, lo, hi, scores.EPS, score_registry.VMAX, a,
                        bits[byte_at[i] + a // 8:byte_at[i] + (b + 7) // 8])
                c_lo, c_band, c_neg, c_new, over = cpu_pass.classify(*args, pos_buf, key_buf, cap_b, m=m)
                if over:  # a block held more than its share: the range again as one block, if the band fits
                    if in_band + c_band > cap:
                        return None
                    ledger.hold(c_band * SCRATCH_BYTES)
                    try:
                        p_all, k_all = np.empty(c_band, np.int64), np.empty(c_band, np.float32)
                        c_lo, c_band, c_neg, c_new, _ = cpu_pass.classify(*args, p_all, k_all, c_band, b - a, m=m)
                    finally:
                        ledger.free(c_band * SCRATCH_BYTES)
                    pos_buf_r, key_buf_r = p_all, k_all
                else:
                    pos_buf_r, key_buf_r = pos_buf, key_buf
                below[i] += c_lo
                new[i] += c_new
                n_lo += c_lo
                n_neg += c_neg
                if c_band:
                    in_band += c_band
                    if in_band > cap:
                        return None
                    ledger.hold(c_band * 12)  # int64 positions and float32 keys
                    held += c_band * 12
                    band.add(i, a, b, _kept(pos_buf_r[:c_band]), _kept(key_buf_r[:c_band]), source.chunk)
        if table is not None:
            band.sort()  # tensor order
        if exact and n_neg != sum(dead):
            return None  # a live -inf: the radix route refuses it
        r = goal - n_lo
        if not 0 <= r <= in_band:
            return None
        chunk_dead = {(i, 0): c for i, c in enumerate(below)}
        sel.tau, sel.bracketed = lo, bracketed
        # the band's chosen join the recorded bits: one commit for both
        chosen = resolve_cpu.resolve(source, sel, band, r, bits, byte_at, ledger)
        if chosen is None:
            return None  # a NaN: the radix route refuses it before pruning anything
        for i, c in enumerate(chosen):
            if c:
                new[i] += c
                chunk_dead[(i, -1)] = c
        if table is not None:
            source.prune_table(idx, tab, bits, [new[i] for i in idx], threads)
        for i in range(len(source.sizes)):
            if new[i] and i not in in_table:
                _prune_bits(source, i, bits[byte_at[i]:byte_at[i] + -(-source.sizes[i] // 8)], new[i])
        return finish(sel, chunk_dead, dead, goal)
    finally:
        ledger.free(work + held)


def _slot_count(items):
    return int(items[-1, 3] + items[-1, 4])


def _classify_pieces(tab, items, args, threads, cap, sel, ledger):
    """classify_items over a table's pieces, whose slots (held in the ledger by the caller)
    it allocates; a piece whose band outgrew its slots makes it read every piece again into
    room of the exact size (the band fits `cap`, which the budget allows for; the slots go
    first). Returns (per-piece counts, positions, keys, each piece's first band entry, bytes
    the ledger holds now beyond the slots), the band in piece order; None if the band
    exceeds cap."""
    n_slots = _slot_count(items)
    pos = torch.empty(n_slots, dtype=torch.int64).numpy()  # torch's, for its profiler
    keys = torch.empty(n_slots, dtype=torch.float32).numpy()
    out = cpu_pass.classify_items(tab, items, *args, pos, keys, threads)
    got = out[:, 1]
    total = int(got.sum())
    if total > cap:
        return None
    at = np.cumsum(got) - got
    if not (got > items[:, 4]).any():
        cpu_pass.move_band(pos, keys, items[:, 3], got, pos, keys, at)
        return out, pos, keys, at, 0
    sel.passes += 1
    del pos, keys
    ledger.free(n_slots * SCRATCH_BYTES)
    ledger.hold(total * SCRATCH_BYTES)
    pos = torch.empty(total, dtype=torch.int64).numpy()
    keys = torch.empty(total, dtype=torch.float32).numpy()
    exact_room = items.copy()
    exact_room[:, 3], exact_room[:, 4] = at, got
    cpu_pass.classify_items(tab, exact_room, *args, pos, keys, threads)
    return out, pos, keys, at, (total - n_slots) * SCRATCH_BYTES


ITEM_SLACK = 1.5  # a piece's band slots: this many times its expected share (at least 512); measured
# on the GPT-2-shaped bench, the fullest piece held 1.2 times its share


def piece_slots(tab, band_frac):
    """int64 (pieces, 5): (entry, a, b, slot, cap) for classify_items over a table: a small
    tensor whole, with a slot for each of its positions (it cannot overflow); a larger one
    in pieces of cpu_pass.ITEM, each with ITEM_SLACK times its share of the band."""
    sizes = tab[:, cpu_pass.T_N]
    it = cpu_pass.items_of(sizes.tolist())
    length = it[:, 2] - it[:, 1]
    share = np.maximum(512, np.ceil(ITEM_SLACK * band_frac * length)).astype(np.int64)
    cap = np.where(sizes[it[:, 0]] <= cpu_pass.TABLE_MAX, length, np.minimum(length, share))
    return np.column_stack([it, np.cumsum(cap) - cap, cap])


def _kept(a):
    """A copy of a call's band array that outlives the call's scratch (torch's allocation,
    so its profiler sees what the ledger counts)."""
    return torch.from_numpy(a).clone().numpy()


def _prune_bits(source, i, bits, count):
    """Prune tensor i where `bits` (numpy uint8, packed; `count` of them set) are set: the
    source's own `prune_bits`, else its `prune` chunk by chunk with float keep flags."""
    if hasattr(source, "prune_bits"):
        return source.prune_bits(i, bits, count)
    n = source.sizes[i]
    for a in range(0, n, source.chunk):
        b = min(a + source.chunk, n)
        keep = np.unpackbits(np.invert(bits[a // 8:(b + 7) // 8]), count=b - a, bitorder="little")
        source.prune(i, a, b, torch.from_numpy(keep.astype(np.float32)))


def _one_pass(source, dead, sel, goal, lo, hi, cap, exact, ledger, resolve, finish):
    chunk = -(-source.chunk // 64) * 64
    byte_at, nbytes = [], 0
    for n in source.sizes:
        byte_at.append(nbytes)
        nbytes += -(-n // 8)
    work = nbytes + 3 * chunk  # the bits, two bool flags per chunk element, packing scratch
    ledger.hold(work)
    band, in_band, held = [], 0, 0
    try:
        ops = _CpuOps(chunk) if source.device.type == "cpu" else _TorchOps(chunk, source.device)
        bits = torch.empty(nbytes, dtype=torch.uint8, device=source.device)
        counts, neg_inf, visited = [], [], []
        pending = []  # (chunk's index in visited, j, positions) of widened bands, scored exactly at the end
        sel.passes += 1  # an abandoned pass counts too
        squares = None if exact or not hasattr(source, "squared_keys") else squared_thresholds(lo, hi)
        for j, n in enumerate(source.sizes):
            for a in range(0, n, source.chunk):
                b = min(a + source.chunk, n)
                m = b - a
                sel.chunk_visits += 1
                wide = _squared_flags(source, ops, j, a, b, squares) if squares else None
                if wide is None:
                    key = source.keys(j, a, b, exact)
                    below = ops.less(key, lo, 0)
                    pos = ops.band(key, hi, below)  # lo <= key < hi, and NaN (no compare holds for it)
                else:
                    below, pos = wide
                ops.pack(below, bits[byte_at[j] + a // 8:byte_at[j] + (a + m + 7) // 8])
                counts.append(ops.count(below))
                if exact:
                    neg_inf.append(torch.count_nonzero(torch.isneginf(key)))
                if pos.numel():
                    # a widened band (wide) counts against the cap as the band would: it is a
                    # little larger, so at worst a few more updates take the radix route
                    in_band += pos.numel()
                    if in_band > cap:
                        return None
                    ledger.hold(pos.numel() * 12)  # int64 positions and float32 keys
                    held += pos.numel() * 12
                    if wide is None:
                        band.append((j, pos + a, key.index_select(0, pos)))
                    else:
                        pending.append((len(visited), j, pos + a))
                visited.append((j, a, b))
        if pending:
            band, in_band = _place_pending(source, pending, band, counts, bits, byte_at, lo, hi, ledger, chunk)
        if band and bool(torch.cat([k for _, _, k in band]).isnan().any()):
            return None  # a NaN: the radix route refuses it before pruning anything
        if exact and int(torch.stack(neg_inf).sum()) != sum(dead):
            return None  # a live -inf: the radix route refuses it
        per_chunk = _ints(counts)
        n_lo = sum(per_chunk)
        r = goal - n_lo
        if not 0 <= r <= in_band:
            return None
        # the cut is known: prune the recorded bits, then the band's lowest r
        below_per_tensor = [0] * len(source.sizes)
        for (j, _, _), c in zip(visited, per_chunk):
            below_per_tensor[j] += c
        ledger.hold(chunk * 4)  # the float keep flags
        held += chunk * 4
        chunk_dead = {}
        for (j, a, b), c in zip(visited, per_chunk):
            chunk_dead[(j, a)] = c
            if below_per_tensor[j] == dead[j]:
                continue  # nothing new below lo in this tensor: its dead keys only
            seg = bits[byte_at[j] + a // 8:byte_at[j] + a // 8 + (b - a + 7) // 8]
            source.prune(j, a, b, ops.keep(seg, b - a))
        sel.tau, sel.bracketed = lo, True
        if r:
            ledger.hold(resolve_bytes(band, in_band))
            held += resolve_bytes(band, in_band)
            resolve(source, sel, band, r, chunk_dead)
        return finish(sel, chunk_dead, dead, goal)
    finally:
        ledger.free(work + held)


# squared keys are used only while the thresholds' squares, and the squares of the keys
# near them, are normal floats far from both ends of the range (see squared_thresholds)
SQUARE_LO, SQUARE_HI = 2.0 ** -30, 2.0 ** 50
# a chunk whose widened band holds more than this share of it is scored exactly instead:
# the band's gathered copies would outgrow the chunk buffers
WIDE_SHARE = 1 / 16
# per position of a widened band: its position, the gathered w and v (with their float32
# copies when stored in a 2-byte dtype), the score and its scratch, two flags
WIDE_BYTES = 8 + 12 + 8 + 2


def squared_thresholds(lo, hi):
    """(t_lo, t_hi) as float32 values: a squared key (score_registry.SQUARED_REL of the
    key squared) below t_lo belongs to a key below lo, one at or above t_hi to a key at or
    above hi; or None when lo or hi is outside [SQUARE_LO, SQUARE_HI].

    Why the range: a weight with |w| < 2**-63 has a subnormal w^2 (relative error
    unbounded), but its score squared is below 2**-126 * sqrt(VMAX + eps) < 2**-62,
    and so is its squared key: both are far below lo^2 >= 2**-60. Squares above 2**100
    are far below float32's overflow, and a product that overflows to inf came from a
    key far above hi."""
    if not (SQUARE_LO <= lo <= SQUARE_HI and SQUARE_LO <= hi <= SQUARE_HI):
        return None
    t_lo = lo * lo * (1.0 - score_registry.SQUARED_REL)
    t_hi = hi * hi * (1.0 + score_registry.SQUARED_REL)
    f_lo, f_hi = np.float32(t_lo), np.float32(t_hi)
    if float(f_lo) > t_lo:
        f_lo = np.nextafter(f_lo, np.float32(0.0))
    if float(f_hi) < t_hi:
        f_hi = np.nextafter(f_hi, np.float32(np.inf))
    return float(f_lo), float(f_hi)


def _squared_flags(source, ops, j, a, b, squares):
    """(below flags, widened band positions) of chunk [a, b) from its squared keys: the
    flags mark the keys certainly below lo; the widened band holds the positions the
    squared keys cannot place (within the margin of lo or hi, inside the band, NaN),
    which _place_pending scores exactly. None when the source has no squared keys here
    or too many positions need exact ones (the caller scores the chunk exactly)."""
    sq = source.squared_keys(j, a, b)
    if sq is None:
        return None
    below = ops.less(sq, squares[0], 0)
    wide = ops.band(sq, squares[1], below)  # a NaN falls here, and its exact key is NaN too
    if wide.numel() > WIDE_SHARE * (b - a):
        return None
    return below, wide


def place_exactly(source, j, pos, lo, hi):
    """(below lo, in the band) flags and the exact keys of tensor j's positions pos."""
    key = source.keys_of(j, pos)
    low = key < lo
    return low, ~(low | (key >= hi)), key  # the band: lo <= key < hi, and NaN


def _place_pending(source, pending, band, counts, bits, byte_at, lo, hi, ledger, chunk):
    """Score the widened bands exactly, a tensor's at a time (at most chunk // 8 positions
    at once): set the recorded bit of each key below lo and add it to its chunk's count,
    and append the keys in [lo, hi) to the band as one entry per chunk (the tie quotas
    are spread per entry, as on the radix route). Returns (band, its size)."""
    step = max(1, chunk // 8)
    groups = {}
    for entry in pending:
        groups.setdefault(entry[1], []).append(entry)
    for j, entries in groups.items():
        pos = torch.cat([p for _, _, p in entries])
        sizes = [p.numel() for _, _, p in entries]
        low_parts, keep_parts, key_parts = [], [], []
        for s0 in range(0, pos.numel(), step):
            part = pos[s0:s0 + step]
            ledger.hold(part.numel() * WIDE_BYTES)
            try:
                low, keep, key = place_exactly(source, j, part, lo, hi)
            finally:
                ledger.free(part.numel() * WIDE_BYTES)
            low_parts.append(low)
            keep_parts.append(keep)
            key_parts.append(key)
        low, keep = torch.cat(low_parts), torch.cat(keep_parts)
        key = torch.cat(key_parts)
        go = pos[low]
        if go.numel():  # these bits are clear (the squared keys did not place them): adding sets them
            bit = torch.ones_like(go, dtype=torch.uint8).bitwise_left_shift_((go & 7).to(torch.uint8))
            bits.index_put_((byte_at[j] + (go >> 3),), bit, accumulate=True)
        which = torch.repeat_interleave(torch.arange(len(entries), device=pos.device),
                                        torch.tensor(sizes, device=pos.device))
        n_low = torch.bincount(which[low], minlength=len(entries)).tolist()
        n_keep = torch.bincount(which[keep], minlength=len(entries)).tolist()
        for (v, _, _), c in zip(entries, n_low):
            if c:
                counts[v] = counts[v] + c
        for p, k in zip(pos[keep].split(n_keep), key[keep].split(n_keep)):
            if p.numel():
                band.append((j, p, k))
    band.sort(key=lambda e: (e[0], int(e[1][0])))  # chunk order, as the entries of the radix route
    return band, sum(p.numel() for _, p, _ in band)


def _ints(values) -> list:
    if values and torch.is_tensor(values[0]):
        return torch.stack(values).tolist()
    return [int(v) for v in values]


class _CpuOps:
    """The pass's flag work through numpy on CPU: its compares, counts and bit packing
    take a third to a half of torch's time on these sizes (measured)."""

    def __init__(self, chunk):
        self.flags = [torch.zeros(chunk, dtype=torch.bool) for _ in range(2)]
        self.np = [f.numpy() for f in self.flags]
        self.chunk, self.keep_f = chunk, None

    def less(self, key, v, k):
        m = key.numel()
        np.less(key.numpy(), np.float32(v), out=self.np[k][:m])
        return self.np[k][:m]

    def pack(self, flags, out):
        out.numpy()[:] = np.packbits(flags, bitorder="little")

    def count(self, flags):
        return int(np.count_nonzero(flags))

    def band(self, key, hi, below):
        m = key.numel()
        under = self.np[1][:m]
        np.greater_equal(key.numpy(), np.float32(hi), out=under)
        # below and at-or-above hi never hold together: equal flags are both clear, which
        # is the band and NaN (one pass instead of an or and a not)
        np.equal(under, below, out=under)
        return torch.from_numpy(np.flatnonzero(under))

    def keep(self, seg, n):
        keep = np.unpackbits(np.invert(seg.numpy()), count=n, bitorder="little")
        if self.keep_f is None:
            self.keep_f = torch.empty(self.chunk, dtype=torch.float32)
        return self.keep_f[:n].copy_(torch.from_numpy(keep))


class _TorchOps:
    """The same through torch (accelerators), with masks.py's packing: flags padded to
    whole bytes, counts kept on the device until the pass ends."""

    def __init__(self, chunk, device):
        self.flags = [torch.zeros(chunk, dtype=torch.bool, device=device) for _ in range(2)]
        self.device = device

    def less(self, key, v, k):
        m = key.numel()
        m8 = -(-m // 8) * 8
        f = self.flags[k]
        torch.lt(key, v, out=f[:m])
        if m8 > m:
            f[m:m8] = False
        return f[:m8]

    def pack(self, flags, out):
        out.copy_(pack_bits(flags))

    def count(self, flags):
        return torch.count_nonzero(flags)

    def band(self, key, hi, below):
        m = key.numel()
        under = self.flags[1][:m]
        torch.ge(key, hi, out=under).logical_or_(below[:m]).logical_not_()
        return torch.nonzero(under).view(-1)

    def keep(self, seg, n):
        return F.embedding(seg.long(), _alive_table(self.device, torch.float32)).view(-1)[:n]
