"""Fair time budgets: probe once per comparison, give every run the same step count.

A run with TIME_BUDGET_SECONDS alone times its own steps and fits its schedule to them,
so in a sweep a slower method would train fewer steps than a faster one. Instead the
sweep first probes each configuration of a comparison once (`lib.lifecycle.launch --probe`, in
the executor, so the probes share the machine as the runs will), takes the slowest:
the fewest base steps that fit the budget, and writes that step count into every run
directory (shared-budget.json) before the runs start. bitter2 keeps its 1.21x (flagged
as an unequal budget in the report); every other run trains exactly the same steps.

A comparison is every run of one model (the runs test_matrix/expand.budget_of keeps
equal). The probes live in RESULTS/.probes/ and the decision in RESULTS/time-budget.json,
which a later sweep of the same config reuses, so resumed and re-run sweeps keep the
step count they started with.
"""
from __future__ import annotations

from pathlib import Path

from lib.lifecycle import rundir
from test_matrix import plan as plan_file
from test_matrix.executor import Job
from test_matrix.expand import config_id

PROBES = ".probes"
DECISION = "time-budget.json"


class BudgetError(Exception):
    """The shared budget cannot be set; one line naming the cause and the fix."""


def comparisons(runs) -> dict[str, list]:
    """model -> its time-budgeted runs (single-process ones: a probe runs in one process)."""
    groups: dict[str, list] = {}
    for run in runs:
        if run.runtime.get("time_budget_s") and run.batch.get("ddp_nproc", 1) == 1:
            groups.setdefault(run.model, []).append(run)
    return groups


def representatives(group) -> list:
    """One run per configuration: seeds train at the same speed."""
    return list({config_id(r): r for r in reversed(group)}.values())[::-1]


def shared_steps(probes: dict[str, dict]) -> tuple[int, str]:
    """(base steps every run gets, the configuration that limits them) from the probes."""
    base = {cid: int(p["fit_steps"] / p["budget_factor"]) for cid, p in probes.items()}
    slowest = min(base, key=lambda cid: (base[cid], cid))
    return base[slowest], slowest


def _probe(group, results_dir: Path, executor, config_source) -> dict[str, dict]:
    reps = representatives(group)
    dirs = {config_id(r): results_dir / PROBES / config_id(r) for r in reps}
    for run in reps:
        directory = dirs[config_id(run)]
        for name in (rundir.PROBE, rundir.STATUS):
            (directory / name).unlink(missing_ok=True)
        rundir.prepare(directory, run, config_source)
    executor.run([Job(f"probe {cid}", d, ["--probe"], 1) for cid, d in dirs.items()])
    probes = {}
    for cid, directory in dirs.items():
        found = rundir.read_json(directory / rundir.PROBE)
        if not isinstance(found, dict):
            why = (rundir.read_status(directory) or {}).get("reason") or "no probe.json written"
            raise BudgetError(f"the time-budget probe of {cid} failed ({why}); see {directory}")
        probes[cid] = found
    return probes


def share(runs, todo, results_dir: Path, executor, config_source, out) -> dict:
    """Probe each comparison once and write shared-budget.json into the run directories of
    `todo`; the decision per model ({} when no run has a time budget)."""
    groups = comparisons(runs)
    if not groups:
        return {}
    path = results_dir / DECISION
    saved = rundir.read_json(path) if path.exists() else None
    decision = saved if isinstance(saved, dict) else {}
    for model, group in groups.items():
        ids = sorted({config_id(r) for r in group})
        budget = group[0].runtime["time_budget_s"]
        known = decision.get(model)
        if not (isinstance(known, dict) and known.get("configs") == ids and known.get("time_budget_s") == budget):
            probes = _probe(group, results_dir, executor, config_source)
            steps, slowest = shared_steps(probes)
            if steps < 1:
                raise BudgetError(f"a time budget of {budget} s fits no optimizer step of {slowest} "
                                  f"({probes[slowest]['step_s']:.3g} s each); raise CONFIG_TIME_BUDGET_SECONDS")
            decision[model] = {"time_budget_s": budget, "base_steps": steps, "probed": slowest, "configs": ids,
                               "probes": probes}
            rundir.write_json(path, decision)
        known = decision[model]
        limit = known["probes"][known["probed"]]
        print(f"  time budget {budget} s: every {model} run trains {known['base_steps']} steps (the most that "
              f"{known['probed']} fits at {limit['step_s'] * 1000:.0f} ms/step)", file=out)
        todo_ids = {spec.run_id for spec, _flags in todo}
        for run in group:
            if run.run_id not in todo_ids:
                continue
            planned = known["probes"][config_id(run)]["total_steps"]
            shared = {"steps": min(planned, int(round(known["base_steps"] * run.budget_factor))),
                      "step_s": limit["step_s"], "eval_s": limit["eval_s"], "probe_s": 0.0, "shared": True,
                      "probed": known["probed"], "base_steps": known["base_steps"]}
            rundir.write_json(plan_file.run_dir(results_dir, run.run_id) / rundir.SHARED_BUDGET, shared)
    return decision

