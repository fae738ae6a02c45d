"""Training throughput of a small GPT-2 on this machine, per optimizer and pruning method.

    .venv/bin/python scripts/bench_gpt2.py                 # the reference shape, every case
    .venv/bin/python scripts/bench_gpt2.py --cases plain,adamw --rounds 3

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
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpt2.model import GPT, GPTConfig  # noqa: E402
from lib import optimizers  # noqa: E402

CASES = ("plain", "adamw", "adamwspam", "bitter7", "bitter7-spam", "spam-magnitude")
PUBLISHED_ADAMW_TOKENS_S = 1098  # the published trainer, same shape, this kind of machine
SPAM = dict(spam_theta=50.0, spam_interval=1000, spam_warmup=150)
PRUNE = dict(target_sparsity=0.5, warmup_end=1, ramp_end=2, frequency=1)  # 50% from step 2 on


def optimizer_for(case: str, model: GPT):
    common = dict(lr=6e-4, weight_decay=0.1, grad_clip=1.0)
    if case in ("plain", "adamw"):
        return optimizers.create("adamw", model, **common)
    if case == "adamwspam":
        return optimizers.create("adamwspam", model, **common, **SPAM)
    if case == "bitter7":
        return optimizers.create("adamwprune", model, **common, pruning="state", variant="bitter7", **PRUNE)
    if case == "bitter7-spam":
        return optimizers.create("adamwprune", model, **common, pruning="state", variant="bitter7",
                                 base="adamwspam", **SPAM, **PRUNE)
    if case == "spam-magnitude":
        return optimizers.create("adamwspam", model, **common, pruning="magnitude", **SPAM, **PRUNE)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5, help="timed steps per case per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per case (pruned cases reach 50%%)")
    parser.add_argument("--frequency", type=int, default=100, help="steps between mask updates, for amortising")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: elapsed time (throughput); cpu: this process's CPU time, which other "
                             "processes do not inflate (use with --threads 1 on a busy machine)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    for name in names:
        if name not in CASES:
            print(f"bench_gpt2: unknown case {name!r}; choose from {', '.join(CASES)}", file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    try:
        cfg = GPTConfig(vocab_size=args.vocab, block_size=args.block, n_layer=args.layers, n_head=args.heads,
                        n_embd=args.width)
    except ValueError as err:
        print(f"bench_gpt2: {err}", file=sys.stderr)
        return 2
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
