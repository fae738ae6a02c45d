"""ResNet-18 / ResNet-50 for CIFAR: torchvision's ResNets with a choice of stem.

We take torchvision's implementation (torchvision.models.resnet18/50, no pretrained
weights) rather than writing our own: it is the reference everybody's numbers come
from, with its block layout and initialisation, so results compare directly. Only the
stem changes:
  "cifar"     3x3 conv, stride 1, no max-pool: 32x32 images keep their resolution
              (the standard CIFAR recipe; the default for both models).
  "imagenet"  torchvision's 7x7 stride-2 conv + max-pool, for 224x224 inputs (what the
              published ResNet-50 runs used; the data pipeline resizes to 224).
"""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18, resnet50

STEMS = ("cifar", "imagenet")
BUILDERS = {"resnet18": resnet18, "resnet50": resnet50}


def build(name: str, num_classes: int, stem: str = "cifar") -> nn.Module:
    if name not in BUILDERS:
        raise ValueError(f"unknown ResNet {name!r}; choose one of {', '.join(BUILDERS)}")
    if stem not in STEMS:
        raise ValueError(f"unknown ResNet stem {stem!r}; choose one of {', '.join(STEMS)}")
    model = BUILDERS[name](weights=None, num_classes=num_classes)
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
        model.maxpool = nn.Identity()
    return model


def input_size(stem: str) -> int:
    return 32 if stem == "cifar" else 224
