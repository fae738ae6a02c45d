"""GPT-2 on token shards: builds the model and the data, the shared engine does the rest.

    python -m lib.lifecycle.launch --run-dir DIR      (what make runs)
    python -m gpt2.train --run-dir DIR      (the same)

The engine owns iterations, warm-up + cosine LR, gradient accumulation, clipping (in
the optimizer), AMP, torch.compile, evaluation, checkpoints, resume and the time
budget. This file supplies random training windows, the fixed validation windows and
the loss. Shards come from `make prepare-gpt2-data`; the offline datasets (generated
text, Python's docs) are prepared here when missing.
"""
from __future__ import annotations

import sys
from pathlib import Path


import torch

from gpt2 import corpus
from gpt2.corpus import sources, tokenizers
from gpt2.model import GPT, config_from_options
from lib.training.task import BadInput, Task

# Sequences per validation batch. Fixed, not the training batch, so the validation set
# (eval_iters x EVAL_BATCH windows) is the same on every machine and runs compare.
EVAL_BATCH = 8


class GPT2Task(Task):
    metric = "perplexity"
    train_size = None  # iteration-based

    def __init__(self, model: GPT, tokens: corpus.TokenData, *, eval_iters: int, device: torch.device):
        if eval_iters < 1:
            raise BadInput(f"GPT2_EVAL_ITERS={eval_iters} must be at least 1")
        self.model = model
        self.tokens = tokens
        self.eval_iters = eval_iters
        self.device = device
        # Tokens per sample, so samples/s can be reported as tokens/s.
        self.tokens_per_sample = tokens.block_size

    def _split(self, windows: torch.Tensor):
        if self.device.type == "cuda":
            windows = windows.pin_memory().to(self.device, non_blocking=True)
        else:
            windows = windows.to(self.device)
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def train_batch(self, indices, batch_size, generator):
        return self._split(self.tokens.train_windows(batch_size, generator))

    def loss(self, model, batch):
        x, y = batch
        return model(x, y)

    def eval_batches(self, rank, world_size):
        for i, windows in enumerate(self.tokens.val_windows(self.eval_iters, EVAL_BATCH)):
            if i % world_size == rank:
                yield self._split(windows)

    def eval_sums(self, model, batch):
        x, y = batch
        count = y.numel()
        loss = model(x, y).double()
        return torch.stack([loss * count, torch.full_like(loss, count), torch.zeros_like(loss)])

    def describe(self) -> dict:
        cfg = self.model.config
        return {**self.tokens.describe(), "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                "block_size": cfg.block_size, "model_vocab_size": cfg.vocab_size, "dropout": cfg.dropout,
                "parameters": self.model.num_parameters(), "tokens_per_sample": self.tokens_per_sample,
                "eval_batches": self.eval_iters, "eval_batch_size": EVAL_BATCH,
                "eval_tokens": self.eval_iters * EVAL_BATCH * cfg.block_size}


def _note_recipe_drift(meta: dict, options: dict, directory: Path, log) -> None:
    """Shards made for another budget or split still train; say so once."""
    recipe = meta["recipe"]
    drift = [f"{key} {recipe[key]} (config: {options[key]})" for key in ("token_budget", "val_fraction")
             if options.get(key) is not None and recipe.get(key) != options[key]]
    if drift:
        log(f"note: {directory} was prepared with {', '.join(drift)}; `make prepare-gpt2-data` rebuilds it")


def build_task(spec, ctx) -> GPT2Task:
    options = spec.model_options
    dataset, tokenizer = options.get("dataset"), options.get("tokenizer")
    try:
        directory = corpus.shard_dir(ctx.data_dir, dataset, tokenizer)
        if dataset in sources.OFFLINE and ctx.is_main:
            # Deterministic and offline: no reason to make the user run a step first.
            corpus.prepare(sources.with_paths(options), ctx.data_dir, log=ctx.log)
        tokens = corpus.TokenData(directory, int(options["block_size"]),
                                  vocab_size=tokenizers.vocab_size(tokenizer))
        _note_recipe_drift(tokens.meta, {**options, "val_fraction": float(options.get("val_fraction") or 0)},
                           directory, ctx.log)
        model = GPT(config_from_options(options, tokens.vocab_size))
    except corpus.ERRORS as err:
        raise BadInput(str(err)) from None
    except ValueError as err:  # impossible model sizes
        raise BadInput(str(err)) from None
    ctx.log(f"gpt2: {model.num_parameters():,} parameters ({model.config.n_layer} layers, {model.config.n_head} "
            f"heads, width {model.config.n_embd}, context {model.config.block_size}, vocabulary "
            f"{model.config.vocab_size}); {tokens.train_tokens:,} training tokens from {directory}")
    return GPT2Task(model, tokens, eval_iters=int(options.get("eval_iters") or 1), device=ctx.device)


if __name__ == "__main__":
    from lib.lifecycle.launch import main

    sys.exit(main())
