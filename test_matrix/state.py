"""Where each run of a sweep stands, read from its status.json (never from log text).

States:
  pending      no status.json yet: never started
  completed    the engine finished it
  failed       the engine (or the sweep, for timeouts and crashes) recorded why it failed
  interrupted  status says running but its process is gone (Ctrl-C, kill -9, reboot):
               launching it again resumes from its last checkpoint
  running      a live process is training it right now (leave it alone): on this host its
               pid is alive; on another host its heartbeat (lib/lifecycle/heartbeat.py) is recent
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from lib.lifecycle import heartbeat, rundir

PENDING, COMPLETED, FAILED, INTERRUPTED, RUNNING = "pending", "completed", "failed", "interrupted", "running"


def _started_at(fields: list[str]) -> float | None:
    """Wall-clock start of a process from /proc/PID/stat fields (after the command name)."""
    try:
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return None


def _alive(pid, written_at) -> bool:
    """Whether the process that wrote a status at `written_at` still runs."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc: trust the pid
    if fields[0] == "Z":
        return False  # exited, not yet reaped
    started = _started_at(fields)
    # A process started after the status was written is a reused pid, not the writer.
    return not (started is not None and isinstance(written_at, (int, float)) and started > written_at + 2)


def classify(run_dir: Path | str) -> tuple[str, str | None]:
    """(state, reason) of one run directory."""
    status = rundir.read_status(run_dir)
    if status is None:
        return PENDING, None
    state = status["state"]
    if state == rundir.COMPLETED:
        return COMPLETED, None
    if state == rundir.FAILED:
        return FAILED, status.get("reason") or "no reason recorded"
    host = status.get("host")
    if host not in (None, socket.gethostname()):
        # Another machine sharing the disk may be training it; we cannot check its pid, only
        # its heartbeat. A silent one was left behind by a dead node or driver.
        if heartbeat.is_stale(status):
            return INTERRUPTED, (f"abandoned: no heartbeat from {host} for {heartbeat.age(status):.0f} s; "
                                 "the next launch resumes it")
        return RUNNING, f"running on {host} (pid {status.get('pid')})"
    if _alive(status.get("pid"), status.get("updated")):
        return RUNNING, f"running (pid {status.get('pid')})"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(status["updated"])) if isinstance(
        status.get("updated"), (int, float)) else "?"
    return INTERRUPTED, (f"its process (pid {status.get('pid')}, status written {when}) is gone: stopped or killed, "
                         "with its sweep or alone; the next launch resumes it from its last checkpoint")
