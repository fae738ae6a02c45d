"""Token shard files: a 64-byte header, then uint16 tokens.

Header (little-endian): magic b"KNLPTOKS", format version (uint32), bytes per token
(uint32, 2), token count (uint64), vocabulary size (uint32), zero padding to 64 bytes.
The count lets a reader tell a complete file from one cut short by a crash or a full
disk; the vocabulary lets training refuse shards made by another tokenizer. Readers open
the tokens with np.memmap, so a 100M-token shard costs no memory until windows are read.

Writers stream tokens to a temporary file, then write the final header and rename, so a
shard under its final name is always complete.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"KNLPTOKS"
VERSION = 1
HEADER = struct.Struct("<8sIIQI36x")
HEADER_BYTES = HEADER.size  # 64
TOKEN_DTYPE = np.dtype("<u2")
REBUILD = "run `make prepare-gpt2-data` again"


class ShardError(Exception):
    """A shard is missing, damaged or of the wrong kind; one line naming file and fix."""


def _header(count: int, vocab_size: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, TOKEN_DTYPE.itemsize, count, vocab_size)


class ShardWriter:
    """Streams token arrays into one shard file; `close()` finalises it atomically."""

    def __init__(self, path: Path | str, vocab_size: int):
        if not 0 < vocab_size <= 1 << 16:
            raise ValueError(f"vocabulary {vocab_size} does not fit uint16 tokens")
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.count = 0
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self.handle = open(self.tmp, "wb")
        self.handle.write(_header(0, vocab_size))

    def write(self, tokens: np.ndarray) -> None:
        if len(tokens) == 0:
            return
        if int(tokens.max()) >= self.vocab_size or (tokens.dtype.kind == "i" and int(tokens.min()) < 0):
            raise ValueError(f"token ids outside the vocabulary of {self.vocab_size} for {self.path}")
        self.handle.write(np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE).tobytes())
        self.count += len(tokens)

    def close(self) -> Path:
        self.handle.seek(0)
        self.handle.write(_header(self.count, self.vocab_size))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def write_shard(path: Path | str, tokens: np.ndarray, vocab_size: int) -> Path:
    writer = ShardWriter(path, vocab_size)
    try:
        writer.write(tokens)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def read_header(path: Path | str) -> dict:
    """The header of `path`, checked against the file's size; raises ShardError."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: token shard missing; {REBUILD}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes, shorter than a shard header (truncated); {REBUILD}")
    magic, version, itemsize, count, vocab = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ShardError(f"{path}: not a knlp token shard (magic {magic!r}, expected {MAGIC!r}); {REBUILD}")
    if version != VERSION:
        raise ShardError(f"{path}: shard format version {version}, this code reads {VERSION}; {REBUILD}")
    if itemsize != TOKEN_DTYPE.itemsize:
        raise ShardError(f"{path}: {itemsize} bytes per token, expected {TOKEN_DTYPE.itemsize}; {REBUILD}")
    expected = HEADER_BYTES + count * itemsize
    if size != expected:
        state = "truncated" if size < expected else "has trailing bytes"
        raise ShardError(f"{path}: {state} ({size} bytes, header promises {count} tokens = {expected} bytes); "
                         f"{REBUILD}")
    return {"version": version, "tokens": count, "vocab_size": vocab}


def open_shard(path: Path | str, vocab_size: int | None = None) -> np.memmap:
    """The tokens of a checked shard as a read-only memmap."""
    header = read_header(path)
    if vocab_size is not None and header["vocab_size"] != vocab_size:
        raise ShardError(f"{path}: tokens of a vocabulary of {header['vocab_size']}, expected {vocab_size} "
                         f"(made with another tokenizer); {REBUILD}")
    if header["tokens"] == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)  # np.memmap refuses an empty mapping
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(header["tokens"],))
