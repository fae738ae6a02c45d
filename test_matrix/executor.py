"""Run many training runs as child processes: serially, N at a time on the CPU, or one per GPU.

Everything happens in the calling thread: a loop starts children while slots are free and
polls them. One thread keeps the bookkeeping simple and lets every child carry
PR_SET_PDEATHSIG, which Linux ties to the thread that forked it: when the sweep dies, even
by kill -9, its runs die with it instead of training on as orphans next to the resumed sweep.

A run's outcome comes from its status.json. The executor writes status.json itself only
when the engine could not: a timeout, or a child that died without recording why.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lib.lifecycle import rundir
from test_matrix import executor_api, state as run_state

OUTPUT = "sweep-output.txt"  # the child's stdout/stderr; the engine's own log is log.txt
KILL_GRACE_S = 10.0


@dataclass
class Job:
    run_id: str
    run_dir: Path
    flags: list[str] = field(default_factory=list)  # extra launch flags (--fresh)
    gpus: int = 1  # GPUs it needs when running on GPUs (DDP runs need several)


@dataclass
class Outcome:
    run_id: str
    state: str  # completed | failed | interrupted
    reason: str | None
    seconds: float


def default_command(run_dir: Path, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "lib.lifecycle.launch", "--run-dir", str(run_dir), *flags]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return  # not Linux: an orphan may outlive a killed sweep, resume still works
        if os.getppid() != parent:  # the sweep died before prctl took effect
            os._exit(1)
    return preexec


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 4000))
            lines = [l for l in handle.read().decode(errors="replace").splitlines() if l.strip()]
        return lines[-1].strip()[:200] if lines else ""
    except OSError:
        return ""


def _exit_reason(rc: int, output: Path) -> str:
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        why = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        why = f"exited with status {rc} without recording why"
    tail = _last_line(output)
    return f"{why}; last output: {tail}" if tail else why


def _record_failure(run_dir: Path, reason: str) -> None:
    try:
        rundir.record_failure(run_dir, reason, recorded_by="test_matrix")
    except OSError:
        pass  # a full or read-only disk: the run's own line said why; the status cannot be changed


def settle(job: Job, rc: int, seconds: float, timed_out: bool = False) -> Outcome:
    """A finished launch's Outcome, from the run's status.json (recording a failure it could not)."""
    output = job.run_dir / OUTPUT
    state, reason = run_state.classify(job.run_dir)
    if state == run_state.RUNNING and not timed_out:
        # A live process that is not ours trains it (the engine's run lock refused this
        # launch): its status is not ours to overwrite.
        state, reason = run_state.FAILED, f"not run: another process is training it ({reason})"
    elif state != run_state.COMPLETED and state != run_state.FAILED:
        reason = _exit_reason(rc, output) if rc != 0 else f"exited 0 but status.json says {state}"
        _record_failure(job.run_dir, reason)
        state = run_state.FAILED
    elif state == run_state.COMPLETED and rc != 0 and not timed_out:
        state, reason = run_state.FAILED, _exit_reason(rc, output) + " (after completing)"
        _record_failure(job.run_dir, reason)
    return Outcome(job.run_id, state, reason, seconds)


class Executor(executor_api.RunExecutor):
    """Runs Jobs as child processes of this machine; `on_event(kind, job, outcome)`: "start",
    "finish", "retry" or "tick". The serial, CPU-parallel and per-GPU executors below are this
    loop with their own slot rule; tests build it directly with any mix."""

    def __init__(self, *, jobs: int = 1, gpus: list[str] | None = None, timeout_s: float = 0,
                 command: Callable[[Path, list[str]], list[str]] = default_command,
                 cores: int | None = None, on_event=None, poll_s: float = 0.2, cwd: Path | None = None,
                 threads: int | None = None, retries: int = 0):
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.gpus = list(gpus or [])
        self.slots = min(jobs, len(self.gpus)) if self.gpus else jobs
        self.timeout_s = timeout_s
        self.command = command
        self.cores = cores or cpu_count()
        self.on_event = on_event or (lambda *a: None)
        self.poll_s = poll_s
        self.cwd = cwd
        self.threads = threads  # the runs' CONFIG_CPU_THREADS: part of each run, never changed here
        self.retries = retries

    @classmethod
    def from_config(cls, cfg, *, gpus, command, cores, cwd):
        return cls(jobs=cfg.TEST_MATRIX_PARALLEL_JOBS, gpus=gpus, timeout_s=cfg.TEST_MATRIX_RUN_TIMEOUT or 0,
                   command=command, cores=cores, cwd=cwd, threads=cfg.get("CPU_THREADS"),
                   retries=cfg.get("TEST_MATRIX_RETRIES") or 0)

    def threads_per_run(self, n_jobs: int) -> int:
        """CPU threads for each run: the config's on the CPU, else a share of the cores (GPU runs'
        results do not depend on it)."""
        if self.threads and not self.gpus:
            return self.threads
        return max(1, self.cores // max(1, min(self.slots, n_jobs)))

    def describe(self, n_jobs: int) -> str:
        if self.gpus:
            return f"{self.slots} at a time, one per GPU ({', '.join(self.gpus)})"
        at_once = min(self.slots, n_jobs) if n_jobs else self.slots
        text = f"{at_once} at a time on the CPU, {self.threads_per_run(n_jobs)} thread(s) each of {self.cores}"
        if at_once * self.threads_per_run(n_jobs) > self.cores:
            text += (" (more threads than cores: the runs slow each other down; lower "
                     "TEST_MATRIX_PARALLEL_JOBS or CPU_THREADS)")
        return text

    def _env(self, threads: int, gpus: list[str]) -> dict:
        env = dict(os.environ)
        env["KNLP_NUM_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)  # caps OpenMP before torch applies the setting
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        return env

    def run(self, jobs: list[Job]) -> list[Outcome]:
        import subprocess

        pending = list(jobs)
        threads = self.threads_per_run(len(jobs))
        free_gpus = list(self.gpus)
        running: dict[int, tuple] = {}  # pid -> (job, popen, started, gpus, output handle)
        outcomes: list[Outcome] = []
        retry = executor_api.Retries(self.retries, self.on_event)

        def finish(job, proc, started, gpus, handle, timed_out=False):
            handle.close()
            free_gpus.extend(gpus)
            seconds = time.time() - started
            # A run that recorded "completed" before the timeout hit (it was only slow to exit)
            # finished: the timeout must not overwrite that.
            if timed_out and run_state.classify(job.run_dir)[0] != run_state.COMPLETED:
                reason = f"timed out after {self.timeout_s:g} s (CONFIG_TEST_MATRIX_RUN_TIMEOUT)"
                _record_failure(job.run_dir, reason)
            outcome = settle(job, proc.returncode, seconds, timed_out)
            if retry.again(job, outcome):
                pending.insert(0, Job(job.run_id, job.run_dir, [], job.gpus))  # resumes from last.pt
                return
            outcomes.append(outcome)
            self.on_event("finish", job, outcome)

        def stop_all(sig):
            for job, proc, *_ in running.values():
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass

        try:
            while pending or running:
                while pending and len(running) < self.slots:
                    job = pending[0]
                    need = min(job.gpus, len(self.gpus)) if self.gpus else 0
                    if len(free_gpus) < need:
                        break  # wait for GPUs to free up; order is kept
                    pending.pop(0)
                    gpus = [free_gpus.pop(0) for _ in range(need)]
                    job.run_dir.mkdir(parents=True, exist_ok=True)
                    handle = open(job.run_dir / OUTPUT, "ab")
                    command = self.command(job.run_dir, job.flags)
                    # Appended across launches (resumes): a header keeps the attempts apart.
                    handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
                    handle.flush()
                    proc = subprocess.Popen(command, stdout=handle,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self._env(threads, gpus), cwd=self.cwd,
                                            start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
                    running[proc.pid] = (job, proc, time.time(), gpus, handle)
                    self.on_event("start", job, None)
                for pid, (job, proc, started, gpus, handle) in list(running.items()):
                    if proc.poll() is not None:
                        del running[pid]
                        finish(job, proc, started, gpus, handle)
                    elif self.timeout_s and time.time() - started > self.timeout_s:
                        _stop(proc)
                        del running[pid]
                        finish(job, proc, started, gpus, handle, timed_out=True)
                if running:
                    self.on_event("tick", None, None)  # lets the progress bar move between events
                    time.sleep(self.poll_s)
        except BaseException:
            # Ctrl-C or SIGTERM: stop the runs as abruptly as kill -9 would. Their status
            # stays "running" with a dead pid, i.e. interrupted, and the next sweep resumes
            # them from their checkpoints.
            stop_all(signal.SIGKILL)
            for job, proc, _s, _g, handle in running.values():
                proc.wait()
                handle.close()
            raise
        return outcomes


def _stop(proc) -> None:
    """SIGTERM the run's whole process group (torchrun workers too), SIGKILL after a grace."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except Exception:  # subprocess.TimeoutExpired
            continue


class SerialExecutor(Executor):
    """One run at a time on the CPU, with every core (TEST_MATRIX_PARALLEL_JOBS=1, no GPU)."""

    @classmethod
    def suits(cls, cfg, gpus) -> bool:
        return not gpus and cfg.TEST_MATRIX_PARALLEL_JOBS == 1


class ParallelExecutor(Executor):
    """TEST_MATRIX_PARALLEL_JOBS runs at once on the CPU, the cores divided between them."""

    @classmethod
    def suits(cls, cfg, gpus) -> bool:
        return not gpus and cfg.TEST_MATRIX_PARALLEL_JOBS > 1


class GpuExecutor(Executor):
    """One run per GPU (a DDP run takes as many as it has processes), each told its GPUs
    through CUDA_VISIBLE_DEVICES; at most TEST_MATRIX_PARALLEL_JOBS at once."""

    @classmethod
    def suits(cls, cfg, gpus) -> bool:
        return bool(gpus)
