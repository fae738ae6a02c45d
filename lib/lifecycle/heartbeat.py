"""A heartbeat in a running run's status.json, so that other machines can tell it is alive.

The pid in status.json proves a run alive only on the host that wrote it. A sweep whose
runs train on other machines (the Ray executor) and whose driver died leaves those runs
marked "running"; the next driver must neither wait for them forever nor start a second
copy of one that still trains. While the engine trains, a thread rewrites the
"heartbeat" field every INTERVAL_S; a status from another host whose heartbeat is older
than STALE_S belongs to a run that is gone (test_matrix.state calls it interrupted).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from lib.lifecycle import rundir

INTERVAL_S = 15.0
# Several missed beats: a loaded machine or a slow disk delays one beat, not eight.
STALE_S = 8 * INTERVAL_S


def beat(run_dir: Path | str, now: float | None = None) -> bool:
    """Refresh the heartbeat of the run this process trains; False once it no longer runs."""
    return rundir.set_heartbeat(run_dir, time.time() if now is None else now, pid=os.getpid())


def mark_stopped(run_dir: Path | str) -> None:
    """Say a run's process is known to be dead (the one that ran it stopped it): heartbeat 0."""
    rundir.set_heartbeat(run_dir, 0)


def age(status: dict, now: float | None = None) -> float | None:
    """Seconds since a running status last showed life (its heartbeat, else when it was written)."""
    last = status.get("heartbeat", status.get("updated"))
    if not isinstance(last, (int, float)):
        return None
    return (time.time() if now is None else now) - last


def is_stale(status: dict, now: float | None = None) -> bool:
    seconds = age(status, now)
    return seconds is not None and seconds > STALE_S


@contextlib.contextmanager
def beating(run_dir: Path | str, enabled: bool = True, interval_s: float = INTERVAL_S):
    """Keep the heartbeat going while the block runs (in a daemon thread)."""
    if not enabled:
        yield
        return
    stop = threading.Event()

    def loop():
        while not stop.wait(interval_s):
            try:
                if not beat(run_dir):
                    return
            except OSError:
                continue  # a full or flaky disk: the next beat may get through

    thread = threading.Thread(target=loop, name="knlp-heartbeat", daemon=True)
    beat(run_dir)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
