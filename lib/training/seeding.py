"""Seeds and random-number states: what makes a CPU run repeatable and resumable.

Data order and augmentation never use a global RNG: each epoch's permutation and each
micro-batch's generator are derived from (seed, epoch) and (seed, step, micro-batch),
so a resumed run draws exactly what the uninterrupted run drew, with no loader state
to save. The global RNGs (torch CPU/CUDA, numpy, random) still matter for anything a
model draws itself (dropout); their states go into last.pt as tensors, because
checkpoints load with weights_only=True.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from lib import gpus as lib_gpus


def derive(seed: int, *parts) -> int:
    """A 63-bit seed from `seed` and labels; unrelated streams for neighbouring inputs."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(derive(seed, "numpy") % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the n training samples in `epoch` (0-based), on the CPU."""
    gen = torch.Generator().manual_seed(derive(seed, "epoch", epoch))
    return torch.randperm(n, generator=gen)


def batch_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """CPU generator for micro-batch `micro` (counted across all ranks) of optimizer step `step`."""
    return torch.Generator().manual_seed(derive(seed, "batch", step, micro))


def capture_rng() -> dict:
    """Global RNG states as tensors (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_extra": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_cached": torch.tensor([cached], dtype=torch.float64),
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_version": torch.tensor([version], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack([s for s in torch.cuda.get_rng_state_all()])
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_extra"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_cached"][0])))
    gauss = float(state["python_gauss"][0])
    random.setstate((int(state["python_version"][0]), tuple(int(v) for v in state["python"]),
                     None if gauss != gauss else gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == lib_gpus.count():
            torch.cuda.set_rng_state_all(list(cuda))
