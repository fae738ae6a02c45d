"""Progress of a whole sweep: a tqdm bar on a terminal, and one line per finished run always.

The per-run lines go through tqdm.write so they do not tear the bar, and they are the only
output when stdout is not a terminal (CI logs, `make ... | tee`).
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from test_matrix.executor import Job, Outcome


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts done/failed/running over the whole matrix and estimates the time left.

    `estimates` maps run IDs to expected seconds from past runs; runs without one are
    expected to take as long as the runs finished so far in this sweep.
    """

    def __init__(self, total: int, already_done: int, already_failed: int, slots: int,
                 estimates: dict[str, float] | None = None, stream=None, bar: bool | None = None):
        self.stream = stream or sys.stdout
        self.total = total
        self.done = already_done
        self.failed = already_failed
        self.slots = max(1, slots)
        self.estimates = dict(estimates or {})
        self.started: dict[str, float] = {}
        self.queued: set[str] = set()
        self.durations: list[float] = []
        use_bar = self.stream.isatty() if bar is None else bar
        self.bar = tqdm(total=total, initial=already_done + already_failed, unit="run", file=self.stream,
                        dynamic_ncols=True, disable=not use_bar,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self._refresh()

    def queue(self, run_ids) -> None:
        self.queued.update(run_ids)
        self._refresh()

    def eta(self) -> float | None:
        """Seconds left: expected work still to do divided over the slots."""
        now = time.time()
        seen = self.durations or None
        left = 0.0
        for run_id in self.queued:
            expected = self.estimates.get(run_id) or (sum(seen) / len(seen) if seen else None)
            if expected is None:
                return None
            left += max(0.0, expected - (now - self.started[run_id])) if run_id in self.started else expected
        return left / self.slots

    def _postfix(self) -> str:
        return (f"{self.done} done, {self.failed} failed, {len(self.started)} running, "
                f"ETA {fmt_duration(self.eta())}")

    def _refresh(self) -> None:
        self._refreshed = time.time()
        self.bar.set_postfix_str(self._postfix(), refresh=True)

    def __call__(self, kind: str, job: Job | None, outcome: Outcome | None) -> None:
        if kind == "tick":
            if time.time() - self._refreshed >= 1.0:
                self._refresh()
            return
        if kind == "start":
            self.started[job.run_id] = time.time()
            self._refresh()
            return
        if kind == "retry":  # launched again at once; its time so far is lost, not its checkpoint
            self.started.pop(job.run_id, None)
            tqdm.write(f"retry   {job.run_id} after {fmt_duration(outcome.seconds)}: {outcome.reason}", file=self.stream)
            return
        self.started.pop(job.run_id, None)
        self.queued.discard(job.run_id)
        if outcome.state == "completed":
            self.done += 1
            self.durations.append(outcome.seconds)
            what = f"done    {job.run_id} in {fmt_duration(outcome.seconds)}"
        else:
            self.failed += 1
            what = f"FAILED  {job.run_id} after {fmt_duration(outcome.seconds)}: {outcome.reason}"
        self.bar.update(1)
        self._refresh()
        finished = self.done + self.failed
        tqdm.write(f"[{finished}/{self.total}] {what} ({self._postfix()})", file=self.stream)

    def close(self) -> None:
        self.bar.close()
