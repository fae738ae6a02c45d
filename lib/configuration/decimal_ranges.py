"""Allowed values of the decimal Kconfig symbols, checked when a config is loaded.

Kconfig's `range` works for int symbols only; decimals are strings to Kconfig, so their
bounds live here and lib/configuration/config.py refuses a value outside them at configuration time
(defconfig, menuconfig, make), before any run directory exists. A decimal symbol not
listed here must still be a finite number.
"""
from __future__ import annotations

import math

# symbol -> (low, low included, high, high included); None: unbounded on that side
RANGES = {
    "LENET5_LEARNING_RATE": (0.0, False, None, False),
    "RESNET_LEARNING_RATE": (0.0, False, None, False),
    "GPT2_LEARNING_RATE": (0.0, False, None, False),
    "SGD_LEARNING_RATE": (0.0, False, None, False),
    "GPT2_MIN_LR": (0.0, True, None, False),
    "ADAMWADV_ETA_MIN": (0.0, True, None, False),
    "LENET5_WEIGHT_DECAY": (0.0, True, None, False),
    "RESNET_WEIGHT_DECAY": (0.0, True, None, False),
    "GPT2_WEIGHT_DECAY": (0.0, True, None, False),
    "GPT2_GRAD_CLIP": (0.0, True, None, False),
    "GPT2_VAL_FRACTION": (0.0, False, 1.0, False),
    "GPT2_DROPOUT": (0.0, True, 1.0, False),
    "SGD_MOMENTUM": (0.0, True, 1.0, False),
    "ADAM_BETA1": (0.0, True, 1.0, False),
    "ADAM_BETA2": (0.0, True, 1.0, False),
    "ADAM_EPS": (0.0, False, None, False),
    "SPAM_THETA": (0.0, False, None, False),
    "LR_STEP_GAMMA": (0.0, False, 1.0, True),
}


def describe(bounds) -> str:
    """'> 0', '>= 0', 'in [0, 1)' ..."""
    low, low_in, high, high_in = bounds
    if high is None:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def problem(name: str, value: float) -> str | None:
    """Why `value` is not allowed for symbol `name`, or None when it is."""
    if not math.isfinite(value):
        return "is not a finite number"
    bounds = RANGES.get(name)
    if bounds is None:
        return None
    low, low_in, high, high_in = bounds
    ok = (low is None or value > low or (low_in and value == low)) and \
         (high is None or value < high or (high_in and value == high))
    return None if ok else f"is out of range: it must be {describe(bounds)}"
