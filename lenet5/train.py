"""LeNet-5 on MNIST: builds the model and the data, the shared engine does the rest.

    python -m lib.lifecycle.launch --run-dir DIR      (what make runs)
    python -m lenet5.train --run-dir DIR    (the same)
"""
from __future__ import annotations

import sys
from pathlib import Path


import torch

from lenet5 import data
from lenet5.model import LeNet5
from lib.training.image_data import ImageClassificationTask


def build_task(spec, ctx) -> ImageClassificationTask:
    dataset = spec.model_options.get("dataset", "mnist")
    (train_x, train_y, test_x, test_y), info = data.load(dataset, ctx.data_dir, ctx.download, ctx.device)
    # channels_last: oneDNN's convolutions and torch's max-pool are faster in NHWC on the CPU
    # (1-channel inputs are already NHWC in memory, so batches need no conversion).
    model = LeNet5().to(memory_format=torch.channels_last)
    return ImageClassificationTask(model, train_x, train_y, test_x, test_y, mean=data.MEAN, std=data.STD,
                                   augment=False, info=info)


if __name__ == "__main__":
    from lib.lifecycle.launch import main

    sys.exit(main())
