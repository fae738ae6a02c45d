"""Every importance score, defined once: its formula and what the rest of the code needs to know.

Adding a score is one `Score(...)` entry in SCORES plus its Kconfig symbol (docs/extending.md).
The sweep planner (lib/configuration/runspec.py, test_matrix/expand.py) reads the names, Kconfig
symbols and budget factors here without loading torch, so the formulas import torch when they
run, not when this module is imported.

A formula gets float32 tensors w, m, v (flat or shaped; `native_dtype` entries get them as
stored), the Adam step count and beta1, and writes its score into `out` with `tmp` as scratch
(both float32, w's shape). It only runs once the optimizer has state (step >= 1): before that,
and for scores that ignore the state, the score is |w| (lib/pruning/scores.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# A pruned position's second moment (+inf) is clamped before sqrt; not to FMAX, whose sqrt
# (3.4e38) takes a slow path on CPU (measured 25x slower with AVX-512), and the mask update scores
# mostly pruned positions late in the ramp. Live moments are far below 2**127.
VMAX = 2.0 ** 127
PRUNING_METHODS = ("none", "magnitude", "movement", "state")
RECOMMENDED = "bitter7"  # SPEC: the variant adamwprune uses when none is named


@dataclass(frozen=True)
class Score:
    name: str
    formula: str  # as docs and errors print it
    # None: the score is |w| (no optimizer state); else fn(w, m, v, *, step, beta1, eps, out, tmp)
    compute: Callable | None
    # never below 0, so a pruned weight (w = 0) scores exactly 0 and the mask update can skip
    # marking it (lib/pruning/pruner.py)
    nonnegative: bool
    # the pruning method that uses this score: "state" (an AdamWPrune variant, chosen with
    # kconfig) or "magnitude" (the optimizer-independent method of the same name)
    method: str = "state"
    kconfig: str | None = None  # the ADAMWPRUNE_VARIANT_* symbol that selects it in a sweep
    budget_factor: float = 1.0  # > 1: trains that many times the others' steps (flagged unequal)
    depth_scaled_layers: bool = False  # per-layer sparsity rising with depth (lib/pruning/apportion.py)
    native_dtype: bool = False  # reads w, m, v in their stored dtype (no float32 copies)
    work_bytes: int = 0  # bytes per element the formula allocates itself, for the mask update's budget
    # a cheaper fn(w, v, *, eps, out, tmp) whose float32 result is the score squared within
    # a relative SQUARED_REL (the one-pass mask update classifies most positions with it,
    # lib/pruning/bracket.py), or None; only for a score that reads w and v, not m
    squared: Callable | None = None
    # the compiled CPU loop that computes this score itself (lib/pruning/cpu_pass.py), or None:
    # the mask update then scores through `compute` chunk by chunk
    kernel: str | None = None

    @property
    def uses_state(self) -> bool:
        return self.compute is not None


def _bitter0(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    torch.mul(w, w, out=out).mul_(torch.abs(m, out=tmp))  # |w| |m| |w|
    return out.div_(_sqrt_(torch.clamp(v, max=VMAX, out=tmp)).add_(eps))


def _bitter3(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    torch.abs(m, out=tmp).add_(eps).sqrt_()
    return torch.abs(w, out=out).mul_(tmp)


def _bitter5(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    # positive when Adam's step moves the weight away from zero (the published sign was reversed)
    torch.sign(w, out=out).mul_(m).div_(torch.clamp(v, max=VMAX, out=tmp).sqrt_().add_(eps)).neg_()
    return out.add_(torch.abs(w, out=tmp), alpha=0.1)


def _bitter6(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    torch.abs(w, out=out).mul_(torch.abs(m, out=tmp).add_(eps).sqrt_())
    out.mul_(torch.abs(m, out=tmp))
    return out.div_(torch.clamp(v, max=VMAX, out=tmp).add_(eps).sqrt_())


def _sqrt_(t):
    """t's correctly rounded square root, in place. torch's vectorised float32 sqrt on CPU
    is an ulp off for about one value in six (AVX-512, torch 2.14), and the compiled mask
    update (lib/pruning/cpu_pass.py) rounds correctly: through float64 both agree bit for
    bit (a float64 square root rounded to float32 is the correctly rounded one)."""
    if t.device.type == "cpu":
        return t.copy_(t.double().sqrt_())
    return t.sqrt_()


def _bitter7(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    # sqrt is several times slower on +inf than on finite inputs (CPU), and a pruned
    # position's score is discarded anyway: clamp first
    _sqrt_(_sqrt_(torch.clamp(v, max=VMAX, out=tmp).add_(eps)))
    return torch.abs(w, out=out).mul_(tmp)


def _bitter7_squared(w, v, *, eps, out, tmp):
    """w^2 * sqrt(v + eps): one square root where the score takes two. The sqrt(v + eps) is
    bitter7's own first one, so against the score squared only the two roundings of each
    side's multiplies differ: within 6 * 2**-24 relative while w^2 and the product are
    normal floats (SQUARED_REL leaves a 25x margin)."""
    import torch
    _sqrt_(torch.clamp(v, max=VMAX, out=tmp).add_(eps))
    return torch.mul(w, w, out=out).mul_(tmp)


SQUARED_REL = 1e-5


def _bitter8(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    torch.abs(m, out=tmp).div_(1.0 - beta1 ** step).sqrt_()  # |m_hat|
    return torch.abs(w, out=out).mul_(tmp)


def _bitter9(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    # reduced precision for speed; ranks like bitter7 (tested: < 0.5% mask disagreement)
    top = float(torch.finfo(torch.bfloat16).max)
    vb = v.to(torch.bfloat16).clamp(max=top).add_(eps).sqrt_().sqrt_()  # a copy: v may be bf16 state
    return out.copy_(w.to(torch.bfloat16).abs().mul_(vb))


SCORES = (
    Score("bitter0", "|w|*|m|*|w|/(sqrt(v)+eps)", _bitter0, True, kconfig="ADAMWPRUNE_VARIANT_BITTER0",
          kernel="bitter0", work_bytes=8),  # the float64 square root
    Score("bitter1", "|w|", None, True, kconfig="ADAMWPRUNE_VARIANT_BITTER1"),
    # the seed's 12,100 vs 10,000 iterations; reports mark the run as an unequal budget
    Score("bitter2", "|w|, 1.21x steps", None, True, kconfig="ADAMWPRUNE_VARIANT_BITTER2", budget_factor=1.21),
    Score("bitter3", "|w|*sqrt(|m|+eps)", _bitter3, True, kconfig="ADAMWPRUNE_VARIANT_BITTER3"),
    Score("bitter4", "|w|*sqrt(|m|+eps), deeper layers sparser", _bitter3, True,
          kconfig="ADAMWPRUNE_VARIANT_BITTER4", depth_scaled_layers=True),
    Score("bitter5", "-sign(w)*m/(sqrt(v)+eps)+0.1|w|", _bitter5, False, kconfig="ADAMWPRUNE_VARIANT_BITTER5"),
    Score("bitter6", "|w|*sqrt(|m|+eps)*|m|/sqrt(v+eps)", _bitter6, True, kconfig="ADAMWPRUNE_VARIANT_BITTER6"),
    Score("bitter7", "|w|*(v+eps)^(1/4)", _bitter7, True, kconfig="ADAMWPRUNE_VARIANT_BITTER7",
          squared=_bitter7_squared, kernel="bitter7", work_bytes=8),  # the float64 square roots
    Score("bitter8", "|w|*sqrt(|m|/(1-beta1^t))", _bitter8, True, kconfig="ADAMWPRUNE_VARIANT_BITTER8"),
    Score("bitter9", "|w|*(v+eps)^(1/4) in bfloat16", _bitter9, True, kconfig="ADAMWPRUNE_VARIANT_BITTER9",
          native_dtype=True, work_bytes=8),
    Score("magnitude", "|w|", None, True, method="magnitude"),
)

BY_NAME = {s.name: s for s in SCORES}
assert len(BY_NAME) == len(SCORES), "score names must be unique"
VARIANTS = tuple(BY_NAME)
STATE_VARIANTS = tuple(s.name for s in SCORES if s.method == "state")
BUDGET_FACTOR = {s.name: s.budget_factor for s in SCORES if s.budget_factor != 1.0}


def get(name) -> Score:
    """The registered score `name`; ValueError naming the choices otherwise."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown importance variant {name!r}; use one of {', '.join(VARIANTS)}") from None


def for_method(method, variant) -> Score | None:
    """The score a pruning method ranks by: the variant's for "state", |w| for "magnitude";
    None for "movement", whose score is its own accumulated buffer (may be negative)."""
    if method == "movement":
        return None
    return get(variant if method == "state" else "magnitude")
