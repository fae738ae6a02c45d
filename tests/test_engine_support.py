"""Helpers for the engine tests (this module holds no tests).

Runs use LeNet-5 on the shipped MNIST sample, shortened with config changes, so each
trains in about a second on two CPU cores.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from lib.configuration import config
from lib.lifecycle import launch, rundir
from test_matrix.expand import expand

# 2 x 62 steps, ramp 21..93, constant LR so that records can be checked against it
FAST = dict(LENET5_EPOCHS=2, PRUNING_WARMUP=20, PRUNING_FREQUENCY=10, LENET5_LEARNING_RATE=1e-3,
            LR_SCHEDULE_CONSTANT=True, LR_SCHEDULE_COSINE=False, LR_WARMUP_EPOCHS=0)


def lenet_spec(**changes):
    """The RunSpec of defconfig lenet5-sample-bitter7 with config changes (FAST by default)."""
    cfg = config.from_defconfig("lenet5-sample-bitter7").replace(**{**FAST, **changes})
    return expand(cfg)[0]


def with_runtime(spec, **runtime):
    return dataclasses.replace(spec, runtime={**spec.runtime, **runtime})


def prepare(tmp_path: Path, spec, name: str = "run") -> Path:
    return rundir.prepare(Path(tmp_path) / name, spec, None)


def run(run_dir: Path, **kw) -> int:
    return launch.run(run_dir, progress=False, **kw)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


VOLATILE = ("wall_time", "samples_per_s", "memory_bytes")


def stable_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the fields that depend on the clock and the machine."""
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rundir.read_metrics(run_dir)]


@pytest.fixture(scope="module")
def one_thread():
    """Train on one CPU thread: on a shared, busy 2-core machine two OpenMP threads per
    process spin against each other and a 3 s test takes 15 s. Restored afterwards."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KNLP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(before)
