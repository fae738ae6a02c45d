"""Exact threshold selection (lib/pruning/select.py) against a full sort."""
import math

import pytest
import torch

from lib.pruning.apportion import apportion, depth_fractions
from lib.pruning.select import Ledger, NeedExact, chunks, find_cut, next_down, next_up, positions



INF = float("inf")


class ListSource:
    """Keys held in memory; -inf marks pruned positions (what a real source returns)."""

    def __init__(self, tensors, chunk=64, floor=-INF):
        self.t = tensors
        self.sizes = [t.numel() for t in tensors]
        self.chunk = chunk
        self.floor = floor

    def keys(self, j, a, b):
        return self.t[j][a:b].clone()

    def sample(self, j, start, stride):
        return self.t[j][start::stride].clone()


def _apply(src, cut):
    """Positions pruned by `cut`, as one bool tensor over all tensors (what the Pruner does)."""
    out = []
    for j, a, b in chunks(src):
        key = src.keys(j, a, b)
        if cut.prune_all:
            pb = torch.ones_like(key, dtype=torch.bool)
        else:
            pb = key < cut.tau
            if (j, a) in cut.drop:
                pb[cut.drop[(j, a)]] = True
            n = cut.ties.get((j, a), 0)
            if n:
                pb[torch.nonzero(key == cut.tau).view(-1)[:n]] = True
        out.append(pb)
    return torch.cat(out)


def _check(tensors, keep, **kw):
    src = ListSource(tensors, chunk=kw.pop("chunk", 64))
    allk = torch.cat(tensors)
    alive = int((allk > -INF).sum())
    cut = find_cut(src, keep, alive, generator=torch.Generator().manual_seed(0), **kw)
    pruned = _apply(src, cut)
    survivors = allk[~pruned]
    assert survivors.numel() == keep  # exact count
    assert (survivors > -INF).all()  # no pruned position revived
    if 0 < keep < alive:  # the survivors are the top `keep` live keys
        top = torch.sort(allk[allk > -INF], descending=True).values
        assert torch.equal(torch.sort(survivors, descending=True).values, top[:keep])
    return cut


@pytest.mark.parametrize("keep", [0, 1, 137, 500, 999, 1000])
def test_exact_count_small(keep):
    g = torch.Generator().manual_seed(1)
    _check([torch.randn(300, generator=g), torch.randn(700, generator=g)], keep)


def test_exact_count_with_sampling_and_pruned_positions():
    g = torch.Generator().manual_seed(2)
    ts = [torch.randn(n, generator=g) for n in (20_000, 50_000, 3_000)]
    for t in ts:
        t[torch.rand(t.numel(), generator=g) < 0.4] = -INF
    cut = _check(ts, 20_000, sample_size=4096, chunk=4096)
    assert cut.passes == 1


def test_zero_floor_counts_zeros_as_pruned():
    """Scores that are never negative: pruned positions sit at 0, no -inf pass needed."""
    g = torch.Generator().manual_seed(7)
    t = torch.rand(20_000, generator=g) + 1e-3
    t[torch.rand(20_000, generator=g) < 0.3] = 0.0  # pruned
    alive = int((t > 0).sum())
    src = ListSource([t], chunk=4096, floor=0.0)
    cut = find_cut(src, 5_000, alive, generator=g, sample_size=2048)
    pruned = _apply(src, cut)
    assert int((~pruned).sum()) == 5_000 and (t[~pruned] > 0).all()
    with pytest.raises(NeedExact):  # keeping more than the positive scores needs -inf marking
        find_cut(src, alive + 10, alive + 100, generator=g, sample_size=2048)


def test_positions_of_sparse_flags():
    g = torch.Generator().manual_seed(8)
    for n in (15, 16, 31, 32, 1000, 4099):
        f = (torch.rand(n, generator=g) < 0.05).float()
        assert torch.equal(positions(f), f.nonzero().view(-1))


def _commit_source(seed, n=60_000):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) + 1e-3
    src = ListSource([t], chunk=4096, floor=0.0)

    def commit(j, a, b, keep, n_pruned):  # what the Pruner does: pruned keys drop to the floor
        assert n_pruned == int((keep == 0).sum())
        t[a:b] *= keep
    return t, src, commit


def test_commit_prunes_in_the_counting_pass_and_stays_exact():
    t, src, commit = _commit_source(9)
    before = t.clone()
    cut = find_cut(src, 21_000, 60_000, generator=torch.Generator().manual_seed(1), commit=commit,
                   sample_size=4096, band_cap=20_000)
    assert cut.passes == 1 and not cut.needs_pass() and cut.overshoot == 0
    for (j, a), pos in cut.drop.items():
        t[a + pos] = 0.0
    assert int((t > 0).sum()) == 21_000
    kept = before[t > 0]
    assert kept.min() >= before[t == 0].max()  # the survivors are the top scores


def test_commit_miss_keeps_the_band_and_reports_the_overshoot():
    t, src, commit = _commit_source(10)
    # z_commit < 0 puts the committed bound above the threshold on purpose
    cut = find_cut(src, 30_000, 60_000, generator=torch.Generator().manual_seed(1), commit=commit,
                   sample_size=4096, z_commit=-8.0, band_cap=20_000)
    assert cut.overshoot > 0 and not cut.drop
    assert int((t > 0).sum()) == 30_000 - cut.overshoot


def test_ties_are_broken_by_position():
    t = torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 0.5, 2.0, 5.0])
    src = ListSource([t], chunk=8)
    cut = find_cut(src, 4, 8, generator=torch.Generator())
    pruned = _apply(src, cut)
    # keep 5, 3 and two of the four 2.0s: the first two 2.0s go
    assert pruned.tolist() == [False, True, True, True, False, True, False, False]


def test_missed_bracket_costs_a_pass_not_exactness():
    g = torch.Generator().manual_seed(3)
    ts = [torch.randn(40_000, generator=g)]
    cut = _check(ts, 12_345, sample_size=256, z=0.0, chunk=4096)  # z=0: the bracket is a point
    assert cut.passes >= 2


def test_band_too_large_is_bisected():
    g = torch.Generator().manual_seed(4)
    ts = [torch.randn(30_000, generator=g)]
    cut = _check(ts, 7_000, sample_size=64, band_cap=500, chunk=1024)
    assert cut.passes > 1


def test_heavy_ties_and_infinite_scores():
    t = torch.tensor([1.0] * 500 + [INF] * 10 + [-INF] * 20 + [0.0] * 470)
    _check([t], 300, sample_size=64, chunk=64)
    _check([t], 5, sample_size=64, chunk=64)


def test_nan_scores_raise():
    t = torch.full((100,), -INF)  # a source that shows fewer live keys than it claims
    with pytest.raises(RuntimeError, match="NaN"):
        find_cut(ListSource([t]), 10, 50, generator=torch.Generator())


def test_ledger_holds_band_and_chunks():
    g = torch.Generator().manual_seed(5)
    ledger = Ledger()
    src = ListSource([torch.randn(10_000, generator=g)], chunk=1024)
    find_cut(src, 5_000, 10_000, generator=g, ledger=ledger)
    assert ledger.now == 0 and ledger.peak > 0


def test_next_float():
    for x in (0.0, 1.0, -1.0, 3e-38, -2.5e10):
        up, down = next_up(x), next_down(x)
        assert up > x > down
        assert torch.tensor(up) == torch.nextafter(torch.tensor(x), torch.tensor(INF))
        assert torch.tensor(down) == torch.nextafter(torch.tensor(x), torch.tensor(-INF))


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
