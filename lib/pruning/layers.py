"""Where a run was pruned: per-layer sparsity of the prunable weights (summary.json "layers").

Every mask representation leaves a pruned weight at exactly 0 (lib/pruning/masks.py), so the
achieved sparsity of a layer is read from the weights themselves, whichever method pruned
them; a weight that training drove to exactly 0.0 on its own would count as pruned too.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def layer_sparsity(named_weights) -> list[dict]:
    """[{"layer": name, "size": weights, "sparsity": fraction that is zero}] in the given order."""
    rows = []
    for name, weight in named_weights:
        size = weight.numel()
        zeros = size - int(torch.count_nonzero(weight))
        rows.append({"layer": name, "size": size, "sparsity": zeros / size if size else 0.0})
    return rows
