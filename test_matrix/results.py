"""Read finished run directories (never logs) into one row per run.

Which runs belong to a results directory is decided by its plan (matrix.json, written by
the sweep from the config it ran): a run directory that is not in the plan, or whose
spec.json differs from the planned spec, comes from another config and is left out by
name instead of being mixed into the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lib.configuration import model_registry, vocabulary
from lib.lifecycle import rundir
from test_matrix import plan as plan_file
from test_matrix import state as run_state
from test_matrix.expand import config_id

# The quality metrics models report and which direction is better (one table, the registry's).
HIGHER_IS_BETTER = model_registry.HIGHER_IS_BETTER


@dataclass
class Run:
    run_id: str
    run_dir: Path
    spec: dict
    state: str
    reason: str | None
    summary: dict | None
    hparams: dict | None
    metrics: list[dict] = field(default_factory=list)

    @property
    def config_id(self) -> str:
        return config_id(self)


@dataclass
class Selection:
    runs: list[Run]                          # runs of the plan found on disk
    excluded: list[tuple[str, str]]          # (run_id, why it is not part of this report)
    missing: list[str]                       # planned runs without a directory yet
    notes: list[str]                         # one-line remarks for the report header
    plan: dict | None = None


def load_run(path: Path) -> Run:
    spec = vocabulary.upgrade_spec(rundir.read_json(path / rundir.SPEC) or {})
    state, reason = run_state.classify(path)
    summary = rundir.read_json(path / rundir.SUMMARY)
    if state == run_state.COMPLETED and not isinstance(summary, dict):
        state, reason = run_state.FAILED, "status says completed but summary.json is missing or unreadable"
    return Run(run_id=spec.get("run_id", path.name), run_dir=path, spec=spec, state=state, reason=reason,
               summary=summary if isinstance(summary, dict) else None,
               hparams=rundir.read_hparams(path), metrics=rundir.read_metrics(path))


def select(results_dir: Path | str, current_specs: dict[str, dict] | None = None) -> Selection:
    """The runs of a results directory that its plan expects, and what was left out and why.

    `current_specs` (run_id -> spec dict of the current .config) only adds a note when the
    directory was run with another config; the plan decides what is reported.
    """
    results_dir = Path(results_dir)
    plan = plan_file.read_plan(results_dir)
    found = [load_run(p) for p in plan_file.run_dirs(results_dir)]
    notes, excluded = [], []
    if plan is None:
        notes.append("no matrix.json here (not a sweep directory): every run found is reported")
        return Selection(found, [], [], notes)
    expected = plan_file.planned_specs(plan)
    kept = []
    for run in found:
        if run.run_id not in expected:
            excluded.append((run.run_id, "not in this directory's plan: left from an older config"))
            continue
        why = plan_file.difference(run.spec, expected[run.run_id])
        if why:
            excluded.append((run.run_id, f"made with another config ({why})"))
        else:
            kept.append(run)
    order = {run_id: index for index, run_id in enumerate(expected)}
    kept.sort(key=lambda run: order[run.run_id])  # the plan's order: configurations stay together
    on_disk = {run.run_id for run in found}
    missing = [run_id for run_id in expected if run_id not in on_disk]
    compared = current_specs is not None
    current_specs = current_specs or {}
    extra = [i for i in current_specs if i not in expected]
    changed = [i for i in current_specs if i in expected and plan_file.difference(expected[i], current_specs[i])]
    gone = [i for i in expected if i not in current_specs] if compared else []
    if extra or changed or gone:
        detail = "; ".join(part for part in (
            f"{len(extra)} runs of it are not in this sweep (e.g. {extra[0]})" if extra else "",
            f"{len(changed)} runs differ (e.g. {changed[0]}: {plan_file.difference(expected[changed[0]], current_specs[changed[0]])})"
            if changed else "",
            f"{len(gone)} runs here are not in it (e.g. {gone[0]})" if gone else "") if part)
        notes.append(f"the current .config asks for a different matrix than this sweep ran: {detail}; "
                     "run 'make test-matrix' to bring the results up to date")
    return Selection(kept, excluded, missing, notes, plan)


def number(value) -> float | None:
    """A finite float, or None (JSON null, missing, NaN, a non-number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric_value(entry, metric: str) -> float | None:
    """summary['final'] / ['best'] as a number: either the value itself or a dict holding it."""
    if isinstance(entry, dict):
        return number(entry.get(metric, entry.get("value")))
    return number(entry)


def flat_numbers(tree, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as {'a.b': value} (the run's memory accounting)."""
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flat_numbers(value, f"{prefix}{key}."))
    elif number(tree) is not None:
        out[prefix[:-1]] = number(tree)
    return out
