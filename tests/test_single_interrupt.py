"""Ctrl-C on a single run (`make`): the run saves before it stops, and its status says so."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from lib.configuration import config as lib_config
from lib.lifecycle import rundir

# Stands in for the engine: trains in steps; the first SIGINT makes it finish the step and
# "save" (slowly, like a big checkpoint), a second one stops it at once.
CHILD = textwrap.dedent('''
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    from lib.lifecycle import rundir
    run_dir = sys.argv[1]
    seen = []
    def handler(signum, frame):
        seen.append(signum)
        if len(seen) > 1:
            rundir.write_status(run_dir, "failed", reason="stopped at once")
            os._exit(1)
    signal.signal(signal.SIGINT, handler)
    step = 0
    rundir.write_status(run_dir, "running", step=0)
    open(os.path.join(run_dir, "started"), "w").close()
    while not seen:
        time.sleep(0.05)
        step += 1
        if os.environ.get("CHILD_DIE") and step == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(1.0)  # saving last.pt
    rundir.write_json(os.path.join(run_dir, "last.json"), {{"step": step}})
    rundir.write_status(run_dir, "failed", reason=f"interrupted (signal SIGINT) at step {{step}}; last.pt saved",
                        step=step)
    sys.exit(1)
''')

DRIVER = textwrap.dedent('''
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from lib.configuration import config as lib_config
    from test_matrix import single
    from test_matrix.expand import expand
    cfg = lib_config.load({config!r})
    child = {child!r}
    sys.exit(single.run(cfg, expand(cfg)[0], command=lambda run_dir, flags: [sys.executable, child, str(run_dir)]))
''')


def start(tmp_path, **env):
    config = tmp_path / "test.config"
    config.write_text(f'CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y\nCONFIG_OUTPUT_DIR="{tmp_path / "runs"}"\n')
    child = tmp_path / "child.py"
    child.write_text(CHILD.format(root=str(lib_config.ROOT)))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(lib_config.ROOT), tests=str(lib_config.ROOT / "tests"),
                                    config=str(config), child=str(child)))
    # A session of its own: signalling its process group is what a terminal's Ctrl-C does.
    proc = subprocess.Popen([sys.executable, str(driver)], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
    return proc, tmp_path / "runs"


def run_dir_once_started(runs, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        found = list(runs.glob("*/started")) if runs.exists() else []
        if found:
            return found[0].parent
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    raise AssertionError("the run never started")


def test_ctrl_c_lets_the_run_save_before_it_stops(tmp_path):
    proc, runs = start(tmp_path)
    try:
        run_dir = run_dir_once_started(runs, proc)
        os.killpg(proc.pid, signal.SIGINT)  # the terminal signals the whole foreground group
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (run_dir / "last.json").exists(), f"the run was killed before it could save:\n{out}"
    status = rundir.read_status(run_dir)
    assert status["state"] == "failed" and "last.pt saved" in status["reason"]
    assert proc.returncode == 130 and "Ctrl-C again to stop at once" in out
    assert "Traceback" not in out


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    proc, runs = start(tmp_path)
    try:
        run_dir = run_dir_once_started(runs, proc)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run_dir / "last.json").exists()
    assert rundir.read_status(run_dir)["reason"] == "stopped at once" and proc.returncode == 130


def test_a_killed_run_is_recorded_failed_with_the_cause(tmp_path):
    proc, runs = start(tmp_path, CHILD_DIE="1")
    out, _ = proc.communicate(timeout=60)
    (run_dir,) = list(runs.iterdir())
    status = rundir.read_status(run_dir)
    assert status["state"] == "failed" and "killed by SIGKILL" in status["reason"], status
    assert proc.returncode == 1
    assert f"Run {run_dir.name}: failed: killed by SIGKILL" in out


REAL_DRIVER = textwrap.dedent('''
    import sys
    sys.path[:0] = [{root!r}]
    from lib.configuration import config as lib_config
    from test_matrix import single
    from test_matrix.expand import expand
    cfg = lib_config.load({config!r})
    sys.exit(single.run(cfg, expand(cfg)[0]))
''')


@pytest.mark.slow
def test_ctrl_c_on_a_real_run_saves_last_pt(tmp_path):
    config = tmp_path / "test.config"
    config.write_text(lib_config.defconfig_path("lenet5-sample-bitter7").read_text()
                      + f'CONFIG_LENET5_EPOCHS=30\nCONFIG_OUTPUT_DIR="{tmp_path / "runs"}"\n')
    driver = tmp_path / "driver.py"
    driver.write_text(REAL_DRIVER.format(root=str(lib_config.ROOT), config=str(config)))
    proc = subprocess.Popen([sys.executable, str(driver)], start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "KNLP_NUM_THREADS": "1"})
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("step 62/"):  # the first epoch is done: training is under way
                os.killpg(proc.pid, signal.SIGINT)
                break
        out = "".join(seen) + proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run_dir,) = list((tmp_path / "runs").iterdir())
    status = rundir.read_status(run_dir)
    assert status["state"] == "failed" and "last.pt saved" in status["reason"], out
    saved = torch.load(run_dir / rundir.LAST, map_location="cpu", weights_only=True)
    assert saved["step"] == status["step"] >= 62 and proc.returncode == 130
