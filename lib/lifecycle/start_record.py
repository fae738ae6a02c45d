"""start.json: digests of what a run starts from, so a report can check that runs pair.

The test matrix compares configurations seed by seed. That is only a paired comparison if
seed k of every configuration starts from the same initial weights and draws the same
data; the engine writes these digests when a run starts fresh, and test_matrix/pairing.py
compares them across configurations from the run directories alone.

  weights     blake2b of the model's state_dict (names, dtypes, shapes, bytes) before step 1
  data_order  blake2b of the first epoch's sample order (epoch-based models) and of the
              first micro-batch of step 1 as the task builds it
"""
from __future__ import annotations

import hashlib

import torch

FILE = "start.json"


def _update(h, value) -> None:
    """Feed tensors (in a batch of any nesting) into the hash, on the CPU."""
    if torch.is_tensor(value):
        t = value.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value):
            h.update(str(key).encode())
            _update(h, value[key])
    elif isinstance(value, (list, tuple)):
        for item in value:
            _update(h, item)
    else:
        h.update(repr(value).encode())


def digest(value) -> str:
    h = hashlib.blake2b(digest_size=16)
    _update(h, value)
    return h.hexdigest()


def record(model: torch.nn.Module, permutation, first_batch) -> dict:
    """What start.json holds: the weights' digest and the data order's digest."""
    return {"weights": digest(model.state_dict()), "data_order": digest([permutation, first_batch])}
