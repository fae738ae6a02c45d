"""make doctor: the environment report, the checks on the CPU, the table and the exit status."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib import hwdetect
from lib.configuration import model_registry
from lib.doctor import checks, environment, runner
from lib.doctor.checks import Check, CheckFailed, Skipped
from lib.doctor.ddp import ddp_step
from scripts import doctor

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
H100 = hwdetect.GPU("NVIDIA H100 80GB HBM3", 79.19)


@pytest.fixture
def defaults():
    return environment.load_config()


def test_report_names_versions_disk_and_auto_for_every_model(defaults):
    cfg, source = defaults
    env = environment.collect(cfg, source)
    text = "\n".join(environment.lines(env))
    assert f"torch {torch.__version__}" in text and "Python " in text
    for symbol in ("OUTPUT_DIR", "TEST_MATRIX_RESULTS_DIR", "DATA_DIR"):
        assert f"({symbol}):" in text
    assert set(env["auto"]) == set(model_registry.names())
    for model in model_registry.names():
        assert f"  {model}: hwdetect: found" in text
    assert all(d["free_bytes"] > 0 for d in env["dirs"].values())


def test_report_with_injected_gpus_shows_them_and_the_generic_row(defaults, monkeypatch):
    monkeypatch.setattr(hwdetect, "detect_gpus", lambda: [H100, H100])
    cfg, source = defaults
    text = "\n".join(environment.lines(environment.collect(cfg, source)))
    assert "GPUs: 2" in text and "GPU 1: NVIDIA H100 80GB HBM3, 79.2 GiB [cuda]" in text
    # Kconfig defaults: compile off, so the eager factor halves the compiled row.
    want = hwdetect.auto_hyperparams("gpt2", [H100] * 2, compile=False)
    assert f"gpt2: {want.line()}" in text and "generic memory row" in text


def test_free_disk_measures_the_nearest_existing_parent(tmp_path):
    measured, free = environment.free_disk(tmp_path / "not" / "yet")
    assert measured == tmp_path and free > 0


def test_configured_amp(defaults):
    cfg, _ = defaults
    assert environment.configured_amp(cfg) == "bf16"
    assert environment.configured_amp(cfg.replace(AMP_BF16=False, AMP_FP16=True)) == "fp16"
    assert environment.configured_amp(cfg.replace(MIXED_PRECISION=False)) is None


@pytest.mark.parametrize("model", sorted(checks.MODELS))
def test_train_steps_pass_on_cpu(model):
    assert "float32" in checks.train_steps(model, CPU, None)


def test_train_steps_fail_when_the_loss_does_not_fall(monkeypatch):
    frozen = checks.adamw
    monkeypatch.setattr(checks, "adamw", lambda model, **kw: frozen(model, **kw) if kw else
                        checks.optimizers.create("adamw", model, lr=0.0, weight_decay=0.0))
    with pytest.raises(CheckFailed, match="loss did not fall"):
        checks.train_steps("lenet5", CPU, None)


def test_fused_adamw_pruning_and_resume_pass_on_cpu():
    assert "foreach" in checks.fused_adamw(CPU)
    detail = checks.bitter7_mask_update(CPU, None)
    assert "exactly zero" in detail
    assert "bit-identical" in checks.checkpoint_resume(CPU, None)


def test_resume_check_fails_when_the_optimizer_state_is_not_restored(monkeypatch):
    from lib.optimizers import core

    monkeypatch.setattr(core.AdamWPrune, "load_state_dict", lambda self, sd: None)
    with pytest.raises(CheckFailed, match="differ"):
        checks.checkpoint_resume(CPU, None)


def test_cpu_plan_compiles_the_smallest_model_only():
    names = [c.name for c in runner.plan([CPU], "bf16")]
    assert names == ["lenet5 steps", "lenet5 torch.compile", "gpt2-tiny steps", "gpt2-tiny torch.compile",
                     "fused AdamW", "AdamWPrune bitter7 mask update", "checkpoint save + resume", "DDP gloo"]
    skipped = runner.run([c for c in runner.plan([CPU], None) if c.name == "gpt2-tiny torch.compile"],
                         printer=lambda _: None)
    assert skipped[0]["status"] == runner.SKIP and "lenet5 only" in skipped[0]["detail"]


def test_gpu_plan_adds_cuda_checks_and_one_nccl_check():
    gpus = [torch.device("cuda", 0), torch.device("cuda", 1)]
    plan = runner.plan([CPU] + gpus, "bf16")
    assert [c.device for c in plan].count("cuda:1") == 7
    assert [c.name for c in plan][-2:] == ["DDP gloo", "DDP nccl"] and plan[-1].device == "cuda x 2 GPU(s)"


def test_ddp_gloo_two_processes():
    assert "2 processes" in ddp_step("gloo", 2)


def _fail():
    raise CheckFailed("injected failure\nsecond line never shown")


def _crash():
    raise RuntimeError("boom")


def _skip():
    raise Skipped("not here")


def test_runner_statuses_table_and_one_line_reasons():
    results = runner.run([Check("ok", "cpu", lambda: "fine"), Check("bad", "cpu", _fail),
                          Check("crash", "cuda:0", _crash), Check("n/a", "cpu", _skip)], printer=lambda _: None)
    assert [r["status"] for r in results] == ["pass", "FAIL", "FAIL", "skip"]
    assert all(r["seconds"] >= 0 for r in results)
    assert runner.failures(results) == ["doctor: bad failed on cpu: injected failure",
                                        "doctor: crash failed on cuda:0: RuntimeError: boom"]
    lines = runner.table(results)
    assert len(lines) == 5 and lines[0].split()[:3] == ["check", "device", "result"]


FULL_PLAN = runner.plan


def _cheap_plan(targets, amp):
    return [c for c in FULL_PLAN(targets, amp) if c.name in ("gpt2-tiny steps", "fused AdamW")]


def test_main_exits_1_with_the_reason_when_a_check_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(runner, "plan", lambda t, a: _cheap_plan(t, a) + [Check("injected", "cpu", _fail)])
    out = tmp_path / "doctor.json"
    assert doctor.main(["--devices", "cpu", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["doctor: injected failed on cpu: injected failure"]
    assert "gpt2-tiny steps" in captured.out and "2 of 3 checks passed" in captured.out
    saved = json.loads(out.read_text())
    assert [r["status"] for r in saved["results"]] == ["pass", "pass", "FAIL"]
    assert saved["environment"]["torch"] == torch.__version__


def test_main_exits_0_when_every_check_passes(monkeypatch, capsys):
    monkeypatch.setattr(runner, "plan", _cheap_plan)
    assert doctor.main(["--devices", "cpu"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs")
def test_main_refuses_cuda_without_gpus(capsys):
    assert doctor.main(["--devices", "cuda"]) == 2
    assert "sees no such device" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="on a CPU machine tests/test_gpu_check.py runs the whole doctor (and times it)")
def test_make_doctor_passes_on_this_gpu_machine(tmp_path):
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "scripts.doctor", "--json", str(tmp_path / "d.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - began
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    results = json.loads((tmp_path / "d.json").read_text())["results"]
    assert {r["status"] for r in results} <= {"pass", "skip"}
    assert any(r["check"] == "gpt2-tiny torch.compile" and r["device"] == "cuda:0" and r["status"] == "pass"
               for r in results)
    assert any(r["check"] == "DDP nccl" and r["status"] == "pass" for r in results)
    assert seconds < 240, f"make doctor took {seconds:.0f} s"
