"""Run IDs of shipped defconfigs, pinned: renaming a RunSpec field must not move anybody's runs.

A run's ID holds settings_digest(spec), so existing run directories are found again only if
the digest stays what it was. These IDs were taken from the code before the one-vocabulary
rename (issue 11); tests/data/*-before-issue11.json are a spec.json and an hparams.json that
code wrote, which must still load, compare equal and resume.
"""
import json
from pathlib import Path

import pytest

from lib.configuration import config
from test_matrix.expand import expand

DATA = Path(__file__).parent / "data"

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
