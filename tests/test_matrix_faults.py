"""Sweep and single-run faults: timeouts after completion, fixed configs, paths, leftovers, reasons."""
import io
import os
import subprocess
import sys
import time

import pytest

from lib.lifecycle import launch, rundir
from test_matrix import executor as executor_module, single, sweep
from test_matrix.expand import expand
from test_matrix_fakes import LENET_COMPARE, fake_engine, launches, linger_after_completing, write_config
from test_matrix_sweep import DIVERGING_SGD



def run_sweep(cfg, tmp_path, command=None, **kw):
    out = io.StringIO()
    rc = sweep.run(cfg, command=command or fake_engine(tmp_path), out=out, cores=2, make_report=False, **kw)
    return rc, out.getvalue()


def test_the_timeout_never_marks_a_completed_run_failed(tmp_path):
    run_dir = tmp_path / "results" / "one"
    job = executor_module.Job("one", run_dir)
    ex = executor_module.Executor(timeout_s=1, command=linger_after_completing(tmp_path, 30), poll_s=0.05)
    started = time.time()
    (outcome,) = ex.run([job])
    assert outcome.state == "completed", outcome
    assert rundir.read_status(run_dir)["state"] == "completed"
    assert time.time() - started < 25, "the lingering process was not stopped at the timeout"


def test_rerun_failed_after_fixing_the_config_runs_the_fixed_run(tmp_path):
    cfg = write_config(tmp_path, DIVERGING_SGD)
    assert run_sweep(cfg, tmp_path)[0] == 1
    results = tmp_path / "results"
    adamw = {d: launches(d) for d in results.iterdir() if "adamwprune" in d.name}
    fixed = cfg.replace(SGD_LEARNING_RATE=0.1)
    rc, text = run_sweep(fixed, tmp_path, rerun="failed")
    assert rc == 0, text
    sgd_runs = [r for r in expand(fixed) if r.optimizer == "sgd"]
    for spec in sgd_runs:
        assert rundir.read_status(results / spec.run_id)["state"] == "completed"
    for run_dir, before in adamw.items():  # untouched by the SGD fix: not run again
        assert launches(run_dir) == before


def single_run_over_another_config(tmp_path, failed_at_step: int):
    """(config, spec, its run directory), the directory holding another config's run that
    failed at `failed_at_step` (as an older run ID scheme or a hand-edited spec.json could)."""
    cfg = write_config(tmp_path, "CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y")
    (spec,) = expand(cfg)
    run_dir = tmp_path / "runs" / spec.run_id
    rundir.prepare(run_dir, expand(cfg.replace(LENET5_LEARNING_RATE=0.5))[0], None)
    rundir.write_status(run_dir, rundir.FAILED, reason="bad value", step=failed_at_step)
    return cfg, spec, run_dir


def test_a_corrected_config_replaces_a_run_that_never_trained(tmp_path):
    cfg, spec, run_dir = single_run_over_another_config(tmp_path, 0)
    out = io.StringIO()
    assert single.run(cfg, spec, command=fake_engine(tmp_path), out=out) == 0
    assert "never trained a step" in out.getvalue() and launches(run_dir) == ["--fresh"]
    assert rundir.read_json(run_dir / "spec.json")["optimizer_args"]["lr"] == pytest.approx(1e-3)


def test_a_run_that_trained_is_not_replaced_by_another_config(tmp_path):
    cfg, spec, _run_dir = single_run_over_another_config(tmp_path, 40)
    with pytest.raises(sweep.SweepRefused, match="holds a run of another config"):
        single.run(cfg, spec, command=fake_engine(tmp_path), out=io.StringIO())


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_output_dir_is_refused(tmp_path, value):
    cfg = write_config(tmp_path, "CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y").replace(OUTPUT_DIR=value)
    with pytest.raises(sweep.SweepRefused, match="CONFIG_OUTPUT_DIR is empty"):
        single.run(cfg, expand(cfg)[0], command=fake_engine(tmp_path), out=io.StringIO())


def test_home_is_expanded_and_leaving_the_tree_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sweep.resolve("~/runs", "X") == tmp_path / "home" / "runs"
    outside = os.path.relpath(tmp_path / "elsewhere", sweep.lib_config.ROOT)
    cfg = write_config(tmp_path, "CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y").replace(OUTPUT_DIR=outside)
    out = io.StringIO()
    assert single.run(cfg, expand(cfg)[0], command=fake_engine(tmp_path), out=out) == 0
    assert f"leads outside it, to {tmp_path / 'elsewhere'}" in out.getvalue()
    assert sweep.outside_note("runs-x", sweep.resolve("runs-x")) is None


def test_an_interrupted_run_says_why_in_the_next_plan(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    spec = expand(cfg)[0]
    run_dir = rundir.prepare(tmp_path / "results" / spec.run_id, spec, None)
    rundir.write_json(run_dir / rundir.STATUS, {"state": "running", "pid": dead.pid, "updated": time.time()})
    rc, text = run_sweep(cfg, tmp_path, dry_run=False)
    line = next(l for l in text.splitlines() if spec.run_id in l)
    assert "interrupted" in line and f"pid {dead.pid}" in line and "resumes it from its last checkpoint" in line


def test_a_launch_removes_temporaries_a_killed_run_left(tmp_path):
    from tests.test_engine_support import lenet_spec

    spec = lenet_spec(LENET5_EPOCHS=1)
    run_dir = rundir.prepare(tmp_path / "run", spec, None)
    rundir.write_status(run_dir, rundir.COMPLETED, step=62)
    strays = [run_dir / ".curves.png.k2j3h4", run_dir / ".summary.json.x9", run_dir / ".last.pt.abc"]
    for stray in strays:
        stray.write_bytes(b"half")
    assert launch.run(run_dir, progress=False) == 0  # already completed: skipped, but tidied
    assert not any(p.exists() for p in strays)


def test_a_sweep_takes_over_a_stale_directory_that_never_trained(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    spec = expand(cfg)[0]
    run_dir = rundir.prepare(tmp_path / "results" / spec.run_id, expand(cfg.replace(LENET5_LEARNING_RATE=0.5))[0],
                             None)
    rundir.write_status(run_dir, rundir.FAILED, reason="bad value", step=0)
    rc, text = run_sweep(cfg, tmp_path)
    assert rc == 0 and "never trained a step" in text, text
    assert launches(run_dir) == ["--fresh"] and rundir.read_status(run_dir)["state"] == "completed"
