"""One line for a file that cannot be written: full disk, read-only or missing permission,
or a path whose directory part is a file.

The run directory, the results directory and the checkpoints all end up here when the
operating system refuses a write, so every entry point reports it the same way.
"""
from __future__ import annotations

import errno

_MOVE = "point OUTPUT_DIR (single runs) or TEST_MATRIX_RESULTS_DIR (sweeps) elsewhere"
HINTS = {
    errno.ENOSPC: f"free some space there, or {_MOVE}",
    errno.EDQUOT: f"free some space there, or {_MOVE}",
    errno.EROFS: _MOVE,
    errno.EACCES: f"no permission to write there; {_MOVE}",
    errno.EPERM: f"no permission to write there; {_MOVE}",
    errno.ENOTDIR: f"a part of that path is a file, not a directory; {_MOVE}",
    errno.EEXIST: f"a file is in the way of that directory; {_MOVE}",
}


def is_storage_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in HINTS


def storage_cause(err: BaseException) -> OSError | None:
    """The OSError behind `err`: itself, or the one torch.save's RuntimeError swallowed
    ("enforce fail at inline_container.cc")."""
    seen = err
    while seen is not None:
        if is_storage_error(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def describe(err: OSError, path=None) -> str:
    """'cannot write PATH: No space left on device; free some space there, or ...'"""
    where = path if path is not None else (err.filename or "a file")
    what = err.strerror or str(err)
    hint = HINTS.get(err.errno)
    return f"cannot write {where}: {what}" + (f"; {hint}" if hint else "")
