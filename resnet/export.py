"""ResNet-18/50 for `make export` and `make bench-sparse` (lib/export/models.py asks for these)."""
from __future__ import annotations

import torch

from lib.training.task import BadInput
from resnet.registry import DATASET

CLASSES = {"cifar10": 10, "cifar100": 100}


def _classes(spec) -> int:
    dataset = spec.model_options.get("dataset", DATASET.get(spec.model))
    if dataset not in CLASSES:
        raise BadInput(f"unknown ResNet dataset {dataset!r} in spec.json; expected one of {', '.join(CLASSES)}")
    return CLASSES[dataset]


def build_model(spec):
    from resnet import model as resnet

    return resnet.build(spec.model, _classes(spec), spec.model_options.get("stem", "cifar"))


def constructor_text(spec) -> str:
    dataset = spec.model_options.get("dataset", DATASET.get(spec.model))
    text = f"torchvision.models.{spec.model}(weights=None, num_classes={CLASSES.get(dataset)})"
    if spec.model_options.get("stem", "cifar") == "cifar":
        text += ("; then conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False) "
                 "and maxpool = nn.Identity() (CIFAR stem)")
    return text


def example_input(spec, batch_size: int, model, generator: torch.Generator) -> torch.Tensor:
    from resnet.model import input_size

    size = input_size(spec.model_options.get("stem", "cifar"))
    return torch.randn(batch_size, 3, size, size, generator=generator)
