"""LeNet-5: the architecture, both MNIST paths (shipped sample, torchvision files), accuracy."""
import json
import struct

import numpy as np
import pytest
import torch

from lenet5 import data
from lenet5.model import LeNet5
from lib.lifecycle import rundir
from lib.training.task import BadInput
from tests.test_engine_support import lenet_spec, prepare, run
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)


def test_architecture():
    net = LeNet5()
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {"conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5),
                      "conv2.bias": (16,), "fc1.weight": (120, 400), "fc1.bias": (120,),
                      "fc2.weight": (84, 120), "fc2.bias": (84,), "fc3.weight": (10, 84), "fc3.bias": (10,)}
    assert sum(p.numel() for p in net.parameters()) == 61706
    assert net(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_shipped_sample_is_a_balanced_fixed_split():
    assert data.SAMPLE.stat().st_size < 2 * 1024 * 1024
    train_x, train_y, test_x, test_y = data.load_sample()
    assert train_x.shape == (4000, 1, 32, 32) and test_x.shape == (1000, 1, 32, 32)
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.long
    assert torch.bincount(train_y).tolist() == [400] * 10 and torch.bincount(test_y).tolist() == [100] * 10
    with np.load(data.SAMPLE) as raw:  # no digit is in both sets
        train_rows = {bytes(r) for r in raw["x_train"].reshape(4000, -1)}
        assert not any(bytes(r) in train_rows for r in raw["x_test"].reshape(1000, -1))


def test_resize_to_32_keeps_the_digit():
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 10:18, 12:16] = 255
    big = data.to_32(image)[0, 0].float()
    assert big.shape == (32, 32) and big.max() > 200 and big[:8].sum() == 0 and big[-8:].sum() == 0
    centre = (big * torch.arange(32.0)[:, None]).sum() / big.sum()
    assert centre == pytest.approx(14 * 32 / 28, abs=0.6)  # row centre scales with the image


def write_idx(raw, name, array):
    magic = 0x0803 if array.ndim == 3 else 0x0801
    with open(raw / name, "wb") as handle:
        handle.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def test_full_mnist_path_reads_torchvision_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw, "train-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)))
    write_idx(raw, "train-labels-idx1-ubyte", np.arange(20) % 10)
    write_idx(raw, "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28)))
    write_idx(raw, "t10k-labels-idx1-ubyte", np.arange(10))
    (train_x, train_y, test_x, test_y), info = data.load("mnist", tmp_path, False, torch.device("cpu"))
    assert train_x.shape == (20, 1, 32, 32) and test_x.shape == (10, 1, 32, 32) and info["dataset"] == "mnist"
    assert train_y.tolist() == [i % 10 for i in range(20)]


def test_missing_mnist_names_files_folder_and_fixes(tmp_path):
    with pytest.raises(BadInput) as err:
        data.load("mnist", tmp_path, False, torch.device("cpu"))
    line = str(err.value)
    assert "\n" not in line and str(tmp_path / "MNIST" / "raw") in line
    assert all(name in line for name in data.MNIST_FILES) and "CONFIG_LENET5_DATASET_MNIST_SAMPLE" in line


def test_unknown_dataset_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="mnist_sample"):
        data.load("emnist", tmp_path, False, torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("dense, floor", [(True, 96.0), (False, 95.0)])
def test_ten_epochs_on_the_sample_reach_their_accuracy(tmp_path, one_thread, dense, floor):
    """Regression floor for defconfig lenet5-sample-bitter7 (and its dense AdamW twin); the
    targets and measured values are printed by scripts/bench_lenet5.py."""
    changes = dict(LENET5_EPOCHS=10, PRUNING_WARMUP=100, PRUNING_FREQUENCY=50)
    if dense:
        changes.update(OPTIMIZER_ADAMWPRUNE=False, OPTIMIZER_ADAMW=True, PRUNING_STATE=False, PRUNING_NONE=True)
    run_dir = prepare(tmp_path, lenet_spec(**changes))
    assert run(run_dir) == 0
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    assert summary["final"]["accuracy"] >= floor
    if not dense:
        assert summary["achieved_sparsity"] == pytest.approx(0.9, abs=0.001)


def test_bench_set_option_types_values():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "bench_lenet5.py"
    spec = importlib.util.spec_from_file_location("bench_lenet5", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.parse_set(["LENET5_LEARNING_RATE=3e-3", "CONFIG_LR_SCHEDULE_COSINE=y", "LENET5_EPOCHS=5",
                            "DATA_DIR=/tmp/x"]) == {"LENET5_LEARNING_RATE": 3e-3, "LR_SCHEDULE_COSINE": True,
                                                    "LENET5_EPOCHS": 5, "DATA_DIR": "/tmp/x"}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        bench.parse_set(["LENET5_EPOCHS"])
