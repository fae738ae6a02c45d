"""The one-pass update's squared keys (bracket._squared_flags, place_exactly): bitter7 positions are
placed by w^2 * sqrt(v + eps) against the squared bounds, and only those it cannot place
are scored exactly. The placement must equal the exact keys' on any value."""
import numpy as np
import pytest
import torch

from lib.pruning import bracket, score_registry, scores
from lib.pruning.bracket import _CpuOps, _squared_flags, _TorchOps, place_exactly, squared_thresholds

ULP = 2.0 ** -24


def _exact(w, v):
    return scores.score("bitter7", w, torch.zeros_like(w), v, step=1)


def _squared(w, v):
    out, tmp = torch.empty_like(w), torch.empty_like(w)
    return score_registry.get("bitter7").squared(w, v, eps=scores.EPS, out=out, tmp=tmp)


class _Source:
    """keys / squared_keys / keys_of of one flat (w, v) pair, as pruner._Keys gives them."""

    def __init__(self, w, v):
        self.w, self.v = w, v

    def squared_keys(self, j, a, b):
        return _squared(self.w[a:b], self.v[a:b])

    def keys_of(self, j, pos):
        return _exact(self.w[pos], self.v[pos])


def _classify(source, ops, n, lo, hi, squares):
    """(below flags, band positions, band keys) as the pass ends with them."""
    below, wide = _squared_flags(source, ops, 0, 0, n, squares)
    below = torch.as_tensor(below)[:n].clone()
    low, keep, key = place_exactly(source, 0, wide, lo, hi)
    below[wide[low]] = True
    return below, wide[keep], key[keep]


def _near(bound, v, ulps, gen):
    """Weights whose exact key lies within `ulps` float32 steps of `bound` for second moments v."""
    s = ((v.double().clamp(max=score_registry.VMAX) + scores.EPS) ** 0.25).float()
    w = (torch.tensor(bound) / s).float()
    steps = torch.randint(-ulps, ulps + 1, w.shape, generator=gen)
    bits = w.view(torch.int32) + steps.to(torch.int32)
    return bits.view(torch.float32)


def _adversarial(lo, hi, n, seed):
    gen = torch.Generator().manual_seed(seed)
    v = torch.exp(torch.empty(n).uniform_(-40, 20, generator=gen)).float()
    w = torch.randn(n, generator=gen) * torch.exp(torch.empty(n).uniform_(-8, 2, generator=gen))
    k = n // 8
    w[:k] = _near(lo, v[:k], 12, gen)  # near-ties at both bounds, both signs of w
    w[k:2 * k] = -_near(hi, v[k:2 * k], 12, gen)
    w[2 * k:2 * k + 50] = torch.tensor(1e-40)  # subnormal weights: their square underflows
    w[2 * k + 50:2 * k + 100] = -1e-22
    w[2 * k + 100:2 * k + 150] = 3e30  # a square that overflows
    w[2 * k + 150:2 * k + 200], v[2 * k + 150:2 * k + 200] = 0.0, float("inf")  # pruned
    v[2 * k + 200:2 * k + 250] = 0.0
    w[2 * k + 250:2 * k + 260] = float("nan")
    v[2 * k + 260:2 * k + 270] = float("nan")
    w[2 * k + 270:2 * k + 280] = float("inf")
    perm = torch.randperm(n, generator=gen)
    return w[perm].contiguous(), v[perm].contiguous()


@pytest.mark.parametrize("ops_kind", ["cpu", "torch"])
@pytest.mark.parametrize("lo, hi", [(1e-3, 1.2e-3), (0.5, 0.5000001), (2.0 ** -29, 3e-9), (7.0, 1e12)])
@pytest.mark.parametrize("seed", [0, 1])
def test_squared_placement_equals_the_exact_keys(lo, hi, seed, ops_kind):
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    n = 1 << 14
    w, v = _adversarial(lo, hi, n, seed)
    exact = _exact(w, v)
    squares = squared_thresholds(lo, hi)
    assert squares is not None
    ops = _CpuOps(n) if ops_kind == "cpu" else _TorchOps(n, torch.device("cpu"))
    got = None
    saved = bracket.WIDE_SHARE
    try:
        bracket.WIDE_SHARE = 1.0  # the near-ties fill a quarter of this chunk: place them all
        got = _classify(_Source(w, v), ops, n, lo, hi, squares)
    finally:
        bracket.WIDE_SHARE = saved
    below, pos, keys = got
    assert torch.equal(below, exact < lo)  # NaN is never below
    in_band = ~((exact < lo) | (exact >= hi))  # lo <= key < hi, and NaN
    assert torch.equal(pos, torch.nonzero(in_band).view(-1))
    assert torch.equal(keys.view(torch.int32), exact[pos].view(torch.int32))
    assert int(torch.isnan(keys).sum()) == 20  # every NaN reaches the band, where it is refused


def test_the_squared_key_is_within_its_bound_of_the_key_squared():
    gen = torch.Generator().manual_seed(3)
    n = 200_000
    w = torch.randn(n, generator=gen) * torch.exp(torch.empty(n).uniform_(-20, 20, generator=gen))
    v = torch.exp(torch.empty(n).uniform_(-60, 80, generator=gen)).float()
    sq, key = _squared(w, v).double(), _exact(w, v).double()
    normal = (w.double() ** 2 > 2.0 ** -125) & (sq > 2.0 ** -125) & torch.isfinite(sq)
    assert int(normal.sum()) > n // 2
    rel = (sq[normal] / key[normal] ** 2 - 1).abs()
    assert float(rel.max()) <= 6 * ULP
    assert 6 * ULP * 20 < score_registry.SQUARED_REL


def test_squared_thresholds_are_float32_and_outside_the_range_refused():
    t_lo, t_hi = squared_thresholds(1e-2, 2e-2)
    assert t_lo == float(np.float32(t_lo)) and t_lo <= 1e-4 * (1 - score_registry.SQUARED_REL)
    assert t_hi == float(np.float32(t_hi)) and t_hi >= 4e-4 * (1 + score_registry.SQUARED_REL)
    assert squared_thresholds(2.0 ** -31, 1.0) is None  # w^2 of keys near lo could be subnormal
    assert squared_thresholds(1.0, float("inf")) is None
    assert squared_thresholds(1.0, 2.0 ** 51) is None


def test_a_chunk_with_a_wide_band_is_left_to_the_exact_keys():
    n = 4096
    w, v = torch.full((n,), 0.1), torch.full((n,), 1e-4)
    k = float(_exact(w[:1], v[:1]))
    squares = squared_thresholds(k, k * 1.5)  # every key sits at lo
    assert _squared_flags(_Source(w, v), _CpuOps(n), 0, 0, n, squares) is None


def test_pruner_masks_with_squared_keys_equal_those_with_exact_keys(monkeypatch):
    """Through the Pruner, on weights with many exact ties (3 significant bits): the same
    positions go whether the torch route places them by squared keys or scores every one,
    and the compiled CPU pass (which scores every one itself) agrees."""
    import copy

    import torch.nn as nn

    from lib.pruning import bracket, prunable_weights
    from lib.pruning.pruner import Pruner, _Keys

    def run(use_squared, compiled=False):
        monkeypatch.setattr(bracket, "FUSED", compiled)
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(512, 768, bias=False), nn.Linear(768, 512, bias=False))
        with torch.no_grad():
            for p in model.parameters():
                e = torch.floor(torch.log2(p.abs().clamp(min=1e-12)))
                p.copy_(torch.round(p / 2 ** e * 4) / 4 * 2 ** e)  # 3 mantissa bits: ties
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        pr = Pruner(opt, prunable_weights(model), method="state", variant="bitter7", target=0.9, warmup_end=2,
                    ramp_end=12, frequency=5, chunk=1 << 14, sample=1 << 15, band_cap=1 << 18)
        if not use_squared:
            monkeypatch.setattr(_Keys, "squared_keys", lambda self, i, a, b: None)
        gen = torch.Generator().manual_seed(9)
        masks, kinds = [], []
        for t in range(1, 13):
            for p in model.parameters():
                p.grad = torch.round(torch.randn(p.shape, generator=gen) * 8) * 1e-4  # equal moments too
            pr.before_update()
            opt.step()
            if t in (7, 12):
                pr.update(t)
                masks.append([copy.deepcopy(pr.rep.dead_mask(j)) for j in range(2)])
                kinds.append([(s.bracketed, s.ties > 0 or s.tie_drops > 0) for s in pr.selections])
        monkeypatch.undo()
        return masks, kinds
    with_squared, kinds = run(True)
    exact, kinds_exact = run(False)
    compiled, kinds_compiled = run(False, compiled=True)
    assert kinds == kinds_exact == kinds_compiled and all(b for k in kinds for b, _ in k)  # all took one pass
    assert any(tied for k in kinds for _, tied in k)  # and ties at the cut were split
    for a, b, c in zip(with_squared, exact, compiled):
        assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))
