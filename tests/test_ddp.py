"""DDP under torchrun (gloo on the CPU): same training as one process, failing ranks reported."""
import pytest
import torch

from lib.lifecycle import launch, rundir
from lib.training.task import BadInput
from tests.test_engine_support import lenet_spec, load, prepare, run, stable_metrics
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def ddp_spec(nproc: int):
    # effective batch 64 x 2: two processes x 64, or one process x 64 x 2 accumulated
    return lenet_spec(DDP_NPROC=nproc, GRAD_ACC=2)


@pytest.fixture(scope="module")
def single(tmp_path_factory, one_thread):
    run_dir = prepare(tmp_path_factory.mktemp("single"), ddp_spec(1))
    assert run(run_dir) == 0
    return run_dir


def test_two_gloo_processes_match_one_process_with_double_accumulation(tmp_path, single):
    run_dir = prepare(tmp_path, ddp_spec(2))
    assert run(run_dir) == 0
    hp, hp1 = rundir.read_json(run_dir / rundir.HPARAMS), rundir.read_json(single / rundir.HPARAMS)
    assert (hp["world_size"], hp["batch_size"], hp["grad_acc"], hp["backend"]) == (2, 64, 1, "gloo")
    assert (hp1["world_size"], hp1["batch_size"], hp1["grad_acc"]) == (1, 64, 2)
    assert hp["effective_batch"] == hp1["effective_batch"] == 128 and hp["total_steps"] == hp1["total_steps"]
    ddp, one = stable_metrics(run_dir), stable_metrics(single)
    assert [r["step"] for r in ddp] == [r["step"] for r in one] == [31, 62]
    for a, b in zip(ddp, one):
        for key in ("train_loss", "test_loss", "accuracy", "sparsity"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    wa, wb = load(run_dir / rundir.LAST)["model"], load(single / rundir.LAST)["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert rundir.read_status(run_dir)["state"] == rundir.COMPLETED


def test_a_crashing_rank_fails_the_job_with_its_rank_and_reason(tmp_path, monkeypatch):
    run_dir = prepare(tmp_path, ddp_spec(2))
    monkeypatch.setenv("KNLP_FAULT", "raise:40:1")
    assert run(run_dir) == 1
    status = rundir.read_status(run_dir)
    assert status["state"] == rundir.FAILED and status["reason"].startswith("rank 1: RuntimeError: injected fault")
    assert status["step"] == 39 and load(run_dir / rundir.LAST)["step"] == 31


@pytest.mark.slow
def test_a_killed_rank_fails_the_job_and_a_rerun_resumes(tmp_path, monkeypatch, single):
    run_dir = prepare(tmp_path, ddp_spec(2))
    monkeypatch.setenv("KNLP_FAULT", "exit:40:1")  # rank 1 vanishes without a word, like kill -9
    assert run(run_dir) == 1
    status = rundir.read_status(run_dir)
    assert status["state"] == rundir.FAILED and "rank 1" in status["reason"] and "17" in status["reason"]
    monkeypatch.delenv("KNLP_FAULT")
    assert run(run_dir) == 0
    assert "resuming" in (run_dir / rundir.LOG).read_text() and load(run_dir / rundir.LAST)["step"] == 62
    wa, wb = load(run_dir / rundir.LAST)["model"], load(single / rundir.LAST)["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_process_count_rules(monkeypatch):
    spec = lenet_spec(DDP_NPROC=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert launch.resolve_nproc(spec) == 1  # 0 = one per GPU; none here: one process
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    spec = lenet_spec(DDP_NPROC=0, DEVICE_CPU=False, DEVICE_AUTO=True)
    assert launch.resolve_nproc(spec) == 2
    with pytest.raises(BadInput, match="2 GPU"):
        launch.resolve_nproc(lenet_spec(DDP_NPROC=3, DEVICE_CPU=False, DEVICE_AUTO=True))
    assert launch.resolve_nproc(lenet_spec(DDP_NPROC=3)) == 3  # CPU processes (gloo) are not limited by GPUs


def test_manual_batch_is_split_over_processes():
    from lib.configuration.resolve import batch_plan

    spec = lenet_spec(BATCH_SIZE=64, GRAD_ACC=4)
    assert [batch_plan(spec, world_size=w, device_type="cpu", compile=False)[k] for w in (1, 2, 4, 8)
            for k in ("batch_size", "grad_acc")] == [64, 4, 64, 2, 64, 1, 32, 1]
    with pytest.raises(BadInput, match="multiple of 3"):
        batch_plan(spec, world_size=3, device_type="cpu", compile=False)
