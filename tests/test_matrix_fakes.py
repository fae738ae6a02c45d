"""Helpers for the test-matrix tests: configs written like defconfigs, and a fake engine.

The fake engine stands in for `python -m lib.lifecycle.launch --run-dir DIR [--fresh]` with the same
contract (status.json, metrics.jsonl, hparams.json, summary.json, exit 0/1/2, resume from
its checkpoint) but trains nothing, so sweeps can be tested in seconds. Behaviour comes
from the run's own spec (an SGD learning rate >= 1000 "diverges") or from environment
variables naming a run: FAKE_CRASH (exit 3, no status), FAKE_DIE_ONCE (runs, comma-separated,
SIGKILLed after two checkpointed steps on their first launch), FAKE_HANG (never ends), FAKE_BUSY
(another live process holds the run: exit 2, its status untouched).
"""
from __future__ import annotations

import functools
import importlib.util
import re
import sys
import textwrap
from pathlib import Path

from lib.configuration import config as lib_config

LOAD = lib_config.load  # the real loader, before tests point it at their own files

FAKE_ENGINE = textwrap.dedent('''
    import json, os, sys, time
    sys.path.insert(0, ROOT)
    from lib.lifecycle import rundir

    import re
    run_dir = sys.argv[1]
    fresh = "--fresh" in sys.argv[2:]
    spec = rundir.read_json(os.path.join(run_dir, "spec.json"))
    run_id = re.sub(r"-[0-9a-f]{8}(?=-seed)", "", spec["run_id"])  # FAKE_* name runs without the digest
    with open(os.path.join(run_dir, "launches.txt"), "a") as f:
        f.write(" ".join(sys.argv[2:]) + "\\n")
    status = rundir.read_status(run_dir) or {}
    if status.get("state") == "completed" and not fresh:
        sys.exit(0)
    ckpt = os.path.join(run_dir, "last.json")
    start = 0
    if os.path.exists(ckpt) and not fresh:
        start = rundir.read_json(ckpt)["step"]
    if fresh:
        open(os.path.join(run_dir, "metrics.jsonl"), "w").close()
    else:
        rundir.truncate_metrics(run_dir, start)  # lines written after the checkpoint are redone
    resumed_from = start
    rundir.write_status(run_dir, "running", step=start)
    steps = int(os.environ.get("FAKE_STEPS", "5"))
    delay = float(os.environ.get("FAKE_STEP_S", "0.01"))
    if os.environ.get("FAKE_BUSY") == run_id:  # as if another live process held the run
        rundir.write_json(os.path.join(run_dir, "status.json"), {"state": "running", "pid": os.getppid(),
                                                                 "updated": time.time()})
        sys.exit(2)
    if os.environ.get("FAKE_CRASH") == run_id:
        os._exit(3)
    if run_id in os.environ.get("FAKE_DIE_ONCE", "").split(",") and len(open(os.path.join(run_dir, "launches.txt")).readlines()) == 1:
        for step in range(start + 1, 3):  # checkpoint two steps, then die as if killed by the kernel
            rundir.append_metrics(run_dir, {"step": step, "accuracy": 1.0})
            rundir.write_json(ckpt, {"step": step})
        os.kill(os.getpid(), 9)
    if os.environ.get("FAKE_HANG") == run_id:
        time.sleep(3600)
    started = time.time()
    for step in range(start + 1, steps + 1):
        time.sleep(delay)
        if spec["optimizer_args"]["lr"] >= 1000 and step == 2:
            rundir.write_status(run_dir, "failed", reason=f"loss is NaN at step {step}", step=step)
            sys.exit(1)
        acc = 50 + 8 * step + spec["seed"]
        rundir.append_metrics(run_dir, {"step": step, "accuracy": acc, "train_loss": 1.0 / step,
                                        "sparsity": spec["target_sparsity"] * step / steps})
        rundir.write_json(ckpt, {"step": step})
        rundir.write_status(run_dir, "running", step=step)
    rundir.write_json(os.path.join(run_dir, "hparams.json"), {
        "warmup_end": spec["warmup_end"], "ramp_end": 4, "frequency": spec["frequency"],
        "total_steps": round(steps * spec["budget_factor"]), "batch_size": 64, "grad_acc": 1, "world_size": 1,
        "effective_batch": 64, "lr": spec["optimizer_args"]["lr"]})
    final = 50 + 8 * steps + spec["seed"]
    rundir.write_json(os.path.join(run_dir, "summary.json"), {
        "run_id": run_id, "metric": "accuracy", "final": {"step": steps, "accuracy": final, "test_loss": 0.1},
        "best": {"step": steps, "accuracy": final + 0.5, "test_loss": 0.1}, "achieved_sparsity": spec["target_sparsity"],
        "total_time_s": time.time() - started, "steps": steps,
        "memory": {"weights": 4000, "state": 8000, "pruning": 125, "state_ratio": 2.0,
                   "state_plus_pruning_ratio": 2.03125},
        "fake": {"resumed_from": resumed_from, "threads": os.environ.get("KNLP_NUM_THREADS"),
                 "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
                 "start": started, "end": time.time()}})
    rundir.write_status(run_dir, "completed", step=steps)
''')


def fake_engine(tmp_path: Path):
    """A `command(run_dir, flags)` for Executor/sweep.run that runs the fake engine."""
    script = tmp_path / "fake_engine.py"
    script.write_text(f"ROOT = {str(lib_config.ROOT)!r}\n" + FAKE_ENGINE)

    def command(run_dir, flags):
        return [sys.executable, str(script), str(run_dir), *flags]
    return command


def write_config(tmp_path: Path, text: str, name: str = "test.config") -> lib_config.Config:
    """Load a defconfig-style text through the one loader, with results under tmp_path."""
    path = tmp_path / name
    path.write_text("".join(line.strip() + "\n" for line in text.splitlines() if line.strip())
                    + f'CONFIG_TEST_MATRIX_RESULTS_DIR="{tmp_path / "results"}"\n'
                    + f'CONFIG_OUTPUT_DIR="{tmp_path / "runs"}"\n')
    return lib_config.load(path)


def stem(text: str) -> str:
    """Run IDs and config IDs in `text` without their settings digest: how tests name runs."""
    return re.sub(r"-[0-9a-f]{8}\b", "", text)


def run_path(parent: Path, name: str) -> Path:
    """The one run directory under `parent` whose ID (with or without the digest) is `name`."""
    found = [p for p in Path(parent).iterdir() if name in (p.name, stem(p.name))] if Path(parent).is_dir() else []
    assert len(found) == 1, f"expected one run {name} in {parent}, found {[p.name for p in found]}"
    return found[0]


def launches(run_dir: Path) -> list[str]:
    """The flags of every launch of a run by the fake engine, in order."""
    path = Path(run_dir) / "launches.txt"
    return path.read_text().splitlines() if path.exists() else []


# The LeNet-5 comparison of the README, small enough for tests: 4 configurations x 2 seeds.
LENET_COMPARE = """
    CONFIG_DEVICE_CPU=y
    CONFIG_OPTIMIZER_ADAMWPRUNE=y
    CONFIG_PRUNING_NONE=y
    CONFIG_PRUNING_MAGNITUDE=y
    CONFIG_PRUNING_MOVEMENT=y
    CONFIG_TEST_MATRIX_SEEDS=2
    CONFIG_TEST_MATRIX_PARALLEL_JOBS=2
"""


def load_script(name):
    """scripts/<name>.py as a module, for calling its main()."""
    spec = importlib.util.spec_from_file_location(f"knlp_script_{name}", lib_config.ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_config(monkeypatch, path):
    """Make lib.configuration.config.load() (what the scripts call) read `path` instead of the project's .config."""
    monkeypatch.setattr(lib_config, "load", functools.partial(LOAD, path))


def linger_after_completing(tmp_path: Path, seconds: float):
    """A `command` whose run completes (status.json "completed"), then is slow to exit."""
    script = tmp_path / "linger.py"
    script.write_text(f"import sys, time\nsys.path.insert(0, {str(lib_config.ROOT)!r})\nfrom lib.lifecycle import rundir\n"
                      "rundir.write_status(sys.argv[1], 'completed', step=5)\n"
                      f"time.sleep({seconds})\n")
    return lambda run_dir, flags: [sys.executable, str(script), str(run_dir), *flags]

# SGD at a learning rate of a million diverges (the fake engine reports NaN like the real one).
DIVERGING_SGD = """
    CONFIG_DEVICE_CPU=y
    CONFIG_OPTIMIZER_SGD=y
    CONFIG_SGD_LEARNING_RATE="1e6"
    CONFIG_OPTIMIZER_ADAMWPRUNE=y
    CONFIG_PRUNING_NONE=y
    CONFIG_TEST_MATRIX_PARALLEL_JOBS=2
"""

# The real engine on the shipped MNIST sample, offline on the CPU.
LENET_SAMPLE = """
    CONFIG_DEVICE_CPU=y
    CONFIG_HYPER_PARAM_MANUAL=y
    CONFIG_LENET5_DATASET_MNIST_SAMPLE=y
    # CONFIG_DATA_DOWNLOAD is not set
    CONFIG_TEST_MATRIX_PARALLEL_JOBS=2
"""
