"""scripts/bench_gpt2.py runs every case end to end (tiny shape, one round)."""
import json

from scripts.bench_gpt2 import CASES, main


def test_bench_runs_every_case(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["--layers", "1", "--heads", "2", "--width", "32", "--vocab", "256", "--block", "16",
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
    assert main(["--cases", "adamw,nope"]) == 2
    assert "unknown case 'nope'" in capsys.readouterr().err
