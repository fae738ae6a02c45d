"""scripts/bench_gpt2.py runs every case end to end (tiny shape, one round)."""
import json

import pytest
import torch

from gpt2.step_timing import Ramp, amortised_step_s
from lib import hwdetect
from scripts import bench_gpt2
from scripts.bench_gpt2 import CASES, DEVICE_CASES, main


def test_bench_runs_every_case(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["--device", "cpu", "--layers", "1", "--heads", "2", "--width", "32", "--vocab", "256", "--block", "16",
                 "--batch", "2", "--rounds", "1", "--iters", "1", "--warmup", "3", "--threads", "1",
                 "--json", str(out)])
    assert code == 0
    results = {r["case"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == set(CASES)
    for name in ("bitter7", "bitter7-spam", "spam-magnitude"):
        assert abs(results[name]["sparsity"] - 0.5) < 0.01 and results[name]["mask_update_ms"] is not None
    assert results["adamw"]["added_vs_adamw"] == 0.0 and results["adamw"]["step_vs_adamw"] == 0.0
    assert all(r["optimizer_ms"] > 0 for r in results.values())
    assert "tokens/s" in capsys.readouterr().out


def test_bench_rejects_unknown_case(capsys):
    assert main(["--device", "cpu", "--cases", "adamw,nope"]) == 2
    assert "unknown case 'nope'" in capsys.readouterr().err


TINY = ["--layers", "1", "--heads", "2", "--width", "32", "--vocab", "256", "--block", "16", "--batch", "2",
        "--threads", "1"]


def test_per_step_bench_on_the_cpu_times_ramp_updates_apart(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--per-step", "--compile", "off", "--iters", "9", "--update-every", "4",
                 "--frequency", "100", "--json", str(out)] + TINY) == 0
    saved = json.loads(out.read_text())
    rows = {r["case"]: r for r in saved["results"]}
    assert list(rows) == list(DEVICE_CASES) and saved["gpu"] is None and saved["amp"] is None
    # warm-up max(3, 4 + 2) = 6 untimed steps; timed steps 7..15; updates after 9 and 13 (1 + 4k).
    for name in ("bitter7", "spam-magnitude"):
        r = rows[name]
        assert (r["updates_timed"], r["steps_timed"]) == (2, 7)
        want = r["step_s"] + (r["update_step_s"] - r["step_s"]) / 100
        assert r["amortised_step_s"] == pytest.approx(want)
        assert r["update_step_vs_fused_adamw"] == pytest.approx(r["update_optimizer_s"] / rows["adamw"]["optimizer_s"])
        assert 0 < r["sparsity"] < 0.5  # still inside the ramp
    adamw = rows["adamw"]
    assert (adamw["updates_timed"], adamw["steps_timed"], adamw["step_vs_adamw"]) == (0, 9, 0.0)
    assert adamw["tokens_per_s"] == pytest.approx(2 * 16 / adamw["step_s"])
    assert all(r["mfu"] is None and r["peak_memory_bytes"] is None and r["compile"] is False for r in rows.values())
    assert "unknown" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs")
def test_cuda_bench_is_refused_without_a_gpu(capsys):
    assert main(["--device", "cuda"]) == 2
    assert "torch sees no GPU" in capsys.readouterr().err


def test_per_step_bench_refuses_the_plain_case(capsys):
    assert main(["--device", "cpu", "--per-step", "--cases", "plain"] + TINY) == 2
    assert "unknown case 'plain'" in capsys.readouterr().err


def test_auto_batch_follows_hwdetect_per_compile_mode(monkeypatch):
    monkeypatch.setattr(hwdetect, "detect_gpus", lambda: [hwdetect.GPU("NVIDIA H200", 139.8)])
    cuda0 = torch.device("cuda", 0)
    assert (bench_gpt2.auto_batch(cuda0, True), bench_gpt2.auto_batch(cuda0, False)) == (64, 32)


def test_amortised_step_by_hand():
    r = {"step_s": 0.100, "update_step_s": 0.300}
    assert amortised_step_s(r, 100) == pytest.approx(0.102)
    assert amortised_step_s({"step_s": 0.1, "update_step_s": None}, 100) == 0.1


def test_ramp_update_steps_follow_the_schedule():
    ramp = Ramp(warmup_end=1, ramp_end=20, frequency=4)
    assert [t for t in range(1, 21) if ramp.updates_after(t)] == [5, 9, 13, 17, 20]


def test_a_failing_case_keeps_the_others_figures(tmp_path, monkeypatch, capsys):
    real, calls = bench_gpt2.time_case, []

    def flaky(make_optimizer, cfg, **kw):
        calls.append(1)
        if len(calls) == 2:  # DEVICE_CASES[1], bitter7
            raise RuntimeError("injected compile error\nsecond line")
        return real(make_optimizer, cfg, **kw)

    monkeypatch.setattr(bench_gpt2, "time_case", flaky)
    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--per-step", "--compile", "off", "--json", str(out)] + TINY) == 1
    rows = {r["case"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["bitter7"]["error"] == "RuntimeError: injected compile error"
    assert rows["spam-magnitude"]["tokens_per_s"] > 0 and "error" not in rows["adamw"]
    assert "bitter7 (compile off, batch 2) failed: RuntimeError: injected compile error" in capsys.readouterr().err
