"""The functional checks of `make doctor`, one function per check and device.

Each check returns a short detail line when it passes and raises CheckFailed (or any
exception: its first line becomes the reason) when it does not; Skipped says why a
check does not apply. They train real models of this project (LeNet-5, a tiny GPT-2)
through lib/optimizers for a handful of steps on fixed random batches, at the
precision the engine would use on that device (lib/device.resolve_amp).
"""
from __future__ import annotations

import contextlib
import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from lib.lifecycle import checkpoint
from lib import optimizers
from lib.training.device import autocast, optimizer_step, resolve_amp

STEPS = 5
# The tiny GPT-2 preset's default shape (gpt2/Kconfig GPT2_TINY_*) with the byte tokenizer.
TINY_GPT2 = dict(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=64)
# Compiled and eager losses differ by kernel rounding: float32 to ~1e-6, bfloat16 autocast
# (8 mantissa bits) to ~1e-2 of the loss.
LOSS_RTOL = {None: 1e-3, "bf16": 5e-2, "fp16": 2e-2}
# A cold torch.compile of one model takes about a minute on a 2-core CPU: the CPU
# compiles the smallest model only, so the whole run stays within two minutes.
CPU_COMPILE_MODELS = ("lenet5",)


class CheckFailed(Exception):
    """A check found the path broken; the message is the one-line reason."""


class Skipped(Exception):
    """The check does not apply here; the message says why."""


@dataclass(frozen=True)
class Check:
    name: str
    device: str
    run: Callable[[], str]


# ------------------------------------------------------------------ models and batches
def lenet5(seed: int = 0):
    from lenet5.model import LeNet5

    torch.manual_seed(seed)
    return LeNet5()


def gpt2_tiny(seed: int = 0):
    from gpt2.model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(**TINY_GPT2))


def lenet5_batch(device, step: int = 0, n: int = 16):
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(n, 1, 32, 32, generator=gen).to(device), torch.randint(0, 10, (n,), generator=gen).to(device)


def gpt2_batch(device, step: int = 0, n: int = 4):
    gen = torch.Generator().manual_seed(2000 + step)
    tokens = torch.randint(0, TINY_GPT2["vocab_size"], (n, TINY_GPT2["block_size"] + 1), generator=gen)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)


def lenet5_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x).float(), y)


def gpt2_loss(model, batch):
    x, y = batch
    return model(x, y)


MODELS = {"lenet5": (lenet5, lenet5_batch, lenet5_loss), "gpt2-tiny": (gpt2_tiny, gpt2_batch, gpt2_loss)}


def adamw(model, **kw):
    return optimizers.create("adamw", model, lr=1e-3, weight_decay=0.1, **kw)


def bitter7(model, *, warmup_end=1, ramp_end=2, **kw):
    """AdamWPrune with bitter7 state pruning to 50%: the mask update after step ramp_end."""
    return optimizers.create("adamwprune", model, lr=1e-3, weight_decay=0.1, pruning="state", variant="bitter7",
                             target_sparsity=0.5, warmup_end=warmup_end, ramp_end=ramp_end, frequency=1, **kw)


class Stepper:
    """A few optimizer steps as the engine takes them: autocast forward, (scaled) backward."""

    def __init__(self, model, optimizer, loss_fn, batch_fn, device, amp):
        self.model, self.optimizer, self.loss_fn, self.batch_fn = model, optimizer, loss_fn, batch_fn
        self.device, self.amp = device, amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def step(self, index: int = 0) -> float:
        with autocast(self.amp, self.device):
            loss = self.loss_fn(self.model, self.batch_fn(self.device, index))
        (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()
        optimizer_step(self.optimizer, self.scaler)
        value = float(loss.detach())
        if not torch.isfinite(torch.tensor(value)):
            raise CheckFailed(f"training loss is {value} at step {index + 1}")
        return value


def finite_weights(model) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise CheckFailed(f"weight {name} holds NaN or inf after the steps")


def precision(amp: str | None) -> str:
    return f"{amp} autocast" if amp else "float32"


# ------------------------------------------------------------------ the checks
def train_steps(model_name: str, device, amp, *, compiled: bool = False) -> str:
    """A few steps on one fixed batch: the loss must be finite and fall. Compiled, the
    first loss must also match the eager model's on the same weights."""
    build, batch_fn, loss_fn = MODELS[model_name]
    model = build().to(device)
    with torch.no_grad(), autocast(amp, device):
        eager = float(loss_fn(model, batch_fn(device)))
    # Only the training graph is compiled (one compilation): its first loss is taken at
    # the same weights as the eager one above.
    trainer = Stepper(torch.compile(model) if compiled else model, adamw(model), loss_fn, batch_fn, device, amp)
    losses = [trainer.step(0) for _ in range(STEPS)]
    if compiled and abs(losses[0] - eager) > LOSS_RTOL[amp] * max(abs(eager), 1.0):
        raise CheckFailed(f"compiled loss {losses[0]:.6g} differs from eager {eager:.6g} on the same weights")
    finite_weights(model)
    if not losses[-1] < losses[0]:
        raise CheckFailed(f"loss did not fall on a fixed batch: {losses[0]:.4f} -> {losses[-1]:.4f} in {STEPS} steps")
    return f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {STEPS} steps, {precision(amp)}"


def fused_adamw(device) -> str:
    """torch's fused AdamW kernel on this device, against the foreach one (same math), float32."""
    with deterministic(device):
        return _fused_vs_foreach(device)


def _fused_vs_foreach(device) -> str:
    a = lenet5().to(device)
    b = copy.deepcopy(a)
    try:
        fused = adamw(a, fused=True)
    except RuntimeError as err:
        raise CheckFailed(f"no fused AdamW on {device.type}: {str(err).strip().splitlines()[0]}") from None
    if not fused.defaults.get("fused"):
        raise CheckFailed("optimizers.create(fused=True) did not build torch's fused kernel")
    foreach = adamw(b, fused=False)
    for model, opt in ((a, fused), (b, foreach)):
        trainer = Stepper(model, opt, lenet5_loss, lenet5_batch, device, None)
        for i in range(3):
            trainer.step(i)
    with torch.no_grad():
        worst = max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    if worst > 1e-5:
        raise CheckFailed(f"fused and foreach AdamW disagree by {worst:.3g} after 3 steps")
    return f"3 steps equal to foreach AdamW within {worst:.1e}"


def bitter7_mask_update(device, amp) -> str:
    """AdamWPrune bitter7 through one mask update (after step 2, to 50%) on the tiny GPT-2
    with torch's fused/foreach kernel as the engine picks it: the pruned weights are exactly
    zero, stay zero two steps later, and nothing is NaN."""
    model = gpt2_tiny().to(device)
    opt = bitter7(model)
    trainer = Stepper(model, opt, gpt2_loss, gpt2_batch, device, amp)
    for i in range(2):
        trainer.step(i)
    sparsity = float(opt.sparsity())
    if abs(sparsity - 0.5) > 0.01:
        raise CheckFailed(f"sparsity is {100 * sparsity:.1f}% after the mask update, not 50%")
    zeros = [(p == 0).clone() for _, p in opt.prunable]
    count = sum(int(z.sum()) for z in zeros)
    total = opt.prunable_count()
    if count < int(sparsity * total):
        raise CheckFailed(f"only {count} of {total} prunable weights are zero at sparsity {100 * sparsity:.1f}%")
    for i in range(2, 4):
        trainer.step(i)
    finite_weights(model)
    for (name, p), z in zip(opt.prunable, zeros):
        if p[z].any():
            raise CheckFailed(f"pruned weights of {name} became non-zero after further steps")
    return f"{count:,} of {total:,} prunable weights exactly zero, still zero 2 steps later, {precision(amp)}"


@contextlib.contextmanager
def deterministic(device):
    """cuDNN's deterministic algorithms, so two identical computations agree bit for bit."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    before = cudnn.deterministic, cudnn.benchmark
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = before


def checkpoint_resume(device, amp) -> str:
    """LeNet-5 + AdamWPrune bitter7 with a ramp across the save: 3 steps, save through
    lib/checkpoint, 3 more; a fresh model and optimizer loaded from the file and given the
    same 3 steps must end with bit-identical weights and losses."""
    with deterministic(device), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.pt"
        model = lenet5().to(device)
        opt = bitter7(model, warmup_end=1, ramp_end=5)
        trainer = Stepper(model, opt, lenet5_loss, lenet5_batch, device, amp)
        for i in range(3):
            trainer.step(i)
        checkpoint.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {}})
        straight = [trainer.step(i) for i in range(3, 6)]

        payload = checkpoint.load(path, map_location=device, required=("model", "optimizer"))
        fresh = lenet5(seed=1).to(device)  # other initial weights: only the file can make them equal
        fresh.load_state_dict(payload["model"])
        opt2 = bitter7(fresh, warmup_end=1, ramp_end=5)
        opt2.load_state_dict(payload["optimizer"])
        trainer2 = Stepper(fresh, opt2, lenet5_loss, lenet5_batch, device, amp)
        if payload["scaler"]:
            trainer2.scaler.load_state_dict(payload["scaler"])
        resumed = [trainer2.step(i) for i in range(3, 6)]
    if resumed != straight:
        raise CheckFailed(f"resumed losses {resumed} differ from the uninterrupted {straight}")
    for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
        if not torch.equal(p, q):
            raise CheckFailed(f"weight {name} differs after resuming (max {float((p - q).detach().abs().max()):.3g})")
    if opt2.sparsity() != opt.sparsity():
        raise CheckFailed(f"sparsity {opt2.sparsity():.4f} after resuming, {opt.sparsity():.4f} without")
    return f"3 steps after resume bit-identical (sparsity {100 * float(opt.sparsity()):.1f}%), {precision(amp)}"


def compile_skipped(model_name: str) -> str:
    raise Skipped(f"on the CPU torch.compile is checked on {', '.join(CPU_COMPILE_MODELS)} only "
                  "(a cold compile takes about a minute per model there)")


# ------------------------------------------------------------------ the plan
def device_checks(device: torch.device, amp_requested: str | None) -> list[Check]:
    """Every single-device check for `device`, at the precision the engine would use there."""
    amp, _ = resolve_amp(amp_requested, device)
    label = str(device)
    checks = []
    for model_name in MODELS:
        checks.append(Check(f"{model_name} steps", label,
                            lambda m=model_name: train_steps(m, device, amp)))
        if device.type == "cpu" and model_name not in CPU_COMPILE_MODELS:
            checks.append(Check(f"{model_name} torch.compile", label, lambda m=model_name: compile_skipped(m)))
        else:
            checks.append(Check(f"{model_name} torch.compile", label,
                                lambda m=model_name: train_steps(m, device, amp, compiled=True)))
    checks.append(Check("fused AdamW", label, lambda: fused_adamw(device)))
    checks.append(Check("AdamWPrune bitter7 mask update", label, lambda: bitter7_mask_update(device, amp)))
    checks.append(Check("checkpoint save + resume", label, lambda: checkpoint_resume(device, amp)))
    return checks
