"""Per-step timing of GPT-2 training on one device, for `make bench-gpt2` on a GPU.

Each optimizer step is timed on its own (the device synchronised around it), split into
forward+backward and optimizer.step(); steps after which the pruning schedule updates the
masks (lib.pruning.is_update_step) are kept apart from ordinary ramp steps, so the mask
update's cost can be amortised over any update interval afterwards. Peak memory is the
CUDA allocator's peak over the timed steps (model, optimizer state, pruning buffers,
activations), above what was allocated before the case began.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from gpt2.model import GPT, GPTConfig
from lib.training.device import autocast, optimizer_step, peak_memory_bytes, reset_peak_memory
from lib.pruning import is_update_step


@dataclass(frozen=True)
class Ramp:
    """The pruning schedule a pruned case runs under: every timed step lies inside the ramp."""
    warmup_end: int
    ramp_end: int
    frequency: int

    def updates_after(self, step: int) -> bool:
        return is_update_step(step, warmup_end=self.warmup_end, ramp_end=self.ramp_end, frequency=self.frequency)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def time_case(make_optimizer, cfg: GPTConfig, *, device: torch.device, batch: int, amp: str | None,
              compile: bool, warmup: int, iters: int, ramp: Ramp | None, seed: int = 1) -> dict:
    """Build a fresh model and optimizer, take `warmup` untimed then `iters` timed steps on
    one fixed batch; medians of the ordinary and of the mask-update steps, in seconds."""
    # What earlier cases left allocated (compiled-code caches, the allocator's own
    # blocks) is not this case's: its peak is measured above this baseline.
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    torch.manual_seed(seed)
    model = GPT(cfg).to(device)
    optimizer = make_optimizer(model)
    run = torch.compile(model) if compile else model
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, min(cfg.vocab_size, 50257), (batch, cfg.block_size + 1), generator=gen)
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    plain, update = {"step": [], "opt": []}, {"step": [], "opt": []}
    loss = None
    for index in range(warmup + iters):
        if index == warmup:
            reset_peak_memory(device)  # compilation stays out; the timed steps include mask updates
        _sync(device)
        began = time.perf_counter()
        with autocast(amp, device):
            loss = run(x, y)
        (scaler.scale(loss) if scaler.is_enabled() else loss).backward()
        _sync(device)
        middle = time.perf_counter()
        optimizer_step(optimizer, scaler)
        _sync(device)
        ended = time.perf_counter()
        if index >= warmup:
            into = update if ramp is not None and ramp.updates_after(index + 1) else plain
            into["step"].append(ended - began)
            into["opt"].append(ended - middle)
    final_loss = float(loss.detach())
    if not torch.isfinite(torch.tensor(final_loss)):
        raise FloatingPointError(f"training loss is {final_loss} after {warmup + iters} steps")
    result = {"params": model.num_parameters(), "tokens_per_step": batch * cfg.block_size,
              "step_s": _median(plain["step"]), "optimizer_s": _median(plain["opt"]),
              "update_step_s": _median(update["step"]), "update_optimizer_s": _median(update["opt"]),
              "steps_timed": len(plain["step"]), "updates_timed": len(update["step"]),
              "sparsity": float(optimizer.sparsity()), "final_loss": final_loss,
              "peak_memory_bytes": peak_memory_bytes(device) - baseline if device.type == "cuda" else None}
    del run, model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def amortised_step_s(result: dict, every: int) -> float:
    """Seconds per step with one mask update every `every` steps: the ordinary step plus
    the update step's extra time spread over the interval."""
    if result["update_step_s"] is None:
        return result["step_s"]
    return result["step_s"] + (result["update_step_s"] - result["step_s"]) / every
