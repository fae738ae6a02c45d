"""Between a tensor's memory order (how masks and optimizer state are indexed, lib/pruning/masks.py)
and its logical row-major order (how shapes, N:M groups and exported files read it)."""
from __future__ import annotations

import torch

from lib.pruning.masks import flat


def to_logical(memory_order: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A flat tensor in `like`'s memory order, as a contiguous tensor of `like`'s shape."""
    out = torch.empty_like(like, dtype=memory_order.dtype, memory_format=torch.preserve_format)
    flat(out).copy_(memory_order)
    return out.contiguous()


def to_memory_order(logical: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse: a tensor of `like`'s shape (any layout), flat in `like`'s memory order."""
    out = torch.empty_like(like, dtype=logical.dtype, memory_format=torch.preserve_format)
    out.copy_(logical.view(like.shape))
    return flat(out)
