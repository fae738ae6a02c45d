"""GPT-2 data: shard format and its faults, preparation, batches, tokenizers, generated text."""
import itertools
import struct

import numpy as np
import pytest
import torch

from gpt2 import generated_text
from gpt2.corpus import DataError, TokenData, TokenizerError, get_tokenizer, prepare, read_meta, shard_dir
from gpt2.corpus import shards
from gpt2.corpus.build import split_of
from gpt2.corpus.shards import HEADER_BYTES, ShardError, open_shard, read_header, write_shard

GENERATED = dict(dataset="generated", tokenizer="byte", token_budget=30_000, val_fraction=0.05)


def quiet(_line):
    pass


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    meta = prepare(GENERATED, root, shard_tokens=12_000, log=quiet)
    return root, meta


# ---------------------------------------------------------------- shard format
def test_shard_round_trip(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16) % 256
    path = write_shard(tmp_path / "a.bin", tokens, 256)
    assert path.stat().st_size == HEADER_BYTES + 2 * 1000
    assert read_header(path) == {"version": 1, "tokens": 1000, "vocab_size": 256}
    assert np.array_equal(open_shard(path, 256), tokens)


def test_empty_shard_round_trip(tmp_path):
    path = write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16), 256)
    assert len(open_shard(path)) == 0


def _damage(path, offset, data):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_bad_magic_is_refused(tmp_path):
    path = write_shard(tmp_path / "a.bin", np.ones(10, dtype=np.uint16), 256)
    _damage(path, 0, b"GARBAGE!")
    with pytest.raises(ShardError, match="not a knlp token shard.*make prepare-gpt2-data"):
        open_shard(path)


def test_bad_version_is_refused(tmp_path):
    path = write_shard(tmp_path / "a.bin", np.ones(10, dtype=np.uint16), 256)
    _damage(path, 8, struct.pack("<I", 99))
    with pytest.raises(ShardError, match="version 99"):
        open_shard(path)


def test_truncated_shard_is_refused(tmp_path):
    path = write_shard(tmp_path / "a.bin", np.ones(10, dtype=np.uint16), 256)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ShardError, match="truncated"):
        open_shard(path)
    path.write_bytes(b"KNLP")
    with pytest.raises(ShardError, match="shorter than a shard header"):
        open_shard(path)


def test_trailing_bytes_and_wrong_vocab_are_refused(tmp_path):
    path = write_shard(tmp_path / "a.bin", np.ones(10, dtype=np.uint16), 256)
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(ShardError, match="trailing bytes"):
        open_shard(path)
    path = write_shard(tmp_path / "b.bin", np.ones(10, dtype=np.uint16), 256)
    with pytest.raises(ShardError, match="vocabulary of 256, expected 50257"):
        open_shard(path, 50257)
    with pytest.raises(ShardError, match="missing"):
        open_shard(tmp_path / "none.bin")


def test_writer_refuses_out_of_vocabulary_tokens(tmp_path):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        write_shard(tmp_path / "a.bin", np.array([1, 300], dtype=np.uint16), 256)
    assert not list(tmp_path.iterdir())  # no temporary left behind


# ---------------------------------------------------------------- preparation
def test_prepare_generated_round_trip(prepared):
    root, meta = prepared
    directory = shard_dir(root, "generated", "byte")
    assert meta == read_meta(directory)
    assert meta["train_tokens"] == 30_000
    assert meta["train_files"] == ["train_000000.bin", "train_000001.bin", "train_000002.bin"]
    lengths = [len(open_shard(directory / f)) for f in meta["train_files"]]
    assert lengths == [12_000, 12_000, 6_000]
    val = open_shard(directory / "val.bin")
    assert len(val) == meta["val_tokens"] >= 30_000 * 0.05 / 0.95
    # Split by document: each generated document, in order, goes whole to the split its
    # text's hash picks; training is cut at the budget, validation reads on to its share.
    want = {"train": [], "val": []}
    for doc in itertools.islice(generated_text.documents(0), 2000):
        want[split_of(doc, 0.05)].append(b"\0" + doc.encode())
    train = np.concatenate([open_shard(directory / f) for f in meta["train_files"]])
    assert bytes(train.astype(np.uint8)) == b"".join(want["train"])[:30_000]
    assert bytes(val.astype(np.uint8)) == b"".join(want["val"])[:len(val)]
    assert len(val) == sum(len(d) for d in want["val"][:int((val == 0).sum())])  # whole documents only
    assert meta["sources"] == {"generated": {"train_documents": int((train == 0).sum()), "train_tokens": 30_000,
                                             "val_documents": int((val == 0).sum()), "val_tokens": len(val)}}


def test_prepare_is_idempotent_and_force_rebuilds(prepared):
    root, meta = prepared
    directory = shard_dir(root, "generated", "byte")
    before = (directory / "val.bin").stat().st_mtime_ns
    lines = []
    assert prepare(GENERATED, root, shard_tokens=12_000, log=lines.append) == meta
    assert "already prepared" in lines[0]
    assert (directory / "val.bin").stat().st_mtime_ns == before


def test_prepare_new_recipe_replaces_old(tmp_path):
    prepare({**GENERATED, "token_budget": 10_000}, tmp_path, log=quiet)
    meta = prepare({**GENERATED, "token_budget": 20_000}, tmp_path, log=quiet)
    assert meta["train_tokens"] == 20_000
    assert sorted(p.name for p in (tmp_path / "gpt2").iterdir() if not p.name.startswith(".")) == ["generated-byte"]
    assert not [p for p in (tmp_path / "gpt2").iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_prepare_local_text(tmp_path):
    text = tmp_path / "text"
    (text / "sub").mkdir(parents=True)
    (text / "a.txt").write_text("The first file. " * 200)
    (text / "sub" / "b.txt").write_text("Zweite Datei, äöü. " * 200)
    for i in range(30):  # split by document: enough of them for a validation part
        (text / f"n{i:02d}.txt").write_text(f"File number {i}. " * 20)
    (text / "skip.md").write_text("not text")
    options = dict(dataset="local_text", tokenizer="byte", token_budget=100_000, val_fraction=0.3,
                   text_dir=str(text))
    meta = prepare(options, tmp_path / "data", log=quiet)
    directory = shard_dir(tmp_path / "data", "local_text", "byte")
    stream = np.concatenate([open_shard(directory / "val.bin")] + [open_shard(directory / f)
                                                                    for f in meta["train_files"]])
    decoded = get_tokenizer("byte").decode(stream)
    assert "The first file." in decoded and "Zweite Datei, äöü." in decoded and "not text" not in decoded
    assert int((stream == 0).sum()) == 32  # one end-of-text per file


def test_prepare_bad_options(tmp_path):
    from gpt2.corpus import PrepareError, SourceError

    with pytest.raises(PrepareError, match="GPT2_VAL_FRACTION"):
        prepare({**GENERATED, "val_fraction": 0.0}, tmp_path, log=quiet)
    with pytest.raises(SourceError, match="not a directory"):
        prepare(dict(GENERATED, dataset="local_text", text_dir=str(tmp_path / "nope")), tmp_path, log=quiet)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no .txt files"):
        prepare(dict(GENERATED, dataset="local_text", text_dir=str(tmp_path / "empty")), tmp_path, log=quiet)


# ---------------------------------------------------------------- batches
def test_batches_are_seeded_windows(prepared):
    root, _ = prepared
    data = TokenData(shard_dir(root, "generated", "byte"), block_size=16)
    a = data.train_windows(8, torch.Generator().manual_seed(3))
    b = data.train_windows(8, torch.Generator().manual_seed(3))
    c = data.train_windows(8, torch.Generator().manual_seed(4))
    assert a.shape == (8, 17) and a.dtype == torch.int64
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every window is a contiguous piece of one shard
    streams = [bytes(np.asarray(s).astype(np.uint8)) for s in data.train]
    for row in a:
        piece = bytes(row.numpy().astype(np.uint8))
        assert any(piece in s for s in streams)


def test_windows_never_cross_shards(tmp_path):
    prepare({**GENERATED, "val_fraction": 0.45}, tmp_path, shard_tokens=12_000, log=quiet)
    data = TokenData(shard_dir(tmp_path, "generated", "byte"), block_size=11_999)
    # shard lengths 12000, 12000, 6000: windows of 12000 tokens fit once in each of the first two
    rows = data.train_windows(6, torch.Generator().manual_seed(0))
    firsts = {int(r[0]) for r in rows}
    assert firsts <= {int(data.train[0][0]), int(data.train[1][0])}


def test_validation_windows_are_fixed(prepared):
    root, _ = prepared
    data = TokenData(shard_dir(root, "generated", "byte"), block_size=16)
    first = list(data.val_windows(3, 4))
    assert len(first) == 3 and all(w.shape == (4, 17) for w in first)
    assert all(torch.equal(a, b) for a, b in zip(first, data.val_windows(3, 4)))
    assert int(first[-1][-1][-1]) == int(data.val[-1])  # the windows reach the end of val.bin


def test_missing_shards_name_make_target(tmp_path):
    with pytest.raises(DataError, match=r"no GPT-2 token shards in .*make prepare-gpt2-data"):
        TokenData(shard_dir(tmp_path, "generated", "byte"), 16)


def test_damaged_shard_stops_training_data(tmp_path):
    prepare({**GENERATED, "token_budget": 10_000}, tmp_path, log=quiet)
    directory = shard_dir(tmp_path, "generated", "byte")
    path = directory / "train_000000.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated.*make prepare-gpt2-data"):
        TokenData(directory, 16)


def test_too_little_data_for_a_window(prepared):
    root, _ = prepared
    with pytest.raises(DataError, match="validation tokens, fewer than one window"):
        TokenData(shard_dir(root, "generated", "byte"), block_size=5000)


# ---------------------------------------------------------------- tokenizers
def test_byte_tokenizer_round_trip():
    tok = get_tokenizer("byte")
    text = "Grüße, 世界! tabs\tand\nlines"
    tokens = tok.encode_documents([text, "two"])
    assert tokens.dtype == np.uint16 and tokens[0] == tok.eot == 0
    assert tok.decode(tokens[1:1 + len(text.encode())]) == text
    assert int((tokens == 0).sum()) == 2
    assert tok.decode(tok.encode_documents(["a\0b"])) == "ab"  # NUL is reserved for end of text


def test_local_bpe_files_are_checked(tmp_path):
    bpe = tmp_path / "gpt2" / "tokenizer"
    bpe.mkdir(parents=True)
    (bpe / "vocab.bpe").write_text("#version: 0.2\n")
    (bpe / "encoder.json").write_text("{}")
    with pytest.raises(TokenizerError, match="is not GPT-2's vocab.bpe"):
        get_tokenizer("gpt2", data_dir=tmp_path)


def test_unknown_tokenizer():
    with pytest.raises(TokenizerError, match="choose one of gpt2, byte"):
        get_tokenizer("words")


# ---------------------------------------------------------------- generated text
def test_generated_text_is_deterministic_and_structured():
    first = list(itertools.islice(generated_text.documents(0), 50))
    assert first == list(itertools.islice(generated_text.documents(0), 50))
    assert first != list(itertools.islice(generated_text.documents(1), 50))
    text = " ".join(first)
    assert "That was all about the" in text and " plus " in text
    # agreement: a plural subject never takes a singular verb right after it
    for plural in ("cats", "dogs", "foxes", "children"):
        for singular in ("sees", "likes", "follows", "finds"):
            assert f"{plural} {singular}" not in text
    # arithmetic facts are right
    numbers = {w: i for i, w in enumerate(generated_text.NUMBERS)}
    for sentence in text.split("."):
        words = sentence.strip().lower().split()
        if len(words) == 5 and words[1] == "plus":
            assert numbers[words[0]] + numbers[words[2]] == numbers[words[4]]


def test_shard_module_constants():
    assert shards.HEADER_BYTES == 64 and shards.MAGIC == b"KNLPTOKS"
