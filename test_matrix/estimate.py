"""Expected run times from finished runs (their summary.json), for plans and ETAs.

A pending run is matched with the most similar finished run: the same spec apart from
the seed, else the same model, budget and pruning method, else the same model and
budget. Times measured with a different thread split are only a guide; the plan says so.
"""
from __future__ import annotations

import json
from statistics import mean

from lib.configuration import vocabulary
from lib.lifecycle import rundir
from test_matrix import plan as plan_file

_IGNORED = ("seed", "run_id")


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)  # spec.json is written with sorted keys


def _same_spec(spec: dict) -> str:
    return _key({k: v for k, v in spec.items() if k not in _IGNORED})


def _same_budget(spec: dict) -> str:
    return _key([spec.get(k) for k in ("model", "epochs", "max_iters", "budget_factor", "batch",
                                       "model_options", "runtime")])


_TIERS = (_same_spec, lambda s: _same_budget(s) + str(s.get("pruning")), _same_budget)


def history(dirs) -> list[tuple[dict, float]]:
    """(spec dict, seconds) of every completed run under the given results/output directories."""
    found = []
    for root in dirs:
        for run in plan_file.run_dirs(root):
            if (rundir.read_status(run) or {}).get("state") != rundir.COMPLETED:
                continue
            summary = rundir.read_json(run / rundir.SUMMARY)
            seconds = summary.get("total_time_s") if isinstance(summary, dict) else None
            spec = rundir.read_json(run / rundir.SPEC)
            if isinstance(seconds, (int, float)) and seconds > 0 and isinstance(spec, dict):
                found.append((vocabulary.upgrade_spec(spec), float(seconds)))
    return found


def estimates(specs: dict[str, dict], past: list[tuple[dict, float]]) -> dict[str, float]:
    """run_id -> expected seconds, for the runs some past run resembles."""
    tables = [{} for _ in _TIERS]
    for spec, seconds in past:
        for table, key in zip(tables, _TIERS):
            table.setdefault(key(spec), []).append(seconds)
    result = {}
    for run_id, spec in specs.items():
        for table, key in zip(tables, _TIERS):
            if key(spec) in table:
                result[run_id] = mean(table[key(spec)])
                break
    return result


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of running the durations on `slots` workers, longest first (LPT)."""
    loads = [0.0] * max(1, slots)
    for seconds in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += seconds
    return max(loads)
