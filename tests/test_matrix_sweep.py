"""Sweeps with a fake engine: executors, failures, reruns, timeouts, locking, stale results."""
import io
import json

import pytest

from lib.lifecycle import rundir
from test_matrix import plan as plan_file, sweep
from test_matrix.lock import SweepLock
from test_matrix_fakes import DIVERGING_SGD, LENET_COMPARE, fake_engine, launches, run_path, stem, write_config



def run_sweep(cfg, tmp_path, **kw):
    out = io.StringIO()
    kw.setdefault("make_report", False)
    rc = sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, **kw)
    return rc, out.getvalue()


def summary(cfg, run_id):
    return rundir.read_json(run_path(sweep.results_dir_of(cfg), run_id) / "summary.json")


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE)
    rc, text = run_sweep(cfg, tmp_path, dry_run=True)
    assert rc == 0
    assert "8 runs (4 configurations x 2 seeds)" in text
    assert "lenet5-adamwprune-bitter7-state-s90-seed2" in stem(text) and "Estimated time: unknown" in text
    assert not (tmp_path / "results").exists()


def test_sweep_completes_then_skips_everything_and_estimates_from_past_runs(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE)
    rc, text = run_sweep(cfg, tmp_path, make_report=True)
    assert rc == 0, text
    results = tmp_path / "results"
    plan = json.loads((results / "matrix.json").read_text())
    assert stem([r["run_id"] for r in plan["runs"]][0]) == "lenet5-adamw-none-seed1" and len(plan["runs"]) == 8
    assert (results / "report.md").exists() and "[8/8] done" in text
    rc, text = run_sweep(cfg, tmp_path)
    assert rc == 0 and "Sweep: 8 of 8 runs completed" in text
    assert all(len(launches(d)) == 1 for d in plan_file.run_dirs(results))
    # another seed of the same configurations: the plan estimates it from the finished ones
    more = cfg.replace(TEST_MATRIX_SEEDS=3)
    rc, text = run_sweep(more, tmp_path, dry_run=True)
    assert "Estimated time: ~" in text and "4 runs" in text


def test_a_diverging_run_fails_alone_and_rerun_failed_repeats_only_it(tmp_path):
    cfg = write_config(tmp_path, DIVERGING_SGD).replace(TEST_MATRIX_SEEDS=1)
    rc, text = run_sweep(cfg, tmp_path)
    assert rc == 1
    results = tmp_path / "results"
    status = rundir.read_status(run_path(results, "lenet5-sgd-none-seed1"))
    assert status["state"] == "failed" and "NaN" in status["reason"]
    assert rundir.read_status(run_path(results, "lenet5-adamw-none-seed1"))["state"] == "completed"
    assert rundir.read_status(run_path(results, "lenet5-adamwprune-bitter7-state-s90-seed1"))["state"] == "completed"
    assert "RERUN=failed" in text
    # a plain rerun leaves the failure alone; RERUN=failed launches it, from scratch, and nothing else
    rc, _ = run_sweep(cfg, tmp_path)
    assert rc == 1 and launches(run_path(results, "lenet5-sgd-none-seed1")) == [""]
    rc, _ = run_sweep(cfg, tmp_path, rerun="failed")
    assert rc == 1
    assert launches(run_path(results, "lenet5-sgd-none-seed1")) == ["", "--fresh"]
    assert launches(run_path(results, "lenet5-adamw-none-seed1")) == [""]


def test_crash_without_status_and_timeout_are_recorded_as_failures(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1, TEST_MATRIX_RUN_TIMEOUT=1)
    monkeypatch.setenv("FAKE_CRASH", "lenet5-adamw-none-seed1")
    monkeypatch.setenv("FAKE_HANG", "lenet5-adamw-movement-s90-seed1")
    rc, text = run_sweep(cfg, tmp_path)
    assert rc == 1
    results = tmp_path / "results"
    crashed = rundir.read_status(run_path(results, "lenet5-adamw-none-seed1"))
    assert crashed["state"] == "failed" and "exited with status 3" in crashed["reason"]
    hung = rundir.read_status(run_path(results, "lenet5-adamw-movement-s90-seed1"))
    assert hung["state"] == "failed" and "timed out after 1 s" in hung["reason"]
    assert rundir.read_status(run_path(results, "lenet5-adamw-magnitude-s90-seed1"))["state"] == "completed"
    # a timed-out run is rerun from its checkpoint, a crashed one from scratch
    monkeypatch.delenv("FAKE_CRASH")
    monkeypatch.delenv("FAKE_HANG")
    assert run_sweep(cfg, tmp_path, rerun="failed")[0] == 0
    assert launches(run_path(results, "lenet5-adamw-movement-s90-seed1"))[-1] == ""
    assert launches(run_path(results, "lenet5-adamw-none-seed1"))[-1] == "--fresh"


def test_a_run_another_process_trains_is_left_alone(tmp_path, monkeypatch):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    monkeypatch.setenv("FAKE_BUSY", "lenet5-adamw-none-seed1")
    rc, text = run_sweep(cfg, tmp_path)
    assert rc == 1 and "not run: another process is training it" in text
    assert rundir.read_status(run_path(tmp_path / "results", "lenet5-adamw-none-seed1"))["state"] == "running"


def test_parallel_cpu_runs_overlap_and_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.1")
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    assert run_sweep(cfg, tmp_path)[0] == 0
    first, second = (summary(cfg, i)["fake"] for i in ("lenet5-adamw-none-seed1", "lenet5-adamw-magnitude-s90-seed1"))
    assert first["threads"] == second["threads"] == "1"
    assert first["start"] < second["end"] and second["start"] < first["end"]


def test_one_run_per_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_PARALLEL_JOBS=4)
    assert run_sweep(cfg, tmp_path, gpus=["0", "1"])[0] == 0
    runs = [summary(cfg, d.name)["fake"] for d in plan_file.run_dirs(tmp_path / "results")]
    assert {r["gpus"] for r in runs} == {"0", "1"}
    for a in runs:
        for b in runs:
            if a is not b and a["gpus"] == b["gpus"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], "two runs shared a GPU"


def test_a_second_sweep_on_the_same_results_is_refused(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE)
    with SweepLock(tmp_path / "results"):
        with pytest.raises(sweep.SweepRefused, match="in use by another sweep"):
            run_sweep(cfg, tmp_path)
    assert not (tmp_path / "results" / "matrix.json").exists()


def test_results_of_another_config_are_kept_beside_not_overwritten(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    assert run_sweep(cfg, tmp_path)[0] == 0
    results = tmp_path / "results"
    before = {d.name: (d / "summary.json").read_bytes() for d in plan_file.run_dirs(results)}
    changed = cfg.replace(LENET5_LEARNING_RATE=0.01)
    assert run_sweep(changed, tmp_path)[0] == 0
    # every run depends on the LR, so every run is a new one; the old ones are untouched
    after = {d.name: d for d in plan_file.run_dirs(results)}
    assert len(after) == 2 * len(before)
    for name, summary_bytes in before.items():
        assert (after[name] / "summary.json").read_bytes() == summary_bytes and launches(after[name]) == [""]


def test_a_spec_that_differs_under_the_same_run_id_is_refused(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    assert run_sweep(cfg, tmp_path)[0] == 0
    spec_file = run_path(tmp_path / "results", "lenet5-adamw-none-seed1") / "spec.json"
    spec = json.loads(spec_file.read_text())
    rundir.write_json(spec_file, dict(spec, optimizer_args=dict(spec["optimizer_args"], lr=0.5)))
    before = (tmp_path / "results" / "matrix.json").read_text()
    with pytest.raises(sweep.SweepRefused, match=r"optimizer_args.lr: 0.5 -> 0.001"):
        run_sweep(cfg, tmp_path)
    assert (tmp_path / "results" / "matrix.json").read_text() == before


def test_bad_rerun_value_is_refused(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE)
    with pytest.raises(sweep.SweepRefused, match="RERUN=failed"):
        run_sweep(cfg, tmp_path, rerun="everything")
