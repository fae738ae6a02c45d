"""Run one prepared run directory:  python -m lib.lifecycle.launch --run-dir DIR [--fresh] [--force]

DIR holds spec.json (+ .config) from lib.lifecycle.rundir.prepare(). The train.py of the model
folder that declares spec.model (lib/configuration/model_registry.py) builds the task;
lib/training/engine.py trains it.

  exit 0  completed (or already completed: skipped with one line; --force runs it again)
  exit 1  the run failed; status.json says why (NaN loss, crash, interrupt, dead DDP rank)
  exit 2  bad input or configuration (missing dataset, unusable checkpoint, bad values)

Running it again on an interrupted or failed run resumes from last.pt. --fresh moves
the run's old outputs into DIR/.old-TIMESTAMP/ and starts over (needed after a config
change, or when last.pt is corrupt). With spec.batch["ddp_nproc"] != 1 it re-executes
itself under `torchrun --standalone` (0 = one process per GPU); only rank 0 writes the
run's files, and a failing rank is reported with its rank and reason. Each process uses
spec.runtime["threads"] CPU threads (CONFIG_CPU_THREADS; KNLP_NUM_THREADS overrides it).
--probe only times the run's steps and evaluation into DIR/probe.json (single process).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path


from lib.configuration import model_registry, paths
from lib.configuration.config import ROOT
from lib.lifecycle import rundir
from lib.lifecycle.checkpoint import CheckpointError
from lib.lifecycle.storage_errors import describe as describe_storage_error, storage_cause
from lib.training.task import BadInput, RunContext

RANK_TAG = "KNLP-RANK-FAILURE "
# What --fresh moves aside: the engine's own outputs (and their temporaries). Anything else
# in the directory (spec.json, .config, the sweep executor's sweep-output.txt) stays.
OUTPUTS = (rundir.HPARAMS, rundir.STATUS, rundir.METRICS, rundir.SUMMARY, rundir.LOG, rundir.BEST, rundir.LAST,
           rundir.CURVES)


def _say(line: str, err: bool = False) -> None:
    print(line, file=sys.stderr if err else sys.stdout, flush=True)


@contextlib.contextmanager
def _lock(run_dir: Path):
    """Exclusive lock on the run directory, so two processes never train one run."""
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def move_aside(run_dir: Path) -> Path | None:
    """Move the engine's outputs of earlier attempts into run_dir/.old-TIMESTAMP/; None if there were none."""
    old = [p for p in run_dir.iterdir()
           if p.name in OUTPUTS or any(p.name.startswith(f".{name}.") for name in OUTPUTS)]
    if not old:
        return None
    dest = run_dir / f".old-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    dest.mkdir()
    for path in old:
        shutil.move(str(path), dest / path.name)
    return dest


def resolve_nproc(spec) -> int:
    import torch

    wanted = spec.batch.get("ddp_nproc", 1)
    if not isinstance(wanted, int) or wanted < 0:
        raise BadInput(f"CONFIG_DDP_NPROC must be 0 or more, got {wanted!r}")
    from lib import gpus as lib_gpus

    gpus = lib_gpus.count() if spec.runtime.get("device") != "cpu" else 0
    on_gpu = gpus > 0
    if wanted == 0:
        return max(gpus, 1)
    if on_gpu and wanted > gpus:
        raise BadInput(f"CONFIG_DDP_NPROC={wanted} but this machine has {gpus} GPU(s); set it to at most {gpus}, "
                       "or 0 for one process per GPU")
    return wanted


def _threads(spec, device_type: str, world: int = 1) -> int:
    """Torch CPU threads per process. A CPU run takes the spec's CONFIG_CPU_THREADS (recorded
    in hparams.json as cpu_threads, so a resume with another count is refused); a GPU run,
    whose numbers do not depend on it, a share of the cores. KNLP_NUM_THREADS overrides both
    (benchmarks); specs from before the setting existed get 1."""
    env = os.environ.get("KNLP_NUM_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError:
            value = 0
        if value < 1:
            raise BadInput(f"KNLP_NUM_THREADS={env!r} must be a positive integer")
        return value
    if device_type != "cpu":
        return max(1, (os.cpu_count() or 1) // world)
    value = spec.runtime.get("threads", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadInput(f"CONFIG_CPU_THREADS must be a positive integer, got {value!r}; set it in 'make menuconfig'")
    return value


def _device_type(spec) -> str:
    import torch

    return "cpu" if spec.runtime.get("device") == "cpu" or not torch.cuda.is_available() else "cuda"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def worker(run_dir: Path, spec, *, rank: int = 0, world: int = 1, local_rank: int = 0,
           stop_at_step: int | None = None, progress: bool | None = None, probe: bool = False) -> int:
    """Train in this process (one rank of a DDP job when world > 1); returns the exit code."""
    import torch
    import torch.distributed as dist

    from lib.training.device import resolve_device
    from lib.training.engine import Trainer
    from lib.lifecycle.runlog import RunLog
    from lib.training.seeding import seed_everything

    log = RunLog(run_dir, enabled=rank == 0)
    trainer = None
    try:
        device, _ = resolve_device(spec.runtime.get("device", "auto"), local_rank)
        torch.set_num_threads(_threads(spec, device.type, world))
        if world > 1:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(minutes=30))
        model = model_registry.find(spec.model)
        if model is None:
            raise BadInput(f"unknown model {spec.model!r} in {run_dir / rundir.SPEC}; "
                           f"choose one of {', '.join(model_registry.names())}")
        ctx = RunContext(device=device, rank=rank, world_size=world, data_dir=paths.data_dir(spec),
                         download=bool(spec.runtime.get("download")), seed=spec.seed, log=log)
        seed_everything(spec.seed)
        build_task = model.task_builder()
        if world > 1 and rank != 0:
            dist.barrier()  # rank 0 builds first, so a download happens once
        task = build_task(spec, ctx)
        if world > 1 and rank == 0:
            dist.barrier()
        trainer = Trainer(task, spec, run_dir, ctx, log=log, stop_at_step=stop_at_step, progress=progress)
        if probe:
            rundir.write_json(run_dir / rundir.PROBE, trainer.measure())
            rundir.write_status(run_dir, rundir.COMPLETED, reason="probe only")
            return 0
        return trainer.run()
    except (BadInput, CheckpointError) as err:
        return _report(run_dir, rank, world, str(err), 2, trainer)
    except KeyboardInterrupt:
        return _report(run_dir, rank, world, "interrupted; run again to resume from the last checkpoint", 1, trainer)
    except Exception as err:  # a crash: record it, keep the traceback in log.txt
        cause = storage_cause(err)
        if cause is not None:  # full disk, read-only ...: the path and the cause are the whole story
            return _report(run_dir, rank, world, describe_storage_error(cause), 1, trainer)
        if rank == 0:
            log("".join(traceback.format_exception(err)).rstrip())
        return _report(run_dir, rank, world, _first_line(err), 1, trainer)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _report(run_dir: Path, rank: int, world: int, reason: str, code: int, trainer) -> int:
    step = getattr(trainer, "done", None)
    if rank == 0:
        try:
            rundir.write_status(run_dir, rundir.FAILED, reason=reason, step=step, exit_code=code)
        except OSError as exc:  # the disk that failed the run may refuse this too; the parent retries
            if storage_cause(exc) is None:
                raise
        _say(f"error: {reason}" if code == 2 else f"run failed: {reason}", err=True)
    if world > 1:
        _say(RANK_TAG + json.dumps({"rank": rank, "step": step, "reason": reason, "exit_code": code}), err=True)
    return code


def _spawn(run_dir: Path, spec, nproc: int, progress: bool | None) -> int:
    """Run the job under torchrun; afterwards make sure status.json names a failing rank."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS=str(_threads(spec, _device_type(spec), nproc)), KNLP_PROGRESS="1" if (progress if progress is not None
                                                                          else sys.stderr.isatty()) else "0")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "lib.lifecycle.launch", "--run-dir", str(run_dir.resolve()), "--worker"]
    _say(f"launching {nproc} processes: torchrun --standalone --nproc_per_node={nproc}")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    # Ctrl-C reaches torchrun and its workers too (one process group): they stop and report;
    # this process keeps reading their output instead of dying with a traceback.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: None) if on_main else None
    try:
        return _collect(run_dir, proc)
    finally:
        if on_main:
            signal.signal(signal.SIGINT, previous)


def _collect(run_dir: Path, proc) -> int:
    reports, tail = [], []
    for line in proc.stderr:
        if line.startswith(RANK_TAG):
            try:
                reports.append(json.loads(line[len(RANK_TAG):]))
            except ValueError:
                pass
            continue
        tail = (tail + [line])[-200:]
        sys.stderr.write(line)
    code = proc.wait()
    if code == 0:
        return 0
    status = rundir.read_status(run_dir)
    text = "".join(tail)
    # torchrun names the first failure ("Root Cause"); the other ranks usually fail because of it
    # (a peer's closed connection), so their own reports are not the reason.
    root = re.search(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", text, re.S)
    by_rank = {r["rank"]: r for r in reports}
    culprit = int(root.group(1)) if root else (reports[0]["rank"] if reports else None)
    if culprit is not None and culprit in by_rank:
        first = by_rank[culprit]
        reason, exit_code, step = f"rank {culprit}: {first['reason']}", first.get("exit_code", 1), first.get("step")
        if culprit == 0 and status is not None and status["state"] == rundir.FAILED:
            return exit_code  # rank 0 recorded its own failure
    else:
        who = f"rank {culprit}" if culprit is not None else "a DDP process"
        how = f"exit code {root.group(2)}" if root else f"torchrun exit code {code}"
        reason, exit_code, step = f"{who} died without a report ({how})", 1, None
    rundir.record_failure(run_dir, reason, step=step, exit_code=exit_code)
    _say(f"run failed: {reason}", err=True)
    return exit_code


def run(run_dir: Path | str, fresh: bool = False, force: bool = False, *, stop_at_step: int | None = None,
        progress: bool | None = None) -> int:
    """Run (or resume, or skip) one run directory in this process; returns the exit code."""
    run_dir = Path(run_dir)
    try:
        spec = rundir.read_spec(run_dir)
    except FileNotFoundError as err:
        _say(f"error: {err}; create the run with 'make' (scripts/run.py) first", err=True)
        return 2
    except (TypeError, ValueError) as err:
        _say(f"error: {run_dir / rundir.SPEC}: not a valid run specification ({_first_line(err)}); "
             "recreate it with 'make'", err=True)
        return 2
    try:
        return _run_locked(run_dir, spec, fresh, force, stop_at_step, progress)
    except OSError as err:  # cannot even lock or tidy the directory: read-only, full, not a directory
        cause = storage_cause(err)
        if cause is None:
            raise
        _say(f"error: {describe_storage_error(cause)}", err=True)
        return 2


def _run_locked(run_dir: Path, spec, fresh: bool, force: bool, stop_at_step, progress) -> int:
    with _lock(run_dir) as locked:
        if not locked:
            holder = (rundir.read_status(run_dir) or {}).get("pid", "?")
            _say(f"error: {run_dir} is being trained by another process (pid {holder}); wait for it or stop it",
                 err=True)
            return 2
        rundir.remove_temporaries(run_dir, OUTPUTS + (rundir.SPEC,))  # left by a kill -9
        status = rundir.read_status(run_dir)
        completed = status is not None and status["state"] == rundir.COMPLETED
        if completed and not (force or fresh):
            _say(f"{spec.run_id}: already completed, skipping (--force to run it again)")
            return 0
        if fresh or completed:
            moved = move_aside(run_dir)
            if moved is not None:
                _say(f"{spec.run_id}: old outputs moved to {moved}")
        try:
            nproc = resolve_nproc(spec)
        except BadInput as err:
            return _report(run_dir, 0, 1, str(err), 2, None)
        if nproc > 1:
            return _spawn(run_dir, spec, nproc, progress)
        return worker(run_dir, spec, stop_at_step=stop_at_step, progress=progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.lifecycle.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="directory with spec.json (from lib.lifecycle.rundir.prepare)")
    parser.add_argument("--fresh", action="store_true", help="move old outputs aside and start over")
    parser.add_argument("--force", action="store_true", help="run again even when already completed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set by the torchrun re-exec
    parser.add_argument("--probe", action="store_true",
                        help="only time a few steps and one evaluation; write probe.json (a sweep's shared budget)")
    args = parser.parse_args(argv)
    if args.probe:
        return worker(args.run_dir, rundir.read_spec(args.run_dir), probe=True)
    if args.worker:
        spec = rundir.read_spec(args.run_dir)
        progress = {"1": True, "0": False}.get(os.environ.get("KNLP_PROGRESS", ""))
        return worker(args.run_dir, spec, rank=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]),
                      local_rank=int(os.environ["LOCAL_RANK"]), progress=progress)
    return run(args.run_dir, fresh=args.fresh, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
