"""Atomic checkpoint files (best.pt, last.pt) that a resume can trust.

A checkpoint is written to a temporary file in the same directory, flushed, fsynced and
renamed over the old one, then the directory is fsynced: a kill -9 at any moment leaves
either the complete old file or the complete new one, plus at worst a stray
`.last.pt.*` temporary that nothing reads (and the next run removes).

Loading uses torch.load(weights_only=True), so a checkpoint can hold tensors, numbers,
strings, lists and dicts only. The payload carries the sha256 of its contents, so bytes
damaged inside tensor data (which torch's zip reader does not notice) are refused too. Every problem is a CheckpointError whose message names
the file and says how to start fresh.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from lib.lifecycle.atomic import atomic_write
from lib.lifecycle.storage_errors import storage_cause

FORMAT = 2  # 2: the payload carries its sha256 ("checksum"); 1 (no checksum) still loads
FORMATS = (1, 2)
FRESH_HINT = "start over with 'make FRESH=1' (python -m lib.lifecycle.launch --run-dir DIR --fresh), which moves the old files aside"


class CheckpointError(Exception):
    """Unreadable or incompatible checkpoint; one line naming the file and the fix."""


def _feed(digest, value) -> None:
    """Hash `value` in a canonical order: dict keys sorted, each tensor's dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())  # a tuple may load back as a list
        for item in value:
            _feed(digest, item)
    else:  # numbers, strings, None, booleans
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def checksum(payload: dict) -> str:
    """sha256 of a payload's contents (without its "checksum" key)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != "checksum"})
    return digest.hexdigest()


def save(path: Path | str, payload: dict) -> None:
    """Write the checkpoint atomically; an OSError naming `path` when the disk refuses it."""
    data = {**payload, "format": FORMAT}
    data["checksum"] = checksum(data)
    try:
        atomic_write(path, lambda handle: torch.save(data, handle), binary=True)
    except RuntimeError as err:  # torch.save reports a failed write as "enforce fail at inline_container.cc"
        cause = storage_cause(err)
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from None


def load(path: Path | str, *, map_location="cpu", required: tuple[str, ...] = ()) -> dict:
    """The checkpoint's dict; CheckpointError when it cannot be trusted."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as err:  # truncated zip, pickle error, disallowed type ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({reason[:160]}); {FRESH_HINT}") from None
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a knlp checkpoint of format {FORMAT} (found {found!r}); {FRESH_HINT}")
    if payload["format"] >= 2 and payload.get("checksum") != checksum(payload):
        raise CheckpointError(f"{path}: corrupt checkpoint, its contents do not match their checksum "
                              f"(damaged on disk or in transfer); {FRESH_HINT}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}; {FRESH_HINT}")
    return payload


def remove_stale_temporaries(run_dir: Path | str) -> None:
    """Delete temporaries of checkpoints that a killed run left behind."""
    for name in ("best.pt", "last.pt"):
        for stray in Path(run_dir).glob(f".{name}.*"):
            stray.unlink(missing_ok=True)
