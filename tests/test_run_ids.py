"""Run IDs differ whenever the settings of two runs differ, and read back the same."""
import itertools

from lib.configuration import config, runspec
from test_matrix import plan as plan_file
from test_matrix.expand import expand
from test_matrix_fakes import load_script, use_config


def test_the_two_lenet5_bitter7_defconfigs_get_different_directories():
    sample, full = (expand(config.from_defconfig(n))[0] for n in ("lenet5-sample-bitter7", "lenet5-bitter7"))
    assert sample.model_options["dataset"] != full.model_options["dataset"]
    assert sample.run_id != full.run_id


def test_no_two_shipped_runs_with_different_specs_share_an_id():
    seen = {}
    for name in config.defconfig_names():
        for spec in expand(config.from_defconfig(name)):
            data = plan_file.spec_json(spec)
            assert seen.setdefault(spec.run_id, data) == data, f"{name}: {spec.run_id} names two different runs"


def test_each_setting_and_not_the_seed_changes_the_digest():
    (base,) = expand(config.from_defconfig("lenet5-sample-bitter7"))
    changes = [dict(optimizer_args={**base.optimizer_args, "lr": 0.5}), dict(epochs=3),
               dict(runtime={**base.runtime, "threads": 2}), dict(model_options={"dataset": "mnist"}),
               dict(batch={**base.batch, "batch_size": 32})]
    ids = {runspec.settings_digest(base.__class__(**{**base.__dict__, **c})) for c in changes}
    assert len(ids) == len(changes) and runspec.settings_digest(base) not in ids
    reseeded = base.__class__(**{**base.__dict__, "seed": 7})
    assert runspec.settings_digest(reseeded) == runspec.settings_digest(base) and reseeded.run_id != base.run_id


def test_a_spec_read_back_from_spec_json_keeps_its_id():
    for name in itertools.islice(config.defconfig_names(), 4):
        for spec in expand(config.from_defconfig(name)):
            assert runspec.RunSpec.from_dict(plan_file.spec_json(spec)).run_id == spec.run_id


def test_a_results_directory_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("x")
    cfg = tmp_path / "sweep.config"
    cfg.write_text(f'CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y\nCONFIG_PRUNING_MAGNITUDE=y\n'
                   f'CONFIG_TEST_MATRIX_RESULTS_DIR="{blocker}"\n')
    use_config(monkeypatch, cfg)
    assert load_script("sweep").main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {blocker}" in err[0], err
