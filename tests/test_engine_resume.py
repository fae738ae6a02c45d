"""Resume: an interrupted run, resumed, ends with the weights of an uninterrupted one (CPU)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.lifecycle import rundir
from tests.test_engine_support import lenet_spec, load, prepare, run, same_weights, stable_metrics
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    run_dir = prepare(tmp_path_factory.mktemp("reference"), lenet_spec())
    assert run(run_dir) == 0
    return run_dir


@pytest.mark.parametrize("stop", [40, 62, 75, 100], ids=["mid-epoch-before-ramp", "epoch-end", "mid-ramp",
                                                         "after-ramp-mid-epoch"])
def test_interrupt_and_resume_matches_uninterrupted(tmp_path, reference, stop):
    run_dir = prepare(tmp_path, lenet_spec())
    assert run(run_dir, stop_at_step=stop) == 1
    status = rundir.read_status(run_dir)
    assert status["state"] == rundir.FAILED and "interrupted" in status["reason"] and status["step"] == stop
    assert load(run_dir / rundir.LAST)["step"] == stop
    assert run(run_dir) == 0
    assert rundir.read_status(run_dir)["state"] == rundir.COMPLETED
    assert same_weights(load(run_dir / rundir.LAST)["model"], load(reference / rundir.LAST)["model"])
    assert same_weights(load(run_dir / rundir.BEST)["model"], load(reference / rundir.BEST)["model"])
    assert stable_metrics(run_dir) == stable_metrics(reference)
    assert "resuming" in (run_dir / rundir.LOG).read_text()


def test_sigterm_saves_a_resumable_checkpoint(tmp_path, reference):
    """A polite kill (SIGTERM/Ctrl-C) stops at the next step with last.pt of that step."""
    run_dir = prepare(tmp_path, lenet_spec())
    proc = subprocess.Popen([sys.executable, "-m", "lib.lifecycle.launch", "--run-dir", str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (run_dir / rundir.METRICS).exists():
        time.sleep(0.02)  # wait until training is under way (first evaluation written)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    status = rundir.read_status(run_dir)
    assert "SIGTERM" in status["reason"] and load(run_dir / rundir.LAST)["step"] == status["step"]
    assert run(run_dir) == 0
    assert same_weights(load(run_dir / rundir.LAST)["model"], load(reference / rundir.LAST)["model"])


@pytest.mark.slow
def test_kill_9_at_random_moments_never_breaks_resume(tmp_path, reference):
    """SIGKILL at several moments (mid-step, mid-write): every resume ends like the reference."""
    run_dir = prepare(tmp_path, lenet_spec())
    cmd = [sys.executable, "-m", "lib.lifecycle.launch", "--run-dir", str(run_dir)]
    for delay in (2.2, 2.6, 3.0, 3.4):  # python + torch start-up is ~2 s here
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if rundir.read_status(run_dir) and rundir.read_status(run_dir)["state"] == rundir.COMPLETED:
            break
    assert run(run_dir) == 0
    assert same_weights(load(run_dir / rundir.LAST)["model"], load(reference / rundir.LAST)["model"])
    assert stable_metrics(run_dir) == stable_metrics(reference)
