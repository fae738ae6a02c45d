"""Run states come from status.json and the writer's process, never from logs; the lock."""
import os
import subprocess
import sys
import time

import pytest

from lib.lifecycle import rundir
from test_matrix import state as run_state
from test_matrix.lock import Busy, SweepLock


def test_states_from_status_files(tmp_path):
    assert run_state.classify(tmp_path) == (run_state.PENDING, None)
    rundir.write_status(tmp_path, rundir.COMPLETED)
    assert run_state.classify(tmp_path)[0] == run_state.COMPLETED
    rundir.write_status(tmp_path, rundir.FAILED, reason="loss is NaN at step 7")
    assert run_state.classify(tmp_path) == (run_state.FAILED, "loss is NaN at step 7")
    # written by this (live) process: running
    rundir.write_status(tmp_path, rundir.RUNNING)
    assert run_state.classify(tmp_path)[0] == run_state.RUNNING


def test_running_with_a_dead_writer_is_interrupted(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    rundir.write_json(tmp_path / rundir.STATUS, {"state": "running", "pid": child.pid, "updated": time.time()})
    assert run_state.classify(tmp_path)[0] == run_state.INTERRUPTED


def test_a_reused_pid_is_not_the_writer(tmp_path):
    # status written long before this live process started: its pid is a coincidence
    rundir.write_json(tmp_path / rundir.STATUS, {"state": "running", "pid": os.getpid(), "updated": 1000.0})
    assert run_state.classify(tmp_path)[0] == run_state.INTERRUPTED


def test_lock_refuses_a_second_holder_and_frees_on_death(tmp_path):
    with SweepLock(tmp_path):
        with pytest.raises(Busy, match=f"pid {os.getpid()}"):
            SweepLock(tmp_path).acquire()
    # a holder killed with -9 leaves no stale lock
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from test_matrix.lock import SweepLock; SweepLock(sys.argv[2]).acquire();"
                               "print('held', flush=True); time.sleep(60)", os.getcwd(), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Busy):
        SweepLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    SweepLock(tmp_path).acquire().release()
