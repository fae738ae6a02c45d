"""The contract between a model's train.py and the shared engine (lib/training/engine.py).

A model contributes one thing: `build_task(spec, ctx) -> Task`, defined in
`<model>/train.py`. The engine owns everything else (device, DDP, AMP, compile,
optimizer, pruning, LR schedule, evaluation, checkpoints, resume, metrics).

Two kinds of task share the interface:

* epoch-based (the CNNs): `train_size` is the number of training samples. Each epoch
  the engine draws a seeded permutation of range(train_size), cuts it into optimizer
  steps of `batch * grad_acc * world_size` samples (the last partial step is dropped so
  every step has the same effective batch) and hands each micro-batch's sample indices
  to `train_batch(indices, ...)`.
* iteration-based (GPT-2): `train_size` is None. The engine asks for
  `train_batch(None, batch_size, generator)`: draw `batch_size` samples (for example
  random windows of a token memmap) using only `generator`.

Determinism and resume: `generator` is a CPU torch.Generator that the engine seeds
from (run seed, optimizer step, micro-batch index across all ranks). A task that draws
its randomness (augmentation, batch positions) only from it is repeatable and resumes
mid-epoch without saving any data-loader state; and 2 processes with grad_acc 1 see
exactly the samples of 1 process with grad_acc 2.

Evaluation: `eval_batches(rank, world_size)` yields this rank's share of a FIXED
evaluation set (the same batches every time); `eval_sums(model, batch)` returns a
float64 tensor [loss_sum, count, correct] on the device. The engine sums over batches
and ranks: test_loss = loss_sum / count; accuracy = 100 * correct / count (metric
"accuracy"); perplexity = exp(test_loss) (metric "perplexity", `correct` unused).

`loss(model, batch)` returns the scalar mean training loss of one micro-batch; the engine
wraps it in autocast and scales it for accumulation. `model` there is what the engine
trains (possibly wrapped by DDP or torch.compile), so always call it, never
`self.model`, inside `loss` and `eval_sums`.

Model initialisation: the engine seeds torch, numpy and random with spec.seed before
calling build_task, so building the model inside build_task gives the same weights on
every rank and every rerun. Build it on the CPU; the engine moves it to the device.
Data may be put on `ctx.device` directly (small datasets are held there as tensors).

Errors: raise `BadInput("one line: what is wrong, where, how to fix")` for a missing
dataset, an impossible download or an unusable option; the launcher prints it, marks
the run failed and exits with code 2. Rank 0 builds its task first (and downloads);
the other ranks build theirs after a barrier, so a download happens once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from lib.configuration.model_registry import HIGHER_IS_BETTER

METRICS = tuple(HIGHER_IS_BETTER)  # a task's `metric` is one of these; the registry says which way is better


class BadInput(Exception):
    """Bad configuration or missing input; the message is one line naming problem and fix."""


@dataclass
class RunContext:
    """What build_task may need to know about the process it runs in."""
    device: torch.device
    rank: int = 0
    world_size: int = 1
    data_dir: Path = Path("data")     # absolute: relative DATA_DIR is taken from the repo root
    download: bool = False            # spec.runtime["download"]
    seed: int = 1
    log: Callable[[str], None] = print  # writes to log.txt (and the terminal on rank 0)
    notes: list = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Task:
    """Base class of a model's task; see the module docstring for the contract."""

    metric: str = "accuracy"
    model: nn.Module
    train_size: int | None = None  # samples per epoch; None = iteration-based

    @property
    def epoch_based(self) -> bool:
        return self.train_size is not None

    def train_batch(self, indices: torch.Tensor | None, batch_size: int,
                    generator: torch.Generator) -> Any:
        """One micro-batch: the samples `indices` (epoch-based) or `batch_size` random ones."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar mean loss of one micro-batch, differentiable."""
        raise NotImplementedError

    def eval_batches(self, rank: int, world_size: int) -> Iterable[Any]:
        """This rank's share of the fixed evaluation set."""
        raise NotImplementedError

    def eval_sums(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """float64 tensor [loss_sum, count, correct] for one evaluation batch."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Dataset and model facts recorded in hparams.json["data"] (names, sizes, options)."""
        return {}
