"""Layout and file formats of one run's directory, shared by the engine and the test matrix.

A run directory holds:
  .config          snapshot of the configuration the run came from
  spec.json        the RunSpec (what was asked)
  hparams.json     resolved hyperparameters (after AUTO, steps per epoch, ramp end ...)
  status.json      {"state": "running"|"completed"|"failed", "reason", "step", "pid", "updated"}
  metrics.jsonl    one JSON object per evaluation (see METRIC_FIELDS)
  summary.json     final and best metrics, sparsity, parameters, memory, time, per-layer
                   sparsity of pruned runs (SUMMARY_FIELDS)
  start.json       digests of the initial weights and data order (lib/lifecycle/start_record.py)
  log.txt          human-readable log
  best.pt last.pt  checkpoints (torch.save, loaded with weights_only=True)
  curves.png       training curves

Every JSON file is written atomically (temporary file, fsync, rename), so a kill -9 leaves
either the old or the new file. metrics.jsonl is append-only; a torn last line is ignored.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

from lib.lifecycle.atomic import atomic_write_text

DOT_CONFIG = ".config"
SPEC = "spec.json"
HPARAMS = "hparams.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOG = "log.txt"
BEST = "best.pt"
LAST = "last.pt"
CURVES = "curves.png"
SHARED_BUDGET = "shared-budget.json"  # a sweep's step count for every run of a comparison (time budgets)
PROBE = "probe.json"  # what `lib.lifecycle.launch --probe` measured

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
# Serialises status writes within a process: the heartbeat thread (lib/lifecycle/heartbeat.py)
# rewrites status.json next to the engine, and must never put "running" back over "completed".
STATUS_LOCK = threading.RLock()

# Keys of every metrics.jsonl line; the model's quality metric is "accuracy" (CNNs, percent)
# or "perplexity" (GPT-2); the other one is null.
METRIC_FIELDS = ("step", "epoch", "train_loss", "test_loss", "accuracy", "perplexity", "sparsity",
                 "lr", "wall_time", "samples_per_s", "memory_bytes")

# Top-level keys of summary.json.
SUMMARY_FIELDS = ("run_id", "model", "optimizer", "pruning", "variant", "target_sparsity", "seed",
                  "unequal_budget", "metric", "final", "best", "achieved_sparsity", "params", "memory",
                  "device_peak_memory_bytes", "total_time_s", "steps", "samples_per_s", "layers")


def write_json(path: Path | str, data) -> None:
    """Atomically replace `path` with `data` as JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path | str):
    """Parsed JSON, or None when the file is missing or unreadable."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_status(run_dir: Path | str, state: str, *, reason: str | None = None, **extra) -> None:
    """Record a run's state: the only code that writes status.json (the engine, the launcher,
    the sweep executors and the heartbeat pass their facts here; see tests/test_status_owner.py)."""
    if state not in (RUNNING, COMPLETED, FAILED):
        raise ValueError(f"unknown run state {state!r}")
    with STATUS_LOCK:
        data = {"state": state, "reason": reason, "pid": os.getpid(), "host": socket.gethostname(),
                "updated": time.time(), **extra}
        _store_status(Path(run_dir) / STATUS, data)


def set_heartbeat(run_dir: Path | str, value: float, *, pid: int | None = None) -> bool:
    """Put `value` in a running status's "heartbeat" field (only if the run is `pid`'s, when
    given); the rest of the status stays as its writer left it. False when it is not running."""
    with STATUS_LOCK:  # never interleave with the engine's own status writes
        status = read_status(run_dir)
        if status is None or status["state"] != RUNNING or (pid is not None and status.get("pid") != pid):
            return False
        status["heartbeat"] = value
        _store_status(Path(run_dir) / STATUS, status)
        return True


def record_failure(run_dir: Path | str, reason: str, *, step: int | None = None, **extra) -> None:
    """A failure recorded by someone other than the training process (the launcher of a DDP
    job, a sweep executor): `step` defaults to the last step the run's own status named."""
    with STATUS_LOCK:
        if step is None:
            step = (read_status(run_dir) or {}).get("step")
        if step is not None:
            extra["step"] = step
        write_status(run_dir, FAILED, reason=reason, **extra)


def _store_status(path: Path, data: dict) -> None:
    with STATUS_LOCK:
        try:
            write_json(path, data)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file():
                raise
            # A full disk has no room for the temporary copy, but the old status.json's own blocks
            # can be rewritten: a run that failed for lack of space must not keep saying "running".
            # (Torn by a kill -9 it reads as no status, and the next launch resumes from last.pt.)
            with open(path, "r+") as handle:
                handle.truncate(0)
                handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


def read_status(run_dir: Path | str) -> dict | None:
    status = read_json(Path(run_dir) / STATUS)
    return status if isinstance(status, dict) and status.get("state") in (RUNNING, COMPLETED, FAILED) else None


def append_metrics(run_dir: Path | str, record: dict) -> None:
    line = json.dumps({key: record.get(key) for key in METRIC_FIELDS}, allow_nan=False)
    with open(Path(run_dir) / METRICS, "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_metrics(run_dir: Path | str) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill; the resumed run rewrites from its checkpoint
    return records


def truncate_metrics(run_dir: Path | str, last_step: int) -> None:
    """Drop metric lines after `last_step` (written after the checkpoint a resume starts from)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step") is not None and r["step"] <= last_step]
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def prepare(run_dir: Path | str, spec, config_file: Path | str | None) -> Path:
    """Create a run directory with its spec.json and .config snapshot (kept if already there)."""
    import shutil

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / SPEC, spec.to_dict())
    if config_file is not None and Path(config_file).is_file():
        shutil.copyfile(config_file, run_dir / (DOT_CONFIG + ".tmp"))
        os.replace(run_dir / (DOT_CONFIG + ".tmp"), run_dir / DOT_CONFIG)
    return run_dir


def never_trained(run_dir: Path | str) -> bool:
    """True when a run directory holds no trained step: no checkpoint, not completed."""
    run_dir = Path(run_dir)
    status = read_status(run_dir) or {}
    return (status.get("state") != COMPLETED and not (run_dir / LAST).exists() and not (run_dir / BEST).exists()
            and not (status.get("step") or 0))


def remove_temporaries(run_dir: Path | str, names) -> list[Path]:
    """Delete the `.NAME.*` temporaries of atomic writes that a killed process left (call under the run lock)."""
    removed = []
    for name in names:
        for stray in Path(run_dir).glob(f".{name}.*"):
            if stray.is_file():
                stray.unlink(missing_ok=True)
                removed.append(stray)
    return removed


def read_hparams(run_dir: Path | str) -> dict | None:
    """hparams.json under today's names (also one written before issue 11's rename); None when
    missing or unreadable."""
    from lib.configuration import vocabulary

    data = read_json(Path(run_dir) / HPARAMS)
    return vocabulary.upgrade_hparams(data) if isinstance(data, dict) else None


def read_spec(run_dir: Path | str):
    from lib.configuration.runspec import RunSpec

    data = read_json(Path(run_dir) / SPEC)
    if data is None:
        raise FileNotFoundError(f"{Path(run_dir) / SPEC}: missing or unreadable run specification")
    return RunSpec.from_dict(data)
