"""The plan file of a sweep (RESULTS/matrix.json) and checks of run directories against it.

matrix.json records what the current config expects: the config values and the spec of
every run. The report reads it to tell the runs of this config from leftovers of an older
one; the sweep compares existing run directories with it before touching anything.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from lib.configuration import vocabulary
from lib.lifecycle import rundir, same_run

PLAN = "matrix.json"
VERSION = 1


def spec_json(spec) -> dict:
    """A spec as it reads back from spec.json (tuples become lists), for comparisons."""
    return json.loads(json.dumps(spec.to_dict()))


def run_dir(results_dir: Path | str, run_id: str) -> Path:
    return Path(results_dir) / run_id


def write_plan(results_dir: Path | str, cfg, runs) -> Path:
    path = Path(results_dir) / PLAN
    rundir.write_json(path, {"version": VERSION, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "config_source": str(getattr(cfg, "source", "")), "config": cfg.as_dict(),
                             "runs": [spec_json(r) for r in runs]})
    return path


def read_plan(results_dir: Path | str) -> dict | None:
    plan = rundir.read_json(Path(results_dir) / PLAN)
    if not isinstance(plan, dict) or not isinstance(plan.get("runs"), list):
        return None
    return plan


def planned_specs(plan: dict) -> dict[str, dict]:
    return {spec["run_id"]: spec for spec in plan["runs"]}


def difference(found: dict, expected: dict) -> str | None:
    """The first setting in which a spec.json differs from the expected spec, as 'key: old -> new'
    (both under today's names: a spec.json from before issue 11's rename is the same run)."""
    return same_run.difference(vocabulary.upgrade_spec(found), vocabulary.upgrade_spec(expected))


def stale_runs(results_dir: Path | str, expected: dict[str, dict]) -> list[tuple[str, str]]:
    """(run_id, what differs) for run directories whose spec.json is not the expected spec."""
    stale = []
    for run_id, spec in expected.items():
        found = rundir.read_json(run_dir(results_dir, run_id) / rundir.SPEC)
        if found is not None:
            why = difference(found, spec)
            if why:
                stale.append((run_id, why))
    return stale


def run_dirs(results_dir: Path | str) -> list[Path]:
    """Every run directory (a sub-directory holding spec.json) of a results directory."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / rundir.SPEC).is_file())
