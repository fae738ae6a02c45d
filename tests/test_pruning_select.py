"""Radix selection (lib/pruning/select.py) against a full sort of the scores."""
import math
import struct

import pytest
import torch

from lib.pruning.apportion import apportion, depth_fractions
from lib.pruning.select import (MAX_PASSES, NARROW, WIDE, Ledger, count_digit, in_range_positions, pick_ties,
                                position_hash, prune_lowest, tie_quota, value_range)

INF = float("inf")


class ListSource:
    """Scores held in memory, as prune_lowest reads them. A pruned position shows
    `dead_key` (0.0 for scores that are never negative) unless keys are asked exact, when
    it shows -inf, like the Pruner's sources. Counts every scoring of every chunk."""

    def __init__(self, tensors, chunk=64, dead=None, nonnegative=False):
        self.t = [t.clone() for t in tensors]
        self.sizes = [t.numel() for t in tensors]
        self.offsets = [sum(self.sizes[:j]) for j in range(len(tensors))]
        self.chunk = chunk
        self.device = torch.device("cpu")
        self.pruned = [torch.zeros(n, dtype=torch.bool) for n in self.sizes]
        if dead is not None:
            for p, d in zip(self.pruned, dead):
                p |= d
        self.dead_key = 0.0 if nonnegative else None
        self.visits = {}

    @property
    def dead(self):
        return [int(p.sum()) for p in self.pruned]

    def keys(self, j, a, b, exact):
        self.visits[(j, a)] = self.visits.get((j, a), 0) + 1
        k = self.t[j][a:b].clone()
        k[self.pruned[j][a:b]] = -INF if exact or self.dead_key is None else self.dead_key
        return k

    def prune(self, j, a, b, keep):
        self.pruned[j][a:b] |= keep == 0

    def prune_at(self, j, pos):
        assert not self.pruned[j][pos].any()  # the collected band holds live positions only
        self.pruned[j][pos] = True


def _select(tensors, count, *, dead=None, nonnegative=False, chunk=64, **kw):
    src = ListSource(tensors, chunk=chunk, dead=dead, nonnegative=nonnegative)
    before = [p.clone() for p in src.pruned]
    sel = prune_lowest(src, count, **kw)
    allk = torch.cat(src.t)
    was, now = torch.cat(before), torch.cat(src.pruned)
    assert not (was & ~now).any()  # nothing revived
    assert int((now & ~was).sum()) == count  # exactly count newly pruned
    assert sel.dead == src.dead  # the counts it reports are the real ones
    new, kept = allk[now & ~was], allk[~now]
    if new.numel() and kept.numel():
        assert new.max() <= kept.min()  # the lowest live scores went: what a full sort picks
    assert max(src.visits.values(), default=0) <= len(kw.get("digits", WIDE)) + 1
    return src, sel


@pytest.mark.parametrize("digits", [WIDE, NARROW])
@pytest.mark.parametrize("cap", [0, 10**9])
@pytest.mark.parametrize("count", [1, 137, 500, 999, 1000])
def test_exact_count_against_a_sort(count, cap, digits):
    g = torch.Generator().manual_seed(1)
    ts = [torch.randn(300, generator=g), torch.randn(700, generator=g)]
    _select(ts, count, cap=cap, digits=digits)


@pytest.mark.parametrize("digits", [WIDE, NARROW])
def test_collected_and_counted_routes_prune_the_same_positions(digits):
    g = torch.Generator().manual_seed(2)
    ts = [torch.randint(0, 16, (n,), generator=g).float() for n in (3000, 5000, 900)]  # 16-level ties
    a, sa = _select(ts, 4321, cap=10**9, digits=digits, chunk=512)
    b, sb = _select(ts, 4321, cap=0, digits=digits, chunk=512)
    assert sa.collected and not sb.collected
    assert all(torch.equal(x, y) for x, y in zip(a.pruned, b.pruned))
    assert sb.passes == len(digits) + 1 and sa.passes == 2


def test_selection_survives_dead_positions_and_zero_scores():
    """Live weights scoring exactly 0 next to pruned ones that show 0 too (defect 1)."""
    g = torch.Generator().manual_seed(3)
    for zeros in (0.05, 0.2, 0.5):
        t = torch.rand(20_000, generator=g) + 1e-3
        t[torch.rand(20_000, generator=g) < zeros] = 0.0  # live, scoring 0
        dead = torch.rand(20_000, generator=g) < 0.3
        t[dead] = 0.0
        alive = 20_000 - int(dead.sum())
        for count in (100, int(alive * zeros), alive // 2, alive - 1, alive):
            for digits in (WIDE, NARROW):
                _select([t], count, dead=[dead], nonnegative=True, chunk=4096, digits=digits, cap=500)


def test_signed_scores_infinities_and_heavy_ties():
    t = torch.tensor([1.0] * 500 + [INF] * 10 + [-3.0] * 20 + [0.0] * 470 + [-INF] * 7)
    dead = torch.zeros(t.numel(), dtype=torch.bool)
    dead[-7:] = True
    for count in (1, 5, 20, 300, 995, 1000):
        _select([t], count, dead=[dead], digits=NARROW, cap=0)
        _select([t], count, dead=[dead], digits=WIDE, cap=10**9)


def test_negative_bins_and_tiny_values():
    g = torch.Generator().manual_seed(4)
    t = torch.cat([-torch.rand(500, generator=g) * 1e-40, torch.rand(500, generator=g) * 1e-40,
                   -torch.rand(500, generator=g) * 1e30, torch.randn(500, generator=g)])
    for count in (1, 250, 501, 1000, 1499, 1999):
        for cap in (0, 10**9):
            _select([t], count, digits=NARROW, cap=cap, chunk=256)
            _select([t], count, digits=WIDE, cap=cap, chunk=256)


def test_nan_is_refused_before_anything_is_pruned():
    t = torch.rand(1000)
    t[17] = float("nan")
    src = ListSource([t])
    with pytest.raises(RuntimeError, match="NaN"):
        prune_lowest(src, 100)
    assert not src.pruned[0].any()


def test_ties_spread_over_tensors_not_by_layer_order():
    """Equal scores everywhere: each tensor loses its share, not the first one first (defect 6)."""
    ts = [torch.ones(n) for n in (4000, 6000, 9999)]
    for cap in (0, 10**9):
        src, sel = _select(ts, 7400, cap=cap, chunk=1024)
        assert sel.ties == 19_999 and sel.tie_drops == 7400
        for p in src.pruned:
            assert float(p.float().mean()) == pytest.approx(7400 / 19_999, abs=0.001)
        rows = src.pruned[2].view(-1, 3).float().mean(0)  # no kernel column goes whole
        assert (rows - 0.37).abs().max() < 0.03


def test_passes_do_not_depend_on_the_data():
    g = torch.Generator().manual_seed(5)
    inputs = {"normal": [torch.randn(50_000, generator=g)],
              "16 levels": [torch.randint(0, 16, (50_000,), generator=g).float()],
              "30% zeros": [torch.where(torch.rand(50_000, generator=g) < 0.3, 0.0, torch.rand(50_000, generator=g))],
              "one value": [torch.full((50_000,), 2.5)],
              "tiny tensors": [torch.rand(7, generator=g) for _ in range(300)]}
    for name, ts in inputs.items():
        total = sum(t.numel() for t in ts)
        for digits in (WIDE, NARROW):
            for cap in (0, 64, 10**9):
                src, sel = _select(ts, total // 3, digits=digits, cap=cap, chunk=4096)
                assert sel.passes <= len(digits) + 1 <= MAX_PASSES, name


def test_tie_quota_sums_exactly():
    for d, counts in ((7, [3, 0, 5, 9, 1]), (0, [4, 4]), (13, [13]), (5, [1] * 20)):
        total, seen, got = sum(counts), 0, []
        for c in counts:
            got.append(tie_quota(d, total, seen, c))
            seen += c
        assert sum(got) == d and all(0 <= q <= c for q, c in zip(got, counts))


def test_position_hash_is_a_bijection_and_pick_takes_the_smallest():
    pos = torch.arange(1 << 16, dtype=torch.int64)
    assert torch.unique(position_hash(pos)).numel() == 1 << 16
    big = torch.tensor([0, 1, (1 << 31) - 1, 12345678], dtype=torch.int64)
    assert (position_hash(big) < (1 << 31)).all() and (position_hash(big) >= 0).all()
    cand = torch.arange(100, 200, dtype=torch.int64)
    chosen = pick_ties(cand, 1000, 10)
    h = position_hash(cand + 1000)
    assert sorted(chosen.tolist()) == sorted(cand[torch.argsort(h)[:10]].tolist())


def _f32(bits):
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def test_value_range_matches_the_bit_patterns():
    g = torch.Generator().manual_seed(6)
    x = torch.cat([torch.randn(2000, generator=g) * 10 ** torch.randint(-30, 30, (2000,), generator=g).float(),
                   torch.tensor([0.0, 1e-45, -1e-45, INF, -INF])])
    bits = x.view(torch.int32).long() & 0xFFFFFFFF
    for used in (11, 16, 22, 32):
        for v, b in zip(x.tolist(), bits.tolist()):
            lo, hi = value_range(b >> (32 - used), used)
            assert lo <= v <= hi
    assert value_range(0, 16) == (0.0, _f32(0xFFFF))
    assert value_range(0x8000, 16) == (-_f32(0xFFFF), -_f32(1))  # -0.0 is never a key


def test_ledger_is_balanced():
    g = torch.Generator().manual_seed(7)
    ledger = Ledger()
    _select([torch.randn(10_000, generator=g)], 5_000, ledger=ledger, chunk=1024)
    assert ledger.now == 0 and ledger.peak > 0


def test_bad_count_is_refused():
    with pytest.raises(ValueError, match="cannot prune"):
        prune_lowest(ListSource([torch.rand(10)]), 11)


def test_apportion_sums_exactly_and_respects_bounds():
    desired = [10.5, 20.25, 30.75, 5.5]
    got = apportion(desired, 67, [0, 0, 0, 0], [100, 100, 100, 100])
    assert got == [11, 20, 31, 5]  # largest remainders first, ties to the first layer
    got = apportion(desired, 67, [12, 0, 0, 0], [100, 100, 100, 100])  # already pruned 12
    assert sum(got) == 67 and got[0] >= 12
    got = apportion([50.0, 50.0], 100, [0, 0], [30, 100])
    assert got == [30, 70]


def test_depth_fractions_meet_the_global_count():
    sizes = [1000, 4000, 4000, 2000, 500]
    for s in (0.3, 0.5, 0.9, 0.97):
        f = depth_fractions(sizes, s)
        assert sum(n * x for n, x in zip(sizes, f)) == pytest.approx(s * sum(sizes), rel=1e-9)
        assert all(x <= max(0.95, s) + 1e-12 for x in f)
        assert f == sorted(f)  # deeper layers are pruned at least as much
    f = depth_fractions(sizes, 0.5)
    ratio = (0.7 + 0.6 * 2 / 4) / 0.7  # below the cap the profile keeps its shape
    assert f[2] / f[0] == pytest.approx(ratio)
    assert depth_fractions([10], 0.4) == [0.4]
    assert math.isclose(depth_fractions([10, 10], 0.0)[1], 0.0)


def _patterns(keys):
    return [struct.unpack("<I", struct.pack("<f", float(x)))[0] for x in keys]


@pytest.mark.parametrize("n", [4096, 4095, 2])
@pytest.mark.parametrize("width", [16, 11])
@pytest.mark.parametrize("nonnegative", [True, False])
def test_count_digit_matches_counting_the_patterns_one_by_one(n, width, nonnegative):
    g = torch.Generator().manual_seed(n + width)
    keys = torch.randn(n, generator=g).mul_(torch.randn(n, generator=g).mul_(20).exp_())
    keys[torch.rand(n, generator=g) < 0.7] = 0.0  # many pruned positions scoring exactly 0
    if nonnegative:
        keys.abs_()
    else:
        keys[:2] = torch.tensor([-INF, INF])
    hist = torch.zeros(1 << width, dtype=torch.int64)
    count_digit(keys, torch.empty(n, dtype=torch.int32), width, hist, nonnegative=nonnegative)
    count_digit(keys, torch.empty(n, dtype=torch.int32), width, hist, nonnegative=nonnegative)  # adds up
    want = [0] * (1 << width)
    for p in _patterns(keys):
        want[p >> (32 - width)] += 2
    assert hist.tolist() == want


def test_count_digit_refuses_a_negative_key_promised_nonnegative():
    keys = torch.tensor([1.0, -2.0, 0.5, 0.0])
    with pytest.raises(RuntimeError, match="not finite"):
        count_digit(keys, torch.empty(4, dtype=torch.int32), 16, torch.zeros(1 << 16, dtype=torch.int64),
                    nonnegative=True)


@pytest.mark.parametrize("n", [64, 63])
def test_a_nan_made_by_arithmetic_stops_the_selection_with_the_clear_message(n):
    keys = torch.rand(n)
    keys[5] = torch.tensor(INF) - torch.tensor(INF)  # sign bit set, as x86 makes it
    assert keys[5:6].view(torch.int32).item() < 0
    with pytest.raises(RuntimeError, match="not finite"):
        prune_lowest(ListSource([keys], chunk=64, nonnegative=True), 10)


@pytest.mark.parametrize("used", [16, 11, 22])
def test_in_range_positions_are_the_keys_between_the_prefix_bounds(used):
    g = torch.Generator().manual_seed(used)
    base = torch.tensor([0.75, -0.75, 3e-30, -3e-30, 1.5e20, -INF, INF, 0.0])
    keys = (base.repeat(64) * (1 + torch.rand(512, generator=g) * 0.01)).contiguous()
    for x in (0.75, -0.75, 3e-30, -INF):
        prefix = struct.unpack("<I", struct.pack("<f", x * 1.003 if math.isfinite(x) else x))[0] >> (32 - used)
        lo, hi = value_range(prefix, used)
        got = in_range_positions(keys, prefix, used, torch.empty(512, dtype=torch.int32),
                                 torch.empty(512, dtype=torch.bool))
        assert got.tolist() == [i for i, k in enumerate(keys.tolist()) if lo <= k <= hi]
