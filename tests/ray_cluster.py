"""A real multi-node Ray cluster on this machine for the Ray executor's tests.

`ray start --head` and `ray start --address` processes on local ports, each node with
one CPU and a small object store (Ray is heavy on a machine shared with others). Every
process of the cluster is found by its own temp dir (or as a descendant of one) and
stopped by pid, so another Ray on the machine is never touched and nothing is left.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBJECT_STORE_BYTES = 80 * 1024 * 1024
RAY = str(Path(sys.executable).with_name("ray"))
# New Ray clusters require a token (kept in ~/.ray/auth_token); whoever joins one by its
# address must send it, and Ray reads this once, when it is first imported: set it before.
AUTH = {"RAY_AUTH_MODE": "token"}
os.environ.update(AUTH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Cluster:
    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="knlp-rt-", dir="/tmp")  # short: Ray puts sockets here
        self.port = free_port()
        self.ip = None
        self.nodes: list[str] = []  # names of the nodes started, in order
        self.live = 0  # nodes started and not killed
        self.strays: set[int] = set()  # descendants of a killed raylet (re-parented to init)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def _start(self, args: list[str], prefix: list[str] = (), env=None) -> None:
        cmd = [*prefix, RAY, "start", *args, "--num-cpus=1", "--num-gpus=0",
               f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                                env=dict(os.environ, **AUTH, **(env or {})))
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")

    def start_head(self) -> "Cluster":
        import ray

        self.ip = ray.util.get_node_ip_address()
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp_dir}",
                     "--node-name=head"])
        self.nodes.append("head")
        self.live += 1
        return self

    def add_worker(self, name: str, prefix: list[str] = ()) -> None:
        self._start([f"--address={self.address}", f"--node-name={name}", f"--temp-dir={self.temp_dir}"], prefix)
        self.nodes.append(name)
        self.live += 1
        self.wait_for_nodes()

    def ensure_workers(self, count: int) -> None:
        """Start workers until the head has `count` live ones (a test may have killed one)."""
        while self.live < count + 1:
            self.add_worker(f"worker{len(self.nodes)}")

    def alive_nodes(self) -> list[dict]:
        import ray

        ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        try:
            return [n for n in ray.nodes() if n.get("Alive")]
        finally:
            ray.shutdown()

    def wait_for_nodes(self, timeout_s: float = 60) -> None:
        end = time.time() + timeout_s
        while len(self.alive_nodes()) < self.live:
            if time.time() > end:
                raise RuntimeError(f"the Ray cluster has fewer than {self.live} live nodes")
            time.sleep(1)

    @staticmethod
    def raylet_above(pid: int) -> tuple[int, bool]:
        """(pid of the raylet that runs process `pid`, whether that is the head node's)."""
        while pid > 1:
            cmd = _cmdline(pid)
            if "raylet/raylet" in cmd:
                return pid, "__internal_head__" in cmd
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                break
        raise LookupError("not a process of a Ray node")

    def kill_raylet(self, pid: int) -> None:
        """SIGKILL one node's raylet and every process under it at once, as when its machine
        dies (a raylet killed alone lets its workers linger, and a run could finish first)."""
        tree = _children()
        doomed, todo = [pid], list(tree.get(pid, []))
        while todo:
            child = todo.pop()
            self.strays.add(child)
            doomed.append(child)
            todo.extend(tree.get(child, []))
        for victim in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        self.live -= 1

    def processes(self) -> list[int]:
        """Every process of this cluster: those naming its temp dir and all their descendants."""
        tree = _children()
        roots = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and self.temp_dir in _cmdline(int(p.name))]
        found, todo = set(), roots + [pid for pid in self.strays if Path(f"/proc/{pid}").exists()]
        while todo:
            pid = todo.pop()
            if pid not in found and pid != os.getpid():
                found.add(pid)
                todo.extend(tree.get(pid, []))
        return sorted(found)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            pids = self.processes()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            end = time.time() + wait
            while self.processes() and time.time() < end:
                time.sleep(0.2)
        left = self.processes()
        assert not left, f"Ray processes left running: {left}"
