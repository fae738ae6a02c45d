"""The Ray executor on a real two-node Ray cluster on this machine (slow; Ray is installed on use).

A head and a worker started with `ray start` on local ports (tests/ray_cluster.py), each
with one CPU. Every Ray process the tests start is stopped by pid afterwards, and checked gone.
"""
import csv
import io
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lib.configuration import config as lib_config
from lib import extras
from lib.lifecycle import rundir
from ray_cluster import Cluster, free_port
from test_matrix import plan as plan_file, sweep
from test_matrix.ray_executor import RayExecutor
from test_matrix_fakes import DIVERGING_SGD, LENET_COMPARE, LENET_SAMPLE, fake_engine, launches, run_path, stem, write_config

pytestmark = pytest.mark.slow

SAMPLE = LENET_SAMPLE + """
    CONFIG_TEST_MATRIX_SEEDS=2
    CONFIG_PRUNING_MAGNITUDE=y
    CONFIG_LENET5_EPOCHS=5
"""


@pytest.fixture(scope="module")
def running_cluster():
    extras.ensure("ray", why="tests/test_matrix_ray.py")
    nodes = Cluster()
    try:
        nodes.start_head()
        yield nodes
    finally:
        nodes.stop()  # asserts that no process of the cluster is left


@pytest.fixture
def cluster(running_cluster):
    """The head and one worker, whatever an earlier test did to its nodes."""
    running_cluster.ensure_workers(1)
    return running_cluster


def on_ray(text: str, address: str) -> str:
    return text + f'\nCONFIG_TEST_MATRIX_EXECUTOR_RAY=y\nCONFIG_TEST_MATRIX_RAY_ADDRESS="{address}"\n'


def rows_without_times(results: Path) -> list[dict]:
    with open(results / "runs.csv") as handle:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(handle)]


def model_weights(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / rundir.LAST, weights_only=True, map_location="cpu")["model"]


def kill_node_of_a_run_midway(results: Path, cluster: Cluster, killed: list, done: threading.Event) -> None:
    """Once a run on the worker node has checkpointed an epoch, SIGKILL that node's raylet."""
    while not done.is_set() and not killed:
        for run_dir in plan_file.run_dirs(results):
            status = rundir.read_status(run_dir) or {}
            if status.get("state") != "running" or not (run_dir / rundir.LAST).exists():
                continue
            try:
                raylet, is_head = cluster.raylet_above(status["pid"])
            except LookupError:
                continue
            if not is_head:
                killed.append(run_dir.name)
                cluster.kill_raylet(raylet)
                return
        time.sleep(0.1)


def test_sample_sweep_on_two_nodes_equals_local_even_when_a_node_dies(cluster, tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local_cfg = write_config(tmp_path / "local", SAMPLE)
    ray_cfg = write_config(tmp_path / "ray", on_ray(SAMPLE, cluster.address))
    out = io.StringIO()
    started = time.perf_counter()
    assert sweep.run(local_cfg, out=out, cores=2) == 0, out.getvalue()
    local_s = time.perf_counter() - started
    assert "1 thread(s) each of 2" in out.getvalue()

    killed: list = []
    done = threading.Event()
    watcher = threading.Thread(target=kill_node_of_a_run_midway,
                               args=(tmp_path / "ray" / "results", cluster, killed, done))
    watcher.start()
    out = io.StringIO()
    started = time.perf_counter()
    try:
        rc = sweep.run(ray_cfg, out=out, cores=2)
    finally:
        done.set()
        watcher.join()
    ray_s = time.perf_counter() - started
    text = out.getvalue()
    print(f"local sweep {local_s:.1f} s, Ray sweep (one node lost) {ray_s:.1f} s")
    assert rc == 0, text
    assert "Ray tasks on the Ray cluster at" in text and "(2 node(s))" in text and "1 thread(s) each" in text
    assert killed, "no run ran on the worker node long enough to be killed there"
    name = killed[0]
    assert f"retry   {name}" in text and "lost its Ray worker or node" in text
    ray_results, local_results = tmp_path / "ray" / "results", tmp_path / "local" / "results"
    assert "resuming " in (ray_results / name / rundir.LOG).read_text()
    # same seeds, same accuracies, same sparsity, same memory: the report minus its timings
    assert rows_without_times(ray_results) == rows_without_times(local_results)
    for run_dir in plan_file.run_dirs(local_results):
        ours, theirs = model_weights(ray_results / run_dir.name), model_weights(run_dir)
        assert ours.keys() == theirs.keys()
        assert all(ours[k].equal(theirs[k]) for k in ours), f"{run_dir.name}: weights differ from the local run"


DRIVER = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from pathlib import Path
from lib.configuration import config as lib_config
from test_matrix import sweep
from test_matrix_fakes import fake_engine
tmp = Path({tmp!r})
fake = fake_engine(tmp)
def command(run_dir, flags):  # Ray workers have their own environment: pass the fake's settings along
    return ["env", "FAKE_STEP_S=0.5", "FAKE_STEPS=8", *fake(run_dir, flags)]
sys.exit(sweep.run(lib_config.load(tmp / "test.config"), command=command, make_report=False, cores=2))
"""


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_driver_then_rerun_and_a_diverging_run_fails_once(cluster, tmp_path, how):
    # three runs, two at a time: the AdamW ones train on, SGD at a learning rate of a million diverges at once
    cfg = write_config(tmp_path, on_ray(DIVERGING_SGD, cluster.address))
    results = tmp_path / "results"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(lib_config.ROOT), tests=str(lib_config.ROOT / "tests"), tmp=str(tmp_path)))
    proc = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end, midway = time.time() + 180, {}
        while time.time() < end and not midway:
            states = {stem(d.name): rundir.read_status(d) or {} for d in plan_file.run_dirs(results)}
            done = [n for n, s in states.items() if s.get("state") in ("completed", "failed")]
            midway = {n: s for n, s in states.items() if s.get("state") == "running" and 1 <= (s.get("step") or 0) <= 4}
            if not done:
                midway = {}
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.05)
        assert midway, "the Ray sweep never reached a state with finished and half-finished runs"
        proc.send_signal(how)  # Ctrl-C, or a driver that dies at once (Ray then ends its tasks)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the cancelled tasks killed their runs, which stay resumable
    end = time.time() + 60
    while any(Path(f"/proc/{s['pid']}").exists() for s in midway.values()) and time.time() < end:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{s['pid']}").exists() for s in midway.values()), "a run outlived its cancelled task"
    finished = {stem(d.name): (d / rundir.STATUS).stat().st_mtime_ns for d in plan_file.run_dirs(results)
                if (rundir.read_status(d) or {}).get("state") in ("completed", "failed")}
    assert "lenet5-sgd-none-seed1" in finished and "lenet5-sgd-none-seed1" not in midway

    out = io.StringIO()
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=out, make_report=False, cores=2) == 1, out.getvalue()
    sgd = run_path(results, "lenet5-sgd-none-seed1")
    for run_dir in plan_file.run_dirs(results):
        if run_dir != sgd:
            assert rundir.read_status(run_dir)["state"] == "completed", out.getvalue()
        if stem(run_dir.name) in finished:
            assert (run_dir / rundir.STATUS).stat().st_mtime_ns == finished[stem(run_dir.name)], "touched again"
    for name in midway:
        assert rundir.read_json(run_path(results, name) / "summary.json")["fake"]["resumed_from"] >= 1
        assert launches(run_path(results, name)) == ["", ""]
    assert launches(sgd) == [""], "the diverging run was retried"
    assert "loss is NaN" in rundir.read_status(sgd)["reason"]

    before = {d.name: len(launches(d)) for d in plan_file.run_dirs(results)}
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=out, make_report=False, cores=2, rerun="failed") == 1
    after = {d.name: len(launches(d)) for d in plan_file.run_dirs(results)}
    assert {n for n in after if after[n] != before[n]} == {sgd.name} and launches(sgd)[-1] == "--fresh"


def test_a_run_whose_process_is_killed_is_retried_on_the_cluster_and_resumes(cluster, tmp_path):
    cfg = write_config(tmp_path, on_ray(LENET_COMPARE, cluster.address)).replace(TEST_MATRIX_SEEDS=1)
    fake = fake_engine(tmp_path)

    def command(run_dir, flags):  # the fake's setting travels with the command: workers have their own env
        return ["env", "FAKE_DIE_ONCE=lenet5-adamw-none-seed1", *fake(run_dir, flags)]

    out = io.StringIO()
    assert sweep.run(cfg, command=command, out=out, make_report=False, cores=2) == 0, out.getvalue()
    died = run_path(tmp_path / "results", "lenet5-adamw-none-seed1")
    assert launches(died) == ["", ""] and "retry   lenet5-adamw-none-seed1" in stem(out.getvalue())
    assert "killed by SIGKILL" in out.getvalue()
    assert rundir.read_json(died / "summary.json")["fake"]["resumed_from"] == 2


def refused(cfg, tmp_path) -> str:
    with pytest.raises(sweep.SweepRefused) as err:
        sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), make_report=False, cores=2)
    assert not plan_file.run_dirs(tmp_path / "results"), "a refused sweep prepared runs"
    assert "\n" not in str(err.value)
    return str(err.value)


def test_unreachable_cluster_is_one_line(tmp_path):
    extras.ensure("ray", why="tests/test_matrix_ray.py")
    address = f"127.0.0.1:{free_port()}"
    message = refused(write_config(tmp_path, on_ray(LENET_COMPARE, address)), tmp_path)
    assert message.startswith(f"cannot reach the Ray cluster at {address}") and "CONFIG_TEST_MATRIX_RAY_ADDRESS" in message


def test_too_few_gpus_is_one_line(cluster, tmp_path):
    text = on_ray(LENET_COMPARE.replace("CONFIG_DEVICE_CPU=y", "CONFIG_DEVICE_AUTO=y"), cluster.address)
    message = refused(write_config(tmp_path, text + "CONFIG_TEST_MATRIX_RAY_GPUS_PER_RUN=2"), tmp_path)
    assert message.startswith("a run needs 2 GPU(s) on one node but the largest node of the Ray cluster at") \
        and message.count(" has 0;") == 1


def _unshare_prefix(kind: str, script: str) -> list[str]:
    """A command prefix that runs the rest in a new namespace of `kind` ("m" mount, "u" host name) after `script`."""
    script = f'{script} && exec "$@"'
    for flags in ([f"-{kind}"], ["-r", f"-{kind}"]):  # root, or an unprivileged user namespace
        probe = subprocess.run(["unshare", *flags, "--propagation", "private", "sh", "-c", script, "sh", "true"],
                               capture_output=True)
        if probe.returncode == 0:
            return ["unshare", *flags, "--propagation", "private", "sh", "-c", script, "sh"]
    if os.environ.get("CI"):
        pytest.fail(f"unshare cannot make a namespace here ({probe.stderr.decode().strip()})")
    pytest.skip("needs unshare with namespaces to give one node its own results directory or host name")


def _remove_nodes_outside(cluster: Cluster, before: set[int], kind: str) -> None:
    """Kill the processes of nodes started in another namespace of `kind` ("mnt", "uts")."""
    ours = os.readlink(f"/proc/self/ns/{kind}")
    for pid in set(cluster.processes()) - before:
        try:
            if os.readlink(f"/proc/{pid}/ns/{kind}") != ours:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    cluster.live -= 1
    end = time.time() + 120  # until Ray too has given that node up, so later sweeps do not probe it
    while len(cluster.alive_nodes()) > cluster.live and time.time() < end:
        time.sleep(1)


def test_a_run_on_another_host_that_dies_silently_is_retried_not_taken_for_live(cluster, tmp_path):
    """A node with its own host name: the driver cannot check pids there, only heartbeats."""
    before = set(cluster.processes())
    cluster.add_worker("elsewhere", prefix=_unshare_prefix("u", "hostname knlp-elsewhere"))
    try:
        cfg = write_config(tmp_path, on_ray(LENET_COMPARE, cluster.address)).replace(TEST_MATRIX_SEEDS=1)
        fake = fake_engine(tmp_path)
        victims = ["lenet5-adamw-none-seed1", "lenet5-adamw-magnitude-s90-seed1", "lenet5-adamw-movement-s90-seed1"]

        def command(run_dir, flags):  # three runs at once, one per node, each killed on its first launch
            return ["env", f"FAKE_DIE_ONCE={','.join(victims)}", *fake(run_dir, flags)]

        out = io.StringIO()
        assert sweep.run(cfg, command=command, out=out, make_report=False, cores=2) == 0, out.getvalue()
        results = tmp_path / "results"
        hosts = {(run_path(results, v) / "sweep-output.txt").read_text().split("\n")[0].split(" on ")[1].split()[0]
                 for v in victims}
        assert "knlp-elsewhere" in hosts, f"no run went to the node with the other host name ({hosts})"
        for name in victims:
            assert launches(run_path(results, name)) == ["", ""], f"{name}: {out.getvalue()}"
            assert rundir.read_json(run_path(results, name) / "summary.json")["fake"]["resumed_from"] == 2
    finally:
        _remove_nodes_outside(cluster, before, "uts")


def test_results_directory_a_node_cannot_see_is_one_line(cluster, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    prefix = _unshare_prefix("m", f'mount -t tmpfs knlp-test "{results}"')
    before = set(cluster.processes())
    cluster.add_worker("blind", prefix=prefix)
    try:
        message = refused(write_config(tmp_path, on_ray(LENET_COMPARE, cluster.address)), tmp_path)
        assert "cannot share the results directory" in message and str(results) in message
        assert "CONFIG_TEST_MATRIX_RESULTS_DIR" in message
    finally:
        _remove_nodes_outside(cluster, before, "mnt")


def _listening(pids: set[int]) -> set[str]:
    """Addresses the processes `pids` listen on (TCP, from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                # /proc prints each 32-bit word in host (little-endian) order
                packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(ipaddress.ip_address(packed))
    return found


def test_private_instance_listens_on_loopback_only_and_stops(tmp_path):
    extras.ensure("ray", why="tests/test_matrix_ray.py")
    from test_matrix.expand import expand

    cfg = write_config(tmp_path, LENET_COMPARE + "CONFIG_TEST_MATRIX_EXECUTOR_RAY=y")
    executor = RayExecutor.from_config(cfg, gpus=[], command=fake_engine(tmp_path), cores=2, cwd=lib_config.ROOT)
    (tmp_path / "results").mkdir()
    executor.open(tmp_path / "results", expand(cfg))
    private = executor._private_dir
    try:
        assert executor.slots == 2 and len(executor.nodes) == 1
        pids = Cluster.__new__(Cluster)
        pids.temp_dir, pids.strays = private, set()
        addresses = _listening(set(pids.processes()) | {os.getpid()})  # the driver listens too
        assert addresses, "found no listening socket of the private Ray instance"
        exposed = [a for a in addresses if not (a.is_loopback or (a.version == 6 and a.ipv4_mapped
                                                                    and a.ipv4_mapped.is_loopback))]
        assert not exposed, f"the private Ray instance listens on {exposed}"
    finally:
        executor.close()
    end = time.time() + 20
    while pids.processes() and time.time() < end:
        time.sleep(0.2)
    assert not pids.processes(), "the private Ray instance outlived the sweep"
