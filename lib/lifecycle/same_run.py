"""Whether two records describe the same run: the one comparison every "is this the same run?" uses.

A run directory is taken over, resumed, skipped or reported only when what it holds equals
what the configuration now asks for. The single run (`make`), the sweep's stale-directory
check, the report's selection and the engine's resume check all ask difference() here, so a
setting that makes two runs differ makes them differ everywhere, with the same words.
"""
from __future__ import annotations


def difference(old: dict, new: dict, *, ignore=(), prefix: str = "") -> str | None:
    """The first setting (sorted, nested dicts walked) that differs, as 'key: old -> new';
    None when they are the same run. Top-level keys in `ignore` are not compared."""
    for key in sorted(set(old) | set(new)):
        if not prefix and key in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = difference(a, b, prefix=f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a!r} -> {b!r}"
    return None


def first_key(found: str | None) -> str | None:
    """The top-level setting a difference() names."""
    return None if found is None else found.split(":", 1)[0].split(".", 1)[0]
