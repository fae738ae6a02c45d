"""The CPU thread count is part of a run: one count for a sweep and a single run of the same
config, recorded in hparams.json, and a resume with another count is refused."""
import io

from lib.lifecycle import launch, rundir
from test_matrix import sweep
from test_matrix.expand import expand
from tests.test_engine_support import lenet_spec, prepare, run
from test_matrix_fakes import LENET_COMPARE, fake_engine, write_config


def test_the_thread_count_is_a_setting_of_the_run(tmp_path):
    cfg = write_config(tmp_path, "CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y")
    one, two = expand(cfg)[0], expand(cfg.replace(CPU_THREADS=2))[0]
    assert one.runtime["threads"] == 1 and two.runtime["threads"] == 2
    assert one.run_id != two.run_id


def test_a_sweep_gives_each_run_the_configured_threads_not_a_share_of_the_cores(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1, TEST_MATRIX_PARALLEL_JOBS=1,
                                                        CPU_THREADS=2)
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), cores=8, make_report=False) == 0
    for run_dir in (tmp_path / "results").iterdir():
        if (run_dir / "summary.json").exists():
            assert rundir.read_json(run_dir / "summary.json")["fake"]["threads"] == "2"


def test_a_single_cpu_run_uses_the_configured_threads(monkeypatch):
    monkeypatch.delenv("KNLP_NUM_THREADS")
    assert launch._threads(lenet_spec(CPU_THREADS=3), "cpu") == 3
    monkeypatch.setenv("KNLP_NUM_THREADS", "2")
    assert launch._threads(lenet_spec(CPU_THREADS=3), "cpu") == 2


def test_a_resume_with_another_thread_count_is_refused(tmp_path, monkeypatch, capsys):
    run_dir = prepare(tmp_path, lenet_spec(LENET5_EPOCHS=1))
    monkeypatch.setenv("KNLP_NUM_THREADS", "1")
    assert run(run_dir, stop_at_step=20) == 1
    assert rundir.read_json(run_dir / rundir.HPARAMS)["cpu_threads"] == 1
    monkeypatch.setenv("KNLP_NUM_THREADS", "2")
    try:
        assert run(run_dir) == 2
    finally:
        import torch
        torch.set_num_threads(1)
    err = capsys.readouterr().err
    assert "cpu_threads was 1, now 2" in err and "FRESH=1" in err
