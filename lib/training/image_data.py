"""Image classification as a Task: a whole dataset held as uint8 tensors on the device.

MNIST and CIFAR fit in memory many times over (CIFAR-10 train is 150 MB as uint8), so
batches are gathered by index on the device and augmented there in a few vectorised ops:
no DataLoader workers, no per-sample PIL work, and every random choice comes from the
engine's per-micro-batch generator (repeatable, resumable; see lib/training/seeding.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.training.task import Task


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, *, pad: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Per-image random crop of the zero-padded image (torchvision RandomCrop(padding=pad))
    and random horizontal flip (p=0.5), for a uint8 or float batch [B, C, H, W]."""
    b, _, h, w = images.shape
    device = images.device
    # Draw on the CPU from the given generator so the same numbers come out on any device.
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(device) if flip else None
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=device))[:, :, None]          # [B, H, 1]
    cols = ox[:, None] + torch.arange(w, device=device)                        # [B, W]
    if flips is not None:
        # Flipping the crop = reading its columns right to left.
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=device)[:, None, None]
    # Advanced indices separated by a slice move to the front: result [B, H, W, C].
    return padded[batch, :, rows, cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class ImageClassificationTask(Task):
    """Epoch-based task over in-memory images; accuracy in percent."""

    metric = "accuracy"

    def __init__(self, model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor,
                 test_x: torch.Tensor, test_y: torch.Tensor, *, mean, std, augment: bool = False,
                 resize: int | None = None, eval_batch_size: int = 1000, info: dict | None = None):
        if train_x.dtype != torch.uint8 or test_x.dtype != torch.uint8 or train_x.dim() != 4:
            raise ValueError("images must be uint8 tensors [N, C, H, W]")
        if len(train_x) != len(train_y) or len(test_x) != len(test_y):
            raise ValueError("images and labels differ in length")
        self.model = model
        self.train_x, self.train_y = train_x, train_y.long()
        self.test_x, self.test_y = test_x, test_y.long()
        self.train_size = len(train_x)
        device = train_x.device
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
        self.augment = augment
        self.resize = resize
        self.eval_batch_size = eval_batch_size
        self.info = dict(info or {})

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std
        if self.resize and x.shape[-1] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return x

    def train_batch(self, indices, batch_size, generator):
        idx = indices.to(self.train_x.device, non_blocking=True)
        images = self.train_x[idx]
        if self.augment:
            images = random_crop_flip(images, generator)
        return self._prepare(images), self.train_y[idx]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def eval_batches(self, rank, world_size):
        for i, start in enumerate(range(0, len(self.test_x), self.eval_batch_size)):
            if i % world_size == rank:
                end = start + self.eval_batch_size
                yield self._prepare(self.test_x[start:end]), self.test_y[start:end]

    def eval_sums(self, model, batch):
        x, y = batch
        logits = model(x).float()
        loss_sum = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(dim=1) == y).sum()
        return torch.stack([loss_sum.double(), torch.tensor(float(len(y)), dtype=torch.float64, device=y.device),
                            correct.double()])

    def describe(self) -> dict:
        return {**self.info, "train_size": self.train_size, "test_size": len(self.test_x),
                "image_shape": list(self.train_x.shape[1:]), "augment": self.augment, "resize": self.resize}
