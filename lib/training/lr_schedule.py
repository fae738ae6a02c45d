"""Learning-rate schedules, as a pure function of the optimizer step.

The engine sets every param group's lr to `lr_at(step, ...)` before each optimizer step,
so the schedule is a closed form of the step number: nothing to save in a checkpoint,
and a resumed run gets exactly the LR of an uninterrupted one.

Definitions (`step` is 0-based: the index of the optimizer step about to be taken):
  warm-up     step < W:  lr = base * (step + 1) / W       (linear, reaches base at W-1)
  after warm-up, with e = (step - W) // quantum and E = ceil((total - W) / quantum):
  constant    lr = base
  cosine      lr = min + (base - min) * (1 + cos(pi * e / E)) / 2
  step        lr = base * gamma ** ((step - W) // step_size)
`quantum` is the granularity of the decay: steps_per_epoch for the CNNs (the seed's
"cosine LR per epoch": the LR changes at epoch boundaries, as torch's
CosineAnnealingLR stepped once per epoch) and 1 for GPT-2 (nanoGPT's per-iteration
warm-up + cosine, kind "warmup_cosine", which is the same formula).
"""
from __future__ import annotations

import math

KINDS = ("constant", "cosine", "step", "warmup_cosine")


def check(*, kind: str, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0,
          quantum: int = 1, step_size: int = 0, gamma: float = 0.1) -> None:
    """Raise ValueError (one line naming the value and the fix) for an unusable schedule."""
    if kind not in KINDS:
        raise ValueError(f"unknown LR schedule {kind!r}; choose one of {', '.join(KINDS)}")
    if not base_lr > 0 or not math.isfinite(base_lr):
        raise ValueError(f"learning rate must be a positive number, got {base_lr!r}; set it in 'make menuconfig'")
    if total_steps < 1:
        raise ValueError(f"the run has {total_steps} optimizer steps; it needs at least 1 "
                         "(raise the epochs/iterations or lower the batch)")
    if warmup_steps < 0 or warmup_steps >= total_steps:
        raise ValueError(f"LR warm-up of {warmup_steps} steps must be shorter than the run's "
                         f"{total_steps} steps; lower the LR warm-up")
    if kind in ("cosine", "warmup_cosine") and not 0 <= min_lr <= base_lr:
        raise ValueError(f"minimum LR {min_lr!r} must be between 0 and the base LR {base_lr!r}")
    if quantum < 1:
        raise ValueError(f"LR schedule quantum must be at least 1 step, got {quantum}")
    if kind == "step" and (step_size < 1 or not 0 < gamma <= 1):
        raise ValueError(f"step schedule needs a step size >= 1 step (got {step_size}) and 0 < gamma <= 1 "
                         f"(got {gamma}); set LR_STEP_EPOCHS and LR_STEP_GAMMA")


def lr_at(step: int, *, kind: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
          min_lr: float = 0.0, quantum: int = 1, step_size: int = 0, gamma: float = 0.1) -> float:
    """The learning rate of 0-based optimizer step `step` (see the module docstring)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    after = step - warmup_steps
    if kind == "constant":
        return base_lr
    if kind in ("cosine", "warmup_cosine"):
        epochs = -(-(total_steps - warmup_steps) // quantum)
        e = min(after // quantum, epochs)
        return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * e / epochs)) / 2
    if kind == "step":
        return base_lr * gamma ** (after // step_size)
    raise ValueError(f"unknown LR schedule {kind!r}; choose one of {', '.join(KINDS)}")
