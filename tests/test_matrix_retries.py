"""Runs whose process or machine died: heartbeats, abandoned runs, and retries that resume."""
import io
import os
import time

from lib.lifecycle import heartbeat, rundir
from test_matrix import executor_api, state as run_state, sweep
from test_matrix_fakes import LENET_COMPARE, fake_engine, launches, run_path, stem, write_config


def status_from_elsewhere(run_dir, **fields):
    rundir.write_json(run_dir / rundir.STATUS, {"state": "running", "pid": 1, "host": "some-other-node",
                                                 "updated": time.time(), **fields})


def test_a_run_on_another_host_is_running_while_its_heartbeat_is_recent(tmp_path):
    status_from_elsewhere(tmp_path, heartbeat=time.time() - 5)
    state, reason = run_state.classify(tmp_path)
    assert state == run_state.RUNNING and "some-other-node" in reason
    status_from_elsewhere(tmp_path, heartbeat=time.time() - heartbeat.STALE_S - 5)
    state, reason = run_state.classify(tmp_path)
    assert state == run_state.INTERRUPTED and reason.startswith("abandoned: no heartbeat from some-other-node")
    # no heartbeat at all (an engine without one): judged by when the status was written
    status_from_elsewhere(tmp_path, updated=time.time() - heartbeat.STALE_S - 5)
    assert run_state.classify(tmp_path)[0] == run_state.INTERRUPTED
    status_from_elsewhere(tmp_path, heartbeat=0)  # stopped by the task that ran it
    assert run_state.classify(tmp_path)[0] == run_state.INTERRUPTED


def test_the_heartbeat_beats_only_for_the_running_run_of_this_process(tmp_path):
    rundir.write_status(tmp_path, rundir.RUNNING, step=3)
    with heartbeat.beating(tmp_path, interval_s=0.05):
        first = rundir.read_status(tmp_path)["heartbeat"]
        time.sleep(0.3)
        later = rundir.read_status(tmp_path)["heartbeat"]
        assert later > first and rundir.read_status(tmp_path)["step"] == 3
        rundir.write_status(tmp_path, rundir.COMPLETED, step=9)
        time.sleep(0.2)
    status = rundir.read_status(tmp_path)
    assert status["state"] == "completed" and "heartbeat" not in status  # never written back to running
    status_from_elsewhere(tmp_path)
    assert heartbeat.beat(tmp_path) is False  # another process's run: not ours to refresh
    assert "heartbeat" not in rundir.read_status(tmp_path)


def test_only_runs_whose_process_died_are_retryable(tmp_path):
    def failed(**fields):
        rundir.write_status(tmp_path, rundir.FAILED, **fields)
        return executor_api.retryable(tmp_path)

    assert failed(reason="killed by SIGKILL (out of memory?)", recorded_by="test_matrix")
    assert failed(reason="exited with status 17 without recording why", recorded_by="test_matrix")
    assert failed(reason="lost its Ray worker or node (NodeDiedError); resumable", recorded_by="test_matrix")
    assert failed(reason="interrupted (SIGTERM) at step 40; last.pt saved, run again to resume", step=40)
    assert not failed(reason="loss is NaN at step 2", step=2)
    assert not failed(reason="missing dataset", exit_code=2)
    assert not failed(reason="timed out after 5 s (CONFIG_TEST_MATRIX_RUN_TIMEOUT)", recorded_by="test_matrix")
    assert not failed(reason="RuntimeError: boom", exit_code=1)
    assert not failed(reason="killed by SIGKILL (after completing)", recorded_by="test_matrix")
    rundir.write_status(tmp_path, rundir.COMPLETED)
    assert not executor_api.retryable(tmp_path)


def test_a_killed_run_is_retried_and_resumes_a_diverging_one_is_not(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, LENET_COMPARE + 'CONFIG_OPTIMIZER_SGD=y\nCONFIG_SGD_LEARNING_RATE="1e6"\n'
                                                'CONFIG_TEST_MATRIX_RETRIES=2').replace(TEST_MATRIX_SEEDS=1)
    monkeypatch.setenv("FAKE_DIE_ONCE", "lenet5-adamw-none-seed1")
    out = io.StringIO()
    rc = sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, make_report=False)
    text = out.getvalue()
    results = tmp_path / "results"
    assert rc == 1, text  # the diverging SGD run fails
    died = run_path(results, "lenet5-adamw-none-seed1")
    assert rundir.read_status(died)["state"] == "completed"
    assert launches(died) == ["", ""] and "retry   lenet5-adamw-none-seed1" in stem(text) and "killed by SIGKILL" in text
    assert rundir.read_json(died / "summary.json")["fake"]["resumed_from"] == 2
    assert launches(run_path(results, "lenet5-sgd-none-seed1")) == [""]  # NaN: would fail again, not retried
    assert "loss is NaN" in rundir.read_status(run_path(results, "lenet5-sgd-none-seed1"))["reason"]


def test_retries_zero_leaves_a_killed_run_failed(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, LENET_COMPARE + "CONFIG_TEST_MATRIX_RETRIES=0").replace(TEST_MATRIX_SEEDS=1)
    monkeypatch.setenv("FAKE_DIE_ONCE", "lenet5-adamw-none-seed1")
    out = io.StringIO()
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, make_report=False) == 1
    died = run_path(tmp_path / "results", "lenet5-adamw-none-seed1")
    assert launches(died) == [""] and "killed by SIGKILL" in rundir.read_status(died)["reason"]
    assert os.path.exists(died / "last.json")
    monkeypatch.delenv("FAKE_DIE_ONCE")
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, make_report=False, rerun="failed") == 0
    assert launches(died) == ["", ""]  # resumed from its checkpoint, not started over (--fresh)
    assert rundir.read_json(died / "summary.json")["fake"]["resumed_from"] == 2
