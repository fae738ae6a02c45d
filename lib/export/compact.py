"""A pruned state dict as bit masks + surviving values, in one safetensors file.

Each pruned tensor `name` becomes `name:mask` (uint8, bit i % 8 of byte i // 8 set where
flat element i survives, row-major order) and `name:values` (the surviving elements in
that order, in the tensor's own dtype); every other tensor is stored as it is. Loading
puts the values back into +0.0-filled tensors, so a state dict whose pruned positions are
+0.0 comes back bit for bit (surviving weights that happen to be 0 or -0.0 included).
Size: 1 bit per prunable weight plus the survivors, against a full float per weight.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lib.pruning.masks import pack_bits, unpack_bits

FORMAT = "knlp-compact-1"
MASK, VALUES = ":mask", ":values"


def pack(state: dict, pruned: dict) -> tuple[dict, dict]:
    """(tensors, layout) for safetensors: masks and survivors for the tensors in `pruned`."""
    tensors, layout = {}, {}
    for name, w in state.items():
        if name not in pruned:
            tensors[name] = w.contiguous()
            continue
        mask = pruned[name]
        if mask.shape != w.shape:
            raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}, the tensor {tuple(w.shape)}")
        keep = ~mask.reshape(-1)
        tensors[name + MASK] = pack_bits(keep)
        tensors[name + VALUES] = w.contiguous().reshape(-1)[keep].clone()
        layout[name] = {"shape": list(w.shape), "dtype": str(w.dtype).removeprefix("torch.")}
    return tensors, layout


def unpack(tensors: dict, layout: dict) -> dict:
    """The dense state dict of pack()'s output."""
    state = {}
    for name, info in layout.items():
        shape, dtype = tuple(info["shape"]), getattr(torch, info["dtype"])
        n = 1
        for d in shape:
            n *= d
        keep = unpack_bits(tensors[name + MASK], n)
        values = tensors[name + VALUES]
        if int(keep.sum()) != values.numel():
            raise ValueError(f"{name}: the mask keeps {int(keep.sum())} weights but {values.numel()} values are stored; "
                             "the file is damaged, export it again")
        dense = torch.zeros(n, dtype=dtype)
        dense[keep] = values.to(dtype)
        state[name] = dense.view(shape)
    for name, t in tensors.items():
        if not (name.endswith(MASK) or name.endswith(VALUES)) or name.rsplit(":", 1)[0] not in layout:
            state[name] = t
    return state


def save(path: Path | str, state: dict, pruned: dict) -> None:
    from safetensors.torch import save_file

    tensors, layout = pack(state, pruned)
    save_file(tensors, str(path), metadata={"format": "pt", "knlp": FORMAT, "layout": json.dumps(layout)})


def load(path: Path | str) -> dict:
    """The dense state dict stored in a compact file (see the module docstring)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("knlp") != FORMAT:
        raise ValueError(f"{path}: not a knlp compact file ({FORMAT}); export the run again with 'make export'")
    return unpack(load_file(str(path)), json.loads(meta["layout"]))
