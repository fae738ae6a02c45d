"""Where a configured path points: the one place that resolves root-relative settings.

OUTPUT_DIR, DATA_DIR, TEST_MATRIX_RESULTS_DIR, the GPT-2 text directories and the tracker's
directory are written relative to the project root (where .config lives), whatever the
current directory; `~` is the home directory; absolute paths stay as they are.
"""
from __future__ import annotations

from pathlib import Path

from lib.configuration.config import ROOT


def from_root(value: str | Path, root: Path | str | None = None) -> Path:
    """`value` as an absolute path: `~` expanded, a relative one taken from `root` (the project)."""
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else Path(root if root is not None else ROOT) / path


def data_dir(spec) -> Path:
    """A run's DATA_DIR as training sees it (default "data" under the project)."""
    return from_root(spec.runtime.get("data_dir") or "data")
