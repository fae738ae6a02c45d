"""The entry points: `make` (scripts/run.py) and `make test-matrix` (scripts/sweep.py)."""
import io

from lib.lifecycle import rundir
from test_matrix import single
from test_matrix.expand import expand
from test_matrix_fakes import LENET_COMPARE, fake_engine, load_script, run_path, use_config, write_config


def test_missing_config_and_bad_rerun_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, LENET_COMPARE, name="sweep.config")
    for name in ("sweep", "run"):
        script = load_script(name)
        use_config(monkeypatch, tmp_path / ".config")
        assert script.main([]) == 2
        err = capsys.readouterr().err
        assert "make defconfig-NAME" in err and len(err.strip().splitlines()) == 1
    script = load_script("sweep")
    use_config(monkeypatch, tmp_path / "sweep.config")
    assert script.main(["--rerun", "all"]) == 2
    assert "use RERUN=failed" in capsys.readouterr().err


def test_dry_run_through_the_script(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, LENET_COMPARE, name="sweep.config")
    script = load_script("sweep")
    use_config(monkeypatch, tmp_path / "sweep.config")
    assert script.main(["--dry-run"]) == 0
    assert "8 runs" in capsys.readouterr().out and not (tmp_path / "results").exists()


def test_fresh_is_refused_for_a_sweep(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, LENET_COMPARE, name="sweep.config")
    script = load_script("run")
    use_config(monkeypatch, tmp_path / "sweep.config")
    assert script.main(["--fresh"]) == 2
    assert "FRESH/FORCE apply to single runs" in capsys.readouterr().err


def test_single_run_goes_to_output_dir_and_prints_a_summary(tmp_path):
    cfg = write_config(tmp_path, "CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y")
    (spec,) = expand(cfg)
    out = io.StringIO()
    assert single.run(cfg, spec, command=fake_engine(tmp_path), out=out) == 0
    run_dir = run_path(tmp_path / "runs", "lenet5-adamw-none-seed1")
    assert rundir.read_status(run_dir)["state"] == "completed"
    text = out.getvalue()
    assert "completed: final accuracy 91.00, best 91.50, sparsity 0.0%" in text and str(run_dir) in text
    # a changed config is another run, in another directory: the finished one is not touched
    finished = (run_dir / "summary.json").read_bytes()
    changed = cfg.replace(LENET5_LEARNING_RATE=0.01)
    assert single.run(changed, expand(changed)[0], command=fake_engine(tmp_path), out=out) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2 and (run_dir / "summary.json").read_bytes() == finished
