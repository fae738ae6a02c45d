"""GPU detection and CONFIG_HYPER_PARAM_AUTO: per-GPU batch and grad accumulation.

The effective batch (batch * grad_acc * world_size) is held at the model's target
whatever the hardware, so results from a laptop, one A10G or eight B200s stay
comparable; only the split between batch and accumulation changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from lib.configuration import model_registry

# Per-GPU batch for GPT-2 124M, seq 1024, bf16, torch.compile: the seed's measured rows.
# (name token matched in the device name, nominal memory in GiB, batch)
ROWS = (("B200", 192.0, 128), ("W7900", 48.0, 32), ("A10G", 24.0, 8))

# On CPU memory is not the limit; a small batch keeps each step short enough to
# watch progress, so the row ignores torch.compile.
CPU_BATCH = 8

# Each model's (scale of the GPT-2 per-GPU batch, default effective batch, eager factor) is
# its registry entry's auto_batch (<model folder>/registry.py). Eager factor: without
# torch.compile every elementwise op saves its own output for backward, while Inductor fuses
# them and recomputes; where that roughly doubles activation memory the batch is halved.


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    backend: str = "cuda"  # "cuda" or "rocm" (HIP builds of torch also use torch.cuda)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"GPU name must be a non-empty string, got {self.name!r}; pass the device name")
        if not isinstance(self.memory_gib, (int, float)) or isinstance(self.memory_gib, bool) \
                or not self.memory_gib > 0:
            raise ValueError(f"GPU {self.name!r} memory_gib must be a positive number, got {self.memory_gib!r}")


@dataclass(frozen=True)
class AutoHyperparams:
    batch_size: int
    grad_acc: int
    world_size: int
    effective_batch: int
    reason: str
    found: str = ""

    def line(self) -> str:
        """The one line resolve() prints: what was found, what was chosen, why."""
        return (f"hwdetect: found {self.found}; chose batch {self.batch_size} x grad_acc "
                f"{self.grad_acc} x {self.world_size} process(es) = effective "
                f"{self.effective_batch}; because {self.reason}")


def detect_gpus() -> list[GPU]:
    """Visible GPUs through torch.cuda (which also covers ROCm/HIP builds); [] on CPU."""
    import torch

    from lib import gpus as lib_gpus

    backend = "rocm" if getattr(torch.version, "hip", None) else "cuda"
    gpus = []
    for i in range(lib_gpus.count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(GPU(props.name, props.total_memory / 2**30, backend))
    return gpus


def gpu_row(gpu: GPU) -> tuple[int, str]:
    """GPT-2 compiled per-GPU batch for one GPU and a note on which row gave it."""
    upper = gpu.name.upper()
    for token, _, batch in ROWS:
        if token in upper:
            return batch, f"{token} row {batch}"
    # Unknown GPU: take memory per sample from the largest known row that fits in its
    # memory (small cards pay proportionally more fixed overhead, so the row below is
    # the conservative reference), then round down to a power of two.
    by_mem = sorted(ROWS, key=lambda r: r[1])
    ref = by_mem[0]
    for row in by_mem:
        if row[1] <= gpu.memory_gib:
            ref = row
    scaled = ref[2] * gpu.memory_gib / ref[1]
    batch = 1 if scaled < 1 else 1 << (int(scaled).bit_length() - 1)
    return batch, (f"generic memory row {batch} (no seed row for {gpu.name}: {gpu.memory_gib:.1f} GiB scaled "
                   f"from {ref[0]} {ref[2]} per {ref[1]:g} GiB, power of two)")


def largest_divisor_at_most(n: int, cap: int) -> int:
    for b in range(min(n, cap), 0, -1):
        if n % b == 0:
            return b
    return 1


def _check_int(value, what: str, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}; {fix}")


def auto_hyperparams(model: str, gpus: list[GPU], *, compile: bool = True,
                     target: int | None = None, world_size: int | None = None) -> AutoHyperparams:
    """Per-process batch and grad_acc so batch * grad_acc * world_size hits the target.

    world_size None means one process per GPU (1 on CPU). A target not divisible by
    world_size cannot be met exactly; the per-process share is target // world_size.
    """
    known = model_registry.names()
    if model not in known:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(sorted(known))}")
    if not isinstance(gpus, (list, tuple)) or not all(isinstance(g, GPU) for g in gpus):
        raise ValueError(f"gpus must be a list of GPU, got {gpus!r}; build them with GPU(name, memory_gib)")
    scale, default_target, eager = model_registry.get(model).auto_batch
    if target is None or (target == 0 and not isinstance(target, bool)):
        target = default_target
    _check_int(target, "target effective batch", "use 0 or None for the model's default")
    if world_size is None:
        world_size = max(len(gpus), 1)
    _check_int(world_size, "world_size", "pass the number of DDP processes")
    if target < world_size:
        raise ValueError(f"target {target} is smaller than world_size {world_size}; "
                         f"raise the target to at least {world_size}")

    if gpus:
        # Mixed cards: the smallest per-GPU batch is the one every process can hold.
        rows = [gpu_row(g) for g in gpus]
        row_batch, why = min(rows, key=lambda r: r[0])
        if len({g.name for g in gpus}) > 1:
            why += " (smallest of mixed GPUs)"
        factor = scale * (1.0 if compile else eager)
        notes = [why, f"{model} scale {scale:g}"]
        if factor != scale:
            notes.append(f"x{eager:g} without torch.compile")
    else:
        row_batch, factor = CPU_BATCH, scale
        notes = [f"CPU row {CPU_BATCH}", f"{model} scale {scale:g}"]
    want = max(int(row_batch * factor), 1)

    share = target // world_size
    if want > share:
        notes.append(f"capped at {share} per process")
        want = share
    batch = largest_divisor_at_most(share, want)
    if batch != want:
        notes.append(f"{want} does not divide {share}, largest divisor below is {batch}")
    grad_acc = share // batch
    effective = batch * grad_acc * world_size
    notes.append(f"target {target}")
    if effective != target:
        notes.append(f"not divisible by {world_size} processes, effective {effective}")

    if gpus:
        names = sorted({g.name for g in gpus})
        found = ", ".join(f"{sum(g.name == n for g in gpus)} x {n} "
                          f"({min(g.memory_gib for g in gpus if g.name == n):.0f} GiB)" for n in names)
        found += f" [{gpus[0].backend}]"
    else:
        found = "no GPU (CPU)"
    return AutoHyperparams(batch, grad_acc, world_size, effective, "; ".join(notes), found)


def resolve(model: str, *, compile: bool, target: int | None = None, gpus: list[GPU] | None = None,
            world_size: int | None = None, printer=print) -> AutoHyperparams:
    """Detect (unless gpus is given), choose, print one line, and return the choice."""
    if gpus is None:
        gpus = detect_gpus()
    result = auto_hyperparams(model, gpus, compile=compile, target=target, world_size=world_size)
    printer(result.line())
    return result
