"""`make` with a config that selects one of everything: a matrix of one, run in the foreground.

The run lives in OUTPUT_DIR/<run_id>; its progress is the engine's own output, and a short
summary read from summary.json follows.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lib.configuration import config as lib_config
from lib.lifecycle import rundir
from lib.tracking import child as tracking
from test_matrix import foreground, plan as plan_file, state as run_state, sweep
from test_matrix.executor import _exit_reason, _record_failure, default_command
from test_matrix.sweep import SweepRefused, resolve


def run_dir_of(cfg, spec) -> Path:
    return resolve(cfg.OUTPUT_DIR, "CONFIG_OUTPUT_DIR") / spec.run_id


def run(cfg, spec, *, flags: list[str] = (), command=default_command, out=None) -> int:
    """Launch one run; returns the engine's exit status (0 completed, 1 failed, 2 bad input)."""
    out = out or sys.stdout
    run_dir = run_dir_of(cfg, spec)
    found = rundir.read_json(run_dir / rundir.SPEC)
    if found is not None and "--fresh" not in flags:
        why = plan_file.difference(found, plan_file.spec_json(spec))
        if why and rundir.never_trained(run_dir):
            # Nothing to lose (it failed before its first checkpoint, e.g. on a bad value): the
            # corrected config takes the directory over; the old files are moved aside.
            print(f"{run_dir} held a run of another config that never trained a step ({why}); replacing it",
                  file=out)
            flags = [*flags, "--fresh"]
        elif why:
            raise SweepRefused(f"{run_dir} holds a run of another config ({why}); delete it, set another "
                               "OUTPUT_DIR, or start over with 'make FRESH=1'")
    note = sweep.outside_note(cfg.OUTPUT_DIR, run_dir.parent)
    if note:
        print(note, file=out)
    rundir.prepare(run_dir, spec, Path(cfg.source))
    print(f"Run {spec.run_id} -> {run_dir}", file=out, flush=True)
    tracker = tracking.start(cfg, run_dir.parent, [spec.model], [run_dir], out=out)
    try:
        rc, interrupts = foreground.run(command(run_dir, list(flags)), cwd=lib_config.ROOT)
    finally:
        if tracker is not None:
            tracker.stop()
    if rc != 0 and run_state.classify(run_dir)[0] in (run_state.INTERRUPTED, run_state.PENDING):
        # The engine died without recording why (SIGKILL, out of memory): say it in status.json,
        # which must not claim "running" for a run that is gone.
        _record_failure(run_dir, _exit_reason(rc, run_dir / rundir.LOG))
    print_summary(run_dir, out)
    if rc == 0:
        return 0
    return 130 if interrupts else 1 if rc < 0 else rc


def print_summary(run_dir: Path, out) -> None:
    status = rundir.read_status(run_dir) or {}
    summary = rundir.read_json(run_dir / rundir.SUMMARY)
    if status.get("state") != rundir.COMPLETED or not isinstance(summary, dict):
        print(f"Run {run_dir.name}: {status.get('state', 'not started')}"
              + (f": {status['reason']}" if status.get("reason") else "") + f"; files in {run_dir}", file=out)
        return
    from test_matrix import results

    metric = summary.get("metric") or "accuracy"
    final = results.metric_value(summary.get("final"), metric)
    best = results.metric_value(summary.get("best"), metric)
    sparsity = results.number(summary.get("achieved_sparsity"))
    seconds = results.number(summary.get("total_time_s"))
    parts = [f"final {metric} {final:.2f}" if final is not None else f"final {metric} -",
             f"best {best:.2f}" if best is not None else "best -",
             f"sparsity {100 * sparsity:.1f}%" if sparsity is not None else "sparsity -",
             f"{seconds:.0f} s" if seconds is not None else ""]
    print(f"Run {run_dir.name} completed: {', '.join(p for p in parts if p)}", file=out)
    print(f"Files: {run_dir} (summary.json, metrics.jsonl, log.txt, {rundir.CURVES}, checkpoints)", file=out)
