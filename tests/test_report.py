"""The report: numbers equal a hand computation from the runs' summary.json files."""
import io
import json
import math
import statistics

import pandas as pd
import pytest

from lib.lifecycle import rundir
from test_matrix import plan as plan_file, report
from test_matrix.expand import config_id, expand
from test_matrix_fakes import LENET_COMPARE, load_script, run_path, stem, use_config, write_config

# final accuracy of each run by configuration, per seed (None: that seed failed)
FINAL = {"lenet5-adamw-none": [98.0, 99.0], "lenet5-adamw-magnitude-s90": [97.1, 96.5],
         "lenet5-adamw-movement-s90": [95.0, 96.2], "lenet5-adamwprune-bitter7-state-s90": [97.7, None]}


def make_results(tmp_path, text=LENET_COMPARE):
    """A results directory written by hand: plan, specs, statuses, summaries, metrics."""
    cfg = write_config(tmp_path, text)
    results = tmp_path / "results"
    runs = expand(cfg)
    plan_file.write_plan(results, cfg, runs)
    for run in runs:
        run_dir = rundir.prepare(results / run.run_id, run, None)
        final = FINAL.get(stem(config_id(run)), [90.0, 91.0])[run.seed - 1]
        if final is None:
            rundir.write_status(run_dir, rundir.FAILED, reason="loss is NaN at step 40")
            continue
        for step in (10, 20):
            rundir.append_metrics(run_dir, {"step": step, "accuracy": final - 20 / step, "train_loss": 1 / step})
        rundir.write_json(run_dir / rundir.HPARAMS, {"warmup_end": 100, "ramp_end": 300, "frequency": 50,
                                                     "total_steps": 400, "batch_size": 64, "grad_acc": 1,
                                                     "world_size": 1, "effective_batch": 64})
        state, pruning = 2000, (1000 if run.pruning == "movement" else 0 if run.pruning == "none" else 125)
        rundir.write_json(run_dir / rundir.SUMMARY, {  # the engine's format (lib/training/engine.py _summary)
            "run_id": run.run_id, "metric": "accuracy", "final": {"step": 20, "accuracy": final, "test_loss": 0.2},
            "best": {"step": 10, "accuracy": final + 0.25 * run.seed, "test_loss": 0.1},
            "achieved_sparsity": run.target_sparsity * (1 - 0.001 * run.seed), "total_time_s": 30.0 + run.seed,
            "memory": {"weights": 1000, "state": state, "pruning": pruning, "transient_peak": 400,
                       "state_ratio": state / 1000, "state_plus_pruning_ratio": (state + pruning) / 1000}})
        rundir.write_status(run_dir, rundir.COMPLETED)
    return cfg, results


def build(results, cfg=None):
    out = io.StringIO()
    report.build(results, current_cfg=cfg, out=out)
    return stem(out.getvalue())


def read_table(results):
    """summary.csv indexed by configuration, named without the settings digest."""
    table = pd.read_csv(results / "summary.csv").set_index("config")
    table.index = table.index.map(stem)
    return table


def test_table_equals_hand_computation_from_summaries(tmp_path):
    cfg, results = make_results(tmp_path)
    text = build(results, cfg)
    table = read_table(results)
    for config in FINAL:
        summaries = [rundir.read_json(d / "summary.json") for d in sorted(results.glob(config + "-*-seed*"))
                     if (d / "summary.json").exists()]
        finals = [s["final"]["accuracy"] for s in summaries]
        row = table.loc[config]
        assert row["n"] == len(finals)
        assert row["final_mean"] == pytest.approx(statistics.mean(finals))
        assert row["best_mean"] == pytest.approx(statistics.mean(s["best"]["accuracy"] for s in summaries))
        assert row["achieved_sparsity_mean"] == pytest.approx(100 * statistics.mean(s["achieved_sparsity"] for s in summaries))
        assert row["total_time_s_mean"] == pytest.approx(statistics.mean(s["total_time_s"] for s in summaries))
        assert row["memory.state"] == summaries[0]["memory"]["state"]
        assert row["memory.state_plus_pruning_ratio"] == pytest.approx(summaries[0]["memory"]["state_plus_pruning_ratio"])
        if len(finals) > 1:
            assert row["final_std"] == pytest.approx(statistics.stdev(finals))
        else:
            assert math.isnan(row["final_std"])
    assert table.loc["lenet5-adamwprune-bitter7-state-s90", "failed"] == 1
    markdown = stem((results / "report.md").read_text())
    assert "98.50 ± 0.71" in markdown and "98.50 ± 0.71" in text
    movement = next(line for line in markdown.splitlines() if line.startswith("| lenet5-adamw-movement-s90 "))
    assert "| 2.0 KiB " in movement and "| 1000 B " in movement and "| 3.00x " in movement
    assert "| lenet5-adamwprune-bitter7-state-s90 " in markdown and "1 failed" in markdown
    assert "loss is NaN at step 40" in markdown
    per_run = pd.read_csv(results / "runs.csv")
    assert len(per_run) == 8 and set(per_run["state"]) == {"completed", "failed"}


def test_plots_are_written_and_linked(tmp_path):
    _cfg, results = make_results(tmp_path)
    build(results)
    markdown = stem((results / "report.md").read_text())
    for name in ("metric_vs_sparsity.png", "curves-lenet5.png", "memory.png"):
        assert (results / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name})" in markdown


def test_runs_of_an_older_config_are_named_not_mixed(tmp_path):
    cfg, results = make_results(tmp_path)
    # a leftover run the plan does not know, and one whose spec changed since
    stray = results / "lenet5-adamw-none-seed9"
    stray.mkdir()
    spec = rundir.read_json(run_path(results, "lenet5-adamw-none-seed1") / "spec.json")
    rundir.write_json(stray / "spec.json", dict(spec, seed=9, run_id=stray.name))
    rundir.write_json(stray / "summary.json", {"metric": "accuracy", "final": {"accuracy": 10.0},
                                               "best": {"accuracy": 10.0}})
    rundir.write_status(stray, rundir.COMPLETED)
    changed = run_path(results, "lenet5-adamw-magnitude-s90-seed2") / "spec.json"
    old = rundir.read_json(changed)
    rundir.write_json(changed, dict(old, optimizer_args=dict(old["optimizer_args"], lr=0.5)))
    text = build(results, cfg.replace(LENET5_LEARNING_RATE=0.002))
    table = read_table(results)
    assert table.loc["lenet5-adamw-none", "final_mean"] == pytest.approx(98.5)  # the stray 10.0 is not in it
    assert table.loc["lenet5-adamw-magnitude-s90", "n"] == 1
    markdown = stem((results / "report.md").read_text())
    assert "lenet5-adamw-none-seed9`: not in this directory's plan" in markdown
    assert "lenet5-adamw-magnitude-s90-seed2`: made with another config (optimizer_args.lr" in markdown
    assert "the current .config asks for a different matrix" in markdown and "left out: lenet5-adamw-none-seed9" in text


def test_unfair_schedules_and_unequal_budgets_are_flagged(tmp_path):
    cfg, results = make_results(tmp_path, LENET_COMPARE + "CONFIG_ADAMWPRUNE_VARIANT_BITTER2=y")
    hparams = run_path(results, "lenet5-adamw-movement-s90-seed1") / "hparams.json"
    rundir.write_json(hparams, dict(rundir.read_json(hparams), ramp_end=3000))
    build(results)
    markdown = stem((results / "report.md").read_text())
    assert "UNFAIR lenet5: runs do not share one pruning schedule" in markdown and "ramp_end=3000" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| lenet5-adamwprune-bitter2-state-s90 "))
    assert "unequal budget" in row
    assert read_table(results).loc[
        "lenet5-adamwprune-bitter2-state-s90", "unequal_budget"]


def test_a_directory_without_a_plan_reports_every_run(tmp_path):
    _cfg, results = make_results(tmp_path)
    (results / "matrix.json").unlink()
    text = build(results)
    assert "no matrix.json here" in text and len(pd.read_csv(results / "runs.csv")) == 8


def test_report_script_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    script = load_script("report")
    assert script.main([str(tmp_path / "nowhere")]) == 2
    assert "no such results directory" in capsys.readouterr().err
    use_config(monkeypatch, tmp_path / ".config")
    assert script.main([]) == 2
    err = capsys.readouterr().err
    assert "make defconfig-NAME" in err and len(err.strip().splitlines()) == 1


def test_report_script_writes_the_report(tmp_path, monkeypatch, capsys):
    _cfg, results = make_results(tmp_path)
    script = load_script("report")
    use_config(monkeypatch, tmp_path / ".config")
    assert script.main([str(results)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert json.loads((results / "matrix.json").read_text())["version"] == 1
