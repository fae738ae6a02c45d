"""Which weights are prunable (SPEC, "Which weights are prunable")."""
from __future__ import annotations

import torch.nn as nn

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
             nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def prunable_weights(model: nn.Module, include_tied: bool = False) -> list:
    """[(name, Parameter)] of every Linear/Conv weight, in module order, each tensor once.

    A weight shared with an nn.Embedding (GPT-2's lm_head is wte) is left out unless
    `include_tied`: pruning it would also prune the token embedding.
    """
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out, seen = [], set()
    for name, module in model.named_modules():
        if not isinstance(module, _PRUNABLE) or module.weight is None:
            continue
        w = module.weight
        if id(w) in seen or (id(w) in embedded and not include_tied):
            continue
        seen.add(id(w))
        out.append((f"{name}.weight" if name else "weight", w))
    return out
