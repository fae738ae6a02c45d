"""Where GPT-2 training text comes from: documents as an iterator of strings.

- generated: gpt2.generated_text, deterministic, offline (tests and demos);
- local_text: every *.txt file under a directory, read with the `datasets` text loader
  (one file = one document), offline;
- finewebedu: HuggingFaceFW/fineweb-edu, config sample-10BT, streamed from the hub by
  `datasets`, so only the documents needed for the token budget are downloaded.

Only `make prepare-gpt2-data` reads sources; training reads the shards they became.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from gpt2 import generated_text

DATASETS = ("finewebedu", "local_text", "generated")
FINEWEB = ("HuggingFaceFW/fineweb-edu", "sample-10BT")
GENERATED_SEED = 0  # one generated corpus for every run, so runs with different seeds compare
GENERATOR_VERSION = 1  # bump when gpt2/generated_text.py changes its output


class SourceError(Exception):
    """The text cannot be read; one line naming what was tried and how to fix it."""


def text_files(text_dir: Path | str) -> list[Path]:
    directory = Path(text_dir)
    if not directory.is_dir():
        raise SourceError(f"GPT2_TEXT_DIR {directory} is not a directory; point it at a directory of .txt files")
    files = sorted(p for p in directory.rglob("*.txt") if p.is_file())
    if not files:
        raise SourceError(f"no .txt files under {directory}; add some or point GPT2_TEXT_DIR elsewhere")
    return files


def fingerprint(dataset: str, text_dir: Path | str | None = None) -> str:
    """What the source's content depends on, so prepared shards know when they are stale."""
    if dataset == "generated":
        return f"generated-v{GENERATOR_VERSION}-seed{GENERATED_SEED}"
    if dataset == "local_text":
        digest = hashlib.sha256()
        for path in text_files(text_dir):
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return f"local_text-{digest.hexdigest()[:16]}"
    if dataset == "finewebedu":
        return f"{FINEWEB[0]}/{FINEWEB[1]}"
    raise SourceError(f"unknown GPT-2 dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def _local_text(text_dir: Path | str) -> Iterator[str]:
    from datasets import load_dataset

    files = [str(p) for p in text_files(text_dir)]
    stream = load_dataset("text", data_files={"train": files}, split="train", streaming=True,
                          sample_by="document")
    for row in stream:
        yield row["text"]


def _finewebedu() -> Iterator[str]:
    name, config = FINEWEB
    try:
        from datasets import load_dataset

        stream = load_dataset(name, name=config, split="train", streaming=True)
        for row in stream:
            yield row["text"]
    except (ConnectionError, OSError) as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise SourceError(f"could not stream {name} ({config}) from the Hugging Face hub: {reason}; check the "
                          "network (or HF_ENDPOINT / a proxy), or train on your own text with "
                          "CONFIG_GPT2_DATASET_LOCAL_TEXT=y and GPT2_TEXT_DIR") from None


def documents(dataset: str, text_dir: Path | str | None = None) -> Iterator[str]:
    """The documents of `dataset`, in a fixed order."""
    if dataset == "generated":
        return generated_text.documents(GENERATED_SEED)
    if dataset == "local_text":
        text_files(text_dir)  # fail now, with a clear line, rather than inside the loader
        return _local_text(text_dir)
    if dataset == "finewebedu":
        return _finewebedu()
    raise SourceError(f"unknown GPT-2 dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
