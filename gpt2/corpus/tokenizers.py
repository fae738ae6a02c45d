"""Tokenizers for GPT-2 data: tiktoken's GPT-2 BPE, and bytes for fully offline use.

Both turn a batch of documents into one flat token array with an end-of-text token in
front of every document (the GPT-2 convention), ready to append to a shard.

tiktoken downloads its gpt2 files (vocab.bpe, encoder.json) once and caches them. With
no network it can instead use (in this order) a directory holding those two files
(`bpe_dir` argument, or the KNLP_GPT2_BPE_DIR environment variable, or
DATA_DIR/gpt2/tokenizer/), or its own cache in TIKTOKEN_CACHE_DIR. The files are checked
against GPT-2's published SHA-256 sums, so a wrong vocabulary never tokenizes silently.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

BPE_DIR_ENV = "KNLP_GPT2_BPE_DIR"
BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
BPE_FILES = {  # file name -> SHA-256 (the values tiktoken itself checks)
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# GPT-2's pre-tokenisation pattern (tiktoken's r50k_pat_str, equivalent to the original).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
TOKENIZERS = ("gpt2", "byte")


class TokenizerError(Exception):
    """The tokenizer cannot be built; the message is one line naming the fix."""


def _missing_files_message(reason: str) -> str:
    return (f"tiktoken cannot get its gpt2 files ({reason}); offline, put vocab.bpe and encoder.json "
            f"(from {BPE_URL}) in DATA_DIR/gpt2/tokenizer/ or in a directory named by {BPE_DIR_ENV}, "
            "or set TIKTOKEN_CACHE_DIR to a directory holding tiktoken's cached copies; "
            "or choose the byte tokenizer (CONFIG_GPT2_TOKENIZER_BYTE=y)")


class ByteTokenizer:
    """One token per UTF-8 byte; byte 0 (NUL, absent from real text) marks end of text."""

    name = "byte"
    vocab_size = 256
    eot = 0

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        parts = []
        for text in texts:
            parts.append(np.zeros(1, dtype=np.uint16))
            data = text.encode("utf-8").replace(b"\x00", b"")  # NUL is reserved for end of text
            parts.append(np.frombuffer(data, dtype=np.uint8).astype(np.uint16))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)

    def decode(self, tokens) -> str:
        data = bytes(int(t) for t in tokens if 0 < int(t) < 256)
        return data.decode("utf-8", errors="replace")


class Gpt2Tokenizer:
    """tiktoken's GPT-2 BPE (vocabulary 50257, <|endoftext|> = 50256), encoding in threads."""

    name = "gpt2"
    vocab_size = 50257

    def __init__(self, encoding, threads: int | None = None):
        self.encoding = encoding
        self.eot = encoding.eot_token
        self.threads = threads or os.cpu_count() or 1

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        # encode_ordinary_batch runs tiktoken's Rust encoder in a thread pool (it releases
        # the GIL), so a batch of documents is tokenized on every core.
        encoded = self.encoding.encode_ordinary_batch(texts, num_threads=self.threads)
        total = sum(len(e) + 1 for e in encoded)
        out = np.empty(total, dtype=np.uint16)
        pos = 0
        for tokens in encoded:
            out[pos] = self.eot
            out[pos + 1:pos + 1 + len(tokens)] = tokens
            pos += len(tokens) + 1
        return out

    def decode(self, tokens) -> str:
        return self.encoding.decode([int(t) for t in tokens])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encoding_from_files(directory: Path):
    """tiktoken Encoding built from a local vocab.bpe + encoder.json, checked by hash."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    for name, digest in BPE_FILES.items():
        if _sha256(directory / name) != digest:
            raise TokenizerError(f"{directory / name} is not GPT-2's {name} (SHA-256 differs); "
                                 f"download the original from {BPE_URL}{name}")
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(directory / "vocab.bpe"),
                                            encoder_json_file=str(directory / "encoder.json"))
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def _local_bpe_dir(candidates) -> Path | None:
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_file() for name in BPE_FILES):
            return Path(candidate)
    return None


def gpt2_encoding(bpe_dir: Path | str | None = None, data_dir: Path | str | None = None):
    """tiktoken's gpt2 Encoding from local files if present, else tiktoken's cache or download."""
    local = _local_bpe_dir([bpe_dir, os.environ.get(BPE_DIR_ENV),
                            Path(data_dir) / "gpt2" / "tokenizer" if data_dir else None])
    if local is not None:
        return _encoding_from_files(local)
    try:
        import tiktoken

        return tiktoken.get_encoding("gpt2")
    except ImportError:
        raise TokenizerError("the tiktoken package is missing; install the pinned requirements "
                             "(make creates .venv with them)") from None
    except Exception as err:  # requests' ConnectionError, HTTP errors, hash mismatch, ...
        reason = str(err).strip().splitlines()[0][:100] if str(err).strip() else ""
        raise TokenizerError(_missing_files_message(f"{type(err).__name__}: {reason}".rstrip(": "))) from None


def get_tokenizer(name: str, *, bpe_dir: Path | str | None = None, data_dir: Path | str | None = None):
    """The tokenizer called `name` ("gpt2" or "byte")."""
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return Gpt2Tokenizer(gpt2_encoding(bpe_dir, data_dir))
    raise TokenizerError(f"unknown GPT-2 tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")


def vocab_size(name: str) -> int:
    """Vocabulary of a tokenizer without loading it (training only needs the number)."""
    sizes = {"byte": ByteTokenizer.vocab_size, "gpt2": Gpt2Tokenizer.vocab_size}
    if name not in sizes:
        raise TokenizerError(f"unknown GPT-2 tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}")
    return sizes[name]
