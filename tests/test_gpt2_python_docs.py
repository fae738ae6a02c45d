"""The python_docs GPT-2 corpus: Python's docs + system docs, split by document."""
import gzip
import itertools
import os

import numpy as np
import pytest

from gpt2.corpus import prepare, python_docs, shard_dir
from gpt2.corpus.build import split_of
from gpt2.corpus.shards import open_shard

PROSE = ("This package provides a library for reading and writing files in a portable way. "
         "It is maintained by volunteers and released under a free licence. ")


def quiet(_line):
    pass


@pytest.fixture
def doc_dir(tmp_path):
    """A small /usr/share/doc: text, gzip, a link, a duplicate, binary and non-text files."""
    root = tmp_path / "doc"
    (root / "alpha").mkdir(parents=True)
    (root / "beta").mkdir()
    (root / "alpha" / "README").write_text("Alpha. " + PROSE * 4)
    (root / "alpha" / "changelog.Debian.gz").write_bytes(gzip.compress(("alpha (1.0) unstable. " + PROSE * 3).encode()))
    (root / "beta" / "copyright").write_text("Alpha. " + PROSE * 4)  # the same text: kept once
    (root / "beta" / "notes.txt").write_bytes(b"\xff\xfe binary " * 100)  # not UTF-8: skipped
    (root / "beta" / "logo.png").write_bytes(b"PNG" * 100)
    os.symlink(root / "alpha" / "README", root / "beta" / "README")  # links repeat other packages
    os.symlink(root / "alpha", root / "gamma")
    return root


@pytest.fixture
def small_stdlib(tmp_path, monkeypatch):
    lib = tmp_path / "stdlib"
    (lib / "pkg").mkdir(parents=True)
    (lib / "test").mkdir()
    (lib / "pkg" / "mod.py").write_text(f'"""Module docstring. {PROSE}"""\n\ndef f():\n    """Function f. {PROSE}"""\n')
    (lib / "broken.py").write_text("def (:\n")
    (lib / "test" / "test_mod.py").write_text(f'"""A test module. {PROSE}"""\n')
    monkeypatch.setattr(python_docs, "stdlib_dir", lambda: lib)
    return lib


def test_documents_name_their_source_in_a_fixed_order(doc_dir, small_stdlib):
    docs = list(python_docs.documents(doc_dir))
    assert docs == list(python_docs.documents(doc_dir))
    by_source = {s: [t for src, t in docs if src == s] for s in python_docs.SOURCES}
    from pydoc_data.topics import topics

    assert len(by_source["pydoc_topics"]) >= 0.9 * len(topics)
    assert by_source["stdlib_docstrings"] == [f"Module docstring. {PROSE}\n\nFunction f. {PROSE}".strip()]
    assert by_source["system_docs"] == [("Alpha. " + PROSE * 4).strip(), ("alpha (1.0) unstable. " + PROSE * 3).strip()]
    assert len({t for _, t in docs}) == len(docs)


def test_real_stdlib_gives_docstrings():
    docs = itertools.islice((t for s, t in python_docs.documents(None) if s == "stdlib_docstrings"), 50)
    texts = list(docs)
    assert len(texts) == 50 and sum(map(len, texts)) > 50 * python_docs.MIN_DOC_CHARS


def test_no_system_docs_still_builds_from_python_docs(tmp_path):
    options = dict(dataset="python_docs", tokenizer="byte", token_budget=150_000, val_fraction=0.05,
                   doc_dir=str(tmp_path / "no-such-dir"))
    meta = prepare(options, tmp_path / "data", log=quiet)
    assert meta["train_tokens"] == 150_000 and meta["val_tokens"] > 0
    assert set(meta["sources"]) <= {"pydoc_topics", "stdlib_docstrings"}
    assert meta["recipe"]["source"].startswith("python_docs-")


def _documents_of(tokens) -> list[bytes]:
    return bytes(np.asarray(tokens).astype(np.uint8)).split(b"\0")[1:]


def test_prepare_is_deterministic_split_by_document_and_records_sources(tmp_path, doc_dir, small_stdlib):
    options = dict(dataset="python_docs", tokenizer="byte", token_budget=10_000_000, val_fraction=0.3,
                   doc_dir=str(doc_dir))
    metas = [prepare(options, tmp_path / name, log=quiet) for name in ("a", "b")]
    dirs = [shard_dir(tmp_path / name, "python_docs", "byte") for name in ("a", "b")]
    assert metas[0] == metas[1]
    for name in [*metas[0]["train_files"], "val.bin"]:
        assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes()
    meta = metas[0]
    assert set(meta["sources"]) == set(python_docs.SOURCES)
    counts = meta["sources"]
    assert sum(c["train_tokens"] for c in counts.values()) == meta["train_tokens"]
    assert sum(c["val_tokens"] for c in counts.values()) == meta["val_tokens"]
    assert counts["system_docs"]["train_documents"] + counts["system_docs"]["val_documents"] == 2
    assert counts["stdlib_docstrings"]["train_documents"] + counts["stdlib_docstrings"]["val_documents"] == 1
    train = _documents_of(np.concatenate([open_shard(dirs[0] / f) for f in meta["train_files"]]))
    val = _documents_of(open_shard(dirs[0] / "val.bin"))
    assert val and train and not set(train) & set(val)
    assert all(split_of(d.decode(), 0.3) == "val" for d in val)
    assert all(split_of(d.decode(), 0.3) == "train" for d in train)
    assert len(train) + len(val) == sum(c["train_documents"] + c["val_documents"] for c in counts.values())
