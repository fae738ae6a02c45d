"""What one run directory has that its tracker run does not yet have (pure file logic).

The run's .tracker.json (the ledger) holds, per tracker destination, the last step that
landed, the run's first metrics line (to tell a resumed attempt, which keeps its earlier
lines, from a fresh start, which rewrites them) and a digest of the last summary sent. Only the follower writes it, under .tracker.lock.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lib.lifecycle import rundir

LEDGER = ".tracker.json"
LOCK = ".tracker.lock"
TERMINAL = (rundir.COMPLETED, rundir.FAILED)


@dataclass
class Outgoing:
    """One send to one tracker run."""
    name: str  # tracker run name: the run ID (a fresh restart gets -attempt2, ...)
    ident: str  # a stable id for trackers that want one (W&B): the name and the run directory
    group: str  # the configuration: seeds of one configuration share it
    config: dict | None  # hparams.json (None only for a run that ended before writing it)
    lines: list[tuple[int, dict]] = field(default_factory=list)  # (step, numeric values), steps increasing
    summary: dict | None = None  # flat numeric summary, when new
    summary_step: int | None = None
    finished: bool = False  # the run reached completed/failed and this send holds all of it

    @property
    def last_step(self) -> int | None:
        return self.lines[-1][0] if self.lines else None


def group_of(run_id: str) -> str:
    from test_matrix.expand import config_id
    from types import SimpleNamespace

    return config_id(SimpleNamespace(run_id=run_id))


def numeric(record: dict, skip=("step",)) -> dict:
    """The finite numbers of a metrics line (bools and nulls left out; the step is the axis)."""
    return {k: float(v) if isinstance(v, float) else v for k, v in record.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flatten(data, prefix: str = "") -> dict:
    """Nested summary.json -> {'final/accuracy': 97.1, 'memory/state_ratio': 2.0, ...}, numbers only."""
    flat = {}
    if isinstance(data, dict):
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}/"))
    elif isinstance(data, bool):
        flat[prefix[:-1]] = int(data)
    elif isinstance(data, (int, float)) and math.isfinite(data):
        flat[prefix[:-1]] = data
    return flat


def digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def tracker_ident(name: str, where: Path | str) -> str:
    """A W&B-safe id (letters, digits, - and _) of `name` logged from the directory `where`: a single run
    in runs/ and the same run ID in a sweep's results/ are two runs, even in one project."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '-', name)[:100]}-{digest(str(Path(where).resolve()))[:8]}"


def read_ledger(run_dir: Path) -> dict:
    found = rundir.read_json(Path(run_dir) / LEDGER)
    return found if isinstance(found, dict) else {}


def write_ledger(run_dir: Path, ledger: dict) -> None:
    rundir.write_json(Path(run_dir) / LEDGER, ledger)


def metric_lines(run_dir: Path) -> list[dict]:
    """metrics.jsonl lines with an integer step, in file order."""
    return [r for r in rundir.read_metrics(run_dir) if isinstance(r.get("step"), int)]


def outgoing(run_dir: Path, entry: dict) -> tuple[Outgoing | None, dict]:
    """(what to send now or None, the ledger entry to store once it has landed).

    The returned entry already names the attempt; its last_step and summary fields are
    for the caller to set from what actually landed.
    """
    run_dir = Path(run_dir)
    status = rundir.read_status(run_dir) or {}
    lines = metric_lines(run_dir)
    hparams = rundir.read_hparams(run_dir)
    summary = rundir.read_json(run_dir / rundir.SUMMARY)
    spec = rundir.read_json(run_dir / rundir.SPEC) or {}
    run_id = spec.get("run_id") or run_dir.name
    entry = dict(entry)
    first = lines[0] if lines else None
    if first is not None and entry.get("first") is not None and entry["first"] != first:
        # metrics.jsonl starts with another line: the run started over (--fresh), a new tracker run
        entry = {"attempt": entry.get("attempt", 1) + 1}
    if first is not None:
        entry["first"] = first
    entry.setdefault("attempt", 1)
    terminal = status.get("state") in TERMINAL
    if not isinstance(hparams, dict) and not terminal:
        return None, entry  # wait for the resolved hyperparameters to open the tracker run with them
    last = entry.get("last_step", -1)
    new = [(r["step"], numeric(r)) for r in lines if r["step"] > last]
    new = [(step, values) for i, (step, values) in enumerate(new) if i == 0 or step > new[i - 1][0]]
    flat = None
    if terminal and isinstance(summary, dict) and digest(summary) != entry.get("summary"):
        flat = flatten(summary)
    if not new and flat is None:
        return None, entry
    name = run_id if entry["attempt"] == 1 else f"{run_id}-attempt{entry['attempt']}"
    steps = [r["step"] for r in lines]
    out = Outgoing(name=name, ident=tracker_ident(name, run_dir), group=group_of(run_id),
                   config=hparams if isinstance(hparams, dict) else None,
                   lines=new, summary=flat, summary_step=max(steps) if steps else 0, finished=terminal)
    if flat is not None:
        entry["pending_summary"] = digest(summary)
    return out, entry
