"""Every registered executor runs a tiny fake sweep; the registry picks the one the config selects."""
import io

import pytest

from lib import extras
from lib.lifecycle import rundir
from test_matrix import executor_api, plan as plan_file, sweep
from test_matrix_fakes import LENET_COMPARE, fake_engine, write_config

TINY = "\n".join(line for line in LENET_COMPARE.replace("SEEDS=2", "SEEDS=1").splitlines()
                 if "PARALLEL_JOBS" not in line) + "\n"
# name -> (config lines that select it, GPUs the sweep is given)
SELECT = {
    "serial": ("CONFIG_TEST_MATRIX_PARALLEL_JOBS=1\n", []),
    "parallel": ("CONFIG_TEST_MATRIX_PARALLEL_JOBS=2\n", []),
    "gpu": ("CONFIG_TEST_MATRIX_PARALLEL_JOBS=2\n", ["0", "1"]),
    "ray": ("CONFIG_TEST_MATRIX_EXECUTOR_RAY=y\n", []),
}
SLOW = {"ray"}  # installs Ray and starts a private instance: CI runs it (tests/test_matrix_ray.py's rule)


def test_every_registered_executor_has_a_case_and_a_real_symbol():
    from lib.configuration import config

    assert set(SELECT) == set(executor_api.EXECUTORS)
    symbols = config.new_kconfig().syms
    for name, entry in executor_api.EXECUTORS.items():
        assert entry.symbol in symbols, f"{name}: {entry.symbol} is not a Kconfig symbol"
        assert issubclass(executor_api.executor_class(name), executor_api.RunExecutor)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in executor_api.EXECUTORS])
def test_each_executor_runs_a_tiny_fake_sweep(name, tmp_path):
    lines, gpus = SELECT[name]
    cfg = write_config(tmp_path, TINY + lines)
    assert executor_api.name_of(cfg, gpus) == name
    if name == "ray":
        extras.ensure("ray", why="tests/test_executor_registry.py")
    out = io.StringIO()
    rc = sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, gpus=gpus, make_report=False)
    text = out.getvalue()
    assert rc == 0, text
    dirs = plan_file.run_dirs(tmp_path / "results")
    assert len(dirs) == 4 and all(rundir.read_status(d)["state"] == rundir.COMPLETED for d in dirs)
    assert "Sweep: 4 of 4 runs completed" in text
    seen_gpus = {rundir.read_json(d / rundir.SUMMARY)["fake"]["gpus"] for d in dirs}
    if name == "gpu":
        assert seen_gpus == {"0", "1"} and "one per GPU (0, 1)" in text
    elif name in ("serial", "parallel"):
        at_once = "1 at a time" if name == "serial" else "2 at a time"
        assert f"{at_once} on the CPU" in text


def test_an_executor_is_chosen_by_its_symbol_then_by_suits(tmp_path):
    cfg = write_config(tmp_path, TINY)
    assert executor_api.name_of(cfg.replace(TEST_MATRIX_PARALLEL_JOBS=1), []) == "serial"
    assert executor_api.name_of(cfg.replace(TEST_MATRIX_PARALLEL_JOBS=3), []) == "parallel"
    assert executor_api.name_of(cfg.replace(TEST_MATRIX_PARALLEL_JOBS=1), ["0"]) == "gpu"
    ray = cfg.replace(TEST_MATRIX_EXECUTOR_RAY=True, TEST_MATRIX_EXECUTOR_LOCAL=False)
    assert executor_api.name_of(ray, ["0"]) == "ray"
