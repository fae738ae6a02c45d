"""Optional heavy dependencies, installed on first use instead of for every set-up.

The default set-up (requirements.txt) stays small enough for the README's main job.
A config that selects Ray, a tracker or an export format, and the tests that cover
them, call `ensure(name)`: the pinned line for `name` in requirements-extras.txt is
installed into the running interpreter's environment with one notice line, once.
"""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

PINS = Path(__file__).resolve().parent.parent / "requirements-extras.txt"


class ExtraUnavailable(RuntimeError):
    """The optional package could not be imported or installed; the message is one line."""


def pins(path: Path = PINS) -> dict[str, str]:
    """{distribution name: 'name==version'} from the extras file (comments ignored)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[=<>!~\[ ]", line, maxsplit=1)[0].lower()
            found[name] = line
    return found


def ensure(name: str, module: str | None = None, why: str = "", install: bool = True):
    """Import `module` (default: `name`), installing the pinned `name` first when missing.

    `why` names what asked for it (a config symbol, a test), for the notice line.
    install=False only imports: for callers that must never touch the environment.
    """
    module = module or name
    try:
        return importlib.import_module(module)
    except ImportError:
        if not install:
            raise ExtraUnavailable(f"{name} is not installed; install it with: pip install '{pins().get(name, name)}'")
    pinned = pins().get(name.lower())
    if pinned is None:
        raise ExtraUnavailable(f"{name} has no pinned version in {PINS.name}: add one")
    reason = f" (needed by {why})" if why else ""
    print(f"knlp: installing {pinned}{reason} into {sys.prefix}", file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", pinned],
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ExtraUnavailable(f"could not install {pinned}{reason}: {last}; install it by hand with pip")
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ExtraUnavailable(f"{pinned} installed but 'import {module}' fails: {exc}") from exc
