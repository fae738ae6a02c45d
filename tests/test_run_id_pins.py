"""Run IDs of shipped defconfigs, pinned: renaming a RunSpec field must not move anybody's runs.

A run's ID holds settings_digest(spec), so existing run directories are found again only if
the digest stays what it was. These IDs were taken from the code before the one-vocabulary
rename (issue 11); tests/fixtures/*-before-issue11.json are a spec.json and an hparams.json that
code wrote, which must still load, compare equal and resume.
"""
import json
from pathlib import Path

import pytest

from lib.configuration import config
from test_matrix.expand import expand

DATA = Path(__file__).parent / "fixtures"

PINNED = {
    "lenet5-sample-bitter7": ["lenet5-adamwprune-bitter7-state-s90-b1d66e2a-seed1"],
    "gpt2-tiny-study": [f"gpt2tiny-{config_id}-seed{seed}" for config_id in (
        "adamw-magnitude-s50-c5b854bf", "adamw-movement-s50-10fee57e", "adamwspam-magnitude-s50-95e69caa",
        "adamwspam-movement-s50-005a09a4", "adamwprune-bitter7-state-s50-4e443758",
        "adamwprune-bitter8-state-s50-341891d5") for seed in (1, 2, 3)],
    "resnet18-cifar10-compare": [
        "resnet18-adamw-none-a71a7a27-seed1", "resnet18-adamw-magnitude-s50-807b4b09-seed1",
        "resnet18-adamw-magnitude-s70-bfdbc9ad-seed1", "resnet18-adamw-magnitude-s90-ee44b470-seed1",
        "resnet18-adamw-movement-s50-91d18c6b-seed1", "resnet18-adamw-movement-s70-6d6bd5cf-seed1",
        "resnet18-adamw-movement-s90-b731f54f-seed1", "resnet18-adamwprune-bitter7-state-s50-fbc70f96-seed1",
        "resnet18-adamwprune-bitter7-state-s70-1bf40f5a-seed1", "resnet18-adamwprune-bitter7-state-s90-f50d70d9-seed1"],
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_defconfigs_keep_their_run_ids(name):
    assert [spec.run_id for spec in expand(config.from_defconfig(name))] == PINNED[name]


def test_a_spec_json_from_before_the_rename_loads_with_its_id():
    from lib.configuration.runspec import RunSpec

    old = json.loads((DATA / "spec-before-issue11.json").read_text())
    spec = RunSpec.from_dict(old)
    assert spec.run_id == old["run_id"] == PINNED["lenet5-sample-bitter7"][0]
    assert spec == expand(config.from_defconfig("lenet5-sample-bitter7"))[0]


def _old(name):
    return json.loads((DATA / f"{name}-before-issue11.json").read_text())


def test_an_old_run_directory_is_the_same_run_and_reads_under_todays_names(tmp_path):
    from lib.lifecycle import rundir
    from test_matrix import plan as plan_file, results

    spec = expand(config.from_defconfig("lenet5-sample-bitter7"))[0]
    run_dir = tmp_path / spec.run_id
    run_dir.mkdir()
    rundir.write_json(run_dir / rundir.SPEC, _old("spec"))
    rundir.write_json(run_dir / rundir.HPARAMS, _old("hparams"))
    assert plan_file.stale_runs(tmp_path, {spec.run_id: plan_file.spec_json(spec)}) == []
    run = results.load_run(run_dir)
    assert (run.spec["target_sparsity"], run.spec["warmup_end"], run.spec["shape"]) == (0.9, 100, "cubic")
    assert "sparsity" not in run.spec and run.hparams["shape"] == "cubic" and "prune_shape" not in run.hparams


def test_an_old_hparams_json_resumes(tmp_path):
    """Both gates of a resume: the checkpoint's fingerprint and the same-plan check."""
    from lib.configuration import resolve, vocabulary
    from lib.training.engine import fingerprint

    old = _old("hparams")
    # what the code before the rename computed for this file (and stored in its last.pt)
    assert fingerprint(old) == "909188b8837c17ba" == fingerprint(vocabulary.upgrade_hparams(old))
    spec = expand(config.from_defconfig("lenet5-sample-bitter7"))[0]
    now = resolve.plan(spec, train_size=1000, world_size=1, device_type="cpu", amp=None, compile=False,
                       metric="accuracy", printer=lambda _l: None)
    assert resolve.unchanged(vocabulary.upgrade_hparams(old), now) is None
    assert resolve.optimizer_kwargs(vocabulary.upgrade_hparams(old)) == resolve.optimizer_kwargs(now)


def test_the_spec_hparams_and_create_share_one_vocabulary():
    import dataclasses
    import inspect

    from lib.configuration import resolve
    from lib.configuration.runspec import RunSpec
    from lib.optimizers import factory
    from test_matrix import plan as plan_file

    spec = expand(config.from_defconfig("gpt2-tiny-study"))[0]
    hp = resolve.plan(spec, train_size=None, world_size=1, device_type="cpu", amp=None, compile=False,
                      metric="perplexity", printer=lambda _l: None)
    kwargs = resolve.optimizer_kwargs(hp)
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    for name in resolve.SCHEDULE:  # each pruning setting keeps its name at every hop
        assert name in fields and name in hp and name in factory.DEFAULTS and name in kwargs
        assert kwargs[name] == hp[name] == (getattr(spec, name) if name != "ramp_end" else hp[name])
    assert "nm" in fields and "nm" in factory.DEFAULTS
    # betas: JSON's list from the RunSpec to hparams.json; create() alone makes the tuple torch wants
    assert plan_file.spec_json(spec) == spec.to_dict() and hp["optimizer_args"] == spec.optimizer_args
    assert "tuple(float(b) for b in hp[\"betas\"])" in inspect.getsource(factory.create)


def test_an_nm_run_keeps_its_id():
    """prune_nm became nm: the digest still hashes it under its old name (taken before the rename)."""
    kconf = config.load_kconfig(config.defconfig_path("gpt2-tiny-cpu"))
    kconf.syms["PRUNING_MASK_NM"].set_value(2)
    spec = expand(config.Config(config.typed_values(kconf)))[0]
    assert spec.run_id == "gpt2tiny-adamwprune-bitter7-state-s50-nm2of4-8cdf0d9d-seed1"
