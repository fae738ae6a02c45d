"""Pruning: one schedule and one mask machinery; methods differ only in their score.

The names below load on first use (PEP 562), so that the torch-free registry
lib/pruning/score_registry.py can be read by the sweep planner without importing torch.
"""
import importlib

_HOME = {"prunable_weights": "params", "Pruner": "pruner", "METHODS": "pruner", "SCOPES": "pruner",
         "sparsity_at": "schedule", "is_update_step": "schedule", "importance": "scores",
         "VARIANTS": "score_registry", "STATE_VARIANTS": "score_registry", "BUDGET_FACTOR": "score_registry"}
__all__ = list(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'lib.pruning' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lib.pruning.{_HOME[name]}"), name)
