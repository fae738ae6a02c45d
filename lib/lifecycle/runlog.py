"""The human-readable log of a run: log.txt in the run directory, echoed to stdout.

Only rank 0 logs, so DDP runs do not print every line N times. Lines go through
tqdm.write so that they do not tear an active progress bar.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from lib.lifecycle.rundir import LOG


class RunLog:
    def __init__(self, run_dir: Path | str | None, *, enabled: bool = True, echo: bool = True):
        self.path = Path(run_dir) / LOG if run_dir is not None else None
        self.enabled = enabled
        self.echo = echo

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        if self.path is not None:
            try:
                with open(self.path, "a") as handle:
                    handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            except OSError:
                # A full or read-only disk: the run reports that itself; the log must not hide
                # the reason behind a second error. Later lines still reach the terminal.
                self.path = None
        if self.echo:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()
