"""LeNet-5 for 32x32 single-channel digits (LeCun et al. 1998, with ReLU and max-pool).

conv 5x5 1->6, pool 2 -> conv 5x5 6->16, pool 2 -> 400 -> 120 -> 84 -> 10.
61,706 parameters; all conv and linear weights are prunable.

Each conv is followed by max-pool then ReLU: relu(maxpool(x)) == maxpool(relu(x)) exactly
(ReLU is monotonic), and pooling first applies the ReLU to a quarter of the values. On
the CPU that and channels_last weights (lenet5/train.py) cut a training step by ~25%.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))   # 32 -> 28 -> 14
        x = F.relu(F.max_pool2d(self.conv2(x), 2))   # 14 -> 10 -> 5
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)
