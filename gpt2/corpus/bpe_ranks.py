"""GPT-2's BPE ranks without tiktoken's download: the copy a registry package ships.

The source distribution of `openai-whisper` (MIT licence) holds whisper/assets/gpt2.tiktoken,
GPT-2's 50,256 byte-pair ranks in tiktoken's own format (one "base64-token rank" per line;
<|endoftext|> = 50256 is a special token, not a rank). It is the same file tiktoken
downloads as r50k_base, so it is pinned here by that SHA-256: an encoding built from it
gives GPT-2's ids exactly.

`fetch(directory)` runs the ordinary pip client to download that sdist only (no install,
no dependencies), extracts the one file, checks it and stores it as
directory/gpt2.tiktoken. `load(path)` checks a stored file and returns its ranks.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

RANKS_FILE = "gpt2.tiktoken"
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
RANKS_COUNT = 50256
PACKAGE = "openai-whisper==20250625"
MEMBER = "whisper/assets/gpt2.tiktoken"
PIP_TIMEOUT_S = 300


class RanksError(Exception):
    """The ranks file is wrong or cannot be fetched; one line naming the file and the cause."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check(path: Path | str) -> Path:
    """`path` if it is GPT-2's ranks file byte for byte; RanksError otherwise."""
    path = Path(path)
    digest = sha256_of(path)
    if digest != RANKS_SHA256:
        raise RanksError(f"{path} is not GPT-2's BPE ranks file (SHA-256 {digest[:12]}..., expected "
                         f"{RANKS_SHA256[:12]}...); delete it so it is fetched again, or replace it with the "
                         f"original {MEMBER} of {PACKAGE}")
    return path


def load(path: Path | str) -> dict[bytes, int]:
    """The byte-pair ranks of a checked ranks file."""
    ranks = {}
    for line in check(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != RANKS_COUNT:  # unreachable for the pinned file; guards a wrong pin
        raise RanksError(f"{path}: {len(ranks)} ranks, GPT-2 has {RANKS_COUNT}")
    return ranks


def _extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + MEMBER)), None)
        if member is None:
            raise RanksError(f"{archive.name} has no {MEMBER}; the pinned {PACKAGE} is not what was downloaded")
        source = tar.extractfile(member)
        with open(target, "wb") as handle:
            handle.write(source.read())


def fetch(directory: Path | str, *, python: str = sys.executable) -> Path:
    """Download the pinned sdist with pip, keep only the checked ranks file: directory/gpt2.tiktoken."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / RANKS_FILE
    with tempfile.TemporaryDirectory(prefix=".whisper-sdist-", dir=directory) as tmp:
        command = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
                   "--quiet", PACKAGE, "-d", tmp]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RanksError(f"pip download {PACKAGE} did not finish ({type(err).__name__})") from None
        if done.returncode != 0:
            lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            cause = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "no output")
            raise RanksError(f"pip download {PACKAGE} failed: {cause[:160]}")
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise RanksError(f"pip download {PACKAGE} gave no source archive")
        partial = Path(tmp) / RANKS_FILE
        _extract(archives[0], partial)
        check(partial)
        os.replace(partial, final)
    return final
