"""Expansion of a config into runs: counts, combination rules, stable IDs, fairness."""
import dataclasses

import pytest

from lib.configuration.config import ConfigError, from_defconfig
from test_matrix.expand import budget_of, config_id, expand, fairness_problems, schedule_of
from test_matrix_fakes import LENET_COMPARE, stem, write_config


def ids(cfg):
    return [stem(r.run_id) for r in expand(cfg)]


def test_lenet5_cpu_compare_is_four_configurations_times_two_seeds():
    assert ids(from_defconfig("lenet5-cpu-compare")) == [
        "lenet5-adamw-none-seed1", "lenet5-adamw-none-seed2",
        "lenet5-adamw-magnitude-s90-seed1", "lenet5-adamw-magnitude-s90-seed2",
        "lenet5-adamw-movement-s90-seed1", "lenet5-adamw-movement-s90-seed2",
        "lenet5-adamwprune-bitter7-state-s90-seed1", "lenet5-adamwprune-bitter7-state-s90-seed2"]


@pytest.mark.parametrize("name", ["gpt2-finewebedu-spam-vs-bitter7"])
def test_spam_vs_bitter7_is_two_runs_on_adamwspam(name):
    runs = expand(from_defconfig(name))
    assert [stem(r.run_id) for r in runs] == ["gpt2-adamwspam-magnitude-s50-seed1",
                                        "gpt2-adamwprune-bitter7-state-s50-seed1"]
    assert all(r.optimizer_args.get("spam_theta") == 50 for r in runs)
    assert runs[1].optimizer_args["base"] == "adamwspam"
    assert schedule_of(runs[0]) == schedule_of(runs[1]) and budget_of(runs[0]) == budget_of(runs[1])
    assert fairness_problems(runs) == []


def test_spam_vs_bitter7_from_a_hand_written_config(tmp_path):
    cfg = write_config(tmp_path, """
        CONFIG_OPTIMIZER_ADAMWSPAM=y
        CONFIG_OPTIMIZER_ADAMWPRUNE=y
        # CONFIG_OPTIMIZER_ADAMW is not set
        CONFIG_ADAMWPRUNE_BASE_ADAMWSPAM=y
        CONFIG_PRUNING_MAGNITUDE=y
        CONFIG_SPARSITY_50=y
        # CONFIG_SPARSITY_90 is not set
    """)
    assert ids(cfg) == ["lenet5-adamwspam-magnitude-s50-seed1", "lenet5-adamwprune-bitter7-state-s50-seed1"]


def test_counts_multiply_over_models_sparsities_variants_and_seeds(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE + """
        CONFIG_MODEL_RESNET18=y
        CONFIG_OPTIMIZER_SGD=y
        CONFIG_SPARSITY_50=y
        CONFIG_SPARSITY_70=y
        CONFIG_ADAMWPRUNE_VARIANT_BITTER2=y
    """).replace(TEST_MATRIX_SEEDS=3)
    runs = expand(cfg)
    # per model: 2 dense (sgd, adamw) + 2 optimizers x 2 methods x 3 sparsities + 2 variants x 3 sparsities
    assert len(runs) == 2 * 3 * (2 + 12 + 6)
    assert len(set(r.run_id for r in runs)) == len(runs)
    assert {r.model for r in runs} == {"lenet5", "resnet18"}


def test_state_pruning_only_with_adamwprune_and_dense_once_per_optimizer(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE + "CONFIG_SPARSITY_50=y\nCONFIG_SPARSITY_70=y")
    runs = expand(cfg)
    assert all((r.optimizer == "adamwprune") == (r.pruning == "state") for r in runs)
    dense = [r for r in runs if r.pruning == "none"]
    assert [stem(r.run_id) for r in dense] == ["lenet5-adamw-none-seed1", "lenet5-adamw-none-seed2"]
    assert all(r.target_sparsity == 0.0 and r.warmup_end == 0 for r in dense)


def test_no_run_asked_for_is_a_clear_error(tmp_path):
    cfg = write_config(tmp_path, "# CONFIG_OPTIMIZER_ADAMW is not set\nCONFIG_OPTIMIZER_ADAMWPRUNE=y\n"
                                 "# CONFIG_PRUNING_STATE is not set\nCONFIG_PRUNING_MAGNITUDE=y")
    with pytest.raises(ConfigError, match="AdamWPrune runs only with state pruning"):
        expand(cfg)


def test_ids_are_readable_and_stable():
    cfg = from_defconfig("lenet5-cpu-compare")
    first, again = ids(cfg), ids(cfg)
    assert first == again
    assert "lenet5-adamwprune-bitter7-state-s90-seed1" in first
    assert stem(config_id(expand(cfg)[-1])) == "lenet5-adamwprune-bitter7-state-s90"


@pytest.mark.parametrize("name", ["lenet5-cpu-compare", "resnet18-cifar10-compare",
                                  "resnet50-cifar100-spam-vs-bitter7", "gpt2-finewebedu-spam-vs-bitter7"])
def test_every_comparison_shares_schedule_and_budget(name):
    runs = expand(from_defconfig(name))
    pruned = [r for r in runs if r.pruning != "none"]
    assert len({tuple(sorted(schedule_of(r).items())) for r in pruned}) == 1
    assert len({repr(budget_of(r)) for r in runs}) == 1
    assert all(r.budget_factor == 1.0 and not r.unequal_budget for r in runs)
    assert fairness_problems(runs) == []


def test_bitter2_is_the_one_flagged_unequal_budget(tmp_path):
    cfg = write_config(tmp_path, LENET_COMPARE + "CONFIG_ADAMWPRUNE_VARIANT_BITTER2=y")
    runs = expand(cfg)
    odd = [r for r in runs if r.unequal_budget]
    assert {r.variant for r in odd} == {"bitter2"} and all(r.budget_factor == 1.21 for r in odd)
    # it still shares the schedule and base budget; only the flagged factor differs
    assert fairness_problems(runs) == []


def test_fairness_check_catches_a_different_ramp_or_budget():
    runs = expand(from_defconfig("lenet5-cpu-compare"))
    ramp = runs[:3] + [dataclasses.replace(runs[3], ramp_end=3000)] + runs[4:]
    assert any("pruning schedule" in p for p in fairness_problems(ramp))
    longer = [dataclasses.replace(runs[0], epochs=20)] + runs[1:]
    assert any("budget" in p for p in fairness_problems(longer))
    sneaky = [dataclasses.replace(runs[2], budget_factor=1.5)] + runs[3:]
    assert any("budget factor" in p for p in fairness_problems(sneaky))


def test_tiny_and_full_size_gpt2_runs_never_share_a_directory():
    tiny = expand(from_defconfig("gpt2-tiny-cpu"))
    full = expand(from_defconfig("gpt2-finewebedu-bitter7"))
    assert [stem(r.run_id) for r in tiny] == ["gpt2tiny-adamwprune-bitter7-state-s50-seed1"]
    assert [stem(r.run_id) for r in full] == ["gpt2-adamwprune-bitter7-state-s50-seed1"]
