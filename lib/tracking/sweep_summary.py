"""The one record a tracker gets per sweep, beside its runs: log_sweep_summary().

Today it holds the sweep's run counts by state. The verdicts of a sweep (from the
verdicts work, when it lands) belong in sweep_values(): every key added there is sent,
numbers as metrics, text in the run's config. It is sent again only when it changed.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from lib import rundir
from lib.tracking import feed

LEDGER = ".tracker-sweep.json"


def sweep_values(root: Path, run_dirs) -> dict:
    """What describes the sweep as a whole (add verdicts here)."""
    states = Counter((rundir.read_status(d) or {}).get("state", "pending") for d in run_dirs)
    return {"runs": len(run_dirs), **{f"runs_{state}": states[state]
                                     for state in ("completed", "failed", "running", "pending")}}


def log_sweep_summary(backend, settings, root: Path, run_dirs) -> bool:
    """Send sweep_values() as the tracker run 'sweep-<results dir name>' when they changed; True if sent."""
    root = Path(root)
    values = sweep_values(root, run_dirs)
    ledger = rundir.read_json(root / LEDGER) or {}
    key = settings.ledger_key()
    entry = ledger.get(key, {})
    if entry.get("digest") == feed.digest(values):
        return False
    name = f"sweep-{root.name}"
    numbers = feed.flatten(values)
    backend.send(feed.Outgoing(name=name, ident=feed.tracker_ident(name, root), group="sweep",
                               config={k: v for k, v in values.items() if k not in numbers},
                               lines=[(entry.get("sent", 0), numbers)], finished=True))
    backend.close(name)
    ledger[key] = {"digest": feed.digest(values), "sent": entry.get("sent", 0) + 1}
    rundir.write_json(root / LEDGER, ledger)
    return True
