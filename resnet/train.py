"""ResNet-18 on CIFAR-10 / ResNet-50 on CIFAR-100: model and data, then the shared engine.

    python -m lib.lifecycle.launch --run-dir DIR      (what make runs)
    python -m resnet.train --run-dir DIR    (the same)
"""
from __future__ import annotations

import sys
from pathlib import Path


from lib.training.image_data import ImageClassificationTask
from lib.training.task import BadInput
from resnet import data, model

from resnet.registry import DATASET as DEFAULT_DATASET


def build_task(spec, ctx) -> ImageClassificationTask:
    options = spec.model_options
    dataset = options.get("dataset", DEFAULT_DATASET.get(spec.model))
    stem = options.get("stem", "cifar")
    if stem not in model.STEMS:
        raise BadInput(f"unknown ResNet stem {stem!r}; choose cifar or imagenet in 'make menuconfig'")
    (train_x, train_y, test_x, test_y), info = data.load(dataset, ctx.data_dir, ctx.download, ctx.device)
    mean, std, classes = data.stats(dataset)
    size = model.input_size(stem)
    info.update(stem=stem, input_size=size)
    ctx.log(f"{spec.model}: torchvision ResNet with the {stem} stem at {size}x{size} on {dataset}")
    return ImageClassificationTask(model.build(spec.model, classes, stem), train_x, train_y, test_x, test_y,
                                   mean=mean, std=std, augment=bool(options.get("augment", True)),
                                   resize=size if size != 32 else None,
                                   eval_batch_size=500 if size == 32 else 100, info=info)


if __name__ == "__main__":
    from lib.lifecycle.launch import main

    sys.exit(main())
