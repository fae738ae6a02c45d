"""Runs of a sweep as Ray tasks: on a Ray cluster, or on a private Ray instance on this machine.

Each run is one task that runs the same launcher a local sweep runs (python -m lib.lifecycle.launch
--run-dir DIR) in the run's own directory, on whichever node Ray picks; the outcome is read
back from the run directory, which every node sees. Ray's own task retries are off: the
sweep retries a run whose process or node died itself (test_matrix.executor_api.Retries),
so a local and a Ray sweep follow one rule. GPUs come from Ray's assignment (it sets
CUDA_VISIBLE_DEVICES for the task, and the launcher inherits it), never from a guess. A run
gets the worker node's environment plus the driver's KNLP_* variables.

Before anything runs, open() checks that the cluster answers, that every node sees the
results directory (a probe task on each node writes a file the driver reads back), and
that some node has the GPUs one run needs.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from lib import extras
from test_matrix import executor_api, state as run_state
from test_matrix.executor import Outcome, _record_failure, cpu_count, default_command, settle

# Runs pass no data through Ray, so the object store only needs Ray's own floor (75 MiB).
PRIVATE_OBJECT_STORE_BYTES = 100 * 1024 * 1024
PROBE_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 5.0
CANCEL_GRACE_S = 10.0


def _launch(run_dir: str, command: list[str], cwd: str, threads: int, timeout_s: float, knlp_env: dict):
    """The Ray task, on a worker node: run the launcher in run_dir; (exit code, timed out).

    Sent to the workers by value, so it imports the project from `cwd` (the same checkout
    on every node) only once it runs there.
    """
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from lib.lifecycle import heartbeat
    from test_matrix import state as run_state
    from test_matrix.executor import OUTPUT, _die_with_parent, _stop

    def said_nothing() -> None:
        # A launcher that died without a word left "running" and a recent heartbeat: seen
        # from the driver's host that is a live run. Here, its dead pid says otherwise.
        if run_state.classify(run_dir)[0] == run_state.INTERRUPTED:
            heartbeat.mark_stopped(run_dir)

    env = {**os.environ, **knlp_env, "KNLP_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    with open(os.path.join(run_dir, OUTPUT), "ab") as handle:
        handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()} (Ray) "
                     f"{' '.join(command)}\n".encode())
        handle.flush()
        # Dies with this worker (PR_SET_PDEATHSIG): a lost node or a cancelled task leaves no orphan run.
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
        started = time.time()
        try:
            while proc.poll() is None:
                if timeout_s and time.time() - started > timeout_s:
                    _stop(proc)
                    said_nothing()
                    return proc.returncode, True
                time.sleep(0.2)
        except BaseException:  # ray.cancel: stop the run as kill -9 would; it stays resumable
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            heartbeat.mark_stopped(run_dir)
            raise
    said_nothing()
    return proc.returncode, False


def _probe(results_dir: str, token: str, cwd: str, python: str) -> dict:
    """The probe task: write a file named `token` into the results directory as this node sees it."""
    import os
    import socket

    host = socket.gethostname()
    found = {"host": host, "checkout": os.path.isfile(os.path.join(cwd, "lib", "lifecycle", "launch.py")),
             "python": os.path.exists(python), "error": None}
    try:
        with open(os.path.join(results_dir, token), "w") as handle:
            handle.write(f"{token} {host}\n")
    except OSError as err:
        found["error"] = f"{type(err).__name__}: {err}"
    return found


@contextlib.contextmanager
def _own_sigterm():
    """Keep the sweep's SIGTERM handler: ray.init installs one that exits without cancelling the runs."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


class RayExecutor(executor_api.RunExecutor):
    def __init__(self, *, address: str = "", cpus_per_run: int = 1, gpus_per_run: int = -1, timeout_s: float = 0,
                 retries: int = 0, command=default_command, cores: int | None = None, cwd: Path | None = None,
                 poll_s: float = 0.2, on_event=None):
        self.address = address.strip()
        self.cores = cores or cpu_count()
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.timeout_s = timeout_s
        self.retries = retries
        self.command = command
        self.cwd = Path(cwd or Path.cwd()).resolve()
        self.poll_s = poll_s
        self.on_event = on_event or (lambda *a: None)
        self.slots = max(1, self.cores // cpus_per_run)  # until open() has seen the cluster
        self.gpus: dict[str, int] = {}  # run_id -> GPUs it needs
        self.nodes: list[dict] = []
        self._ray = None
        self._private_dir: str | None = None

    @classmethod
    def from_config(cls, cfg, *, gpus, command, cores, cwd):
        cores = cores or cpu_count()
        # 0: the threads every run of this config trains with (CONFIG_CPU_THREADS), as locally
        cpus = cfg.TEST_MATRIX_RAY_CPUS_PER_RUN or cfg.get("CPU_THREADS") or max(1, cores // cfg.TEST_MATRIX_PARALLEL_JOBS)
        return cls(address=cfg.TEST_MATRIX_RAY_ADDRESS or "", cpus_per_run=cpus,
                   gpus_per_run=cfg.TEST_MATRIX_RAY_GPUS_PER_RUN, timeout_s=cfg.TEST_MATRIX_RUN_TIMEOUT or 0,
                   retries=cfg.TEST_MATRIX_RETRIES or 0, command=command, cores=cores, cwd=cwd)

    # ------------------------------------------------------------------ plan
    def where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "a private Ray instance on 127.0.0.1"

    def describe(self, n_jobs: int) -> str:
        if not self.nodes:
            return f"Ray tasks on {self.where()}, {self.cpus_per_run} CPU(s) per run"
        gpus = sorted(set(self.gpus.values()))
        per_run = f"{self.cpus_per_run} CPU(s)" + (f" and {'/'.join(map(str, gpus))} GPU(s)" if any(gpus) else "")
        return (f"Ray tasks on {self.where()} ({len(self.nodes)} node(s)): {min(self.slots, max(n_jobs, 1))} at a "
                f"time, {per_run} per run, {self.cpus_per_run} thread(s) each")

    def _gpus_needed(self, spec, largest_node: int) -> int:
        if spec.runtime.get("device") == "cpu":
            return 0
        if self.gpus_per_run >= 0:
            return self.gpus_per_run
        nproc = spec.batch.get("ddp_nproc", 1)
        if spec.runtime.get("device") != "cuda" and largest_node == 0:
            return 0  # "auto" on a cluster without GPUs trains on the CPU, as it would locally
        return largest_node if nproc == 0 else max(1, int(nproc or 1))

    # ------------------------------------------------------------- cluster
    def open(self, results_dir: Path, specs=()) -> None:
        specs = list(specs)
        if not specs:
            return  # nothing to run: no cluster needed
        self._ray = ray = extras.ensure("ray", why="CONFIG_TEST_MATRIX_EXECUTOR_RAY")
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        with _own_sigterm():
            if self.address:
                self._join(ray)
            else:
                self._start_private(ray)
        self.nodes = [n for n in ray.nodes() if n.get("Alive")]
        largest_gpus = max(int(n["Resources"].get("GPU", 0)) for n in self.nodes)
        largest_cpus = max(int(n["Resources"].get("CPU", 0)) for n in self.nodes)
        self.gpus = {s.run_id: self._gpus_needed(s, largest_gpus) for s in specs}
        need = max(self.gpus.values())
        if need > largest_gpus:
            raise executor_api.ExecutorRefused(
                f"a run needs {need} GPU(s) on one node but the largest node of {self.where()} has {largest_gpus}; "
                "add a larger node, or lower CONFIG_TEST_MATRIX_RAY_GPUS_PER_RUN or CONFIG_DDP_NPROC")
        if self.cpus_per_run > largest_cpus:
            raise executor_api.ExecutorRefused(
                f"a run needs {self.cpus_per_run} CPU(s) on one node but the largest node of {self.where()} has "
                f"{largest_cpus}; lower CONFIG_TEST_MATRIX_RAY_CPUS_PER_RUN")
        self.slots = max(1, sum(min(int(n["Resources"].get("CPU", 0)) // self.cpus_per_run,
                                    int(n["Resources"].get("GPU", 0)) // need if need else 1 << 30)
                                for n in self.nodes))
        self._check_results_dir(ray, Path(results_dir).resolve())

    def _join(self, ray) -> None:
        if self.address != "auto":
            host, _, port = self.address.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
            except (OSError, ValueError) as err:
                raise executor_api.ExecutorRefused(
                    f"cannot reach the Ray cluster at {self.address} ({err}); start it there with 'ray start --head', "
                    "or fix CONFIG_TEST_MATRIX_RAY_ADDRESS (host:port, 'auto', or empty for a private instance)"
                ) from None
        try:
            ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        except Exception as err:  # ConnectionError, or a version mismatch (RuntimeError)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            auth = "" if os.environ.get("RAY_AUTH_MODE") else (
                "; a cluster with token authentication (the default of 'ray start') also needs RAY_AUTH_MODE=token "
                "and its token here (~/.ray/auth_token or RAY_AUTH_TOKEN)")
            raise executor_api.ExecutorRefused(
                f"cannot join the Ray cluster at {self.address} ({first}); start it with 'ray start --head' or "
                f"fix CONFIG_TEST_MATRIX_RAY_ADDRESS{auth}") from None

    def _start_private(self, ray) -> None:
        from ray._private import ray_constants

        # Ray makes the node's address the loopback one (and binds its servers there) only
        # while its "cluster" mode is off; a private instance has one node, so it is safe.
        saved = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
        ray_constants.ENABLE_RAY_CLUSTER = False
        os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
        self._private_dir = tempfile.mkdtemp(prefix="knlp-ray-", dir="/tmp")  # short: Ray's sockets live here
        try:
            ray.init(num_cpus=self.cores, object_store_memory=PRIVATE_OBJECT_STORE_BYTES, include_dashboard=False,
                     _node_ip_address="127.0.0.1", _temp_dir=self._private_dir, logging_level="ERROR",
                     log_to_driver=False)
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = saved[0]
            if saved[1] is None:
                os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
            else:
                os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved[1]

    def _check_results_dir(self, ray, results_dir: Path) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(_probe)
        tokens = {n["NodeID"]: f".ray-probe-{secrets.token_hex(8)}" for n in self.nodes}  # one file per node
        refs = {probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(results_dir), tokens[n["NodeID"]], str(self.cwd), sys.executable): n
                for n in self.nodes}
        found, gone = {}, []
        for ref, node in refs.items():
            try:
                found[ref] = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except Exception as err:
                # A node that died after ray.nodes() listed it cannot run its probe: it runs
                # nothing else either, so it is left out; a live node whose probe fails is not.
                if not any(n["NodeID"] == node["NodeID"] and n.get("Alive") for n in ray.nodes()):
                    gone.append(ref)
                    continue
                raise executor_api.ExecutorRefused(
                    f"the probe task on {self.where()} did not finish ({type(err).__name__}); "
                    "check 'ray status' and that every node has this checkout") from None
        for ref in gone:
            self.nodes.remove(refs.pop(ref))
        if not self.nodes:
            raise executor_api.ExecutorRefused(f"every node of {self.where()} died during the checks; check 'ray status'")
        written = set()
        for token in tokens.values():
            path = results_dir / token
            with contextlib.suppress(OSError):
                if path.read_text().split()[0] == token:
                    written.add(token)
                path.unlink()
        for ref, node in refs.items():
            seen = found[ref]
            where = f"node {node['NodeManagerAddress']} ({seen['host']})"
            if not seen["checkout"] or not seen["python"]:
                raise executor_api.ExecutorRefused(
                    f"{where} lacks {'this checkout at ' + str(self.cwd) if not seen['checkout'] else sys.executable}; "
                    "every node needs the same checkout and Python environment at the same paths")
            if seen["error"] or tokens[node["NodeID"]] not in written:
                why = seen["error"] or "its file did not appear here"
                raise executor_api.ExecutorRefused(
                    f"{where} cannot share the results directory {results_dir} ({why}); put "
                    "CONFIG_TEST_MATRIX_RESULTS_DIR on storage every node mounts at the same path (NFS or similar)")

    def close(self) -> None:
        if self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()  # a private instance stops with it; a joined cluster goes on
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    # ----------------------------------------------------------------- runs
    def run(self, jobs: list) -> list[Outcome]:
        if not jobs:
            return []
        ray = self._ray
        task = ray.remote(_launch)
        pending = list(jobs)
        running: dict = {}  # ObjectRef -> (job, started)
        outcomes: list[Outcome] = []
        retry = executor_api.Retries(self.retries, self.on_event)
        # The project's own settings travel with the run (KNLP_FAULT, ...); the rest of the
        # environment is the worker node's, as paths and devices differ between machines.
        knlp_env = {k: v for k, v in os.environ.items() if k.startswith("KNLP_")}
        try:
            while pending or running:
                while pending and len(running) < self.slots:
                    job = pending.pop(0)
                    job.run_dir.mkdir(parents=True, exist_ok=True)
                    ref = task.options(num_cpus=self.cpus_per_run, num_gpus=self.gpus.get(job.run_id, 0),
                                       max_retries=0).remote(str(job.run_dir.resolve()),
                                                             self.command(job.run_dir.resolve(), job.flags),
                                                             str(self.cwd), self.cpus_per_run, self.timeout_s,
                                                             knlp_env)
                    running[ref] = (job, time.time())
                    self.on_event("start", job, None)
                done, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_s)
                for ref in done:
                    job, started = running.pop(ref)
                    outcome = self._settle(ray, ref, job, time.time() - started)
                    if retry.again(job, outcome):
                        pending.insert(0, type(job)(job.run_id, job.run_dir, [], job.gpus))  # resumes from last.pt
                        continue
                    outcomes.append(outcome)
                    self.on_event("finish", job, outcome)
                if running:
                    self.on_event("tick", None, None)
        except BaseException:
            # Ctrl-C or SIGTERM: the tasks kill their runs (which stay resumable); a task that
            # does not answer in time goes with its worker process.
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            with contextlib.suppress(Exception):
                ray.wait(list(running), num_returns=len(running), timeout=CANCEL_GRACE_S)
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        return outcomes

    def _settle(self, ray, ref, job, seconds: float) -> Outcome:
        """The task's Outcome; a task that raised or vanished is recorded as such (unless the run completed)."""
        try:
            rc, timed_out = ray.get(ref)
        except ray.exceptions.RayError as err:
            if run_state.classify(job.run_dir)[0] == run_state.COMPLETED:
                return settle(job, 0, seconds)  # lost after the run had finished
            if not isinstance(err, ray.exceptions.RayTaskError):  # its worker or node died
                _record_failure(job.run_dir, f"lost its Ray worker or node ({type(err).__name__}); resumable")
                return settle(job, 1, seconds)
            # the task itself raised (no checkout on that node, say): it would again
            first = (str(err.cause if err.cause else err).strip().splitlines() or ["?"])[-1][:200]
            _record_failure(job.run_dir, f"the Ray task failed on its node: {first}")
            return settle(job, 1, seconds)
        if timed_out:
            _record_failure(job.run_dir, f"timed out after {self.timeout_s:g} s (CONFIG_TEST_MATRIX_RUN_TIMEOUT)")
        return settle(job, rc, seconds)
