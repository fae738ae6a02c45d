"""GPT-2 training throughput here (small on the CPU, 124M on a GPU), per optimizer and pruning method.

    .venv/bin/python -m scripts.bench_gpt2                 # the reference shape, every case
    .venv/bin/python -m scripts.bench_gpt2 --cases plain,adamw --rounds 3

Reference shape (the issue's): 4 layers, 4 heads, width 256, vocabulary 50304, block 256,
batch 8, fp32, CPU. One optimizer step = forward, backward, optimizer.step() (gradient
clip 1.0 inside it), as the engine runs it. Cases:

  plain           the published trainer's loss path: full logits, F.cross_entropy; AdamW
  adamw           this project's fused chunked head + loss; AdamW
  adamwspam       fused loss; AdamWSPAM (dense)
  bitter7         fused loss; AdamWPrune bitter7 (AdamW base) at 50%, masks in force
  bitter7-spam    fused loss; AdamWPrune bitter7 (AdamWSPAM base, the seed's GPT-2 setting)
  spam-magnitude  fused loss; AdamWSPAM + magnitude pruning at 50%, masks in force

Pruned cases reach their 50% masks in the warm-up steps; the timed steps then show the
per-step cost of pruning once active. A mask update is timed on its own and amortised
over --frequency steps (the seed's GPT-2 runs update every 100).

Columns: tokens/s of the median and the best round; the whole step against AdamW's;
optimizer.step() alone (ms); one mask update (ms); and "added/step": what the case's
optimizer and pruning add over AdamW's, mask updates amortised, as a share of AdamW's
step. The last is the pruning-cost figure: it does not carry the forward/backward
timing noise that whole-step comparisons do.

Cases run interleaved, round after round, so a burst of load from other processes hits
all of them alike; the table reports the median round (and the best). The load average
is printed: numbers taken while other work runs on the cores are not comparable.

On a GPU (the default where torch sees one; --device cuda insists) the bench runs at the
real shape instead: GPT-2 124M, block 1024, bf16 autocast, with and without
torch.compile, batch as HYPER_PARAM_AUTO picks it, cases adamw, bitter7 and
spam-magnitude. Every step is timed on its own (--per-step does the same on the CPU);
the pruned cases run inside their sparsity ramp with a mask update every --update-every
steps, and the update steps' extra time is amortised over --frequency. Columns: tokens/s
and ms/step (amortised), against AdamW's step, optimizer.step() of an ordinary step, of a
mask-update step, the mask-update step over AdamW's fused step, peak memory, and MFU
(6 N tokens/s over the GPU's bf16 peak from lib/training/gpu_peaks.py, "unknown" when the GPU is
not in its table).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


import torch
import torch.nn.functional as F

from gpt2.model import GPT, GPTConfig
from gpt2.step_timing import Ramp, amortised_step_s, time_case
from lib.training import gpu_peaks
from lib import hwdetect, optimizers
from lib.training.device import resolve_amp

CASES = ("plain", "adamw", "adamwspam", "bitter7", "bitter7-spam", "spam-magnitude")
DEVICE_CASES = ("adamw", "bitter7", "spam-magnitude")
CPU_SHAPE = dict(layers=4, heads=4, width=256, vocab=50304, block=256, batch=8, iters=5)
REAL_SHAPE = dict(layers=12, heads=12, width=768, vocab=50304, block=1024, iters=16)  # GPT-2 124M
PUBLISHED_ADAMW_TOKENS_S = 1098  # the published trainer, same shape, this kind of machine
SPAM = dict(spam_theta=50.0, spam_interval=1000, spam_warmup=150)
PRUNE = dict(target_sparsity=0.5, warmup_end=1, ramp_end=2, frequency=1)  # 50% from step 2 on


def optimizer_for(case: str, model: GPT, prune: dict = PRUNE):
    common = dict(lr=6e-4, weight_decay=0.1, grad_clip=1.0)
    if case in ("plain", "adamw"):
        return optimizers.create("adamw", model, **common)
    if case == "adamwspam":
        return optimizers.create("adamwspam", model, **common, **SPAM)
    if case == "bitter7":
        return optimizers.create("adamwprune", model, **common, pruning="state", variant="bitter7", **prune)
    if case == "bitter7-spam":
        return optimizers.create("adamwprune", model, **common, pruning="state", variant="bitter7",
                                 base="adamwspam", **SPAM, **prune)
    if case == "spam-magnitude":
        return optimizers.create("adamwspam", model, **common, pruning="magnitude", **SPAM, **prune)
    raise SystemExit(f"bench_gpt2: unknown case {case!r}; choose from {', '.join(CASES)}")


class Case:
    def __init__(self, name: str, cfg: GPTConfig, batch: tuple, seed: int):
        torch.manual_seed(seed)
        self.name = name
        self.model = GPT(cfg)
        self.optimizer = optimizer_for(name, self.model)
        self.x, self.y = batch
        self.rounds: list[float] = []
        self.opt_rounds: list[float] = []

    def backward(self) -> None:
        if self.name == "plain":
            logits = self.model(self.x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), self.y.view(-1))
        else:
            loss = self.model(self.x, self.y)
        loss.backward()

    def step(self) -> None:
        self.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_s(self, repeats: int, clock) -> float:
        """Seconds of optimizer.step() alone (same gradients each time): the part of a step
        where the cases differ, measured apart from the forward/backward noise."""
        self.backward()
        began = clock()
        for _ in range(repeats):
            self.optimizer.step()
        spent = (clock() - began) / repeats
        self.optimizer.zero_grad(set_to_none=True)
        return spent

    def time_steps(self, iters: int, clock) -> float:
        began = clock()
        for _ in range(iters):
            self.step()
        return (clock() - began) / iters

    def mask_update_s(self, clock, repeats: int = 3) -> float | None:
        """Seconds of one mask update that prunes more weights, as a scheduled update does
        (scores of the alive weights, exact threshold, masks and optimizer state updated)."""
        pruner = getattr(self.optimizer, "pruner", None)
        if pruner is None:
            return None
        times, target = [], pruner.target
        for k in range(repeats):
            pruner.target = target + 0.002 * (k + 1)  # masks only lose ones: each update cuts a little more
            began = clock()
            pruner.update(PRUNE["ramp_end"])
            times.append(clock() - began)
        pruner.target = target
        return min(times)


def auto_batch(device: torch.device, compile: bool) -> int:
    """HYPER_PARAM_AUTO's per-GPU batch for GPT-2 on this GPU (what a real run would use)."""
    gpu = hwdetect.detect_gpus()[device.index or 0]
    return hwdetect.auto_hyperparams("gpt2", [gpu], compile=compile).batch_size


def per_step_bench(args, names: list[str], device: torch.device, cfg: GPTConfig) -> int:
    """Each case at each compile setting, every step timed alone; table and --json."""
    amp, notes = resolve_amp("bf16", device)
    for note in notes:
        print(f"notice: {note}")
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = gpu_peaks.bf16_peak_tflops(gpu_name) if gpu_name else None
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.compile]
    warmup = max(args.warmup, args.update_every + 2)  # compilation and the first mask update stay untimed
    ramp = Ramp(warmup_end=1, ramp_end=warmup + args.iters + 1, frequency=args.update_every)
    prune = dict(target_sparsity=0.5, warmup_end=ramp.warmup_end, ramp_end=ramp.ramp_end, frequency=ramp.frequency)
    where = f"{gpu_name}, peak bf16 {f'{peak:g} TFLOPS' if peak else 'unknown'}" if gpu_name else "CPU"
    print(f"GPT-2 {args.layers} layers, {args.heads} heads, width {args.width}, vocabulary {args.vocab}, "
          f"block {args.block}, {amp or 'fp32'}, on {where}; {warmup} untimed + {args.iters} timed steps per case, "
          f"pruned cases inside the ramp with a mask update every {args.update_every} steps, amortised over "
          f"{args.frequency}")
    print(f"{'compile':<7} {'case':<15} {'batch':>5} {'tokens/s':>9} {'ms/step':>8} {'vs adamw':>9} {'opt ms':>7} "
          f"{'upd opt ms':>10} {'upd/fused':>9} {'peak GiB':>8} {'MFU':>7}")
    results = []

    def save():  # after every case, so a run cut off by a time limit keeps what it measured
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "device": str(device), "gpu": gpu_name,
                                                   "peak_tflops": peak, "amp": amp, "results": results},
                                                  indent=2) + "\n")

    for compiled in modes:
        batch = args.batch or auto_batch(device, compiled)
        base = None
        for name in names:
            try:
                r = time_case(lambda model, n=name: optimizer_for(n, model, prune), cfg, device=device,
                              batch=batch, amp=amp, compile=compiled, warmup=warmup, iters=args.iters,
                              ramp=ramp if name not in ("adamw", "adamwspam") else None)
            except Exception as err:  # a NaN, out of memory, a compile error: keep the other cases' figures
                text = str(err).strip()
                reason = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
                print(f"bench_gpt2: {name} (compile {'on' if compiled else 'off'}, batch {batch}) failed: {reason}",
                      file=sys.stderr, flush=True)
                results.append({"case": name, "compile": compiled, "batch": batch, "error": reason})
                save()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            step = amortised_step_s(r, args.frequency)
            tokens_per_s = r["tokens_per_step"] / step
            row = {"case": name, "compile": compiled, "batch": batch, **r, "amortised_step_s": step,
                   "tokens_per_s": tokens_per_s, "mfu": gpu_peaks.mfu(r["params"], tokens_per_s, peak),
                   "peak_tflops": peak, "gpu": gpu_name}
            if name == "adamw":
                base = row
            if base is not None:
                row["step_vs_adamw"] = step / base["amortised_step_s"] - 1.0
                if r["update_optimizer_s"] is not None:
                    row["update_step_vs_fused_adamw"] = r["update_optimizer_s"] / base["optimizer_s"]
            results.append(row)
            save()
            print(f"{'on' if compiled else 'off':<7} {name:<15} {batch:>5} {tokens_per_s:>9.0f} {1000 * step:>8.1f} "
                  f"{_pct(row.get('step_vs_adamw')):>9} {1000 * r['optimizer_s']:>7.2f} "
                  f"{_ms(r['update_optimizer_s']):>10} {_times(row.get('update_step_vs_fused_adamw')):>9} "
                  f"{_gib(r['peak_memory_bytes']):>8} {_pct(row['mfu'], signed=False):>7}", flush=True)
    measured = [r for r in results if "error" not in r]
    if measured:
        print(f"N = {measured[0]['params']:,} parameters (tied head once); MFU = 6 N tokens/s / peak")
    save()
    return 0 if len(measured) == len(results) else 1


def _pct(value, signed=True):
    if value is None:
        return "unknown" if not signed else "-"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def _ms(seconds):
    return "-" if seconds is None else f"{1000 * seconds:.2f}"


def _times(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x"


def _gib(value):
    return "-" if value is None else f"{value / 2**30:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the GPU bench at the real shape where torch sees a GPU, else the CPU bench")
    parser.add_argument("--per-step", action="store_true", help="time every step on its own, as on a GPU")
    parser.add_argument("--compile", choices=("both", "on", "off"), default="both",
                        help="per-step bench: with and/or without torch.compile")
    parser.add_argument("--update-every", type=int, default=4,
                        help="per-step bench: steps between mask updates in the timed ramp")
    parser.add_argument("--layers", type=int, help="default 4 (CPU), 12 (GPU)")
    parser.add_argument("--heads", type=int, help="default 4 (CPU), 12 (GPU)")
    parser.add_argument("--width", type=int, help="default 256 (CPU), 768 (GPU)")
    parser.add_argument("--vocab", type=int, help="default 50304")
    parser.add_argument("--block", type=int, help="default 256 (CPU), 1024 (GPU)")
    parser.add_argument("--batch", type=int, help="default 8 (CPU), HYPER_PARAM_AUTO's per-GPU batch (GPU)")
    parser.add_argument("--iters", type=int, help="timed steps per case per round (default 5; 16 per step)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per case (pruned cases reach 50%%)")
    parser.add_argument("--frequency", type=int, default=100, help="steps between mask updates, for amortising")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time (throughput); cpu: this process's CPU time, which other "
                             "processes do not inflate (use with --threads 1 on a busy machine)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        print("bench_gpt2: --device cuda but torch sees no GPU; run it on a GPU machine with a CUDA/ROCm "
              "build of torch, or use --device cpu", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device != "cpu" and cuda else "cpu")
    per_step = args.per_step or device.type == "cuda"
    if per_step and args.cases == parser.get_default("cases"):
        args.cases = ",".join(DEVICE_CASES)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    allowed = DEVICE_CASES + ("adamwspam", "bitter7-spam") if per_step else CASES
    for name in names:
        if name not in allowed:
            print(f"bench_gpt2: unknown case {name!r}; choose from {', '.join(allowed)}", file=sys.stderr)
            return 2
    shape = dict(REAL_SHAPE if device.type == "cuda" else CPU_SHAPE)
    if per_step:
        shape["iters"] = REAL_SHAPE["iters"]
        if device.type == "cuda":
            shape.pop("batch", None)  # per compile mode, from hwdetect
    for key, value in shape.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if per_step and (args.update_every < 1 or args.frequency < 1 or args.iters < 2):
        print("bench_gpt2: --update-every and --frequency must be at least 1 and --iters at least 2", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = GPTConfig(vocab_size=args.vocab, block_size=args.block, n_layer=args.layers, n_head=args.heads,
                        n_embd=args.width)
    except ValueError as err:
        print(f"bench_gpt2: {err}", file=sys.stderr)
        return 2
    if per_step:
        return per_step_bench(args, names, device, cfg)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    gen = torch.Generator().manual_seed(0)
    batch = tuple(torch.randint(0, min(args.vocab, 50257), (args.batch, args.block), generator=gen)
                  for _ in range(2))
    tokens = args.batch * args.block
    load_before = os.getloadavg()
    print(f"GPT-2 {args.layers} layers, {args.heads} heads, width {args.width}, vocabulary {args.vocab}, "
          f"block {args.block}, batch {args.batch}, fp32, {torch.get_num_threads()} threads, {args.clock} clock; "
          f"load average {load_before[0]:.2f}")
    cases = [Case(name, cfg, batch, seed=1) for name in names]
    for case in cases:
        for _ in range(args.warmup):
            case.step()
        sparsity = float(case.optimizer.sparsity())
        if case.optimizer.pruner is not None and abs(sparsity - 0.5) > 0.001:
            print(f"bench_gpt2: {case.name} is at sparsity {sparsity:.3f} after warm-up, not 0.5", file=sys.stderr)
            return 1
    for _ in range(args.rounds):
        for case in cases:
            case.rounds.append(case.time_steps(args.iters, clock))
    for _ in range(args.rounds):
        for case in cases:
            case.opt_rounds.append(case.optimizer_s(args.iters * 4, clock))
    load_after = os.getloadavg()
    base = next((c for c in cases if c.name == "adamw"), None)
    base_median = statistics.median(base.rounds) if base else None
    base_opt = statistics.median(base.opt_rounds) if base else None
    results = []
    print(f"{'case':<15} {'tokens/s':>9} {'best':>9} {'ms/step':>8} {'vs adamw':>9} {'opt ms':>7} "
          f"{'mask upd ms':>11} {'added/step':>10}")
    for case in cases:
        median, best = statistics.median(case.rounds), min(case.rounds)
        opt = statistics.median(case.opt_rounds)
        update = case.mask_update_s(clock)
        row = {"case": case.name, "tokens_per_s": tokens / median, "best_tokens_per_s": tokens / best,
               "ms_per_step": 1000 * median, "rounds_ms": [1000 * r for r in case.rounds],
               "optimizer_ms": 1000 * opt, "mask_update_ms": 1000 * update if update is not None else None,
               "sparsity": float(case.optimizer.sparsity())}
        if base_median:
            row["step_vs_adamw"] = median / base_median - 1.0
            # What the optimizer (and its pruning) adds over AdamW's, with mask updates
            # amortised over --frequency steps, as a share of AdamW's whole step. The
            # forward/backward is the same in every fused case, so this is the overhead
            # without the noise of timing whole steps.
            extra = opt - base_opt + (update / args.frequency if update is not None else 0.0)
            row["added_vs_adamw"] = extra / base_median
        results.append(row)
        versus = f"{100 * row['step_vs_adamw']:+.1f}%" if base_median else "-"
        added = f"{100 * row['added_vs_adamw']:+.2f}%" if base_median and case.name != "plain" else "-"
        upd = f"{row['mask_update_ms']:.0f}" if update is not None else "-"
        print(f"{case.name:<15} {row['tokens_per_s']:>9.0f} {row['best_tokens_per_s']:>9.0f} "
              f"{row['ms_per_step']:>8.1f} {versus:>9} {row['optimizer_ms']:>7.1f} {upd:>11} {added:>10}")
    if base_median:
        print(f"adamw: {tokens / base_median:.0f} tokens/s = {tokens / base_median / PUBLISHED_ADAMW_TOKENS_S:.2f}x "
              f"the published trainer's {PUBLISHED_ADAMW_TOKENS_S} tokens/s")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          "(near the thread count or above: other work shared the cores)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "load": [load_before[0], load_after[0]],
                                               "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
