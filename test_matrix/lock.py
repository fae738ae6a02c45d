"""One sweep per results directory at a time.

An exclusive flock on RESULTS/.sweep.lock. The kernel drops it when the holder dies, even
by kill -9, so a stale lock can never block the next sweep; the pid written inside is
only for the refusal message.
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = ".sweep.lock"


class Busy(Exception):
    """Another sweep holds the results directory; the message says which and what to do."""


class SweepLock:
    def __init__(self, results_dir: Path | str):
        self.path = Path(results_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "SweepLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # os.open's fds are not inherited by children (PEP 446): runs never hold the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise Busy(f"{self.path.parent} is in use by another sweep ({holder}); wait for it to finish "
                       "or set another TEST_MATRIX_RESULTS_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SweepLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
