"""Turn a text source into token shards, once: DATA_DIR/gpt2/<dataset>-<tokenizer>/.

The directory holds train_000000.bin, train_000001.bin, ... (at most `shard_tokens`
tokens each), val.bin and meta.json (the recipe and the counts). It is built in a
temporary directory and renamed into place, under a lock, so a crash never leaves a
half-written dataset behind and parallel callers prepare it once.

Split: documents are tokenized in batches (several MB of text, on every core); the
first `val_fraction` of each batch's tokens goes to validation and the rest to training,
so validation samples the whole corpus, not just its beginning, for any corpus size.
Preparation stops when the training part reaches `token_budget` tokens (or the source
runs out).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from gpt2.corpus import sources, tokenizers
from gpt2.corpus.shards import ShardWriter

FORMAT = 1
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB files
BATCH_CHARS = 8_000_000  # text tokenized per batch: enough for every thread, bounded memory
META = "meta.json"
VAL = "val.bin"


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
            "source": sources.fingerprint(dataset, options.get("text_dir"))}


def read_meta(directory: Path | str) -> dict | None:
    try:
        with open(Path(directory) / META) as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "recipe" in meta else None


def _batches(docs, limit_chars: int):
    batch, chars = [], 0
    for text in docs:
        batch.append(text)
        chars += len(text)
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


def _write(tmp: Path, want: dict, tokenizer, docs, shard_tokens: int, log) -> dict:
    budget, fraction = want["token_budget"], want["val_fraction"]
    val = ShardWriter(tmp / VAL, tokenizer.vocab_size)
    train, train_files = None, []
    train_total, documents, began, next_report = 0, 0, time.perf_counter(), budget / 10
    for batch in _batches(docs, BATCH_CHARS):
        tokens = tokenizer.encode_documents(batch)
        documents += len(batch)
        n_val = round(len(tokens) * fraction)
        n_train = min(len(tokens) - n_val, budget - train_total)
        if n_train < len(tokens) - n_val:  # the budget ends inside this batch: keep the split's ratio
            n_val = round(n_train * fraction / (1.0 - fraction))
        val.write(tokens[:n_val])
        pos, stop = n_val, n_val + n_train
        while pos < stop:
            if train is None:
                train_files.append(train_name(len(train_files)))
                train = ShardWriter(tmp / train_files[-1], tokenizer.vocab_size)
            take = min(stop - pos, shard_tokens - train.count)
            train.write(tokens[pos:pos + take])
            pos += take
            if train.count == shard_tokens:
                train.close()
                train = None
        train_total += n_train
        if train_total >= next_report or train_total >= budget:
            rate = train_total / max(time.perf_counter() - began, 1e-9)
            log(f"  {train_total:,} / {budget:,} training tokens from {documents:,} documents ({rate:,.0f} tokens/s)")
            next_report += budget / 10
        if train_total >= budget:
            break
    if train is not None:
        train.close()
    val.close()
    return {"train_files": train_files, "train_tokens": train_total, "val_tokens": val.count,
            "documents": documents}


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
            counts = _write(tmp, want, tokenizer, sources.documents(want["dataset"], options.get("text_dir")),
                            shard_tokens, log)
            if counts["train_tokens"] == 0 or counts["val_tokens"] == 0:
                raise PrepareError(f"{want['dataset']} text gave {counts['train_tokens']} training and "
                                   f"{counts['val_tokens']} validation tokens; add text or raise GPT2_VAL_FRACTION")
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
