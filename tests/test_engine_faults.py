"""Failure paths: NaN loss, missing data, corrupt or foreign last.pt, bad input, busy run."""
import dataclasses
import fcntl
import json

import pytest

from lib.lifecycle import rundir
from tests.test_engine_support import lenet_spec, load, prepare, run, with_runtime
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}


def test_nan_loss_stops_the_run_and_keeps_best(tmp_path, monkeypatch):
    run_dir = prepare(tmp_path, lenet_spec(PRUNING_NONE=True, PRUNING_STATE=False, OPTIMIZER_ADAMWPRUNE=False,
                                           OPTIMIZER_ADAMW=True))
    monkeypatch.setenv("KNLP_FAULT", "nan:70")
    assert run(run_dir) == 1
    status = rundir.read_status(run_dir)
    assert status["state"] == rundir.FAILED and "nan" in status["reason"] and "step 70" in status["reason"]
    assert status["step"] == 69
    assert load(run_dir / rundir.BEST)["best"]["step"] == 62  # evaluated at the end of epoch 1, kept
    assert load(run_dir / rundir.LAST)["step"] == 62           # last.pt never holds NaN weights
    assert json.loads((run_dir / rundir.SUMMARY).read_text())["final"]["step"] == 62


def test_missing_dataset_names_the_files_and_the_fix(tmp_path, capsys):
    spec = with_runtime(lenet_spec(LENET5_DATASET_MNIST=True, LENET5_DATASET_MNIST_SAMPLE=False),
                        data_dir=str(tmp_path / "nodata"), download=False)
    run_dir = prepare(tmp_path, spec)
    assert run(run_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    line = err[0]
    assert "train-images-idx3-ubyte" in line and str(tmp_path / "nodata" / "MNIST" / "raw") in line
    assert "CONFIG_DATA_DOWNLOAD" in line
    status = rundir.read_status(run_dir)
    assert status["state"] == rundir.FAILED and status["reason"] in line


def test_corrupt_last_pt_is_refused_and_nothing_is_overwritten(tmp_path, capsys):
    run_dir = prepare(tmp_path, lenet_spec())
    assert run(run_dir, stop_at_step=70) == 1
    last = run_dir / rundir.LAST
    last.write_bytes(last.read_bytes()[:5000])  # a torn file (as from a broken disk or a bad copy)
    before = snapshot(run_dir)
    capsys.readouterr()
    assert run(run_dir) == 2
    line = capsys.readouterr().err.strip()
    assert str(last) in line and "--fresh" in line
    after = snapshot(run_dir)
    for name in before:
        if name not in (rundir.STATUS, rundir.LOG):
            assert after[name] == before[name], f"{name} was overwritten"
    assert "corrupt" in rundir.read_status(run_dir)["reason"]
    assert run(run_dir, fresh=True) == 0  # the documented way out
    moved = list(run_dir.glob(".old-*"))
    assert len(moved) == 1 and (moved[0] / rundir.LAST).read_bytes() == before[rundir.LAST]


def test_changed_config_cannot_resume_a_foreign_checkpoint(tmp_path, capsys):
    run_dir = prepare(tmp_path, lenet_spec())
    assert run(run_dir, stop_at_step=30) == 1
    spec = rundir.read_spec(run_dir)
    changed = dataclasses.replace(spec, optimizer_args={**spec.optimizer_args, "lr": 5e-3})
    rundir.write_json(run_dir / rundir.SPEC, changed.to_dict())
    before = (run_dir / rundir.LAST).read_bytes()
    assert run(run_dir) == 2
    line = capsys.readouterr().err
    assert "different configuration" in line and "lr" in line and str(run_dir / rundir.LAST) in line
    assert (run_dir / rundir.LAST).read_bytes() == before


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    run_dir = prepare(tmp_path, lenet_spec())
    assert run(run_dir, stop_at_step=30) == 1
    path = run_dir / rundir.LAST
    payload = load(path)
    payload["model"] = {"conv1.weight": payload["model"]["conv1.weight"]}
    from lib.lifecycle import checkpoint

    checkpoint.save(path, {k: v for k, v in payload.items() if k != "format"})
    assert run(run_dir) == 2
    assert "does not fit" in capsys.readouterr().err


def test_impossible_schedule_is_bad_input(tmp_path, capsys):
    run_dir = prepare(tmp_path, lenet_spec(LENET5_EPOCHS=1, PRUNING_WARMUP=100))  # ramp end 46 < warm-up
    assert run(run_dir) == 2
    assert "CONFIG_PRUNING_WARMUP" in capsys.readouterr().err
    assert rundir.read_status(run_dir)["state"] == rundir.FAILED


def test_missing_spec_is_bad_input(tmp_path, capsys):
    assert run(tmp_path / "nothing") == 2
    assert "spec.json" in capsys.readouterr().err


def test_a_run_already_in_training_is_not_started_twice(tmp_path, capsys):
    run_dir = prepare(tmp_path, lenet_spec())
    with open(run_dir / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run(run_dir) == 2
    assert "another process" in capsys.readouterr().err
    assert not (run_dir / rundir.STATUS).exists()


@pytest.mark.parametrize("bad", ["cuda"])
def test_gpu_demanded_on_a_cpu_machine(tmp_path, capsys, bad):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run_dir = prepare(tmp_path, with_runtime(lenet_spec(), device=bad))
    assert run(run_dir) == 2
    assert "CONFIG_DEVICE_CUDA" in capsys.readouterr().err


def test_fresh_moves_only_the_engines_outputs(tmp_path):
    from lib.lifecycle.launch import move_aside

    run_dir = prepare(tmp_path, lenet_spec())
    for name in (rundir.LAST, rundir.METRICS, rundir.STATUS, ".last.pt.x1y2", "sweep-output.txt"):
        (run_dir / name).write_text("old")
    moved = move_aside(run_dir)
    assert sorted(p.name for p in moved.iterdir()) == sorted([rundir.LAST, rundir.METRICS, rundir.STATUS,
                                                              ".last.pt.x1y2"])
    assert (run_dir / "sweep-output.txt").read_text() == "old" and (run_dir / rundir.SPEC).is_file()
    assert move_aside(run_dir) is None
