"""Importance scores (higher = keep), SPEC "Importance scores for adamwprune"; the formulas
and what is known about each are registered in lib/pruning/score_registry.py.

Every score is computed in float32 whatever the training dtype. A position whose
second moment is +inf is a pruned position (the optimizer's own marker, see
lib/pruning/masks.py); `importance` scores it 0, and the mask update never looks at it.
"""
from __future__ import annotations

import torch

from lib.pruning import score_registry
from lib.pruning.score_registry import BUDGET_FACTOR, STATE_VARIANTS, VARIANTS  # noqa: F401 (public names)

EPS = 1e-8


def check_variant(variant) -> None:
    score_registry.get(variant)


def uses_state(variant) -> bool:
    return score_registry.get(variant).uses_state


def score(variant, w, m, v, *, step, beta1=0.9, eps=EPS, out=None, tmp=None) -> torch.Tensor:
    """The raw formula of registered score `variant` on (flat or shaped) tensors, as float32.

    Written into `out` when given (with `tmp` as scratch, both float32 of w's shape): a
    mask update reuses two chunk-sized buffers instead of allocating per chunk, which on
    CPU costs page faults. A pruned position (w = 0, v = +inf) comes out as 0; callers
    decide what it scores (`importance`: 0; the mask update: -inf, see masks.py).
    """
    entry = score_registry.get(variant)
    if out is None:
        out = torch.empty(w.shape, dtype=torch.float32, device=w.device)
    if not entry.uses_state or m is None or v is None or step < 1:
        return torch.abs(w.float(), out=out)  # no optimizer state yet: every variant falls back to |w|
    if not entry.native_dtype:
        w, m, v = w.float(), m.float(), v.float()  # no copy when already float32
    if tmp is None:
        tmp = torch.empty_like(out)
    return entry.compute(w, m, v, step=step, beta1=beta1, eps=eps, out=out, tmp=tmp)


def importance(variant, weight, exp_avg, exp_avg_sq, *, step, beta1=0.9) -> torch.Tensor:
    """Importance of every element of `weight` (float32, same shape; higher = keep).

    `exp_avg`, `exp_avg_sq` are Adam's moments (None before the optimizer has state),
    `step` the number of Adam updates they hold (bias correction of bitter8).
    """
    check_variant(variant)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative whole number, got {step!r}")
    for name, t in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if t is not None and t.shape != weight.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but weight has {tuple(weight.shape)}; "
                             "pass the optimizer state of this weight")
    with torch.no_grad():
        out = score(variant, weight.detach(), exp_avg, exp_avg_sq, step=step, beta1=beta1)
        if exp_avg_sq is not None and uses_state(variant) and step >= 1:
            out.masked_fill_(torch.isinf(exp_avg_sq), 0.0)  # pruned: weight is 0, so is its score
    return out
