"""Every importance formula against a numpy float64 computation written from the SPEC table."""
import numpy as np
import pytest
import torch

from lib.pruning import score_registry
from lib.pruning.scores import BUDGET_FACTOR, VARIANTS, importance

EPS = 1e-8


def _state(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * 0.05
    m = torch.randn(n, generator=g) * 1e-3
    v = torch.rand(n, generator=g) * 1e-5 + 1e-9
    return w, m, v


def _aw(w, m, v, step, beta1):
    return np.abs(w)


def _bitter3(w, m, v, step, beta1):
    return np.abs(w) * np.sqrt(np.abs(m) + EPS)


def _bitter7(w, m, v, step, beta1):
    return np.abs(w) * (v + EPS) ** 0.25


# name -> (float64 formula written from the SPEC table, relative tolerance of the float32 score).
# Every registered score needs one: a new entry without it fails test_every_score_has_a_reference.
REFERENCES = {
    "magnitude": (_aw, 2e-6),
    "bitter0": (lambda w, m, v, step, beta1: np.abs(w) * np.abs(m) * np.abs(w) / (np.sqrt(v) + EPS), 2e-6),
    "bitter1": (_aw, 2e-6),
    "bitter2": (_aw, 2e-6),
    "bitter3": (_bitter3, 2e-6),
    "bitter4": (_bitter3, 2e-6),
    "bitter5": (lambda w, m, v, step, beta1: -np.sign(w) * m / (np.sqrt(v) + EPS) + 0.1 * np.abs(w), 2e-6),
    "bitter6": (lambda w, m, v, step, beta1: np.abs(w) * np.sqrt(np.abs(m) + EPS) * np.abs(m) / np.sqrt(v + EPS),
                2e-6),
    "bitter7": (_bitter7, 2e-6),
    "bitter8": (lambda w, m, v, step, beta1: np.abs(w) * np.sqrt(np.abs(m / (1 - beta1 ** step))), 2e-6),
    # bfloat16 keeps 8 significant bits: |w|, the fourth root and the product are rounded once each
    "bitter9": (_bitter7, 3 * 2.0 ** -8),
}


def _reference(variant, w, m, v, step, beta1=0.9):
    w, m, v = (x.double().numpy() for x in (w, m, v))
    return REFERENCES[variant][0](w, m, v, step, beta1)


def test_every_score_has_a_reference():
    assert sorted(REFERENCES) == sorted(score_registry.VARIANTS)


@pytest.mark.parametrize("variant", score_registry.VARIANTS)
def test_formula_matches_reference(variant):
    w, m, v = _state()
    got = importance(variant, w.view(40, 100), m.view(40, 100), v.view(40, 100), step=7, beta1=0.8)
    assert got.dtype == torch.float32 and got.shape == (40, 100)
    want = _reference(variant, w, m, v, 7, beta1=0.8)
    np.testing.assert_allclose(got.view(-1).double().numpy(), want, rtol=REFERENCES[variant][1], atol=1e-30)


@pytest.mark.parametrize("variant", score_registry.VARIANTS)
def test_registered_sign_and_use_of_state_hold(variant):
    """`nonnegative` lets the mask update skip marking pruned zeros and `uses_state` decides
    whether the optimizer's moments are read: both must be true of the formula."""
    entry = score_registry.get(variant)
    w, m, v = _state()
    s = importance(variant, w, m, v, step=7)
    if entry.nonnegative:
        assert (s >= 0).all()
    else:
        assert (s < 0).any()  # the flag is not mere caution
    _, m2, v2 = _state(seed=5)
    assert (not torch.equal(s, importance(variant, w, m2, v2, step=7))) == entry.uses_state


def test_bitter5_positive_when_adam_moves_weight_away_from_zero():
    w = torch.tensor([0.5, 0.5, -0.5, -0.5])
    m = torch.tensor([-1.0, 1.0, 1.0, -1.0]) * 1e-3  # Adam moves w by -lr*m/sqrt(v)
    v = torch.full((4,), 1e-6)
    s = importance("bitter5", w, m, v, step=3)
    # a step away from zero scores high, toward zero low (the published sign was reversed)
    assert s[0] > 0 > s[1] and s[2] > 0 > s[3]


def test_bitter9_ranks_like_bitter7():
    w, m, v = _state(200_000, seed=1)
    s7 = importance("bitter7", w, m, v, step=10)
    s9 = importance("bitter9", w, m, v, step=10)
    assert s9.dtype == torch.float32
    for keep in (0.5, 0.1):
        k = int(keep * w.numel())
        m7 = torch.zeros(w.numel(), dtype=torch.bool)
        m9 = m7.clone()
        m7[torch.topk(s7, k).indices] = True
        m9[torch.topk(s9, k).indices] = True
        assert (m7 != m9).float().mean().item() < 0.005


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_state_falls_back_to_magnitude(variant):
    w, m, v = _state(100)
    assert torch.equal(importance(variant, w, None, None, step=0), w.abs())
    assert torch.equal(importance(variant, w, m, v, step=0), w.abs())


@pytest.mark.parametrize("variant", VARIANTS)
def test_pruned_positions_score_zero_not_nan(variant):
    w, m, v = _state(100)
    w[:30] = 0.0
    v[:30] = float("inf")  # the optimizer's marker of a pruned position
    s = importance(variant, w, m, v, step=5)
    assert torch.isfinite(s).all()
    assert (s[:30] == 0).all()


def test_reduced_precision_inputs_scored_in_float32():
    w, m, v = _state(1000)
    s = importance("bitter7", w.bfloat16(), m.bfloat16(), v.bfloat16(), step=5)
    assert s.dtype == torch.float32
    want = _reference("bitter7", w.bfloat16().float(), m, v.bfloat16().float(), 5)
    np.testing.assert_allclose(s.double().numpy(), want, rtol=1e-5)


def test_bitter9_leaves_bf16_state_untouched():
    w, m, v = (x.bfloat16() for x in _state(100))
    w0, v0 = w.clone(), v.clone()
    importance("bitter9", w, m, v, step=3)
    assert torch.equal(w, w0) and torch.equal(v, v0)


def test_bad_input_is_rejected():
    w, m, v = _state(10)
    with pytest.raises(ValueError, match="unknown importance variant"):
        importance("bitter10", w, m, v, step=1)
    with pytest.raises(ValueError, match="shape"):
        importance("bitter7", w, m, v[:5], step=1)
    with pytest.raises(ValueError, match="step"):
        importance("bitter7", w, m, v, step=-1)


def test_bitter2_budget_factor():
    assert BUDGET_FACTOR == {"bitter2": 1.21}
