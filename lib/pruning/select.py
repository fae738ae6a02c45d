"""Exact choice of the weights to prune: a radix selection over the float32 scores.

With `sample` (the Pruner's sources), bracket.py first tries to settle the cut in one
scoring pass from a sampled bracket; only when it cannot does the radix selection below
run, so an update takes 1 pass on ordinary inputs and at most MAX_PASSES on any.

`prune_lowest(source, count)` prunes exactly `count` of the live positions of `source`,
those with the lowest scores, in at most len(digits) + 1 passes over the scores whatever
their values, without a copy of all scores and without pruning anything before the
threshold is exact (docs/pruning-selection.md explains the design for users). With the
WIDE digits (16 + 16 bits):

1. score every chunk and count the keys' high 16 bits (sign, exponent and the top 7
   mantissa bits of the float32 pattern) in a 65,536-bin histogram. Read in float order,
   its running sum names the one bin that holds the cut and how many keys lie below it;
2. score again: every key below that bin is pruned now (exact: the cut is inside the
   bin). The keys inside the bin are either collected (positions and keys, when the bin
   holds at most `cap` keys) or counted by their low 16 bits, which fixes the threshold
   `tau` exactly and how many keys equal to it must go;
3. only when the bin was too large to collect: score the chunks that hold keys of the bin
   once more and prune key < tau plus the chosen ties.

NARROW digits (11 + 11 + 10 bits: 16 KiB of counts instead of 2 MiB, for small models)
repeat step 2 once more before step 3: at most four passes.

Ties at tau are spread over the chunks in proportion to the ties each holds (the running
share floor(d * seen / T)), and inside a chunk the positions with the smallest hash of
their global index go, so equal scores neither prune whole early layers first nor line
up with rows. The collected and the counted routes choose the same positions.

A `source` holds the tensors in scope:

* `sizes`: elements per tensor; `offsets`: each tensor's first global position (hashing);
  `dead`: positions already pruned per tensor; `chunk`: elements per chunk (a multiple
  of 8); `dead_key`: the score a pruned position shows in `keys(..., exact=False)`
  (0.0 for scores that are never negative, whose pruned weights score exactly 0), or None
  when keys always show pruned positions as -inf;
* `keys(j, a, b, exact)`: float32 scores of tensor j's flat positions [a, b) (a view of a
  reused buffer, valid until the next call); with `exact`, pruned positions are -inf;
  the same values on every call, and never -0.0 (its pattern sorts apart from +0.0);
  `device`: where the keys live;
* `prune(j, a, b, keep)`: prune where the float flags `keep` (1 keep, 0 prune) are 0;
  re-pruning a pruned position must be harmless; `prune_at(j, positions)`: prune a few.

Another mask shape (e.g. N:M) can reuse this by presenting its groups' scores as a source.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from lib.pruning import radix_cpu
from lib.pruning.bracket import bracketed

INF = float("inf")
NEG_INF_BITS, POS_INF_BITS = 0xFF800000, 0x7F800000  # NaN patterns lie above each
# bytes per chunk element of select's own buffers: two float flags (the bin index of the
# first pass reuses them) and one bool
SELECT_WORK_BYTES = 9
# per collected key: its position (int64) and key while collected, then what resolving
# makes (the keys' copy, two flags, one tensor's positions and those chosen), plus
# ENTRY_BYTES per entry; a chunk's list of in-range positions is 8 per key more
BAND_BYTES, RESOLVE_BYTES, POS_BYTES, ENTRY_BYTES = 12, 22, 8, 16
COLLECT_BYTES = BAND_BYTES + RESOLVE_BYTES
TIE_BYTES = 40  # per tied key of a chunk whose ties are picked: positions, hashes, their compares
WIDE, NARROW = (16, 16), (11, 11, 10)  # radix digits: the wide first digit needs 2 MiB of counts
MAX_PASSES = 1 + len(NARROW) + 1  # the bracketed pass (bracket.py), then the radix bound
# the radix selection through compiled loops on CPU (radix_cpu.py); tests switch it off to
# exercise the torch route
COMPILED = True


def hist_bytes(digits) -> int:
    """Bytes of the counts while a digit is resolved: histogram, one bincount result, the
    re-ordered copy and its running sum (int64 each)."""
    return 4 * 8 * (1 << max(digits))


def _digit_bytes(width) -> int:
    return 4 * 8 * (1 << width)


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


@dataclass
class Selection:
    """What prune_lowest did: the threshold, ties pruned at it, and the work it took."""
    dead: list = field(default_factory=list)  # pruned positions per tensor afterwards
    tau: float = -INF  # keys below tau are pruned; `tie_drops` of the keys equal to it too
    ties: int = 0  # keys equal to tau
    tie_drops: int = 0
    passes: int = 0  # scoring passes over the chunks (at most MAX_PASSES)
    chunk_visits: int = 0  # chunks scored, all passes together
    collected: bool = False  # the cut bin was small enough to resolve from memory
    bracketed: bool = False  # settled by the sampled bracket's single pass (bracket.py)


def chunks(source):
    for j, n in enumerate(source.sizes):
        for a in range(0, n, source.chunk):
            yield j, a, min(a + source.chunk, n)


def bits_to_float(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def float_to_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def signed_order(hist: torch.Tensor) -> torch.Tensor:
    """A histogram of a first digit (sign bit on top), re-indexed in ascending float
    order: negative patterns first, counting down (a larger pattern is more negative)."""
    half = hist.numel() // 2
    return torch.cat([hist[half:].flip(0), hist[:half]])


def signed_digit(rank: int, width: int) -> int:
    """The first-digit pattern at position `rank` of signed_order."""
    half = 1 << (width - 1)
    return rank - half if rank >= half else (1 << width) - 1 - rank


def value_range(prefix: int, used: int) -> tuple:
    """(lowest, highest) float32 value whose pattern starts with the `used`-bit `prefix`.
    NaN patterns count as the infinity next to them; -0.0 is not a key (module notes)."""
    s = 32 - used
    first, last = prefix << s, (prefix << s) | ((1 << s) - 1)
    negative = first >> 31

    def value(p):
        if p & 0x7FFFFFFF > POS_INF_BITS:
            return -INF if negative else INF
        return bits_to_float(p)
    if negative:
        return value(last), value(max(first, 0x80000001))
    return value(first), value(last)


def _rank_of_count(hist: torch.Tensor, k: int) -> tuple:
    """(index, count before it): the bin of an ordered histogram holding the k-th smallest
    key (1-based)."""
    cum = torch.cumsum(hist, 0)
    rank = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype, device=cum.device)))
    return rank, (int(cum[rank - 1]) if rank else 0)


def tie_quota(d: int, total: int, seen: int, here: int) -> int:
    """Ties pruned in a chunk holding `here` of `total` ties at tau, `seen` in chunks before:
    the running share of `d`. Summed over the chunks it is exactly d."""
    return (d * (seen + here)) // total - (d * seen) // total


_M31 = (1 << 31) - 1


def position_hash(pos: torch.Tensor) -> torch.Tensor:
    """A bijection of [0, 2**31) (int64 in and out) that scatters neighbouring positions:
    odd multipliers and right xor-shifts are each invertible modulo 2**31."""
    h = pos.bitwise_and(_M31).mul_(0x2545F491).bitwise_and_(_M31)
    h.bitwise_xor_(h >> 15).mul_(0x1B873593).bitwise_and_(_M31)
    return h.bitwise_xor_(h >> 13)


def kth_smallest(t: torch.Tensor, k: int):
    """The k-th smallest (1-based) element of a 1-D tensor without NaN: numpy's partition on
    CPU (about ten times torch.kthvalue's speed there), torch.kthvalue elsewhere."""
    if t.device.type == "cpu":
        return np.partition(t.numpy(), k - 1)[k - 1]
    return torch.kthvalue(t, k).values


def pick_ties(positions: torch.Tensor, offset: int, k: int) -> torch.Tensor:
    """The k of `positions` (ascending) whose global index offset + position has the
    smallest hash; equal hashes (possible beyond 2**31 weights) go by position."""
    if k >= positions.numel():
        return positions
    h = position_hash(positions + offset)
    kth = int(kth_smallest(h, k))
    chosen = positions[h < kth]
    more = k - chosen.numel()
    if more:
        chosen = torch.cat([chosen, positions[h == kth][:more]])
    return chosen


def count_digit(key, ix, width, hist, *, nonnegative):
    """Add the counts of the keys' first `width` bits to `hist` (`ix`: int32 scratch, key's
    length).

    Late in the ramp most keys are pruned ones, all alike (0, or -inf), and one counter
    bumped over and over waits on itself each time. So every odd position is marked by one
    more bit (one int64 OR over the pairs) and counted apart, and the halves are added up:
    1.5-2x the speed on such input. Keys that are never negative leave the digit's sign bit
    free for the mark; other keys take the bit above the digit (a table twice the size). A
    negative key promised nonnegative makes a negative index, which bincount refuses."""
    n, size = key.numel(), 1 << width
    torch.bitwise_right_shift(key.view(torch.int32), 32 - width, out=ix)
    if n % 2 == 0:
        lane = size >> 1 if nonnegative else size
        if not nonnegative:
            ix.bitwise_and_(size - 1)
        ix.view(torch.int64).bitwise_or_(lane << 32)  # little-endian: the odd element is the high half
        try:
            c = torch.bincount(ix, minlength=2 * lane)
        except RuntimeError as e:  # a NaN made by arithmetic has its sign bit set
            raise RuntimeError(NOT_FINITE) from e
        hist[:lane] += c[:lane]
        hist[:lane] += c[lane:]
        return
    if not nonnegative or ix.numel() and int(ix.min()) < 0:  # a sign-extended NaN is masked too
        ix.bitwise_and_(size - 1)
    hist += torch.bincount(ix, minlength=size)


def in_range_positions(key, prefix, used, scratch, bools) -> torch.Tensor:
    """Ascending positions of the keys whose pattern starts with the `used`-bit `prefix`
    (`scratch`: int32, `bools`: bool, key's length): one compare of the pattern's top bits
    instead of two float compares and their difference (value_range's keys are exactly
    these, as -0.0 is never a key and NaN was refused)."""
    if used == 16:  # little-endian: every second int16 half is a pattern's high half
        top, sign = key.view(torch.int16)[1::2], 1 << 15
    else:
        top, sign = torch.bitwise_right_shift(key.view(torch.int32), 32 - used, out=scratch), 1 << (used - 1)
    # the arithmetic shift and the int16 view sign-extend a negative pattern's top bits
    want = prefix - 2 * sign if prefix >= sign else prefix
    torch.eq(top, want, out=bools)
    if bools.device.type == "cpu":  # numpy's scan of a bool array: twice as fast as torch.nonzero on CPU
        return torch.from_numpy(np.flatnonzero(bools.numpy()))
    return torch.nonzero(bools).view(-1)


NOT_FINITE = ("pruning scores are not finite numbers (NaN or -inf among the live weights); "
              "check the weights and the optimizer state for NaN")


def _check_finite(hist, dead_total, shift):
    pos_inf, neg_inf, half = POS_INF_BITS >> shift, NEG_INF_BITS >> shift, hist.numel() // 2
    nan = int(hist[pos_inf + 1:half].sum()) + int(hist[neg_inf + 1:].sum())
    if nan or int(hist[neg_inf]) != dead_total:
        raise RuntimeError(NOT_FINITE)


def digits_for(weight_bytes: int, budget: float) -> tuple:
    """WIDE digits (two scoring passes on most inputs) once their counts fit in a quarter
    of the update's memory budget; NARROW ones (at most four) below that."""
    return WIDE if hist_bytes(WIDE) <= budget * weight_bytes / 4 else NARROW


def prune_lowest(source, count: int, *, cap: int | None = None, digits=WIDE,
                 ledger: Ledger | None = None, sample: int = 0, band_cap: int | None = None,
                 seed: int = 0) -> Selection:
    """Prune exactly `count` live positions of `source`, those with the lowest scores.

    At most len(digits) + 1 scoring passes; `cap` keys of the bin holding the cut are
    collected and resolved in memory (default: one chunk's worth); module notes. With
    `sample` > 0 and a source that has `keys_at`, a sampled bracket (bracket.py, seeded by
    `seed`, collecting at most `band_cap` keys) is tried first: one pass when it holds the
    cut, one pass more than the radix bound when it does not."""
    ledger = ledger or Ledger()
    dead = list(source.dead)
    dead_total = sum(dead)
    alive = sum(source.sizes) - dead_total
    if not 0 <= count <= alive:
        raise ValueError(f"cannot prune {count} of {alive} live weights")
    if sum(digits) != 32:
        raise ValueError(f"radix digits {digits} must cover the 32 bits of a float32")
    sel = Selection(dead=dead)
    if count == 0:
        return sel
    chunk = source.chunk
    cap = max(0, int(chunk if cap is None else cap))
    compiled = COMPILED and count < alive and radix_cpu.available(source)
    window = None
    if sample > 0 and hasattr(source, "keys_at") and count < alive:
        done = bracketed(source, count, dead, sel, cap=cap if band_cap is None else band_cap, seed=seed,
                         ledger=ledger, sample_keys=sample, resolve=_resolve, finish=_finish, windows=compiled)
        if isinstance(done, Selection):
            return done
        window = done  # None, or where the compiled radix selection first counts
    if compiled:
        from lib.pruning.bracket import _compiled_pass
        done = radix_cpu.compiled_radix(source, count, dead, sel, cap=cap, digits=digits, ledger=ledger,
                                        finish=_finish, compiled_pass=_compiled_pass,
                                        window=window)
        if isinstance(done, Selection):
            return done
        if done is not None:  # one value with more ties than `cap`: the torch route's last pass
            sel.tau, sel.ties, sel.tie_drops = done
            ledger.hold(chunk * SELECT_WORK_BYTES)
            try:
                chunk_dead = {}
                prune_at_tau(source, sel, list(chunks(source)), True, torch.empty(2, chunk, device=source.device),
                             chunk_dead, ledger)
            finally:
                ledger.free(chunk * SELECT_WORK_BYTES)
            return _finish(sel, chunk_dead, dead, dead_total + count)
    work = chunk * SELECT_WORK_BYTES
    ledger.hold(work)
    try:
        flags = torch.empty(2, chunk, device=source.device)
        bools = torch.empty(chunk, dtype=torch.bool, device=source.device)
        if count == alive:
            return _prune_all(source, sel, flags[0])
        # 1. counts of the first digit
        exact = source.dead_key is None
        width = digits[0]
        shift = 32 - width
        ledger.hold(_digit_bytes(width))
        hist = torch.zeros(1 << width, dtype=torch.int64, device=source.device)
        for j, a, b in chunks(source):
            key = source.keys(j, a, b, exact)
            count_digit(key, flags[0, :b - a].view(torch.int32), width, hist, nonnegative=not exact)
            sel.chunk_visits += 1
        sel.passes += 1
        if not exact:  # pruned positions showed dead_key: count them as -inf
            hist[float_to_bits(source.dead_key) >> shift] -= dead_total
            hist[NEG_INF_BITS >> shift] += dead_total
        _check_finite(hist, dead_total, shift)
        goal = dead_total + count  # the goal lowest keys are pruned afterwards (dead ones at -inf)
        rank, below = _rank_of_count(signed_order(hist), goal)
        prefix, used = signed_digit(rank, width), width
        negative = prefix >> (width - 1)
        in_range, r = int(hist[prefix]), goal - below  # keys in the range, and how many of them go
        del hist
        ledger.free(_digit_bytes(width))
        lo, hi = value_range(prefix, used)
        # a pruned position's dead_key inside the range would mix with live keys there
        exact = exact or lo <= source.dead_key <= hi

        chunk_dead = {}
        todo = list(chunks(source))
        level = 1
        while used < 32:
            # 2. prune below the range; collect its keys, or count their next digit
            collect = in_range <= cap
            width = digits[level]
            shift = 32 - used - width
            counts, band, held, next_todo = None, [], 0, []
            if not collect:
                held = _digit_bytes(width)
                ledger.hold(held)
            for j, a, b in todo:
                n = b - a
                key = source.keys(j, a, b, exact)
                keep = torch.ge(key, lo, out=flags[0, :n])
                n_keep = int(keep.sum())
                if n_keep < n:
                    source.prune(j, a, b, keep)
                chunk_dead[(j, a)] = n - n_keep
                sel.chunk_visits += 1
                pos = in_range_positions(key, prefix, used, flags[1, :n].view(torch.int32), bools[:n])
                if not pos.numel():
                    continue
                next_todo.append((j, a, b))
                ledger.hold(pos.numel() * (POS_BYTES + 4))  # the list, and the keys or digits it picks
                if collect:
                    band.append((j, pos + a, key.index_select(0, pos)))
                    held += pos.numel() * BAND_BYTES
                    ledger.hold(pos.numel() * BAND_BYTES)
                else:
                    d = key.view(torch.int32).index_select(0, pos).bitwise_right_shift_(shift)
                    c = torch.bincount(d.bitwise_and_((1 << width) - 1), minlength=1 << width)
                    counts = c if counts is None else counts.add_(c)
                ledger.free(pos.numel() * (POS_BYTES + 4))
            sel.passes += 1
            if collect:
                ledger.hold(resolve_bytes(band, in_range))
                _resolve(source, sel, band, r, chunk_dead)
                ledger.free(held + resolve_bytes(band, in_range))
                return _finish(sel, chunk_dead, dead, dead_total + count)
            ordered = counts.flip(0) if negative else counts  # below 0 a larger pattern is lower
            rank, below = _rank_of_count(ordered, r)
            digit = (1 << width) - 1 - rank if negative else rank
            in_range, r = int(counts[digit]), r - below
            prefix, used, level = (prefix << width) | digit, used + width, level + 1
            lo, hi = value_range(prefix, used)
            todo = next_todo
            ledger.free(held)

        # 3. one value left: prune below it and the chosen ties
        sel.tau, sel.ties, sel.tie_drops = lo, in_range, r
        prune_at_tau(source, sel, todo, exact, flags, chunk_dead, ledger)
        return _finish(sel, chunk_dead, dead, dead_total + count)
    finally:
        ledger.free(work)


def prune_at_tau(source, sel, todo, exact, flags, chunk_dead, ledger):
    """One pass over the chunks `todo` (every chunk holding keys equal to sel.tau): prune the
    keys below sel.tau and sel.tie_drops of the sel.ties keys equal to it, spread by
    tie_quota and pick_ties. `flags`: float32 (2, chunk) scratch."""
    seen = 0
    for j, a, b in todo:
        n = b - a
        key = source.keys(j, a, b, exact)
        keep = torch.ge(key, sel.tau, out=flags[0, :n])
        tied = torch.eq(key, sel.tau, out=flags[1, :n])
        t_c = int(tied.sum())
        q = tie_quota(sel.tie_drops, sel.ties, seen, t_c) if t_c else 0
        seen += t_c
        if q:
            ledger.hold(t_c * TIE_BYTES)
            keep.index_fill_(0, pick_ties(torch.nonzero(tied).view(-1), source.offsets[j] + a, q), 0.0)
            ledger.free(t_c * TIE_BYTES)
        source.prune(j, a, b, keep)
        chunk_dead[(j, a)] = n - int(keep.sum())
        sel.chunk_visits += 1
    sel.passes += 1


def resolve_bytes(band, keys: int) -> int:
    """Bytes _resolve allocates for `keys` collected keys in the entries `band`."""
    return keys * RESOLVE_BYTES + len(band) * ENTRY_BYTES


def _resolve(source, sel, band, r, chunk_dead, drop=None):
    """Prune the r lowest of the collected keys [(j, positions in tensor j, keys)], in
    chunk order: one compare over all of them, tie quotas per entry. `drop(j, positions)`
    prunes tensor j's chosen positions (default: source.prune_at)."""
    sel.collected = True
    allk = torch.cat([k for _, _, k in band])
    sizes = [k.numel() for _, _, k in band]
    sel.tau = float(kth_smallest(allk, r))
    go = allk < sel.tau
    sel.ties = int(torch.count_nonzero(allk == sel.tau))
    sel.tie_drops = r - int(torch.count_nonzero(go))
    if sel.tie_drops:  # only the entries holding ties at tau need a look of their own
        ends = torch.tensor(sizes).cumsum(0)
        seen_at = torch.cat([torch.zeros(1, dtype=torch.int64), (allk == sel.tau).cumsum(0)[ends - 1]])
        ties_per_entry = (seen_at[1:] - seen_at[:-1]).tolist()
        seen, start = 0, 0
        for (j, pos, k), t_c, n in zip(band, ties_per_entry, sizes):
            if t_c:
                q = tie_quota(sel.tie_drops, sel.ties, seen, t_c)
                seen += t_c
                if q:
                    tied_at = torch.nonzero(k == sel.tau).view(-1)
                    chosen = pick_ties(pos[tied_at], source.offsets[j], q)
                    go[start + torch.searchsorted(pos, chosen)] = True
            start += n
    del allk
    # entries come in tensor order: one split per run of a tensor's entries
    runs = []  # [tensor, keys, first entry, entry after the last]
    for e, ((j, _, _), n) in enumerate(zip(band, sizes)):
        if runs and runs[-1][0] == j:
            runs[-1][1] += n
            runs[-1][3] = e + 1
        else:
            runs.append([j, n, e, e + 1])
    for (j, _, e0, e1), g in zip(runs, go.split([n for _, n, _, _ in runs])):
        entries = [p for _, p, _ in band[e0:e1]]
        pos = (entries[0] if len(entries) == 1 else torch.cat(entries))[g]  # one tensor's positions at a time
        if pos.numel():
            (drop or source.prune_at)(j, pos)
            chunk_dead[(j, -1)] = chunk_dead.get((j, -1), 0) + pos.numel()


def _finish(sel, chunk_dead, dead, want):
    for j in range(len(dead)):
        dead[j] = 0
    for (j, _), c in chunk_dead.items():
        dead[j] += c
    if sum(dead) != want:
        raise RuntimeError(f"pruning left {sum(dead)} weights pruned instead of {want}: the scores changed "
                           "between passes (NaN in the weights or the optimizer state?)")
    return sel


def _prune_all(source, sel, keep):
    keep.zero_()
    for j, a, b in chunks(source):
        source.prune(j, a, b, keep[:b - a])
        sel.chunk_visits += 1
    sel.dead = list(source.sizes)
    return sel
