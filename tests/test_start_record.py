"""Seed k of every configuration starts from the same weights and data (start.json), for every
model; per-layer sparsity of pruned runs in summary.json."""
import json

import pytest
import torch

from lib.lifecycle import rundir, start_record
from lib.training.engine import Trainer
from lib.pruning.layers import layer_sparsity
from lib.training.seeding import seed_everything
from lib.training.task import RunContext
from tests.test_engine_support import lenet_spec, prepare, run
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)
from tests import test_gpt2_train
from tests.test_gpt2_train import gpt2_spec, start

pytestmark = pytest.mark.usefixtures("one_thread")


def _start(run_dir):
    return json.loads((run_dir / start_record.FILE).read_text())


def test_layer_sparsity_counts_zeros_per_layer():
    a, b = torch.ones(4, 5), torch.ones(3)
    a.view(-1)[:7] = 0.0
    rows = layer_sparsity([("fc.weight", a), ("conv.weight", b)])
    assert rows == [{"layer": "fc.weight", "size": 20, "sparsity": 7 / 20},
                    {"layer": "conv.weight", "size": 3, "sparsity": 0.0}]


def test_digest_sees_values_dtype_and_layout_independently_of_memory_format():
    x = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert start_record.digest(x) == start_record.digest(x.to(memory_format=torch.channels_last))
    assert start_record.digest(x) != start_record.digest(x.double())
    assert start_record.digest({"w": x}) != start_record.digest({"w": x + 1e-6})


def test_lenet5_seed_pairs_share_start_across_methods_and_summary_has_layers(tmp_path):
    # the engine's own runs: AdamWPrune bitter7 vs AdamW magnitude, seed 1 twice, seed 2 once
    runs = {"bitter7": lenet_spec(), "magnitude": lenet_spec(OPTIMIZER_ADAMWPRUNE=False, OPTIMIZER_ADAMW=True,
                                                            PRUNING_STATE=False, PRUNING_MAGNITUDE=True),
            "seed2": lenet_spec(SEED=2)}
    dirs = {name: prepare(tmp_path, spec, name) for name, spec in runs.items()}
    assert runs["magnitude"].pruning == "magnitude" and runs["bitter7"].variant == "bitter7"
    assert run(dirs["bitter7"]) == 0
    for name in ("magnitude", "seed2"):
        assert run(dirs[name], stop_at_step=1) == 1  # interrupted after one step: start.json is written first
    first, other, seed2 = (_start(dirs[n]) for n in ("bitter7", "magnitude", "seed2"))
    assert first == other
    assert seed2["weights"] != first["weights"] and seed2["data_order"] != first["data_order"]
    summary = json.loads((dirs["bitter7"] / rundir.SUMMARY).read_text())
    layers = summary["layers"]
    assert [r["layer"] for r in layers] == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
    assert sum(r["size"] for r in layers) == summary["params"]["prunable"]
    pruned = sum(r["size"] * r["sparsity"] for r in layers)
    assert pruned / summary["params"]["prunable"] == pytest.approx(summary["achieved_sparsity"], abs=1e-6)


def test_gpt2_seed_pairs_share_start_across_methods(tmp_path):
    a = gpt2_spec(tmp_path)
    with pytest.MonkeyPatch.context() as patch:  # AdamW + movement instead of AdamWPrune bitter7
        patch.setattr(test_gpt2_train, "CONFIG", test_gpt2_train.CONFIG.replace(
            "# CONFIG_OPTIMIZER_ADAMW is not set\nCONFIG_OPTIMIZER_ADAMWPRUNE=y\n",
            "CONFIG_PRUNING_MOVEMENT=y\n# CONFIG_PRUNING_STATE is not set\n"))
        b = gpt2_spec(tmp_path)
    c = gpt2_spec(tmp_path, SEED=2)
    assert (a.pruning, b.pruning, c.seed) == ("state", "movement", 2)
    starts = []
    for name, spec in (("a", a), ("b", b), ("c", c)):
        code, run_dir = start(tmp_path, spec, name, stop_at_step=1)
        assert code == 1
        starts.append(_start(run_dir))
    assert starts[0] == starts[1] and starts[2]["weights"] != starts[0]["weights"]
    assert starts[2]["data_order"] != starts[0]["data_order"]


def test_resnet_seed_pairs_share_start_across_methods(tmp_path):
    from lib.configuration import config
    from test_matrix.expand import expand
    from tests.test_resnet import generated_task

    base = config.from_defconfig("resnet18-cifar10-bitter7").replace(
        RESNET_EPOCHS=1, PRUNING_WARMUP=1, PRUNING_FREQUENCY=1, HYPER_PARAM_AUTO=False, HYPER_PARAM_MANUAL=True, BATCH_SIZE=4, GRAD_ACC=1)
    specs = {"state": expand(base)[0],
             "magnitude": expand(base.replace(OPTIMIZER_ADAMWPRUNE=False, OPTIMIZER_ADAMW=True,
                                              PRUNING_STATE=False, PRUNING_MAGNITUDE=True))[0],
             "seed2": expand(base.replace(SEED=2))[0]}
    starts = {}
    for name, spec in specs.items():
        run_dir = rundir.prepare(tmp_path / name, spec, None)
        seed_everything(spec.seed)  # as lib.lifecycle.launch does before build_task
        task = generated_task("resnet18", 10, n_train=8, n_test=4)
        ctx = RunContext(device=torch.device("cpu"), log=lambda _line: None)
        Trainer(task, spec, run_dir, ctx, log=lambda _line: None, progress=False, stop_at_step=1).run()
        starts[name] = _start(run_dir)
    assert starts["state"] == starts["magnitude"]
    assert starts["seed2"]["weights"] != starts["state"]["weights"]
    assert starts["seed2"]["data_order"] != starts["state"]["data_order"]
