"""`make` expands the config once and hands the runs down; one function says whether two runs are the same."""
import io

import pytest

from lib.configuration import resolve
from lib.lifecycle import rundir, same_run
from test_matrix import expand as expand_mod, plan as plan_file, results, single, sweep
from test_matrix_fakes import LENET_COMPARE, fake_engine, load_script, use_config, write_config


@pytest.fixture
def expansions(monkeypatch):
    """How many times a config is expanded (expand() asks selected_models once per call)."""
    calls = []
    real = expand_mod.selected_models
    monkeypatch.setattr(expand_mod, "selected_models", lambda cfg: calls.append(1) or real(cfg))
    return calls


def test_make_expands_a_sweep_config_once(tmp_path, monkeypatch, expansions, capsys):
    cfg = write_config(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=1"))
    use_config(monkeypatch, cfg.source)
    real_run = sweep.run
    monkeypatch.setattr(sweep, "run", lambda c, **kw: real_run(c, command=fake_engine(tmp_path), cores=2, **kw))
    assert load_script("run").main([]) == 0
    text = capsys.readouterr().out
    assert "Sweep: 4 of 4 runs completed" in text and (tmp_path / "results" / "report.md").exists()
    assert len(expansions) == 1  # the entry point's; the sweep, its re-check under the lock and the report reuse it


def test_a_sweep_called_without_runs_expands_once(tmp_path, expansions):
    cfg = write_config(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=1"))
    rc = sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), cores=2)
    assert rc == 0 and len(expansions) == 1


def test_difference_names_the_first_differing_setting():
    old = {"a": 1, "b": {"x": 1, "y": [1, 2]}, "c": None}
    assert same_run.difference(old, dict(old)) is None
    assert same_run.difference(old, {**old, "b": {"x": 1, "y": [1, 3]}}) == "b.y: [1, 2] -> [1, 3]"
    assert same_run.difference(old, {"a": 1, "b": old["b"]}) is None  # a missing key reads as None
    assert same_run.difference(old, {**old, "a": 2}, ignore={"a"}) is None
    assert same_run.first_key("b.y: [1, 2] -> [1, 3]") == "b" and same_run.first_key(None) is None


def test_every_same_run_question_asks_one_function(tmp_path, monkeypatch):
    """Forcing same_run.difference to see a change must change every caller's answer."""
    cfg = write_config(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=1"))
    spec = expand_mod.expand(cfg)[0]
    results_dir = tmp_path / "results"
    run_dir = plan_file.run_dir(results_dir, spec.run_id)
    rundir.prepare(run_dir, spec, None)
    rundir.write_status(run_dir, rundir.FAILED, step=5)  # trained steps: a stale directory is refused
    expected = {spec.run_id: plan_file.spec_json(spec)}
    plan_file.write_plan(results_dir, cfg, [spec])
    assert plan_file.stale_runs(results_dir, expected) == []
    assert resolve.unchanged({"lr": 1}, {"lr": 1}) is None
    assert results.select(results_dir, expected).runs

    monkeypatch.setattr(same_run, "difference", lambda old, new, **kw: "lr: 1 -> 2")
    assert plan_file.stale_runs(results_dir, expected) == [(spec.run_id, "lr: 1 -> 2")]
    assert resolve.unchanged({"lr": 1}, {"lr": 1}) == "lr"
    selection = results.select(results_dir, expected)
    assert not selection.runs and "lr: 1 -> 2" in selection.excluded[0][1]
    monkeypatch.setattr(single, "run_dir_of", lambda _cfg, _spec: run_dir)
    with pytest.raises(sweep.SweepRefused, match="lr: 1 -> 2"):
        single.run(cfg, spec, command=lambda *a: ["true"], out=io.StringIO())
