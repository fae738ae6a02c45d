"""Training and validation batches from prepared token shards (np.memmap, no hub).

Training: random windows of block_size + 1 tokens (input and its next-token targets),
drawn uniformly over every window that fits inside one shard, with positions taken only
from the torch.Generator the engine passes in: the same seed and step give the same
batch, on resume too, with no loader state to save.

Validation: a fixed set of windows spread evenly over val.bin, identical for every run,
seed and machine, so validation losses of different runs compare directly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gpt2.corpus.build import META, VAL, read_meta
from gpt2.corpus.shards import ShardError, open_shard

MAKE = "run `make prepare-gpt2-data`"


class DataError(Exception):
    """The prepared data cannot be used; one line naming the problem and the fix."""


class TokenData:
    def __init__(self, directory: Path | str, block_size: int, *, vocab_size: int | None = None):
        self.directory = Path(directory)
        self.block_size = int(block_size)
        meta = read_meta(self.directory)
        if meta is None:
            what = "no" if not (self.directory / META).exists() else "an unreadable"
            raise DataError(f"{what} GPT-2 token shards in {self.directory} ({META} missing or damaged); {MAKE}")
        self.meta = meta
        self.vocab_size = int(meta["vocab_size"])
        if vocab_size is not None and vocab_size != self.vocab_size:
            raise DataError(f"{self.directory}: shards have vocabulary {self.vocab_size}, the tokenizer {vocab_size}; {MAKE}")
        try:
            self.train = [open_shard(self.directory / name, self.vocab_size) for name in meta["train_files"]]
            self.val = open_shard(self.directory / VAL, self.vocab_size)
        except ShardError as err:
            raise DataError(str(err)) from None
        window = self.block_size + 1
        # Window starts per shard: a window never spans two shards (they are separate streams).
        starts = np.array([max(0, len(s) - window + 1) for s in self.train], dtype=np.int64)
        self.cum_starts = np.cumsum(starts)
        self.train_tokens = int(sum(len(s) for s in self.train))
        self.val_tokens = len(self.val)
        if self.cum_starts.size == 0 or self.cum_starts[-1] == 0:
            raise DataError(f"{self.directory}: {self.train_tokens} training tokens, fewer than one window of "
                            f"{window}; raise GPT2_TOKEN_BUDGET or lower the block size, then {MAKE}")
        if self.val_tokens < window:
            raise DataError(f"{self.directory}: {self.val_tokens} validation tokens, fewer than one window of "
                            f"{window}; raise GPT2_VAL_FRACTION or GPT2_TOKEN_BUDGET, then {MAKE}")

    def _windows(self, shard: np.ndarray, starts) -> torch.Tensor:
        window = self.block_size + 1
        rows = np.stack([np.asarray(shard[s:s + window]) for s in starts])
        return torch.from_numpy(rows.astype(np.int64))

    def train_windows(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """[batch_size, block_size + 1] int64 token windows, positions from `generator`."""
        total = int(self.cum_starts[-1])
        picks = torch.randint(0, total, (batch_size,), generator=generator).numpy()
        shard_of = np.searchsorted(self.cum_starts, picks, side="right")
        offsets = picks - np.concatenate(([0], self.cum_starts[:-1]))[shard_of]
        window = self.block_size + 1
        rows = np.empty((batch_size, window), dtype=np.int64)
        for i, (shard, start) in enumerate(zip(shard_of, offsets)):
            rows[i] = self.train[shard][start:start + window]
        return torch.from_numpy(rows)

    def val_windows(self, batches: int, batch_size: int):
        """`batches` fixed [batch_size, block_size + 1] windows, evenly spread over val.bin."""
        count = batches * batch_size
        last = self.val_tokens - (self.block_size + 1)
        starts = np.linspace(0, last, num=count).round().astype(np.int64)
        for b in range(batches):
            yield self._windows(self.val, starts[b * batch_size:(b + 1) * batch_size])

    def describe(self) -> dict:
        recipe = self.meta["recipe"]
        return {"dataset": recipe["dataset"], "tokenizer": recipe["tokenizer"], "shards": str(self.directory),
                "train_tokens": self.train_tokens, "val_tokens": self.val_tokens,
                "token_budget": recipe["token_budget"], "vocab_size": self.vocab_size,
                "source": recipe["source"], "sources": self.meta.get("sources")}
