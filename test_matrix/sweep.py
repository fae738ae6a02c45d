"""A sweep: expand the config, check the results directory, run what is left, report.

Re-running the same sweep is always safe: completed runs are skipped, interrupted ones
resume through the engine, failed ones wait for `--rerun failed`. Nothing is decided
from log text; every state comes from the runs' status.json (test_matrix.state).
"""
from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path

from lib import gpus as lib_gpus
from lib.configuration import config as lib_config, paths
from lib.lifecycle import rundir
from lib.lifecycle.storage_errors import describe as describe_storage_error, is_storage_error
from lib.tracking import child as tracking
from test_matrix import estimate, executor_api, plan as plan_file, state as run_state, time_budget
from test_matrix.comparisons import detect_differences
from test_matrix.executor import Job, default_command
from test_matrix.expand import config_id, expand, fairness_problems
from test_matrix.lock import Busy, SweepLock
from test_matrix.progress import Progress, fmt_duration

RERUN_CHOICES = ("failed",)


class SweepRefused(Exception):
    """Bad input or a results directory the sweep must not touch; one line says why and what to do."""


def main(prefix: str, resume_hint: str, body) -> int:
    """An entry point: body(config) with bad input (exit 2) and Ctrl-C (exit 130) as one line each."""
    try:
        return body(lib_config.load())
    except (lib_config.ConfigError, SweepRefused) as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; finished runs are kept, {resume_hint}", file=sys.stderr)
        return 130
    except OSError as exc:  # the output directory is read-only, full, or a file
        if not is_storage_error(exc):
            raise
        print(f"{prefix}: {describe_storage_error(exc)}", file=sys.stderr)
        return 2


def resolve(path: str | Path, symbol: str = "the directory setting") -> Path:
    """Config paths are relative to the project root, where .config lives; `~` is the home directory."""
    text = str(path).strip() if path is not None else ""
    if not text:
        raise SweepRefused(f"{symbol} is empty, which would write into the project itself; set a directory "
                           "such as 'runs' in 'make menuconfig'")
    return paths.from_root(text)


def outside_note(value: str, resolved: Path) -> str | None:
    """A line for a relative setting that climbs out of the project ('../..'), else None."""
    if Path(str(value).strip()).expanduser().is_absolute():
        return None
    try:
        resolved.resolve().relative_to(lib_config.ROOT.resolve())
        return None
    except ValueError:
        return f"note: {value!r} is relative to the project and leads outside it, to {resolved.resolve()}"


def results_dir_of(cfg) -> Path:
    return resolve(cfg.TEST_MATRIX_RESULTS_DIR, "CONFIG_TEST_MATRIX_RESULTS_DIR")


def detect_gpus(runs) -> list[str]:
    """GPU ids to hand out, one per run; empty when the runs are for the CPU or none exists."""
    if all(r.runtime.get("device") == "cpu" for r in runs):
        return []
    return lib_gpus.ids()


def check(cfg, results_dir: Path, runs):
    """The runs (`cfg` expanded), their specs and the IDs of stale directories to take over,
    after refusing unfair expansions and stale directories that hold trained steps."""
    detect_differences(cfg)  # a bad value is refused before any run, not after the last one
    problems = fairness_problems(runs)
    if problems:
        raise SweepRefused(f"the expansion is not a fair comparison ({problems[0]}); this is a bug in "
                           "test_matrix/expand.py, please report it")
    specs = {r.run_id: plan_file.spec_json(r) for r in runs}
    stale = plan_file.stale_runs(results_dir, specs)
    # A stale directory that never trained a step (it failed on a bad value) has nothing to
    # lose: the current config takes it over (--fresh moves its files aside).
    replace = {run_id for run_id, _why in stale if rundir.never_trained(plan_file.run_dir(results_dir, run_id))
               and run_state.classify(plan_file.run_dir(results_dir, run_id))[0] != run_state.RUNNING}
    stale = [(run_id, why) for run_id, why in stale if run_id not in replace]
    if stale:
        run_id, why = stale[0]
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        raise SweepRefused(f"{results_dir}/{run_id}{more} came from a different config ({why}); set another "
                           "TEST_MATRIX_RESULTS_DIR, or delete those run directories to redo them")
    return runs, specs, replace


def _schedule_lines(runs) -> list[str]:
    lines = []
    for model in dict.fromkeys(r.model for r in runs):
        group = [r for r in runs if r.model == model]
        first = group[0]
        budget = f"{first.epochs} epochs" if first.epochs else f"{first.max_iters} iterations"
        pruned = [r for r in group if r.pruning != "none"]
        if pruned:
            p = pruned[0]
            ramp = f"step {p.ramp_end}" if p.ramp_end else "3/4 of the run"
            lines.append(f"{model}: budget {budget}; every pruned run: warm-up {p.warmup_end} steps, ramp end "
                         f"{ramp}, masks every {p.frequency} steps, {p.shape}, {p.scope}")
        else:
            lines.append(f"{model}: budget {budget}; dense only")
        for r in group:
            if r.unequal_budget and r.seed == first.seed:
                lines.append(f"  unequal budget (flagged in the report): {config_id(r)} trains x{r.budget_factor} steps")
    return lines


def print_plan(runs, states, executor: executor_api.RunExecutor, est: dict[str, float], results_dir: Path, todo, out,
               every_run: bool = True) -> None:
    configs = len({config_id(r) for r in runs})
    print(f"Test matrix: {len(runs)} runs ({configs} configurations x {len(runs) // max(configs, 1)} seeds) "
          f"-> {results_dir}", file=out)
    for line in _schedule_lines(runs):
        print(f"  {line}", file=out)
    print(f"  executor: {executor.describe(len(todo))}; per-run timeout "
          f"{fmt_duration(executor.timeout_s) if executor.timeout_s else 'none'}", file=out)
    counts = Counter(state for state, _ in states.values())
    print("  " + ", ".join(f"{counts[s]} {s}" for s in (run_state.COMPLETED, run_state.FAILED, run_state.INTERRUPTED,
                                                       run_state.RUNNING, run_state.PENDING) if counts[s])
          + f"; {len(todo)} to run now", file=out)
    width = max(len(r.run_id) for r in runs)
    for r in runs:
        state, reason = states[r.run_id]
        if not every_run and state != run_state.INTERRUPTED:
            continue  # a real sweep names only the runs it resumes, and why they stopped
        guess = f"~{fmt_duration(est[r.run_id])}" if r.run_id in est and r in todo else ""
        note = f"  ({reason})" if reason and state in (run_state.FAILED, run_state.RUNNING, run_state.INTERRUPTED) else ""
        print(f"  {r.run_id:<{width}}  {state:<11} {guess}{note}", file=out)
    known = [est[r.run_id] for r in todo if r.run_id in est]
    if not todo:
        print("Estimated time: nothing to run.", file=out)
    elif not known:
        print(f"Estimated time: unknown ({len(todo)} runs to do, no finished run of this kind yet).", file=out)
    else:
        missing = len(todo) - len(known)
        total = estimate.makespan(known, min(executor.slots, len(todo)))
        print(f"Estimated time: {'at least ' if missing else ''}~{fmt_duration(total)} for {len(todo)} runs "
              f"(from past runs{f'; {missing} without an estimate' if missing else ''}; runs that share the "
              "CPU differently may take longer).", file=out)


def gpus_needed(spec, gpus: list[str]) -> int:
    """GPUs one run occupies: its DDP process count (0 = every GPU), else one."""
    nproc = spec.batch.get("ddp_nproc")
    if nproc == 0:
        return max(1, len(gpus))
    return max(1, int(nproc or 1))


def _states(runs, results_dir: Path) -> dict[str, tuple[str, str | None]]:
    return {r.run_id: run_state.classify(plan_file.run_dir(results_dir, r.run_id)) for r in runs}


def _to_run(runs, states, rerun: str | None, replace=frozenset()):
    """The runs to launch now, with their launch flags."""
    todo = []
    for r in runs:
        state, reason = states[r.run_id]
        if r.run_id in replace:
            todo.append((r, ["--fresh"]))
        elif rerun == "failed":
            if state in (run_state.PENDING, run_state.INTERRUPTED):
                # A failed run fixed in .config is a new run (another settings digest): RERUN=failed
                # runs it too, and whatever else is unfinished.
                todo.append((r, []))
            elif state == run_state.FAILED:
                # Start a failed run over (the engine moves its old outputs aside), except one
                # that was cut short (or killed, or lost with its node), which goes on from its checkpoint.
                cut_short = any(word in (reason or "") for word in ("timed out", "interrupted", "killed by", "lost its"))
                todo.append((r, [] if cut_short else ["--fresh"]))
        elif state in (run_state.PENDING, run_state.INTERRUPTED):
            todo.append((r, []))
    return todo


def run(cfg, *, results_dir: Path | None = None, rerun: str | None = None, dry_run: bool = False,
        command=default_command, gpus: list[str] | None = None, cores: int | None = None,
        make_report: bool = True, out=None, bar: bool | None = None, runs=None) -> int:
    """Run the sweep `cfg` asks for. 0: every run completed; 1: some failed or were left undone.

    `runs` is `cfg` expanded (test_matrix.expand.expand) by the entry point, which expands a
    config once per command and hands the list down; None expands it here.

    Raises SweepRefused (and lib.configuration.config.ConfigError) for bad input; nothing is touched then.
    """
    out = out or sys.stdout
    if rerun is not None and rerun not in RERUN_CHOICES:
        raise SweepRefused(f"RERUN={rerun} is not understood; use RERUN=failed to rerun the failed runs")
    results_dir = Path(results_dir) if results_dir else results_dir_of(cfg)
    runs = expand(cfg) if runs is None else list(runs)
    runs, specs, replace = check(cfg, results_dir, runs)
    gpus = detect_gpus(runs) if gpus is None else gpus
    executor = executor_api.create(cfg, gpus=gpus, command=command, cores=cores, cwd=lib_config.ROOT)
    states = _states(runs, results_dir)
    todo = _to_run(runs, states, rerun, replace)
    est = estimate.estimates(specs, estimate.history([results_dir, resolve(cfg.OUTPUT_DIR, "CONFIG_OUTPUT_DIR")]))
    if dry_run:
        print_plan(runs, states, executor, est, results_dir, [r for r, _ in todo], out)
        print("Dry run: nothing was run or written.", file=out)
        return 0
    try:
        lock = SweepLock(results_dir).acquire()
    except Busy as exc:
        raise SweepRefused(str(exc)) from None
    previous_term = _term_as_interrupt()
    try:
        # Under the lock, states are final: nobody else can be writing these directories.
        runs, specs, replace = check(cfg, results_dir, runs)
        states = _states(runs, results_dir)
        todo = _to_run(runs, states, rerun, replace)
        try:
            executor.open(results_dir, [r for r, _ in todo])
        except executor_api.ExecutorRefused as exc:
            raise SweepRefused(str(exc)) from None
        plan_file.write_plan(results_dir, cfg, runs)
        for run_id in sorted(replace):
            print(f"  {run_id}: its directory held another config's run that never trained a step; "
                  "starting it over", file=out)
        note = outside_note(cfg.TEST_MATRIX_RESULTS_DIR, results_dir)
        if note:
            print(note, file=out)
        print_plan(runs, states, executor, est, results_dir, [r for r, _ in todo], out, every_run=False)
        for spec, _flags in todo:
            rundir.prepare(plan_file.run_dir(results_dir, spec.run_id), spec, Path(cfg.source))
        try:
            time_budget.share(runs, todo, results_dir, executor, Path(cfg.source), out)
        except time_budget.BudgetError as exc:
            raise SweepRefused(str(exc)) from None
        jobs = [Job(r.run_id, plan_file.run_dir(results_dir, r.run_id), flags, gpus_needed(r, gpus))
                for r, flags in todo]
        counts = Counter(state for state, _ in states.values())
        skipped_failed = counts[run_state.FAILED] if rerun != "failed" else 0
        progress = Progress(len(runs), counts[run_state.COMPLETED], skipped_failed, min(executor.slots, max(len(jobs), 1)),
                            {r.run_id: est[r.run_id] for r, _ in todo if r.run_id in est}, stream=out, bar=bar)
        progress.queue(j.run_id for j in jobs)
        executor.on_event = progress
        tracker = tracking.start(cfg, results_dir, {r.model for r in runs}, out=out)
        try:
            executor.run(jobs)
        finally:
            progress.close()
            if tracker is not None:
                tracker.stop()
        final = _states(runs, results_dir)
    finally:
        executor.close()
        signal.signal(signal.SIGTERM, previous_term)
        lock.release()
    rc = _conclude(final, results_dir, cfg, runs, make_report, out)
    if make_report:  # the verdicts exist only now, after the sweep's own follower stopped
        tracking.send_sweep_summary(cfg, results_dir, {r.model for r in runs}, out=out)
    return rc


def _term_as_interrupt():
    """Make SIGTERM behave like Ctrl-C so the runs' process groups are stopped too."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    return signal.signal(signal.SIGTERM, handler)


def _conclude(final: dict, results_dir: Path, cfg, runs, make_report: bool, out) -> int:
    counts = Counter(state for state, _ in final.values())
    failed = sorted(run_id for run_id, (state, _) in final.items() if state == run_state.FAILED)
    undone = sorted(run_id for run_id, (state, _) in final.items() if state not in (run_state.COMPLETED, run_state.FAILED))
    print(f"Sweep: {counts[run_state.COMPLETED]} of {len(final)} runs completed, {len(failed)} failed"
          + (f", {len(undone)} not finished ({', '.join(undone)})" if undone else "") + ".", file=out)
    for run_id in failed:
        print(f"  failed: {run_id}: {final[run_id][1]}", file=out)
    if failed:
        print("Rerun the failed runs (and any unfinished ones) with: make test-matrix RERUN=failed", file=out)
    if make_report:
        from test_matrix import report
        try:
            report.build(results_dir, current_cfg=cfg, out=out, current_runs=runs)
        except Exception as exc:  # the runs are safe on disk; the report can be redone alone
            print(f"report failed ({type(exc).__name__}: {exc}); retry with: make report DIR={results_dir}", file=out)
    return 1 if failed or undone else 0
