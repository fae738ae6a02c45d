"""Fault injection for tests of the failure paths (never set in normal runs).

KNLP_FAULT="KIND:STEP[:RANK]" makes the engine misbehave on optimizer step STEP
(1-based) of rank RANK (any rank when omitted):
  nan    the training loss becomes NaN (the NaN path: run stops, status failed)
  raise  an exception is raised (a crashing rank)
  exit   the process exits at once with code 17, writing nothing (a rank that dies)
"""
from __future__ import annotations

import os

KINDS = ("nan", "raise", "exit")


def parse(value: str | None):
    """(kind, step, rank or None), or None when unset; ValueError for a malformed value."""
    if not value:
        return None
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] not in KINDS:
        raise ValueError(f"KNLP_FAULT={value!r} must be KIND:STEP[:RANK] with KIND one of {', '.join(KINDS)}")
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None


class Fault:
    def __init__(self, rank: int, value: str | None = None):
        spec = parse(os.environ.get("KNLP_FAULT") if value is None else value)
        self.kind, self.step = (spec[0], spec[1]) if spec and spec[2] in (None, rank) else (None, None)

    def on_loss(self, step: int, loss):
        """Called with the loss of (1-based) optimizer step `step`; returns the loss to use."""
        if self.kind is None or step != self.step:
            return loss
        if self.kind == "nan":
            return loss * float("nan")
        if self.kind == "raise":
            raise RuntimeError(f"injected fault (KNLP_FAULT) at step {step}")
        os._exit(17)
