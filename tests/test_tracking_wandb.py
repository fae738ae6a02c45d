"""W&B tracking, offline: the run files hold the runs' values; a missing package costs one line."""
import importlib.util
import io

from lib import extras
from lib.lifecycle import rundir
from test_matrix import single, sweep
from test_matrix.expand import expand
from test_matrix_fakes import LENET_COMPARE, fake_engine, write_config
from tracking_stores import wandb_runs

if importlib.util.find_spec("wandb") is None:
    extras.ensure("wandb", why="tests/test_tracking_wandb.py")

WANDB_OFFLINE = "\nCONFIG_TRACKER_WANDB=y\nCONFIG_TRACKER_WANDB_OFFLINE=y\n"


def run_sweep(cfg, tmp_path):
    out = io.StringIO()
    rc = sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, make_report=False)
    assert rc == 0, out.getvalue()
    return sorted(p for p in (tmp_path / "results").iterdir() if (p / rundir.SPEC).exists())


def test_offline_run_files_hold_every_line_config_and_summary(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    cfg = write_config(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=1") + WANDB_OFFLINE)
    runs = run_sweep(cfg, tmp_path)
    err = capfd.readouterr().err
    assert "tracker: W&B offline (CONFIG_TRACKER_WANDB_OFFLINE); run files in" in err and "wandb sync" in err
    stored = wandb_runs(tmp_path / "results")
    assert sorted(stored) == [p.name for p in runs] + ["sweep-results"]
    assert stored["sweep-results"]["history"] == [{"_step": 0, "runs": 4, "runs_completed": 4, "runs_failed": 0,
                                                   "runs_running": 0, "runs_pending": 0}]
    for run_dir in runs:
        run = stored[run_dir.name]
        assert run["id"].startswith(run_dir.name + "-") and run["group"] == run_dir.name.rsplit("-seed", 1)[0]
        assert run["config"] == rundir.read_json(run_dir / rundir.HPARAMS)
        lines = rundir.read_metrics(run_dir)
        assert [row["_step"] for row in run["history"]] == [r["step"] for r in lines]
        for row, line in zip(run["history"], lines):
            assert {k: v for k, v in row.items() if k != "_step"} == \
                {k: v for k, v in line.items() if k != "step" and v is not None}
        written = rundir.read_json(run_dir / rundir.SUMMARY)
        assert run["summary"]["final/accuracy"] == written["final"]["accuracy"]
        assert run["summary"]["best/accuracy"] == written["best"]["accuracy"]
        assert run["summary"]["achieved_sparsity"] == written["achieved_sparsity"]
        assert run["summary"]["memory/state_plus_pruning_ratio"] == written["memory"]["state_plus_pruning_ratio"]


def test_online_without_a_key_goes_offline_and_says_so_once(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    cfg = write_config(tmp_path, "CONFIG_DEVICE_CPU=y\nCONFIG_OPTIMIZER_ADAMW=y\nCONFIG_PRUNING_NONE=y\n"
                                 "CONFIG_TRACKER_WANDB=y\n")
    spec = expand(cfg)[0]
    assert single.run(cfg, spec, command=fake_engine(tmp_path), out=io.StringIO()) == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if "W&B" in line]
    assert len(lines) == 1 and "W&B offline (no API key: set WANDB_API_KEY or run 'wandb login')" in lines[0]
    assert list(wandb_runs(tmp_path / "runs")) == [spec.run_id]


def test_without_the_package_a_config_selecting_it_gets_one_line_and_the_runs_go_on(tmp_path, monkeypatch, capfd):
    shadow = tmp_path / "shadow" / "wandb"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named wandb (simulated)')\n")
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    cfg = write_config(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=1") + WANDB_OFFLINE)
    runs = run_sweep(cfg, tmp_path)
    assert all(rundir.read_status(r)["state"] == rundir.COMPLETED for r in runs)
    err = capfd.readouterr().err
    problems = [line for line in err.splitlines() if "W&B" in line]
    assert len(problems) == 1 and "tracker W&B unavailable" in problems[0] and "runs go on" in problems[0], problems
    assert not (tmp_path / "results" / "wandb").exists()
