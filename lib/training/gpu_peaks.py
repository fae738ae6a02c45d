"""Peak dense bfloat16 tensor throughput by GPU name, and model FLOPs utilisation.

MFU = 6 * N * tokens/s / peak: a training step costs ~6 FLOPs per parameter per token
(2 forward, 4 backward). The peaks are the vendors' datasheet figures for dense matrix
math (half of the "with sparsity" figure NVIDIA prints first). A GPU that is not in the
table has no peak here: its MFU is reported as unknown rather than guessed.
"""
from __future__ import annotations

import re

# (pattern on the upper-cased device name, TFLOPS). First match wins: variants that share
# a family name (H100 PCIe / NVL, H200 NVL, GH200) come before the family.
BF16_DENSE_TFLOPS = (
    (r"\bGH200\b", 989.4),
    (r"\bH200\b.*\bNVL\b", 835.5),
    (r"\bH200\b", 989.4),
    (r"\bH100\b.*\bPCIE\b", 756.5),
    (r"\bH100\b.*\bNVL\b", 835.5),
    (r"\bH100\b", 989.4),          # SXM5 ("NVIDIA H100 80GB HBM3")
    (r"\bB200\b", 2250.0),
    (r"\bA100\b", 312.0),
    (r"\bA10\b", 125.0),           # the A10, not the A10G (AWS publishes no tensor peak for it)
    (r"\bMI300X\b", 1307.4),
)


def bf16_peak_tflops(name: str) -> float | None:
    """Dense bf16 peak of the GPU called `name` (as torch reports it), or None if unknown."""
    upper = name.upper()
    for pattern, tflops in BF16_DENSE_TFLOPS:
        if re.search(pattern, upper):
            return tflops
    return None


def model_flops_per_s(params: int, tokens_per_s: float) -> float:
    return 6.0 * params * tokens_per_s


def mfu(params: int, tokens_per_s: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation as a fraction (0.4 = 40%); None when the peak is unknown."""
    if peak_tflops is None:
        return None
    if not peak_tflops > 0:
        raise ValueError(f"peak TFLOPS must be positive, got {peak_tflops!r}")
    return model_flops_per_s(params, tokens_per_s) / (peak_tflops * 1e12)
