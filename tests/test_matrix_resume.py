"""A sweep killed at any moment (kill -9, Ctrl-C) loses no finished run and recomputes none."""
import io
import os
import signal
import subprocess
import sys
import time

import pytest

from lib.configuration import config as lib_config
from lib.lifecycle import rundir
from test_matrix import plan as plan_file, state as run_state, sweep
from test_matrix_fakes import LENET_COMPARE, fake_engine, launches, write_config

DRIVER = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from pathlib import Path
from lib.configuration import config as lib_config
from test_matrix import sweep
from test_matrix_fakes import fake_engine
tmp = Path({tmp!r})
sys.exit(sweep.run(lib_config.load(tmp / "test.config"), command=fake_engine(tmp), make_report=False, cores=2))
"""


def start_sweep(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(lib_config.ROOT), tests=str(lib_config.ROOT / "tests"), tmp=str(tmp_path)))
    env = dict(os.environ, FAKE_STEP_S="0.25", FAKE_STEPS="6")
    return subprocess.Popen([sys.executable, str(driver)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until_midway(results, deadline_s=60):
    """Until some run has completed and another is part-way (a checkpoint written, not finished)."""
    end = time.time() + deadline_s
    while time.time() < end:
        states = {d.name: rundir.read_status(d) or {} for d in plan_file.run_dirs(results)}
        done = [n for n, s in states.items() if s.get("state") == "completed"]
        # steps 1-3 of 6 at 0.25 s each: far enough from the end not to finish before the kill
        midway = [n for n, s in states.items() if s.get("state") == "running" and 1 <= (s.get("step") or 0) <= 3]
        if done and midway:
            return states
        time.sleep(0.05)
    raise AssertionError("the sweep never reached a state with finished and half-finished runs")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return run_state._alive(pid, None)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_killed_sweep_resumes_without_recomputing_finished_runs(tmp_path, how, monkeypatch):
    monkeypatch.setenv("FAKE_STEPS", "6")
    cfg = write_config(tmp_path, LENET_COMPARE)
    results = tmp_path / "results"
    proc = start_sweep(tmp_path)
    try:
        states = wait_until_midway(results)
        proc.send_signal(how)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the runs it had started die with it (kill -9: via PR_SET_PDEATHSIG; Ctrl-C: the sweep stops them)
    orphans = [s["pid"] for s in states.values() if s.get("state") == "running"]
    end = time.time() + 10
    while any(alive(pid) for pid in orphans) and time.time() < end:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in orphans)
    finished = {d.name for d in plan_file.run_dirs(results) if (rundir.read_status(d) or {}).get("state") == "completed"}
    interrupted = [d.name for d in plan_file.run_dirs(results) if run_state.classify(d)[0] == run_state.INTERRUPTED]
    # Where each interrupted run's checkpoint stood when the sweep died. A run the executor had
    # only just started (its neighbour finished one poll later) may have none yet: it rightly
    # starts over. Expecting every interrupted run to resume was the race behind a rare failure.
    saved = {name: (rundir.read_json(results / name / "last.json") or {}).get("step", 0) for name in interrupted}
    assert finished and any(saved.values()), saved

    out = io.StringIO()
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=out, make_report=False, cores=2) == 0, out.getvalue()
    for run_dir in plan_file.run_dirs(results):
        assert rundir.read_status(run_dir)["state"] == "completed"
        if run_dir.name in finished:
            assert len(launches(run_dir)) == 1, f"{run_dir.name} was recomputed"
    for name in interrupted:
        fake = rundir.read_json(results / name / "summary.json")["fake"]
        assert fake["resumed_from"] == saved[name], f"{name} did not resume from its checkpoint"
        steps = [m["step"] for m in rundir.read_metrics(results / name)]
        assert steps == sorted(set(steps)) and steps[-1] == 6
