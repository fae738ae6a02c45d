"""The sampled bracket in front of the radix selection (lib/pruning/bracket.py): exact
against a full sort where it hits and where it misses, the same positions as the radix
route, nothing pruned before the cut is known, its bit packing, and the pass bound."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from lib.pruning import bracket, cpu_pass, prunable_weights
from lib.pruning.bracket import BLOCK, _CpuOps, _TorchOps, mix_seed, sample_rows
from lib.pruning.pruner import Pruner, _Keys
from lib.pruning.schedule import sparsity_at
from lib.pruning.select import MAX_PASSES, NARROW, WIDE, prune_lowest

from test_pruning_select import ListSource

INF = float("inf")


class SampledSource(ListSource):
    """ListSource with keys_at, as the Pruner's sources have it; counts its chunk visits."""

    def keys_at(self, j, rows, block):
        idx = (rows.unsqueeze(1) * block + torch.arange(block)).view(-1)
        k = self.t[j][idx].clone()
        k[self.pruned[j][idx]] = -INF if self.dead_key is None else self.dead_key
        return k


def _run(tensors, count, *, dead=None, nonnegative=False, chunk=512, sample=1 << 12, **kw):
    src = SampledSource(tensors, chunk=chunk, dead=dead, nonnegative=nonnegative)
    before = [p.clone() for p in src.pruned]
    sel = prune_lowest(src, count, sample=sample, band_cap=kw.pop("band_cap", 10**9), **kw)
    allk = torch.cat(src.t)
    was, now = torch.cat(before), torch.cat(src.pruned)
    assert not (was & ~now).any()
    assert int((now & ~was).sum()) == count  # exactly count
    assert sel.dead == src.dead
    new, kept = allk[now & ~was], allk[~now]
    if new.numel() and kept.numel():
        assert new.max() <= kept.min()  # what a full sort of the live scores prunes
    assert sel.passes <= MAX_PASSES and max(src.visits.values()) == sel.passes
    return src, sel


def _tensors(seed, sizes=(30_000, 50_000, 20_003)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) for n in sizes]


@pytest.mark.parametrize("count", [1, 1000, 50_000, 69_000])
@pytest.mark.parametrize("nonnegative", [False, True])
def test_bracket_hits_in_one_pass_and_agrees_with_a_sort(count, nonnegative):
    ts = _tensors(1)
    if nonnegative:
        ts = [t.abs() for t in ts]
    dead = [torch.rand(t.numel(), generator=torch.Generator().manual_seed(5)) < 0.3 for t in ts]
    _, sel = _run(ts, count, dead=dead, nonnegative=nonnegative)
    assert sel.bracketed and sel.passes == 1


def test_a_forced_miss_falls_back_to_the_radix_route_and_stays_exact(monkeypatch):
    # a bracket from the sample's largest key up: the pass finds more keys below it than
    # the count to prune (a zero-width bracket around the sample's rank can hold the cut by luck)
    monkeypatch.setattr(bracket, "_bracket_of", lambda keys, q, z, floor: (float(keys.max()), math.inf, 1e-3))
    for seed in range(3):
        _, sel = _run(_tensors(seed), 40_000, digits=NARROW)
        assert not sel.bracketed and 1 < sel.passes <= 1 + len(NARROW) + 1


def test_an_unrepresentative_sample_misses_and_stays_exact():
    # every tensor's last 3 positions lie outside the sampled blocks and hold the lowest keys
    g = torch.Generator().manual_seed(3)
    ts = []
    for _ in range(2000):
        t = torch.rand(35, generator=g) + 1.0
        t[32:] = -torch.rand(3, generator=g)
        ts.append(t)
    _, sel = _run(ts, 6000, chunk=64, sample=1 << 13, band_cap=500)
    assert not sel.bracketed and sel.passes > 1  # the pass ran, and missed


def test_the_band_overflowing_its_cap_falls_back():
    _, sel = _run(_tensors(4), 50_000, band_cap=100)
    assert not sel.bracketed


@pytest.mark.parametrize("nonnegative", [False, True])
def test_bracket_and_radix_prune_the_same_positions_with_ties(nonnegative):
    g = torch.Generator().manual_seed(6)
    ts = [torch.randint(0 if nonnegative else -8, 8, (n,), generator=g).float() for n in (30_000, 42_000, 9_000)]
    ts = [t.abs() + 0.0 for t in ts] if nonnegative else ts
    dead = [torch.rand(t.numel(), generator=g) < 0.2 for t in ts]
    a, sa = _run(ts, 23_456, dead=dead, nonnegative=nonnegative)
    b = SampledSource(ts, chunk=512, dead=dead, nonnegative=nonnegative)
    sb = prune_lowest(b, 23_456, cap=10**9)  # the radix route, collected
    assert sa.bracketed and not sb.bracketed and sb.passes == 2
    assert all(torch.equal(x, y) for x, y in zip(a.pruned, b.pruned))
    assert (sa.tau, sa.ties, sa.tie_drops) == (sb.tau, sb.ties, sb.tie_drops)


def test_zero_scores_below_the_cut_are_pruned_and_at_it_take_the_radix_route():
    g = torch.Generator().manual_seed(7)
    ts = [torch.rand(40_000, generator=g) for _ in range(2)]
    for t in ts:
        t[torch.rand(t.numel(), generator=g) < 0.3] = 0.0  # live weights scoring exactly 0
    dead = [torch.rand(t.numel(), generator=g) < 0.1 for t in ts]
    _, sel = _run(ts, 30_000, dead=dead, nonnegative=True)  # the cut above the zeros
    assert sel.bracketed
    _, sel = _run(ts, 5_000, dead=dead, nonnegative=True)  # the cut among the zeros
    assert not sel.bracketed


@pytest.mark.parametrize("where", ["first chunk", "last chunk"])
def test_a_nan_anywhere_stops_the_update_before_anything_is_pruned(where):
    ts = _tensors(8)
    ts[0 if where == "first chunk" else 2][-1 if where == "last chunk" else 3] = float("nan")
    src = SampledSource(ts, chunk=512)
    before = [p.clone() for p in src.pruned]
    with pytest.raises(RuntimeError, match="not finite"):
        prune_lowest(src, 40_000, sample=1 << 12, band_cap=10**9)
    assert all(torch.equal(x, y) for x, y in zip(before, src.pruned))


def test_a_live_minus_infinity_is_refused_like_the_radix_route():
    ts = _tensors(9)
    ts[1][17] = -INF
    src = SampledSource(ts, chunk=512)
    with pytest.raises(RuntimeError, match="not finite"):
        prune_lowest(src, 40_000, sample=1 << 12, band_cap=10**9)
    assert not any(p.any() for p in src.pruned)


@pytest.mark.parametrize("ops", ["cpu", "torch"])
@pytest.mark.parametrize("n", [8, 13, 64, 1000, 4099])
def test_bit_packing_round_trips(ops, n):
    g = torch.Generator().manual_seed(n)
    flags = torch.rand(n, generator=g) < 0.4
    key = torch.where(flags, torch.tensor(-1.0), torch.tensor(1.0))
    impl = _CpuOps(4160) if ops == "cpu" else _TorchOps(4160, torch.device("cpu"))
    below = impl.less(key, 0.0, 0)
    out = torch.zeros((n + 7) // 8, dtype=torch.uint8)
    impl.pack(below, out)
    expect = [sum(1 << i for i in range(8) if 8 * b + i < n and bool(flags[8 * b + i])) for b in range(len(out))]
    assert out.tolist() == expect  # flag i in bit i % 8 of byte i // 8, computed bit by bit
    keep = impl.keep(out, n)
    assert keep.tolist() == [0.0 if f else 1.0 for f in flags.tolist()]


@pytest.mark.parametrize("ops", ["cpu", "torch"])
def test_band_positions_are_those_between_the_bounds(ops):
    g = torch.Generator().manual_seed(10)
    for n in (4096, 4099, 77):
        key = torch.rand(n, generator=g)
        key[5 % n] = float("nan")
        impl = _CpuOps(4160) if ops == "cpu" else _TorchOps(4160, torch.device("cpu"))
        below = impl.less(key, 0.3, 0)
        pos = impl.band(key, 0.31, below)
        expect = [i for i, k in enumerate(key.tolist()) if not k < 0.3 and not k >= 0.31]  # NaN included
        assert pos.tolist() == expect


def test_sample_rows_cover_the_strata_and_do_not_line_up_with_columns():
    rows = sample_rows(30_000, 1_000, mix_seed(7, 123))
    assert rows.tolist() == sorted(rows.tolist()) and len(set(rows.tolist())) == 1000
    assert all(30 * i <= int(r) < 30 * (i + 1) for i, r in enumerate(rows))  # one per stratum
    residues = np.bincount((rows % 3).numpy(), minlength=3)
    assert residues.min() > 250  # a stride of 3 would put them all in one residue
    assert not torch.equal(rows, sample_rows(30_000, 1_000, mix_seed(8, 123)))  # a new draw each step
    assert mix_seed(7, 123) != mix_seed(7, 124) and 0 <= mix_seed(10**12, 10**12) < 2**63


# -- through the Pruner: bitter7 on Adam state, magnitude on bits ---------------------------
def _model():
    torch.manual_seed(11)
    return nn.Sequential(nn.Linear(512, 768, bias=False), nn.Linear(768, 512, bias=False))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "torch"])
@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_pruner_updates_take_one_pass_and_match_a_sort(opt_name, compiled, monkeypatch):
    monkeypatch.setattr(bracket, "FUSED", compiled)
    model = _model()
    if opt_name == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        kw = dict(method="state", variant="bitter7")
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        kw = dict(method="magnitude")
    pr = Pruner(opt, prunable_weights(model), target=0.9, warmup_end=2, ramp_end=12, frequency=5,
                chunk=1 << 14, sample=1 << 15, band_cap=1 << 16, **kw)
    visits = {}
    keys = _Keys.keys

    def counted(self, i, a, b, exact):
        visits[(self.js[i], a)] = visits.get((self.js[i], a), 0) + 1
        return keys(self, i, a, b, exact)
    monkeypatch.setattr(_Keys, "keys", counted)
    squared = _Keys.squared_keys

    def counted_squared(self, i, a, b):
        out = squared(self, i, a, b)
        if out is not None:  # a chunk scored by its squared keys: keys() is not called for it
            visits[(self.js[i], a)] = visits.get((self.js[i], a), 0) + 1
        return out
    monkeypatch.setattr(_Keys, "squared_keys", counted_squared)
    classify = cpu_pass.classify

    def counted_classify(kind, x, *args, **kw):
        if kind != cpu_pass.KEYS:  # a loop that scored the weights itself (keys() counts the others)
            visits[x.ctypes.data] = visits.get(x.ctypes.data, 0) + 1
        return classify(kind, x, *args, **kw)
    monkeypatch.setattr(cpu_pass, "classify", counted_classify)
    pieces = cpu_pass.classify_items

    def counted_pieces(tab, items, *args, **kw):  # tensors read in pieces, one call for all: a visit each
        for at in set(tab[items[:, 0], cpu_pass.T_X].tolist()):
            visits[at] = visits.get(at, 0) + 1
        return pieces(tab, items, *args, **kw)
    monkeypatch.setattr(cpu_pass, "classify_items", counted_pieces)
    for t in range(1, 13):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        pr.before_update()
        opt.step()
        if t in (7, 12):
            before = [pr.rep.dead_mask(j) for j in range(2)]
            scores = [pr_scores(pr, j) for j in range(2)]  # what the update sees
            visits.clear()
            pr.update(t)
            goal = round(sparsity_at(t, warmup_end=2, ramp_end=12, final=0.9) * pr.total)
            assert pr.pruned_count() == goal
            assert all(s.bracketed and s.passes == 1 for s in pr.selections)
            assert max(visits.values()) == 1
            now = [pr.rep.dead_mask(j) for j in range(2)]
            live = torch.cat([s[~b] if b is not None else s for s, b in zip(scores, before)])
            new = torch.cat([s[n & ~(b if b is not None else torch.zeros_like(n))] for s, n, b in zip(scores, now, before)])
            kept = torch.cat([s[~n] for s, n in zip(scores, now)])
            assert new.numel() == goal - sum(int(b.sum()) if b is not None else 0 for b in before)
            assert new.max() <= kept.min() and live.numel() == new.numel() + kept.numel()


def pr_scores(pr, j):
    """Tensor j's scores as the update computes them (float32, flat), from the public score."""
    from lib.pruning.masks import flat
    from lib.pruning.scores import importance
    p = pr.params[j]
    if pr.method == "magnitude":
        return flat(p.detach()).abs().float()
    st = pr.opt.state[p]
    return flat(importance(pr.variant, p, st["exp_avg"], st["exp_avg_sq"], step=int(st["step"]))).clone()


def test_pass_bound_holds_when_the_bracket_misses(monkeypatch):
    monkeypatch.setattr(bracket, "Z", 0.0)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    pr = Pruner(opt, prunable_weights(model), method="state", variant="bitter7", target=0.9, warmup_end=2,
                ramp_end=12, frequency=5, chunk=1 << 14, sample=1 << 15, band_cap=1 << 16, digits=WIDE)
    for t in range(1, 8):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opt.step()
    pr.update(7)
    assert pr.pruned_count() == round(sparsity_at(7, warmup_end=2, ramp_end=12, final=0.9) * pr.total)
    sel = pr.selections[0]
    assert not sel.bracketed and 2 <= sel.passes <= 1 + len(WIDE) + 1 <= MAX_PASSES


def test_sample_blocks_are_whole_mask_bytes():
    assert BLOCK % 8 == 0  # BitMask.dead_rows reads whole bytes per block
