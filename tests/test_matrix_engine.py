"""The test matrix with the real engine (lib.lifecycle.launch) on the shipped LeNet-5 sample (slow)."""
import io
import os
import signal
import subprocess
import sys
import time

import pytest

from lib.configuration import config as lib_config
from lib.lifecycle import rundir
from test_matrix import plan as plan_file, sweep
from test_matrix_fakes import LENET_SAMPLE, run_path, write_config

pytestmark = pytest.mark.slow

SAMPLE = LENET_SAMPLE


def test_diverging_sgd_fails_alone_and_is_rerun_alone(tmp_path):
    cfg = write_config(tmp_path, SAMPLE + 'CONFIG_LENET5_EPOCHS=2\nCONFIG_OPTIMIZER_SGD=y\n'
                                          'CONFIG_SGD_LEARNING_RATE="1e6"\nCONFIG_PRUNING_NONE=y')
    out = io.StringIO()
    assert sweep.run(cfg, out=out) == 1, out.getvalue()
    results = tmp_path / "results"
    sgd, adamw = run_path(results, "lenet5-sgd-none-seed1"), run_path(results, "lenet5-adamw-none-seed1")
    assert rundir.read_status(sgd)["state"] == "failed"
    assert rundir.read_status(adamw)["state"] == "completed"
    finished = (adamw / "summary.json").stat().st_mtime_ns
    assert sweep.run(cfg, rerun="failed", out=out) == 1
    assert rundir.read_status(sgd)["state"] == "failed"
    assert (adamw / "summary.json").stat().st_mtime_ns == finished
    assert "lenet5-sgd-none" in (results / "report.md").read_text()


def test_kill_9_mid_sweep_then_resume(tmp_path):
    cfg = write_config(tmp_path, SAMPLE + "CONFIG_OPTIMIZER_ADAMWPRUNE=y\nCONFIG_PRUNING_MAGNITUDE=y\n"
                                          "CONFIG_LENET5_EPOCHS=6")
    results = tmp_path / "results"
    code = ("import sys; sys.path[:0] = [sys.argv[1]]; from lib.configuration import config; from test_matrix import sweep;"
            "sys.exit(sweep.run(config.load(sys.argv[2]), make_report=False))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lib_config.ROOT), str(tmp_path / "test.config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 120
    while time.time() < end:  # until a run has checkpointed at least one epoch
        if any((d / rundir.LAST).exists() and (rundir.read_status(d) or {}).get("state") == "running"
               for d in plan_file.run_dirs(results)):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # PR_SET_PDEATHSIG has killed the runs
    before = {d.name: (d / "summary.json").stat().st_mtime_ns for d in plan_file.run_dirs(results)
              if (d / "summary.json").exists()}
    out = io.StringIO()
    assert sweep.run(cfg, out=out, make_report=False) == 0, out.getvalue()
    for run_dir in plan_file.run_dirs(results):
        assert rundir.read_status(run_dir)["state"] == "completed"
        if run_dir.name in before:
            assert (run_dir / "summary.json").stat().st_mtime_ns == before[run_dir.name], "recomputed"
    # the run killed after its checkpoint went on from it instead of starting over
    resumed = [d for d in plan_file.run_dirs(results) if "resuming " in (d / rundir.LOG).read_text()]
    assert resumed, "no run resumed from its checkpoint"
    assert os.path.exists(results / "matrix.json")
