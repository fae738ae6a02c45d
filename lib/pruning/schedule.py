"""The sparsity schedule shared by every pruning method (SPEC, "Sparsity schedule").

Zhu & Gupta's cubic ramp prunes early and tapers late; the published code's
`s_f * p**3` did the opposite and is deliberately not offered.
"""
from __future__ import annotations

SHAPES = ("cubic", "linear")


def check_schedule(*, warmup_end, ramp_end, final, shape="cubic", frequency=1) -> None:
    """ValueError (one line, with the fix) for a schedule that cannot run."""
    if isinstance(final, bool) or not isinstance(final, (int, float)) or not 0.0 <= final < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {final!r}; "
                         "pass a fraction such as 0.9 for 90%")
    for name, value in (("warmup_end", warmup_end), ("ramp_end", ramp_end)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative whole number of optimizer steps, got {value!r}")
    if ramp_end < warmup_end:
        raise ValueError(f"ramp_end ({ramp_end}) is before warmup_end ({warmup_end}); "
                         "the ramp must end at or after the warm-up")
    if shape not in SHAPES:
        raise ValueError(f"unknown sparsity schedule shape {shape!r}; use one of {', '.join(SHAPES)}")
    if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
        raise ValueError(f"pruning frequency must be a whole number of steps >= 1, got {frequency!r}")
    if final > 0 and ramp_end < 1:
        raise ValueError("ramp_end must be at least 1 when target sparsity > 0 "
                         "(steps count from 1, so a ramp ending at 0 never prunes)")


def sparsity_at(step, *, warmup_end, ramp_end, final, shape="cubic") -> float:
    """Target sparsity after optimizer step `step` (1-based; 0 = before training)."""
    check_schedule(warmup_end=warmup_end, ramp_end=ramp_end, final=final, shape=shape)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative whole number, got {step!r}")
    if step >= ramp_end:  # also a one-shot prune when warmup_end == ramp_end
        return float(final)
    if step <= warmup_end:
        return 0.0
    p = (step - warmup_end) / (ramp_end - warmup_end)
    if shape == "linear":
        return float(final) * p
    return float(final) * (1.0 - (1.0 - p) ** 3)


def is_update_step(step, *, warmup_end, ramp_end, frequency) -> bool:
    """True when masks are recomputed after optimizer step `step`.

    Every `frequency` steps counted from the warm-up end while warmup_end < step <= ramp_end,
    and once more at ramp_end so the run ends at exactly the final sparsity.
    """
    if step == ramp_end and step >= 1:
        return True
    return warmup_end < step < ramp_end and (step - warmup_end) % frequency == 0
