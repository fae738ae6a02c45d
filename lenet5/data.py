"""MNIST for LeNet-5: the shipped 4,000/1,000 sample or torchvision's full set.

Both are resized from 28x28 to 32x32 (bilinear, once at load) and kept as uint8 tensors
on the device; normalisation with MNIST's mean/std happens per batch (lib/training/image_data.py).
No augmentation (the seed's setting).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib.training.task import BadInput

SAMPLE = Path(__file__).resolve().parent / "mnist_sample.npz"
MEAN, STD = (0.1307,), (0.3081,)
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def to_32(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> uint8 [N, 1, 32, 32] by bilinear resize (torchvision's Resize(32))."""
    x = images.unsqueeze(1).float()
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def load_sample(path: Path = SAMPLE) -> tuple[torch.Tensor, ...]:
    if not path.is_file():
        raise BadInput(f"{path}: the shipped MNIST sample is missing; restore it with 'git checkout -- "
                       f"lenet5/mnist_sample.npz' or rebuild it (see lenet5/mnist_sample.md)")
    with np.load(path) as data:
        arrays = [torch.from_numpy(data[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    return to_32(arrays[0]), arrays[1].long(), to_32(arrays[2]), arrays[3].long()


def load_mnist(data_dir: Path, download: bool) -> tuple[torch.Tensor, ...]:
    from torchvision.datasets import MNIST

    raw = Path(data_dir) / "MNIST" / "raw"
    by_hand = (f"fetch {', '.join(f + '.gz' for f in MNIST_FILES)} from {MNIST_URL} and gunzip them there, "
               "or choose the shipped sample (CONFIG_LENET5_DATASET_MNIST_SAMPLE)")
    if not download and not all((raw / name).is_file() for name in MNIST_FILES):
        raise BadInput(f"MNIST not found: looked for {', '.join(MNIST_FILES)} in {raw}; enable "
                       f"CONFIG_DATA_DOWNLOAD, or {by_hand}")
    try:
        train = MNIST(str(data_dir), train=True, download=download)
        test = MNIST(str(data_dir), train=False, download=download)
    except Exception as err:  # no network, corrupt file, checksum mismatch
        reason = " ".join(str(err).split()) or type(err).__name__
        what = "download failed" if download else "files unreadable"
        raise BadInput(f"MNIST {what} in {raw} ({reason[:200]}); {by_hand}") from None
    return to_32(train.data), train.targets.long(), to_32(test.data), test.targets.long()


def load(dataset: str, data_dir: Path, download: bool, device: torch.device):
    """(train_x, train_y, test_x, test_y) on `device`, plus a dict describing the data."""
    if dataset == "mnist_sample":
        tensors, info = load_sample(), {"dataset": "mnist_sample", "source": str(SAMPLE.name)}
    elif dataset == "mnist":
        tensors, info = load_mnist(data_dir, download), {"dataset": "mnist", "source": str(Path(data_dir) / "MNIST")}
    else:
        raise BadInput(f"unknown LeNet-5 dataset {dataset!r}; choose mnist or mnist_sample in 'make menuconfig'")
    return tuple(t.to(device) for t in tensors), info
