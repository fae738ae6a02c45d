#!/usr/bin/env python3
"""Cost of the optimizers and pruning methods against torch.optim.AdamW(fused=True).

GPT-2-shaped weights (per block 768x2304, 768x768, 768x3072, 3072x768; 12 blocks with
--full = 85M weights), synthetic gradients. Every figure is one JSON line; time ratios
are medians of steps measured back to back with fused AdamW steps in the same process:

  base_step_ratio       the same optimizer without pruning (SPAM and SGD have costs of their own)
  step_ratio            a pruning-active step without a mask update
  update_step_ratio     a step that recomputes the masks: mean, median and worst over the
                        timed updates of --seeds models (the ramp's updates, --updates of them),
                        and seed_median_max, the worst of the seeds' median updates;
                        mask_update_median / _max: the mask update alone (the step less
                        torch's own AdamW update), timed inside the same steps
  amortized_step_ratio  (frequency - 1) plain steps + 1 update step, per step
  adversarial_update_ratio  worst update step on inputs that defeat estimates (--adversarial):
                        16-level ties, 30% exact zeros, 3,000 tiny tensors, 3x3 convs,
                        per-layer scope, bitter0 with zero gradients, movement (and the
                        mask update alone, as for update_step_ratio)
  ops_per_update        torch operator calls of one mask update (profiler)
  persistent_ratio      (optimizer state + pruning buffers) / prunable weight bytes
  transient_ratio       peak extra bytes of one mask update / weight bytes (the optimizer's
                        own figure, and the profiler's measurement on CPU)
  sparsity_error        max |achieved - round(s(t) N) / N| over the ramp's updates

--busy starts one competing busy process for the whole run (a shared machine's neighbour).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn

from lib.optimizers import create
from lib.pruning import is_update_step, sparsity_at

SHAPES = [(2304, 768), (768, 768), (3072, 768), (768, 3072)]  # (out, in) of nn.Linear
METHODS = {
    "adamwprune-bitter7": ("adamwprune", dict(variant="bitter7")),
    "adamwprune-bitter0": ("adamwprune", dict(variant="bitter0")),
    "adamwprune-bitter7-spam": ("adamwprune", dict(variant="bitter7", base="adamwspam")),
    "adamw-magnitude": ("adamw", dict(pruning="magnitude")),
    "adamw-movement": ("adamw", dict(pruning="movement")),
    "sgd-magnitude": ("sgd", dict(pruning="magnitude")),
}


def build(blocks, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(i, o, bias=False) for _ in range(blocks) for o, i in SHAPES])
    for p in model.parameters():
        nn.init.normal_(p, std=0.02)
    return model


def set_grads(model, step):
    g = torch.Generator().manual_seed(step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g).mul_(1e-3)


CLOCK = time.perf_counter


def timed(fn):
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def profiled(fn):
    """(peak bytes allocated on the CPU, torch operator calls made from Python) while fn
    runs, from torch's profiler."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    now = peak = 0
    events = prof.events()
    for e in sorted(events, key=lambda e: e.time_range.start):
        now += e.self_cpu_memory_usage
        peak = max(peak, now)
    return peak, sum(1 for e in events if e.cpu_parent is None and e.name.startswith("aten::"))


def _adversarial_models(blocks):
    """(label, model, optimizer name, create() keywords, gradient) for the hard inputs."""
    def quantized(seed):
        m = build(blocks, seed)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randint(-8, 8, p.shape).float() / 256)  # 16 levels
        return m

    def zeros(seed):
        m = build(blocks, seed)
        with torch.no_grad():
            for p in m.parameters():
                p.masked_fill_(torch.rand(p.shape) < 0.3, 0.0)
        return m

    def convs(seed):
        torch.manual_seed(seed)
        m = nn.Sequential(*[nn.Conv2d(256, 256, 3, bias=False) for _ in range(3)])
        with torch.no_grad():
            for p in m.parameters():
                p[..., 1] *= 3.0
        return m

    def tiny(seed):
        torch.manual_seed(seed)
        return nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(3000)])

    silent = {}

    def zero_grads(model, step):
        set_grads(model, step)
        for p in model.parameters():
            if p not in silent:
                silent[p] = torch.rand(p.shape, generator=torch.Generator().manual_seed(7)) < 0.2
            p.grad.masked_fill_(silent[p], 0.0)
    return [
        ("16-level ties", quantized, "adamwprune", dict(variant="bitter7"), set_grads),
        ("30% zero weights, magnitude", zeros, "adamw", dict(pruning="magnitude"), set_grads),
        ("3000 tiny tensors", tiny, "adamwprune", dict(variant="bitter7"), set_grads),
        ("3x3 convs, magnitude", convs, "adamw", dict(pruning="magnitude"), set_grads),
        ("per-layer scope", lambda s: build(blocks, s), "adamwprune", dict(variant="bitter7", scope="layer"), set_grads),
        ("bitter0, 20% zero gradients", lambda s: build(blocks, s), "adamwprune", dict(variant="bitter0"), zero_grads),
        ("movement", lambda s: build(blocks, s), "adamw", dict(pruning="movement"), set_grads),
    ]


def bench_adversarial(args):
    t0, t1, freq = args.warmup_end, args.ramp_end, args.frequency
    for label, make, name, kw, grads in _adversarial_models(args.blocks):
        model = make(0)
        base_model = make(0)
        base_model.load_state_dict(model.state_dict())
        for p in base_model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        base_opt = torch.optim.AdamW(base_model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
        base_opt.step()
        opt = create(name, model, lr=1e-4, weight_decay=0.1, target_sparsity=args.sparsity, warmup_end=t0,
                     ramp_end=t1, frequency=freq, **kw)
        n = opt.prunable_count()
        for s in range(1, 4):
            grads(model, s)
            opt.step()
        update_ratios, errors, mask_ratios = [], [], []
        _ramp(opt, model, args, base_opt, update_ratios, [], errors, n, timed_plain=False, mask_ratios=mask_ratios)
        emit(figure="adversarial_update_ratio", input=label, value=round(max(update_ratios), 3), target=8.0,
             median=round(statistics.median(update_ratios), 3), mask_update_median=round(statistics.median(mask_ratios), 3),
             mask_update_max=round(max(mask_ratios), 3), weights=n,
             passes=max(s.passes for s in opt.pruner.selections), max_error_of_N=max(errors))
        del opt, model, base_opt, base_model


def emit(**fields):
    print(json.dumps(fields), flush=True)


def _timed_update(opt, base_opt):
    """(the update step's time, its mask update's own time), each over a fused AdamW step
    timed just before."""
    base = timed(base_opt.step)
    inner, update = [], opt.pruner.update

    def clocked(t):
        t0 = CLOCK()
        update(t)
        inner.append(CLOCK() - t0)
    opt.pruner.update = clocked
    try:
        whole = timed(opt.step)
    finally:
        del opt.pruner.update  # the method again
    return whole / base, sum(inner) / base


def _ramp(opt, model, args, base_opt, update_ratios, ratios, errors, n, timed_plain, mask_ratios=None):
    """Walk `opt` through the ramp, timing the picked updates (and plain steps after them)."""
    t0, t1, freq = args.warmup_end, args.ramp_end, args.frequency
    update_steps = [t for t in range(t0 + 1, t1 + 1) if is_update_step(t, warmup_end=t0, ramp_end=t1, frequency=freq)]
    picks = update_steps if args.updates <= 0 else update_steps[:: max(1, len(update_steps) // args.updates)]
    if update_steps[-1] not in picks:
        picks.append(update_steps[-1])
    for t in update_steps:
        opt._knlp_t = t - 1  # fast-forward the one step counter to the next update
        if t in picks:
            whole, mask = _timed_update(opt, base_opt)
            update_ratios.append(whole)
            if mask_ratios is not None:
                mask_ratios.append(mask)
        else:
            opt.pruner.update(t)  # reach the next sparsity without timing it
        goal = round(sparsity_at(t, warmup_end=t0, ramp_end=t1, final=args.sparsity) * n)
        errors.append(abs(opt.pruner.pruned_count() - goal) / n)
        if t in picks and timed_plain:
            for _ in range(args.plain):  # plain steps at this sparsity, paired with baseline steps
                opt._knlp_t = t  # not an update step
                b = timed(base_opt.step)
                ratios.append(timed(opt.step) / b)
    return update_steps


def bench_method(label, name, kw, args, base_opt):
    t0, t1, freq = args.warmup_end, args.ramp_end, args.frequency
    ratios, update_ratios, errors, seed_medians, mask_ratios = [], [], [], [], []
    for seed in range(args.seeds):
        model = build(args.blocks, seed)
        opt = create(name, model, lr=1e-4, weight_decay=0.1, target_sparsity=args.sparsity, warmup_end=t0,
                     ramp_end=t1, frequency=freq, **kw)
        n = opt.prunable_count()
        for s in range(1, 4):  # realistic moments before the first update
            set_grads(model, 100 * seed + s)
            opt.step()
        first = len(update_ratios)
        update_steps = _ramp(opt, model, args, base_opt, update_ratios, ratios, errors, n, timed_plain=seed == 0,
                             mask_ratios=mask_ratios)
        seed_medians.append(statistics.median(update_ratios[first:]))
        if seed < args.seeds - 1:
            del opt, model
    step_ratio = statistics.median(ratios)
    upd = statistics.mean(update_ratios)
    dense_kw = {k: v for k, v in kw.items() if k not in ("variant", "pruning")}
    dense_model = build(args.blocks, 1)
    dense = create(name, dense_model, lr=1e-4, weight_decay=0.1, pruning="none", **dense_kw)
    set_grads(dense_model, 1)
    dense.step()
    dense_ratios = []
    for _ in range(2 * args.plain):
        b = timed(base_opt.step)
        dense_ratios.append(timed(dense.step) / b)
    del dense, dense_model
    emit(figure="base_step_ratio", method=label, value=round(statistics.median(dense_ratios), 3), weights=n)
    emit(figure="step_ratio", method=label, value=round(step_ratio, 3), target=1.10, weights=n)
    emit(figure="update_step_ratio", method=label, value=round(upd, 3), target=4.0, weights=n, seeds=args.seeds,
         updates_timed=len(update_ratios), median=round(statistics.median(update_ratios), 3),
         min=round(min(update_ratios), 3), max=round(max(update_ratios), 3),
         seed_median_max=round(max(seed_medians), 3), mask_update_median=round(statistics.median(mask_ratios), 3),
         mask_update_max=round(max(mask_ratios), 3),
         passes=max(s.passes for s in opt.pruner.selections), chunk=opt.pruner.chunk)
    emit(figure="amortized_step_ratio", method=label, value=round(((freq - 1) * step_ratio + upd) / freq, 3),
         target=1.06, frequency=freq, weights=n)
    mem = opt.memory_bytes()
    emit(figure="persistent_ratio", method=label, value=round((mem["state"] + mem["pruning"]) / mem["weights"], 4),
         target=2.04, state=mem["state"], pruning=mem["pruning"], weights=mem["weights"])
    emit(figure="sparsity", method=label, value=round(opt.sparsity(), 6), target=args.sparsity,
         max_error_of_N=max(errors), updates=len(update_steps))
    # transient memory of one more update, measured by the profiler (CPU) next to the optimizer's own figure
    model2 = build(args.blocks, 0)
    opt2 = create(name, model2, lr=1e-4, weight_decay=0.1, target_sparsity=args.sparsity, warmup_end=t0,
                  ramp_end=t1, frequency=freq, **kw)
    for s in range(1, 4):
        set_grads(model2, s)
        opt2.step()
    mid = update_steps[len(update_steps) // 2]
    with torch.no_grad():
        opt2.pruner.update(update_steps[0])
        measured, ops = profiled(lambda: opt2.pruner.update(mid))
    emit(figure="transient_ratio", method=label, value=round(opt2.memory_bytes()["transient_peak"] / mem["weights"], 4),
         measured=round(measured / mem["weights"], 4), target=0.15)
    emit(figure="ops_per_update", method=label, value=ops, chunks=-(-n // opt2.pruner.chunk),
         passes=max(s.passes for s in opt2.pruner.selections))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="12 blocks, 85M weights (the issue's targets)")
    ap.add_argument("--blocks", type=int, default=4, help="GPT-2 blocks without --full (default 4: 28M weights)")
    ap.add_argument("--seeds", type=int, default=10, help="models (seeds) whose updates are timed")
    ap.add_argument("--adversarial", action="store_true", help="also time updates on the hard inputs")
    ap.add_argument("--busy", action="store_true", help="run one competing busy process meanwhile")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--frequency", type=int, default=50)
    ap.add_argument("--warmup-end", type=int, default=1000)
    ap.add_argument("--ramp-end", type=int, default=3000)
    ap.add_argument("--updates", type=int, default=8, help="mask updates to time along the ramp (0 = all)")
    ap.add_argument("--plain", type=int, default=3, help="plain steps timed after each timed update")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0 = torch's default); with 1, times are the thread's CPU time, "
                         "steady on a shared machine")
    ap.add_argument("--methods", default="adamwprune-bitter7,adamw-magnitude,adamw-movement",
                    help=f"comma-separated, from: {', '.join(METHODS)}")
    args = ap.parse_args(argv)
    if args.full:
        args.blocks = 12
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.get_num_threads() == 1:
        CLOCK = time.thread_time
    labels = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in labels:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        run(args, labels)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def run(args, labels):
    base_model = build(args.blocks, 0)
    set_grads(base_model, 1)
    base_opt = torch.optim.AdamW(base_model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    base_opt.step()
    times = [timed(base_opt.step) for _ in range(5)]
    n = sum(p.numel() for p in base_model.parameters())
    emit(figure="fused_adamw_step_s", value=round(statistics.median(times), 5), weights=n,
         threads=torch.get_num_threads(), clock="thread_cpu" if CLOCK is time.thread_time else "wall",
         device="cpu", torch=torch.__version__, busy_neighbour=args.busy)
    state = sum(v.numel() * v.element_size() for st in base_opt.state.values() for v in st.values())
    emit(figure="persistent_ratio", method="torch-adamw-fused", value=round(state / (4 * n), 4))
    with torch.no_grad():
        for m in labels:
            name, kw = METHODS[m]
            set_grads(base_model, 2)
            bench_method(m, name, kw, args, base_opt)
        if args.adversarial:
            bench_adversarial(args)


if __name__ == "__main__":
    main()
