"""CIFAR-10 / CIFAR-100 as uint8 tensors on the device (torchvision's files).

Augmentation (random crop 32 with padding 4, horizontal flip) runs per batch on the
device (lib/training/image_data.py); the ImageNet stem resizes every batch to 224x224 after it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lib.training.task import BadInput

# name -> (torchvision class, folder, files, url, mean, std, classes)
DATASETS = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py",
                ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"),
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10),
    "cifar100": ("CIFAR100", "cifar-100-python", ("train", "test"),
                 "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100),
}


def _tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return images, torch.tensor(dataset.targets, dtype=torch.long)


def load(name: str, data_dir: Path, download: bool, device: torch.device):
    """(train_x, train_y, test_x, test_y) on `device` and a dict describing the data."""
    if name not in DATASETS:
        raise BadInput(f"unknown ResNet dataset {name!r}; choose one of {', '.join(DATASETS)}")
    import torchvision.datasets as tvd

    cls_name, folder, files, url, _mean, _std, _classes = DATASETS[name]
    where = Path(data_dir) / folder
    by_hand = f"download {url} and unpack it in {data_dir} (it creates {folder}/)"
    if not download and not all((where / f).is_file() for f in files):
        raise BadInput(f"{name} not found: looked for {', '.join(files)} in {where}; enable CONFIG_DATA_DOWNLOAD, "
                       f"or {by_hand}")
    cls = getattr(tvd, cls_name)
    try:
        train, test = cls(str(data_dir), train=True, download=download), cls(str(data_dir), train=False,
                                                                             download=download)
    except Exception as err:  # no network, truncated archive, checksum mismatch
        reason = " ".join(str(err).split()) or type(err).__name__
        what = "download failed" if download else "files unreadable"
        raise BadInput(f"{name} {what} in {where} ({reason[:200]}); {by_hand}") from None
    tensors = (*_tensors(train), *_tensors(test))
    return tuple(t.to(device) for t in tensors), {"dataset": name, "source": str(where)}


def stats(name: str) -> tuple[tuple, tuple, int]:
    """(mean, std, number of classes) of a dataset."""
    entry = DATASETS[name]
    return entry[4], entry[5], entry[6]
