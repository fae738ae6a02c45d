"""Device, mixed precision and torch.compile choices, with one notice per fallback.

GPU-only features (CUDA autocast, fp16 loss scaling, torch.compile) fall back on the CPU
and say so once, so a CPU run stays float32, eager and exactly repeatable.
"""
from __future__ import annotations

import resource
import sys

import torch

from lib import gpus as lib_gpus
from lib.training.task import BadInput


def resolve_device(requested: str, local_rank: int = 0) -> tuple[torch.device, list[str]]:
    """torch.device for "auto" | "cpu" | "cuda"; BadInput when a GPU is demanded and absent."""
    if requested not in ("auto", "cpu", "cuda"):
        raise BadInput(f"unknown device {requested!r}; choose auto, cpu or cuda in 'make menuconfig'")
    has_gpu = torch.cuda.is_available()
    if requested == "cuda" and not has_gpu:
        raise BadInput("CONFIG_DEVICE_CUDA is set but torch sees no GPU; choose Device > Automatic or CPU, "
                       "or install a CUDA/ROCm build of torch")
    if requested == "cpu" or not has_gpu:
        return torch.device("cpu"), []
    visible = lib_gpus.count()
    if local_rank >= visible:
        raise BadInput(f"process {local_rank} has no GPU ({visible} visible); "
                       "lower CONFIG_DDP_NPROC to at most the number of GPUs")
    return torch.device("cuda", local_rank), []


def resolve_amp(requested: str | None, device: torch.device) -> tuple[str | None, list[str]]:
    """The autocast dtype name actually used ("bf16", "fp16" or None) and notices."""
    if requested not in (None, "bf16", "fp16"):
        raise BadInput(f"unknown mixed-precision type {requested!r}; choose bf16 or fp16")
    if requested is None:
        return None, []
    if device.type != "cuda":
        return None, [f"mixed precision ({requested}) is off on the CPU: the run stays float32 and repeatable"]
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16", ["this GPU has no bfloat16; using float16 with loss scaling instead"]
    return requested, []


def resolve_compile(requested: bool, device: torch.device) -> tuple[bool, list[str]]:
    if not requested:
        return False, []
    if device.type != "cuda":
        return False, ["torch.compile is skipped on the CPU: its warm-up costs more than it saves on short runs"]
    return True, []


def autocast(amp: str | None, device: torch.device):
    """Context manager for the forward pass (a disabled autocast when amp is None)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.float32)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=amp is not None)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak device memory: CUDA's allocator peak, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def optimizer_step(optimizer, scaler) -> None:
    """One optimizer step through the fp16 GradScaler when it is enabled (it unscales and
    skips steps with inf gradients), then clear the gradients."""
    if scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
