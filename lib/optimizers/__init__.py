"""Optimizers: torch's own kernels plus SPAM, clipping and pruning (lib/optimizers/core.py)."""
from lib.optimizers.factory import BASES, NAMES, PRUNING, create, reschedule
from lib.optimizers.groups import param_groups

__all__ = ["create", "reschedule", "param_groups", "NAMES", "PRUNING", "BASES"]
