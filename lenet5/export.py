"""LeNet-5 for `make export` and `make bench-sparse` (lib/export/models.py asks for these)."""
from __future__ import annotations

import torch


def build_model(spec):
    from lenet5.model import LeNet5

    return LeNet5()


def constructor_text(spec) -> str:
    return "lenet5.model.LeNet5() (conv 5x5 1->6, pool, conv 5x5 6->16, pool, 400-120-84-10, ReLU)"


def example_input(spec, batch_size: int, model, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(batch_size, 1, 32, 32, generator=generator)
