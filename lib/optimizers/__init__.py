"""Optimizers: torch's own kernels plus SPAM, clipping and pruning (lib/optimizers/core.py)."""
from lib.optimizers.factory import BASES, NAMES, PRUNING, create
from lib.optimizers.groups import param_groups

__all__ = ["create", "param_groups", "NAMES", "PRUNING", "BASES"]
