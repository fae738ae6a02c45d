"""ResNet-18/50: both stems forward/backward, CIFAR augmentation, one short epoch through the engine."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.configuration import config
from lib.lifecycle import rundir
from lib.training.engine import Trainer
from lib.training.image_data import ImageClassificationTask, random_crop_flip
from lib.training.task import BadInput, RunContext
from resnet import data, model
from test_matrix.expand import expand
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name, classes, stem, size", [("resnet18", 10, "cifar", 32), ("resnet50", 100, "cifar", 32),
                                                       ("resnet50", 100, "imagenet", 224)])
def test_forward_backward(name, classes, stem, size):
    torch.manual_seed(0)
    net = model.build(name, classes, stem)
    x, y = torch.randn(2, 3, size, size), torch.tensor([1, 7])
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    assert net(x).shape == (2, classes) and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.conv1.kernel_size == ((3, 3) if stem == "cifar" else (7, 7))
    assert isinstance(net.maxpool, torch.nn.Identity) == (stem == "cifar")


def test_parameter_counts_match_the_literature():
    assert sum(p.numel() for p in model.build("resnet18", 10).parameters()) == 11_173_962
    assert sum(p.numel() for p in model.build("resnet50", 100).parameters()) == 23_705_252


def test_augmentation_is_crop_of_padded_image_and_flip():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    oy, ox = torch.randint(0, 9, (16,), generator=gen), torch.randint(0, 9, (16,), generator=gen)
    flips = torch.rand(16, generator=gen) < 0.5
    padded = F.pad(images, (4, 4, 4, 4))
    for i in range(16):
        expect = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        assert torch.equal(out[i], expect.flip(-1) if flips[i] else expect)
    assert 0 < int(flips.sum()) < 16


def test_missing_cifar_names_the_files_and_the_fix(tmp_path):
    with pytest.raises(BadInput) as err:
        data.load("cifar100", tmp_path, False, torch.device("cpu"))
    line = str(err.value)
    assert "\n" not in line and str(tmp_path / "cifar-100-python") in line and "cifar-100-python.tar.gz" in line
    assert "CONFIG_DATA_DOWNLOAD" in line


def generated_task(name: str, classes: int, n_train: int = 64, n_test: int = 32) -> ImageClassificationTask:
    """Tiny learnable image set: each class has its own mean colour."""
    gen = torch.Generator().manual_seed(0)

    def images(n):
        labels = torch.arange(n) % classes
        base = (labels[:, None] * 37 % 200 + 20).float()[:, :, None, None].expand(n, 3, 32, 32)
        noise = torch.randint(-20, 21, (n, 3, 32, 32), generator=gen)
        return (base + noise).clamp(0, 255).to(torch.uint8), labels

    (tx, ty), (vx, vy) = images(n_train), images(n_test)
    mean, std, _ = data.stats("cifar10")
    return ImageClassificationTask(model.build(name, classes), tx, ty, vx, vy, mean=mean, std=std, augment=True,
                                   eval_batch_size=16, info={"dataset": "generated"})


@pytest.mark.parametrize("defconfig, name, classes, batch, steps", [
    ("resnet18-cifar10-bitter7", "resnet18", 10, 8, 4), ("resnet50-cifar100-bitter7", "resnet50", 100, 2, 2)])
def test_one_short_epoch_through_the_engine(tmp_path, defconfig, name, classes, batch, steps):
    # `steps` optimizer steps of batch x 2 accumulated micro-batches (ResNet-50 is slow on a CPU)
    cfg = config.from_defconfig(defconfig).replace(RESNET_EPOCHS=1, PRUNING_WARMUP=1, PRUNING_FREQUENCY=1,
                                                   HYPER_PARAM_AUTO=False, HYPER_PARAM_MANUAL=True,
                                                   BATCH_SIZE=batch, GRAD_ACC=2)
    spec = expand(cfg)[0]
    run_dir = rundir.prepare(tmp_path / "run", spec, None)
    torch.manual_seed(0)
    ctx = RunContext(device=torch.device("cpu"), log=lambda _line: None)
    task = generated_task(name, classes, n_train=2 * batch * steps, n_test=4 * batch)
    code = Trainer(task, spec, run_dir, ctx, log=lambda _line: None, progress=False).run()
    assert code == 0
    hp = json.loads((run_dir / rundir.HPARAMS).read_text())
    assert (hp["steps_per_epoch"], hp["total_steps"], hp["ramp_end"]) == (steps, steps, round(0.75 * steps))
    records = rundir.read_metrics(run_dir)
    assert len(records) == 1 and records[0]["step"] == steps and 0 <= records[0]["accuracy"] <= 100
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    assert summary["achieved_sparsity"] == pytest.approx(spec.target_sparsity, abs=0.002)
    assert summary["model"] == name and (run_dir / rundir.LAST).is_file()


def test_cifar_arrays_become_nchw_uint8_tensors():
    class Fake:  # torchvision's CIFAR datasets expose .data (N, H, W, C uint8) and .targets (list)
        data = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
        targets = [3, 9]

    images, labels = data._tensors(Fake)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8 and labels.tolist() == [3, 9]
    assert torch.equal(images[1, 2], torch.from_numpy(Fake.data[1, :, :, 2]))
