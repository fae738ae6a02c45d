"""The GPUs this machine offers: the one place that counts them.

count() is what this process's torch can use (CUDA or ROCm/HIP builds; torch itself honours
CUDA_VISIBLE_DEVICES). ids() names them for child processes: a sweep hands each run one id
in the run's CUDA_VISIBLE_DEVICES, so when the sweep was itself given a subset
(CUDA_VISIBLE_DEVICES=2,3) the ids are that subset's, not 0..n-1.
"""
from __future__ import annotations

import os


def count() -> int:
    """GPUs torch can use in this process; 0 on a CPU-only build or machine."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ids() -> list[str]:
    """The ids to hand out to child processes, one per GPU; [] when there is none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # "-1" or "" hides every GPU
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        return [str(i) for i in range(count())]
    except Exception:  # no torch build with CUDA: the CPU it is
        return []
