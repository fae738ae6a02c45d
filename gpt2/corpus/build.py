"""Turn a text source into token shards, once: DATA_DIR/gpt2/<dataset>-<tokenizer>/.

The directory holds train_000000.bin, train_000001.bin, ... (at most `shard_tokens`
tokens each), val.bin and meta.json (the recipe and the counts). It is built in a
temporary directory and renamed into place, under a lock, so a crash never leaves a
half-written dataset behind and parallel callers prepare it once.

Split: by document, never inside one. A document goes to validation when the SHA-256 of
its text, read as a fraction of 2**64, is below `val_fraction` (split_of): the same
document lands in the same split on every machine and in every order, identical texts
can never sit on both sides, and validation samples the whole corpus. Documents are
tokenized in batches (several MB of text, on every core). The training part stops at
`token_budget` tokens (the last training document is cut there); reading goes on, for
validation documents only, until validation holds its share `val_fraction` of all
tokens, or the source runs out. meta.json counts documents and tokens per source and split.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from gpt2.corpus import sources, tokenizers
from gpt2.corpus.shards import ShardWriter

FORMAT = 2  # 2: split by document (1 split each batch by position)
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB files
BATCH_CHARS = 8_000_000  # text tokenized per batch: enough for every thread, bounded memory
META = "meta.json"
VAL = "val.bin"
TRAIN_SPLIT, VAL_SPLIT = "train", "val"


class PrepareError(Exception):
    """Bad preparation options; one line naming the option and the fix."""


def shard_dir(data_dir: Path | str, dataset: str, tokenizer: str) -> Path:
    return Path(data_dir) / "gpt2" / f"{dataset}-{tokenizer}"


def train_name(index: int) -> str:
    return f"train_{index:06d}.bin"


def recipe(options: dict) -> dict:
    """What the shards' content depends on; equal recipes mean reusable shards."""
    dataset, tokenizer = options["dataset"], options["tokenizer"]
    budget, fraction = options["token_budget"], options["val_fraction"]
    if not isinstance(budget, int) or budget < 1:
        raise PrepareError(f"GPT2_TOKEN_BUDGET={budget!r} must be a positive number of tokens")
    if fraction is None or not 0.0 < float(fraction) < 0.5:
        raise PrepareError(f"GPT2_VAL_FRACTION={fraction!r} must be between 0 and 0.5 (for example 0.005)")
    if tokenizer not in tokenizers.TOKENIZERS:
        raise PrepareError(f"unknown GPT-2 tokenizer {tokenizer!r}; choose one of {', '.join(tokenizers.TOKENIZERS)}")
    return {"format": FORMAT, "dataset": dataset, "tokenizer": tokenizer, "token_budget": budget,
            "val_fraction": float(fraction),
            "source": sources.fingerprint(dataset, options.get("text_dir"), options.get("doc_dir"))}


def read_meta(directory: Path | str) -> dict | None:
    try:
        with open(Path(directory) / META) as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "recipe" in meta else None


def split_of(text: str, val_fraction: float) -> str:
    """"val" or "train" for a document, from its text alone."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return VAL_SPLIT if int.from_bytes(digest[:8], "big") < val_fraction * 2.0 ** 64 else TRAIN_SPLIT


def _batches(docs, limit_chars: int):
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc[1])
        if chars >= limit_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


@contextlib.contextmanager
def _locked(directory: Path):
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _TrainShards:
    """Training tokens into train_NNNNNN.bin files of at most `shard_tokens` tokens each."""

    def __init__(self, tmp: Path, vocab_size: int, shard_tokens: int):
        self.tmp, self.vocab_size, self.shard_tokens = tmp, vocab_size, shard_tokens
        self.files, self.writer, self.total = [], None, 0

    def write(self, tokens) -> None:
        pos = 0
        while pos < len(tokens):
            if self.writer is None:
                self.files.append(train_name(len(self.files)))
                self.writer = ShardWriter(self.tmp / self.files[-1], self.vocab_size)
            take = min(len(tokens) - pos, self.shard_tokens - self.writer.count)
            self.writer.write(tokens[pos:pos + take])
            pos += take
            if self.writer.count == self.shard_tokens:
                self.writer.close()
                self.writer = None
        self.total += len(tokens)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _write(tmp: Path, want: dict, tokenizer, docs, shard_tokens: int, log) -> dict:
    budget, fraction = want["token_budget"], want["val_fraction"]
    val = ShardWriter(tmp / VAL, tokenizer.vocab_size)
    train = _TrainShards(tmp, tokenizer.vocab_size, shard_tokens)
    per_source: dict[str, dict] = {}
    documents, began, next_report = 0, time.perf_counter(), budget / 10
    share = fraction / (1.0 - fraction)  # validation tokens per training token
    done = False
    # Past the budget, training documents are dropped before they cost any tokenizing.
    wanted = (doc for doc in docs if train.total < budget or split_of(doc[1], fraction) == VAL_SPLIT)
    for batch in _batches(wanted, BATCH_CHARS):
        tokens = tokenizer.encode_documents([text for _, text in batch])
        starts = np.flatnonzero(tokens == tokenizer.eot)  # each document begins with end-of-text
        assert len(starts) == len(batch), "a tokenizer put end-of-text inside a document"
        ends = np.append(starts[1:], len(tokens))
        for (source, text), start, end in zip(batch, starts, ends):
            full = train.total >= budget
            done = full and val.count >= share * train.total
            if done:
                break
            split = split_of(text, fraction)
            if split == VAL_SPLIT:
                piece = tokens[start:end]
                val.write(piece)
            elif full:
                continue  # past the budget only validation documents are still wanted
            else:
                piece = tokens[start:min(end, start + budget - train.total)]
                train.write(piece)
            counts = per_source.setdefault(source, {f"{s}_{k}": 0 for s in (TRAIN_SPLIT, VAL_SPLIT)
                                                    for k in ("documents", "tokens")})
            counts[f"{split}_documents"] += 1
            counts[f"{split}_tokens"] += len(piece)
            documents += 1
        if train.total >= next_report or done:
            rate = train.total / max(time.perf_counter() - began, 1e-9)
            log(f"  {train.total:,} / {budget:,} training tokens from {documents:,} documents ({rate:,.0f} tokens/s)")
            next_report = (train.total // (budget / 10) + 1) * (budget / 10)
        if done:
            break
    train.close()
    val.close()
    return {"train_files": train.files, "train_tokens": train.total, "val_tokens": val.count,
            "documents": documents, "sources": per_source}


def prepare(options: dict, data_dir: Path | str, *, shard_tokens: int = DEFAULT_SHARD_TOKENS,
            force: bool = False, log=print, bpe_dir: Path | str | None = None) -> dict:
    """Prepare the shards `options` ask for (a RunSpec's gpt2 model_options); their meta.

    Reuses shards whose recipe matches unless `force`. Raises PrepareError, SourceError
    or TokenizerError with a one-line message.
    """
    want = recipe(options)
    directory = shard_dir(data_dir, want["dataset"], want["tokenizer"])
    with _locked(directory):
        meta = read_meta(directory)
        if meta is not None and meta["recipe"] == want and not force:
            log(f"{directory}: already prepared ({meta['train_tokens']:,} training and "
                f"{meta['val_tokens']:,} validation tokens)")
            return meta
        tokenizer = tokenizers.get_tokenizer(want["tokenizer"], bpe_dir=bpe_dir, data_dir=data_dir)
        log(f"preparing {directory}: {want['dataset']} text, {want['tokenizer']} tokens, "
            f"budget {want['token_budget']:,} training tokens, {want['val_fraction']:g} for validation")
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            docs = sources.documents(want["dataset"], options.get("text_dir"), options.get("doc_dir"))
            counts = _write(tmp, want, tokenizer, docs, shard_tokens, log)
            if counts["train_tokens"] == 0 or counts["val_tokens"] == 0:
                raise PrepareError(f"{want['dataset']} text gave {counts['train_tokens']} training and "
                                   f"{counts['val_tokens']} validation tokens from {counts['documents']} documents "
                                   "(split by document); add documents or raise GPT2_VAL_FRACTION")
            meta = {"recipe": want, "vocab_size": tokenizer.vocab_size, "eot": int(tokenizer.eot),
                    "shard_tokens": shard_tokens, **counts}
            with open(tmp / META, "w") as handle:
                json.dump(meta, handle, indent=2)
                handle.write("\n")
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            if directory.exists():
                os.rename(directory, old)
            os.rename(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if counts["train_tokens"] < want["token_budget"]:
            log(f"  the source ended at {counts['train_tokens']:,} training tokens, below the budget")
        log(f"{directory}: {counts['train_tokens']:,} training tokens in {len(counts['train_files'])} shard(s), "
            f"{counts['val_tokens']:,} validation tokens")
        return meta
