"""The one place that reads Kconfig and `.config`, and writes/loads `config.py`.

Everything else asks `load()` for a `Config` whose attributes are the typed values of
the Kconfig symbols, named without the `CONFIG_` prefix (`cfg.MODEL_LENET5`).
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

import kconfiglib

from lib.configuration import decimal_ranges
from lib.lifecycle.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
KCONFIG = ROOT / "Kconfig"
DOT_CONFIG = ROOT / ".config"
CONFIG_PY = ROOT / "config.py"
DEFCONFIG_DIR = ROOT / "defconfigs"
PREFIX = "CONFIG_"

_ASSIGNMENT = re.compile(r"^\s*(?:#\s*)?CONFIG_(\w+)(?:=|\s+is not set)")


class ConfigError(Exception):
    """A configuration problem; the message is one line naming what and how to fix it."""


MODELS_KCONFIG = ROOT / "kconfig" / "Kconfig.models"
# `source "<folder>/Kconfig"`: one line per model folder (a commented-out line is no model).
_MODEL_SOURCE = re.compile(r'^[ \t]*source[ \t]+"([^"/]+)/Kconfig"[ \t]*$', re.M)


def model_folders() -> list[str]:
    """The model folders, in the order kconfig/Kconfig.models sources their Kconfig."""
    return _MODEL_SOURCE.findall(MODELS_KCONFIG.read_text())


def kconfig_files() -> list[Path]:
    """Every Kconfig file of the tree (for staleness checks and tests)."""
    files = [KCONFIG] + sorted((ROOT / "kconfig").glob("Kconfig.*"))
    files += [p for p in (ROOT / d / "Kconfig" for d in model_folders()) if p.exists()]
    return files


def new_kconfig() -> kconfiglib.Kconfig:
    """The Kconfig tree with every symbol at its default."""
    old = os.getcwd()
    os.environ["srctree"] = str(ROOT)
    try:
        os.chdir(ROOT)
        kconf = kconfiglib.Kconfig(str(KCONFIG), warn_to_stderr=False, suppress_traceback=False)
    finally:
        os.chdir(old)
    kconf.warn_assign_redun = False  # a defconfig restating a default is harmless
    if kconf.warnings:
        raise ConfigError(f"Kconfig tree is inconsistent: {kconf.warnings[0]}")
    return kconf


def _line_numbers(path: Path) -> dict[str, int]:
    lines = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _ASSIGNMENT.match(line)
        if match:
            lines[match.group(1)] = number
    return lines


def _did_not_stick(sym: kconfiglib.Symbol) -> str | None:
    """Why a user assignment was not taken, or None when it was."""
    user = sym.user_value
    if user is None:
        return None
    if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        if user == sym.tri_value:
            return None
        if user and not sym.visibility:
            return f"needs {kconfiglib.expr_str(sym.direct_dep)}"
        if sym.choice is not None:
            return f"another choice member won ({sym.choice.selection.name if sym.choice.selection else 'none'})"
        return f"forced to {kconfiglib.TRI_TO_STR[sym.tri_value]}"
    if user == sym.str_value:
        return None
    if not sym.visibility:
        return f"needs {kconfiglib.expr_str(sym.direct_dep)}"
    if sym.orig_type in (kconfiglib.INT, kconfiglib.HEX) and sym.str_value and user:
        try:
            if int(user, 0) == int(sym.str_value, 0):
                return None
        except ValueError:
            return "not a number"
        return f"out of range{_range_text(sym)} (got {sym.str_value})"
    return f"became {sym.str_value!r}"


def _range_text(sym: kconfiglib.Symbol) -> str:
    """': allowed LOW..HIGH' from the symbol's active `range`, or '' when it has none."""
    for low, high, cond in sym.ranges:
        if kconfiglib.expr_value(cond):
            return f": allowed {low.str_value}..{high.str_value}"
    return ""


def load_kconfig(config_file: Path | str, *, drop_unknown: bool = False) -> kconfiglib.Kconfig:
    """Load `config_file` over the defaults; every line must name a real symbol and stick.

    Raises ConfigError naming file, line and symbol. With `drop_unknown` (olddefconfig),
    assignments to symbols that no longer exist are reported and ignored instead.
    """
    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file; make one with 'make defconfig-NAME' "
                          "(see 'make list-defconfigs') or 'make menuconfig'")
    kconf = new_kconfig()
    kconf.load_config(str(path), replace=True)
    lines = _line_numbers(path)
    problems = []
    for warning in kconf.warnings:
        if "undefined symbol" in warning:
            continue  # reported below with a suggestion
        text = re.sub(r"^.*?warning: ", "", warning)
        named = re.search(r"\b(?:for|symbol) ([A-Z0-9_]+)", text) or re.match(r"([A-Z0-9_]+) \(defined", text)
        where = f"{path}:{lines.get(named.group(1), '?')}: {PREFIX}{named.group(1)}: " if named else f"{path}: "
        problems.append(where + text)
    for name, _value in kconf.missing_syms:
        close = difflib.get_close_matches(name, kconf.syms.keys(), n=1)
        hint = f"; did you mean {PREFIX}{close[0]}?" if close else "; remove the line"
        message = f"{path}:{lines.get(name, '?')}: {PREFIX}{name}: unknown symbol{hint}"
        if drop_unknown:
            print(f"dropped {message}", file=sys.stderr)
        else:
            problems.append(message)
    for sym in kconf.unique_defined_syms:
        why = _did_not_stick(sym)
        if why:
            problems.append(f"{path}:{lines.get(sym.name, '?')}: {PREFIX}{sym.name}="
                            f"{sym.user_value if isinstance(sym.user_value, str) else kconfiglib.TRI_TO_STR[sym.user_value]}"
                            f" does not stick: {why}")
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return kconf


def _is_decimal_symbol(sym: kconfiglib.Symbol) -> bool:
    """The declared rule: a string symbol whose Kconfig default is a number holds a decimal."""
    for default, _cond in sym.defaults:
        try:
            float(default.str_value)
            return True
        except ValueError:
            return False
    return False


def typed_values(kconf: kconfiglib.Kconfig, source: Path | str | None = None) -> dict:
    """Symbol name (no prefix) -> Python value by the symbol's type.

    bool -> bool; int/hex -> int, or None when the symbol is off (unmet dependency);
    string -> str, or float for decimal symbols (see `_is_decimal_symbol`), which must be
    finite and within lib/decimal_ranges (ConfigError naming `source`'s line otherwise).
    """
    lines = _line_numbers(Path(source)) if source is not None and Path(source).is_file() else {}
    where = (lambda name: f"{source}:{lines.get(name, '?')}: ") if source is not None else (lambda name: "")
    values = {}
    for sym in kconf.unique_defined_syms:
        kind = sym.orig_type
        text = sym.str_value
        if kind in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            values[sym.name] = sym.tri_value == 2
        elif kind in (kconfiglib.INT, kconfiglib.HEX):
            values[sym.name] = int(text, 0) if text else None
        elif kind == kconfiglib.STRING:
            if _is_decimal_symbol(sym):
                if not sym.visibility and not text:
                    values[sym.name] = None
                    continue
                try:
                    value = float(text)
                except ValueError:
                    raise ConfigError(f"{where(sym.name)}{PREFIX}{sym.name}={text!r} is not a number; set it to "
                                      "a decimal such as 1e-3 with 'make menuconfig'") from None
                why = decimal_ranges.problem(sym.name, value)
                if why:
                    default = sym.defaults[0][0].str_value if sym.defaults else "?"
                    raise ConfigError(f"{where(sym.name)}{PREFIX}{sym.name}={text!r} {why}; set it with 'make "
                                      f"menuconfig' (default {default})")
                values[sym.name] = value
            else:
                values[sym.name] = text
    return values


def write_dot_config(kconf: kconfiglib.Kconfig, path: Path | str = DOT_CONFIG) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "config"
        kconf.write_config(str(staged), save_old=False)
        atomic_write_text(path, staged.read_text())


DIGEST_LINE = "# source digest: "


def source_digest(config_file: Path | str) -> str:
    """sha256 over the bytes of `config_file`, of every Kconfig file and of this generator:
    config.py is current exactly when they are what it was made from (file times can lie:
    `cp -p`, checkouts, clock skew)."""
    digest = hashlib.sha256()
    for path in [Path(config_file), *kconfig_files(), Path(__file__)]:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def write_config_py(values: dict, path: Path | str = CONFIG_PY, source: str = ".config",
                    config_file: Path | str | None = None) -> None:
    """Write config.py; `config_file` (default: `source`) is what its digest line is taken from."""
    config_file = Path(config_file if config_file is not None else source)
    if not config_file.is_absolute() and not config_file.exists():
        config_file = ROOT / config_file
    lines = [f"# Generated from {source} by lib/configuration/config.py; do not edit (make regenerates it).",
             DIGEST_LINE + source_digest(config_file), ""]
    lines += [f"{name} = {value!r}" for name, value in sorted(values.items())]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def generate(config_file: Path | str = DOT_CONFIG, out: Path | str = CONFIG_PY) -> dict:
    """Strictly load `config_file` and write `out`; returns the typed values."""
    values = typed_values(load_kconfig(config_file), config_file)
    write_config_py(values, out, source=str(config_file), config_file=config_file)
    return values


def _stale(config_file: Path, out: Path) -> bool:
    """Whether `out` was made from anything but the current `config_file` and Kconfig tree."""
    try:
        with open(out) as handle:
            head = [handle.readline() for _ in range(3)]
    except OSError:
        return True
    recorded = next((line[len(DIGEST_LINE):].strip() for line in head if line.startswith(DIGEST_LINE)), None)
    return recorded != source_digest(config_file)


class Config:
    """Typed, read-only view of one configuration."""

    def __init__(self, values: dict, source: str = ".config"):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "source", source)

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no Kconfig symbol {PREFIX}{name} in {self.source}") from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only; change the .config instead")

    def get(self, name, default=None):
        return self._values.get(name, default)

    def as_dict(self) -> dict:
        return dict(self._values)

    def replace(self, **changes) -> "Config":
        """A copy with some values changed (tests, and the test matrix's per-run values)."""
        unknown = [k for k in changes if k not in self._values]
        if unknown:
            raise AttributeError(f"no Kconfig symbol {PREFIX}{unknown[0]}")
        return Config({**self._values, **changes}, self.source)


def load(config_file: Path | str = DOT_CONFIG, out: Path | str | None = None) -> Config:
    """The Config of `config_file`, regenerating `config.py` first when it is stale."""
    config_file = Path(config_file)
    if not config_file.is_file():
        raise ConfigError(f"no {config_file.name} here: make one with 'make defconfig-NAME' "
                          "(list them with 'make list-defconfigs') or 'make menuconfig'")
    out = Path(out) if out is not None else (CONFIG_PY if config_file.resolve() == DOT_CONFIG
                                            else config_file.with_name(config_file.name + ".py"))
    if _stale(config_file, out):
        generate(config_file, out)
    spec = importlib.util.spec_from_file_location(f"_knlp_config_{abs(hash(str(out)))}", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    values = {k: v for k, v in vars(module).items() if k.isupper()}
    return Config(values, str(config_file))


def from_defconfig(name: str) -> Config:
    """Config of a shipped defconfig, without touching `.config` (tests, dry runs)."""
    path = defconfig_path(name)
    return Config(typed_values(load_kconfig(path), path), str(path))


def defconfig_names() -> list[str]:
    return sorted(p.name for p in DEFCONFIG_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


def defconfig_path(name: str) -> Path:
    path = DEFCONFIG_DIR / name
    if not path.is_file():
        close = difflib.get_close_matches(name, defconfig_names(), n=3, cutoff=0.4)
        hint = f"closest: {', '.join(close)}" if close else "see 'make list-defconfigs'"
        raise ConfigError(f"unknown defconfig '{name}'; {hint}")
    return path
