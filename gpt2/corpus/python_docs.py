"""Real English text that every machine with Python has: the "python_docs" GPT-2 dataset.

Three sources, each document tagged with the one it came from:
- pydoc_topics: the language reference topics that `help()` shows (pydoc_data.topics),
  one document per topic;
- stdlib_docstrings: the docstrings of the standard library's modules, classes and
  functions, read from the source with `ast` (nothing is imported, so no module runs),
  one document per module;
- system_docs: the READMEs, change logs, copyright notices and text files under a
  directory such as Debian's /usr/share/doc (gzip-compressed ones too), one document per
  file; skipped when the directory is absent or not asked for.

Documents come in a fixed order (topics by name, files by path) and identical texts are
kept once (hundreds of packages ship the same licence), so the corpus and its split are
the same on every run of the same machine.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

SOURCES = ("pydoc_topics", "stdlib_docstrings", "system_docs")
DEFAULT_DOC_DIR = "/usr/share/doc"
# Test suites and vendored packages hold little prose; the standard library proper does.
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
TEXT_NAMES = ("readme", "news", "changelog", "changes", "copyright", "authors", "history", "todo", "faq")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
MAX_FILE_CHARS = 2_000_000  # a few huge change logs must not be most of the corpus
MIN_DOC_CHARS = 200  # shorter pieces are mostly boilerplate


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _module_docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return ""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                parts.append(doc)
    return "\n\n".join(parts)


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        files.extend(Path(folder) / n for n in sorted(names) if n.endswith(".py"))
    return files


def _docstrings(root: Path) -> Iterator[str]:
    for path in _stdlib_files(root):
        yield _module_docstrings(path)


def is_text_name(name: str) -> bool:
    base = name.lower().removesuffix(".gz")
    return base.endswith(TEXT_SUFFIXES) or base.split(".")[0] in TEXT_NAMES or base.startswith("changelog")


def system_doc_files(doc_dir: Path | str | None) -> list[Path]:
    """The text files under `doc_dir`, by path; [] when it is not a directory. Links are
    skipped: Debian links whole package directories to others, which would repeat them."""
    if not doc_dir or not Path(doc_dir).is_dir():
        return []
    files = []
    for folder, dirs, names in os.walk(doc_dir):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
        for name in sorted(names):
            path = Path(folder) / name
            if is_text_name(name) and not path.is_symlink() and path.is_file():
                files.append(path)
    return files


def _read_text(path: Path) -> str:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                data = handle.read(MAX_FILE_CHARS * 4)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_CHARS * 4)
        text = data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return ""  # unreadable or not UTF-8 text: not English prose for this corpus
    return text[:MAX_FILE_CHARS]


def _system_docs(doc_dir) -> Iterator[str]:
    for path in system_doc_files(doc_dir):
        yield _read_text(path)


def documents(doc_dir: Path | str | None = DEFAULT_DOC_DIR) -> Iterator[tuple[str, str]]:
    """(source, text) of every document, in a fixed order, each distinct text once."""
    seen = set()
    streams = (("pydoc_topics", _topics()), ("stdlib_docstrings", _docstrings(stdlib_dir())),
               ("system_docs", _system_docs(doc_dir)))
    for source, texts in streams:
        for text in texts:
            text = text.strip()
            if len(text) < MIN_DOC_CHARS or "\x00" in text:
                continue
            digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
            if digest in seen:
                continue
            seen.add(digest)
            yield source, text


def fingerprint(doc_dir: Path | str | None = DEFAULT_DOC_DIR) -> str:
    """What the corpus depends on: the Python version and the system docs' names, sizes and times."""
    digest = hashlib.sha256(f"{sys.version}\0{stdlib_dir()}\n".encode())
    for path in system_doc_files(doc_dir):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"python_docs-{sys.version_info.major}.{sys.version_info.minor}-{digest.hexdigest()[:16]}"
