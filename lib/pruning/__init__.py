"""Pruning: one schedule and one mask machinery; methods differ only in their score."""
from lib.pruning.params import prunable_weights
from lib.pruning.pruner import METHODS, SCOPES, Pruner
from lib.pruning.schedule import is_update_step, sparsity_at
from lib.pruning.scores import BUDGET_FACTOR, STATE_VARIANTS, VARIANTS, importance

__all__ = ["prunable_weights", "Pruner", "METHODS", "SCOPES", "sparsity_at", "is_update_step",
           "importance", "VARIANTS", "STATE_VARIANTS", "BUDGET_FACTOR"]
