"""Run one training process in the foreground so that Ctrl-C lets it save.

The child gets its own process group, so the terminal's Ctrl-C reaches only this process,
which passes each SIGINT/SIGTERM on exactly once: the first makes the engine finish its
step, save last.pt and exit; a second one makes it stop at once (it resumes from the
last checkpoint). The child dies with this process (PR_SET_PDEATHSIG), so a killed
launcher never leaves a run training on unseen. Outside the terminal's foreground group
the child may still write to the terminal (progress bars), but must not read from it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from test_matrix.executor import _die_with_parent

FORWARDED = (signal.SIGINT, signal.SIGTERM)


def _own_group_dying_with(parent: int):
    die = _die_with_parent(parent)

    def preexec():
        os.setpgid(0, 0)
        die()
    return preexec


def run(command: list[str], *, cwd=None, say=None) -> tuple[int, int]:
    """(exit status of `command`, number of signals passed on to it)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    received = []
    proc = subprocess.Popen(command, cwd=cwd, preexec_fn=_own_group_dying_with(os.getpid()))

    def forward(signum, _frame):
        received.append(signum)
        if len(received) == 1:
            say("interrupting: the run saves last.pt after this step (Ctrl-C again to stop at once; "
                "'make' resumes it)")
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return rc, len(received)
