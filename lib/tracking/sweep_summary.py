"""The one record a tracker gets per sweep, beside its runs: log_sweep_summary().

It holds the sweep's run counts by state and, once the report has written
comparisons.csv, its verdicts: counts per verdict as metrics, and one line per paired
comparison in the record's config. It is sent again only when it changed.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from lib.lifecycle import rundir
from lib.tracking import feed

LEDGER = ".tracker-sweep.json"


VERDICTS = ("better", "worse", "no detectable difference", "too few pairs")


def verdict_values(root: Path) -> dict:
    """Verdict counts and lines from the report's comparisons.csv ({} before a report exists)."""
    from test_matrix.comparisons import COMPARISONS_CSV  # late: only a finished sweep has one

    try:
        with open(Path(root) / COMPARISONS_CSV, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return {}
    counts = Counter(row["verdict"] for row in rows)
    lines = [f"{r['model']} {float(r['target_sparsity']):g}%: {r['a']} vs {r['b']}: {r['verdict']} "
             f"(diff {r['diff'] or 'n/a'}, Holm p {r['holm_p'] or 'n/a'}, n {r['n_pairs']})" for r in rows]
    return {**{"verdicts_" + v.replace(" ", "_"): counts[v] for v in VERDICTS}, "verdicts": "\n".join(lines)}


def sweep_values(root: Path, run_dirs) -> dict:
    """What describes the sweep as a whole: run counts by state, and the verdicts."""
    states = Counter((rundir.read_status(d) or {}).get("state", "pending") for d in run_dirs)
    return {"runs": len(run_dirs), **{f"runs_{state}": states[state]
                                     for state in ("completed", "failed", "running", "pending")},
            **verdict_values(root)}


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
