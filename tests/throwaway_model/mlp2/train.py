"""A two-layer MLP on four Gaussian blobs in 8 dimensions that it generates itself."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.training.task import Task

DIM, CLASSES, TRAIN, TEST = 8, 4, 512, 256


def blobs(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    return centres[labels] + torch.randn(n, DIM, generator=generator), labels


class BlobTask(Task):
    metric = "accuracy"

    def __init__(self, model: nn.Module, seed: int, device: torch.device):
        generator = torch.Generator().manual_seed(seed)
        self.model = model
        (self.train_x, self.train_y), (self.test_x, self.test_y) = (
            tuple(t.to(device) for t in blobs(n, generator)) for n in (TRAIN, TEST))
        self.train_size = TRAIN

    def train_batch(self, indices, batch_size, generator):
        idx = indices.to(self.train_x.device)
        return self.train_x[idx], self.train_y[idx]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def eval_batches(self, rank, world_size):
        if rank == 0:
            yield self.test_x, self.test_y

    def eval_sums(self, model, batch):
        x, y = batch
        logits = model(x).float()
        return torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                            torch.tensor(float(len(y)), dtype=torch.float64, device=y.device),
                            (logits.argmax(dim=1) == y).sum().double()])

    def describe(self) -> dict:
        return {"dataset": "blobs", "train_size": TRAIN, "test_size": TEST, "dim": DIM, "classes": CLASSES}


def build_task(spec, ctx) -> BlobTask:
    hidden = int(spec.model_options["hidden"])
    model = nn.Sequential(nn.Linear(DIM, hidden), nn.ReLU(), nn.Linear(hidden, CLASSES))
    return BlobTask(model, spec.seed, ctx.device)
