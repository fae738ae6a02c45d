"""Optimizers: torch's own kernels plus SPAM, clipping and pruning (lib/optimizers/core.py),
each registered once in lib/optimizers/registry.py.

The names below load on first use (PEP 562), so that the torch-free registry can be read by
the sweep planner without importing torch.
"""
import importlib

_HOME = {"create": "factory", "reschedule": "factory", "param_groups": "groups", "NAMES": "registry",
         "PRUNING": "registry", "BASES": "registry"}
__all__ = list(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'lib.optimizers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lib.optimizers.{_HOME[name]}"), name)
