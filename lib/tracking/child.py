"""Start and stop the follower process that sends a sweep's or a single run's files to the tracker.

The follower is a child process in its own session: a tracker's import, memory, threads or
crash never reach the training processes or the sweep's loop, and Ctrl-C of the sweep
does not cut its last send short. It stops when its stdin closes, so even a sweep killed
with -9 leaves no follower behind for long.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lib.tracking import settings as tracking_settings

LOG = "tracker-log.txt"  # the trackers' own output, next to the runs
WAIT_S = 30.0  # how long the end of a sweep waits for the last send before leaving it in the background
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def command(chosen, root: Path, run_dirs, log_handle, *options) -> list[str]:
    """The follower's command line; marks the start of its output in the log."""
    log_handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} follower {' '.join(options)}\n".encode())
    log_handle.flush()
    return [sys.executable, "-m", "lib.tracking.follower", chosen.to_json(), str(root), *[str(d) for d in run_dirs],
            *options]


def send_sweep_summary(cfg, root: Path, models, *, out=None) -> None:
    """After a sweep's report: a short-lived follower sends what changed since the sweep's own
    follower stopped, which is the sweep record with its verdicts (the runs are all sent)."""
    follower = start(cfg, root, models, out=out)
    if follower is not None:
        follower.stop()


def backfill(chosen, root: Path, run_dirs, hint: str) -> int:
    """Send the runs once, in a fresh process (trackio fixes its directory when imported); its exit status."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOG, "ab") as handle:
        return subprocess.call(command(chosen, root, run_dirs, handle, "--once", "--hint", hint),
                               stdin=subprocess.DEVNULL, stdout=handle, cwd=PROJECT_ROOT)


class Follower:
    def __init__(self, proc: subprocess.Popen, log: Path, out):
        self.proc, self.log, self.out = proc, log, out

    def stop(self, wait_s: float = WAIT_S) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            print(f"tracker: still sending; it finishes in the background (pid {self.proc.pid}, log {self.log})",
                  file=self.out, flush=True)


def start(cfg, root: Path, models, run_dirs=(), *, out=None, poll_s: float = 2.0) -> Follower | None:
    """The follower for runs under `root` if `cfg` selects a tracker, else None. Never raises."""
    out = out or sys.stdout
    try:
        chosen = tracking_settings.from_config(cfg, Path(root), models)
        if chosen is None:
            return None
        Path(root).mkdir(parents=True, exist_ok=True)
        log = Path(root) / LOG
        hint = f"send them later with: make track DIR={root}"
        with open(log, "ab") as handle:
            proc = subprocess.Popen(command(chosen, root, run_dirs, handle, "--poll", str(poll_s), "--hint", hint),
                                    stdin=subprocess.PIPE, stdout=handle, stderr=None, cwd=PROJECT_ROOT,
                                    start_new_session=True)
        return Follower(proc, log, out)
    except Exception as err:  # the tracker is never a reason for a run not to happen
        print(f"tracker: not started ({type(err).__name__}: {err}); runs go on without it", file=out, flush=True)
        return None
