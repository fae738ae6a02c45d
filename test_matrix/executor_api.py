"""What the sweep needs from an executor, and which executors there are.

An executor takes prepared run directories (Jobs) and, for each one:
  submit  runs the launcher `command(run_dir, flags)` (python -m lib.lifecycle.launch --run-dir DIR)
          in that directory, with KNLP_NUM_THREADS set to its thread share;
  watch   calls on_event("start" | "finish" | "retry" | "tick", job, outcome) as runs go;
  cancel  on KeyboardInterrupt stops every run it started as abruptly as kill -9 and
          re-raises: their status stays "running" with a dead process, i.e. interrupted,
          and the next sweep resumes them from last.pt;
  read    takes each run's final state and reason from the run's own status.json
          (settle() in test_matrix.executor), never from its output.
A run whose process or machine died is launched again, up to `retries` times, and resumes;
one that failed for a reason that would fail again is not (retryable()).

The sweep builds executors with create(cfg) and never knows which one it drives. A new
executor is one new file with a RunExecutor subclass, plus its entry in EXECUTORS: its name,
where the class lives, and the Kconfig bool symbol that selects it (docs/extending.md).
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from lib.lifecycle import rundir

@dataclass(frozen=True)
class Entry:
    target: str  # "module:Class", imported on use: the local sweep never imports Ray
    symbol: str  # the Kconfig bool that selects it; executors sharing one are told apart by suits()


# name -> entry, in the order create() tries them
EXECUTORS = {
    "serial": Entry("test_matrix.executor:SerialExecutor", "TEST_MATRIX_EXECUTOR_LOCAL"),
    "parallel": Entry("test_matrix.executor:ParallelExecutor", "TEST_MATRIX_EXECUTOR_LOCAL"),
    "gpu": Entry("test_matrix.executor:GpuExecutor", "TEST_MATRIX_EXECUTOR_LOCAL"),
    "ray": Entry("test_matrix.ray_executor:RayExecutor", "TEST_MATRIX_EXECUTOR_RAY"),
}

# Reasons that the executor (not the engine) records when a run's process vanished:
# killed by a signal, exited without saying why, or lost with its machine.
DIED = ("killed by ", "exited with status ", "lost ")


class ExecutorRefused(Exception):
    """The executor cannot run this sweep (unreachable cluster, invisible results directory ...); one line."""


class RunExecutor(ABC):
    slots: int  # runs at once (for the plan, the ETA and the progress bar)
    timeout_s: float  # per-run timeout, 0 = none
    retries: int  # launches again of a run whose process or machine died
    on_event = None

    @classmethod
    @abstractmethod
    def from_config(cls, cfg, *, gpus: list[str], command, cores: int | None, cwd: Path) -> "RunExecutor":
        """The executor `cfg` asks for; cheap: nothing is started or installed yet."""

    @classmethod
    def suits(cls, cfg, gpus: list[str]) -> bool:
        """Whether it is the one for `cfg` among the executors its Kconfig symbol selects."""
        return True

    @abstractmethod
    def describe(self, n_jobs: int) -> str:
        """One line for the plan: where and how many runs go at once."""

    def open(self, results_dir: Path, specs=()) -> None:
        """Get ready for the runs `specs` (RunSpecs) and check everything they need.

        Called before anything is written; ExecutorRefused says what is wrong.
        """

    def close(self) -> None:
        """Release what open() started (always called after open(), also after a failure)."""

    @abstractmethod
    def run(self, jobs: list) -> list:
        """Run the Jobs (submit, watch, cancel on KeyboardInterrupt); their final Outcomes."""


def executor_class(name: str) -> type[RunExecutor]:
    module, cls = EXECUTORS[name].target.split(":")
    return getattr(importlib.import_module(module), cls)


def name_of(cfg, gpus=()) -> str:
    """The registered executor `cfg` selects (the local one when no executor symbol is set)."""
    chosen = [name for name, entry in EXECUTORS.items() if cfg.get(entry.symbol)]
    for name in chosen or [n for n, e in EXECUTORS.items() if e.symbol == "TEST_MATRIX_EXECUTOR_LOCAL"]:
        if executor_class(name).suits(cfg, list(gpus)):
            return name
    raise ExecutorRefused(f"no executor fits this config ({', '.join(chosen) or 'none selected'}); "
                          "choose one under Test matrix > Where the runs execute in 'make menuconfig'")


def create(cfg, *, gpus, **kw) -> RunExecutor:
    return executor_class(name_of(cfg, gpus)).from_config(cfg, gpus=gpus, **kw)


def retryable(run_dir: Path | str) -> bool:
    """Whether a failed run failed because its process or machine died (so a retry can succeed).

    NaN losses, bad input (exit 2), crashes in the code and timeouts would fail again;
    an engine stopped by a signal (a preempted machine) says "interrupted" and goes on.
    """
    status = rundir.read_status(run_dir) or {}
    if status.get("state") != rundir.FAILED:
        return False
    reason = status.get("reason") or ""
    if status.get("recorded_by") == "test_matrix":
        return reason.startswith(DIED) and "after completing" not in reason
    return status.get("exit_code") != 2 and reason.startswith("interrupted")


class Retries:
    """Counts the launches of each run and says whether a failed one goes again."""

    def __init__(self, retries: int, on_event):
        self.retries = retries
        self.on_event = on_event
        self.launches: dict[str, int] = {}

    def again(self, job, outcome) -> bool:
        """True (after an on_event "retry") when `job` should be launched again to resume."""
        self.launches[job.run_id] = self.launches.get(job.run_id, 0) + 1
        if outcome.state != rundir.FAILED or self.launches[job.run_id] > self.retries:
            return False
        if not retryable(job.run_dir):
            return False
        self.on_event("retry", job, outcome)
        return True
