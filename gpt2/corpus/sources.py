"""Where GPT-2 training text comes from: documents as (source, text) pairs.

- python_docs: Python's own documentation and the system's /usr/share/doc, offline and
  on every machine (gpt2/corpus/python_docs.py); its source names the part of it;
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
from gpt2.corpus import python_docs
from lib.configuration import paths

DATASETS = ("finewebedu", "local_text", "python_docs", "generated")
FINEWEB = ("HuggingFaceFW/fineweb-edu", "sample-10BT")
GENERATED_SEED = 0  # one generated corpus for every run, so runs with different seeds compare
GENERATOR_VERSION = 1  # bump when gpt2/generated_text.py changes its output


class SourceError(Exception):
    """The text cannot be read; one line naming what was tried and how to fix it."""


OFFLINE = ("generated", "python_docs")  # built from what the machine has: training prepares them itself


def with_paths(options: dict, root: Path | str | None = None) -> dict:
    """`options` with the directories its dataset reads made absolute (relative ones are
    taken from `root`, default the project root) and those of other datasets set to None."""
    out = dict(options)
    for key, dataset in (("text_dir", "local_text"), ("doc_dir", "python_docs")):
        path = options.get(key)
        if options.get("dataset") != dataset or not path:
            out[key] = None
            continue
        out[key] = str(paths.from_root(path, root))
    return out


def text_files(text_dir: Path | str) -> list[Path]:
    directory = Path(text_dir)
    if not directory.is_dir():
        raise SourceError(f"GPT2_TEXT_DIR {directory} is not a directory; point it at a directory of .txt files")
    files = sorted(p for p in directory.rglob("*.txt") if p.is_file())
    if not files:
        raise SourceError(f"no .txt files under {directory}; add some or point GPT2_TEXT_DIR elsewhere")
    return files


def fingerprint(dataset: str, text_dir: Path | str | None = None, doc_dir: Path | str | None = None) -> str:
    """What the source's content depends on, so prepared shards know when they are stale."""
    if dataset == "python_docs":
        return python_docs.fingerprint(doc_dir)
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


def _tagged(source: str, texts: Iterator[str]) -> Iterator[tuple[str, str]]:
    for text in texts:
        yield source, text


def documents(dataset: str, text_dir: Path | str | None = None,
              doc_dir: Path | str | None = None) -> Iterator[tuple[str, str]]:
    """(source, text) of every document of `dataset`, in a fixed order."""
    if dataset == "python_docs":
        return python_docs.documents(doc_dir)
    if dataset == "generated":
        return _tagged("generated", generated_text.documents(GENERATED_SEED))
    if dataset == "local_text":
        text_files(text_dir)  # fail now, with a clear line, rather than inside the loader
        return _tagged(f"local_text:{text_dir}", _local_text(text_dir))
    if dataset == "finewebedu":
        return _tagged("/".join(FINEWEB), _finewebedu())
    raise SourceError(f"unknown GPT-2 dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
