"""Parameter groups: weight decay on weights only (SPEC, "Parameter groups")."""
from __future__ import annotations

import torch.nn as nn

_NO_DECAY_MODULES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.Embedding,
                     nn.EmbeddingBag) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def param_groups(model: nn.Module, weight_decay: float) -> list:
    """[{params, weight_decay}, {params, weight_decay: 0}]: biases, normalisation layers and
    embeddings get no decay; every trainable tensor in exactly one group (tied weights once)."""
    exempt = {id(p) for m in model.modules() if isinstance(m, _NO_DECAY_MODULES)
              for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # yields a tied tensor once
        if not p.requires_grad:
            continue
        # ndim < 2 catches biases and hand-written norm layers (nanoGPT's LayerNorm)
        (no_decay if id(p) in exempt or p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters; nothing to optimize")
    return groups
