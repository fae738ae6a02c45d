"""LeNet-5 speed and accuracy on this machine, against the project's targets.

    python -m scripts.bench_lenet5 [--threads 1 2] [--repeats 3] [--seeds 1 2 3] [--set NAME=VALUE ...]

Trains defconfig lenet5-sample-bitter7 (AdamWPrune bitter7 at 90%, batch 64, 10 epochs,
4,000 training digits) and its dense AdamW twin through the real engine
(lib.lifecycle.launch.run, in this process, in a temporary directory) and prints:
  per-epoch time   training steps only (no evaluation), from summary.json
  whole run        wall time of lib.lifecycle.launch.run: data, model, 10 epochs, 10 evaluations,
                   checkpoints, metrics, plot; after set-up = after Python and torch import
  accuracy         final test accuracy on the 1,000 held-out digits
Times are the best of --repeats (other processes only ever add time); the load average
is printed because a busy machine slows every number. --set changes config symbols of
every run (typed: y/n, integers, decimals), e.g. --set LENET5_LEARNING_RATE=3e-3
--set LR_SCHEDULE_CONSTANT=n --set LR_SCHEDULE_COSINE=y; --set TRACKER_TRACKIO=y runs each
run with its tracking follower, to measure what tracking costs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


import torch

from lib.configuration import config
from lib.lifecycle import launch, rundir
from lib.tracking import child as tracking
from test_matrix.expand import expand

DEFCONFIG = "lenet5-sample-bitter7"
TARGETS = {"epoch_s": 0.32, "run_s": 8.0, "dense_acc": 97.0, "bitter7_acc": 96.5}
PUBLISHED = {"epoch_s": 1.28, "run_s": 20.6}
DENSE = dict(OPTIMIZER_ADAMWPRUNE=False, OPTIMIZER_ADAMW=True, PRUNING_STATE=False, PRUNING_NONE=True)


def parse_set(items: list[str]) -> dict:
    """NAME=VALUE pairs -> typed config values (y/n -> bool, then int, then float, else string)."""
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {item!r}: write NAME=VALUE, e.g. --set LENET5_LEARNING_RATE=3e-3")
        name = name.removeprefix(config.PREFIX)
        if text in ("y", "n"):
            values[name] = text == "y"
            continue
        for kind in (int, float):
            try:
                values[name] = kind(text)
                break
            except ValueError:
                continue
        else:
            values[name] = text
    return values


def one_run(changes: dict, threads: int, workdir: Path) -> dict:
    cfg = config.from_defconfig(DEFCONFIG).replace(**changes)
    spec = expand(cfg)[0]
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    rundir.prepare(run_dir, spec, None)
    os.environ["KNLP_NUM_THREADS"] = str(threads)
    quiet = io.StringIO()
    tracker = tracking.start(cfg, workdir, [spec.model], [run_dir], out=quiet)  # --set TRACKER_TRACKIO=y
    start = time.perf_counter()
    with contextlib.redirect_stdout(quiet):
        code = launch.run(run_dir, progress=False)
    wall = time.perf_counter() - start
    if tracker is not None:
        tracker.stop()
    if code != 0:
        raise SystemExit(f"benchmark run failed (exit {code}): {quiet.getvalue()[-500:]}")
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    hp = json.loads((run_dir / rundir.HPARAMS).read_text())
    epochs = summary["steps"] / hp["steps_per_epoch"]
    return {"run_s": wall, "epoch_s": summary["steps"] * hp["effective_batch"] / summary["samples_per_s"] / epochs,
            "acc": summary["final"]["accuracy"], "sparsity": summary["achieved_sparsity"]}


def verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    ok = value <= target if lower_is_better else value >= target
    return "meets" if ok else "MISSES"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU threads to try")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per thread count (best is kept)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds for the accuracy runs")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a config symbol in every run")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.threads) or args.repeats < 1 or not args.seeds:
        print("--threads and --repeats must be >= 1 and --seeds non-empty", file=sys.stderr)
        return 2
    try:
        extra = parse_set(args.set)
        config.from_defconfig(DEFCONFIG).replace(**extra)
    except (ValueError, AttributeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    load = os.getloadavg()[0]
    changed = "".join(f" {k}={v}" for k, v in extra.items())
    print(f"LeNet-5 on {DEFCONFIG}{' with' + changed if changed else ''}: torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"load average {load:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        speed = {}
        for threads in args.threads:
            runs = [one_run({**extra, "SEED": args.seeds[0]}, threads, workdir) for _ in range(args.repeats)]
            speed[threads] = {k: min(r[k] for r in runs) for k in ("epoch_s", "run_s")}
            print(f"  {threads} thread(s): per-epoch {speed[threads]['epoch_s']:.3f} s, whole run "
                  f"{speed[threads]['run_s']:.2f} s (best of {args.repeats}; median run "
                  f"{statistics.median(r['run_s'] for r in runs):.2f} s)")
        best_threads = min(speed, key=lambda t: speed[t]["run_s"])
        accuracy = {}
        for name, changes in (("dense", DENSE), ("bitter7", {})):
            results = [one_run({**extra, **changes, "SEED": seed}, best_threads, workdir) for seed in args.seeds]
            accuracy[name] = [r["acc"] for r in results]
            note = f", sparsity {results[0]['sparsity']:.3f}" if name == "bitter7" else ""
            print(f"  {name}: final accuracy {', '.join(f'{a:.1f}' for a in accuracy[name])} % over seeds "
                  f"{args.seeds} (mean {statistics.mean(accuracy[name]):.2f}){note}")
    best = speed[best_threads]
    print(f"\nTargets (2 CPU cores, batch 64, 4,000 training digits), best setting {best_threads} thread(s):")
    print(f"  per-epoch time   {best['epoch_s']:.3f} s   target <= {TARGETS['epoch_s']} s "
          f"(published trainer {PUBLISHED['epoch_s']} s)   {verdict(best['epoch_s'], TARGETS['epoch_s'])}")
    print(f"  10-epoch run     {best['run_s']:.2f} s    target <= {TARGETS['run_s']} s "
          f"(published {PUBLISHED['run_s']} s)       {verdict(best['run_s'], TARGETS['run_s'])}")
    for name, key in (("dense AdamW", "dense_acc"), ("bitter7 at 90%", "bitter7_acc")):
        mean = statistics.mean(accuracy[name.split()[0]])
        print(f"  {name:<16} {mean:.2f} %  target >= {TARGETS[key]} % (mean final accuracy)   "
              f"{verdict(mean, TARGETS[key], lower_is_better=False)}")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
