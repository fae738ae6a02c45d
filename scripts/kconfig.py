"""Configuration commands behind the Makefile's kernel-style targets.

    kconfig.py defconfig NAME      .config from defconfigs/NAME
    kconfig.py list                the shipped defconfigs with their descriptions
    kconfig.py olddefconfig        bring .config up to date with the Kconfig tree
    kconfig.py savedefconfig [NAME]  minimal config to defconfigs/NAME, or stdout
    kconfig.py allnoconfig | alldefconfig
    kconfig.py menuconfig          interactive editor (curses)
    kconfig.py genconfig           regenerate config.py from .config
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kconfiglib  # noqa: E402

from lib import config  # noqa: E402


def _finish(kconf, what: str) -> None:
    config.write_dot_config(kconf, config.DOT_CONFIG)
    config.write_config_py(config.typed_values(kconf), config.CONFIG_PY)
    print(f"wrote .config and config.py ({what})")


def defconfig(name: str) -> None:
    kconf = config.load_kconfig(config.defconfig_path(name))
    _finish(kconf, f"from defconfigs/{name}")


def describe(path: Path) -> str:
    """A defconfig's description: its first comment line."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.lstrip("# ").startswith("CONFIG_"):
            return line.lstrip("# ").strip()
    return ""


def list_defconfigs() -> None:
    names = config.defconfig_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"  defconfig-{name:<{width}}  {describe(config.DEFCONFIG_DIR / name)}")


def olddefconfig() -> None:
    kconf = config.load_kconfig(config.DOT_CONFIG, drop_unknown=True)
    _finish(kconf, "updated to the current Kconfig tree")


def minimal_config(kconf) -> str:
    fd, tmp = tempfile.mkstemp(suffix=".defconfig")
    os.close(fd)
    try:
        kconf.write_min_config(tmp, header="")
        return Path(tmp).read_text()
    finally:
        os.unlink(tmp)


def savedefconfig(name: str | None) -> None:
    kconf = config.load_kconfig(config.DOT_CONFIG)
    text = minimal_config(kconf)
    if not name:
        sys.stdout.write(text)
        return
    path = config.DEFCONFIG_DIR / name
    old = path.read_text() if path.exists() else None
    description = describe(path) if old else ""
    if description:
        text = f"# {description}\n{text}"
    config.atomic_write_text(path, text)
    print(f"wrote defconfigs/{name}")


def allnoconfig() -> None:
    kconf = config.new_kconfig()
    for sym in kconf.unique_defined_syms:
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            sym.set_value(0)
    _finish(kconf, "every option off that can be")


def alldefconfig() -> None:
    _finish(config.new_kconfig(), "every option at its default")


def menuconfig() -> None:
    import menuconfig as kconfiglib_menuconfig  # installed with kconfiglib

    kconf = config.new_kconfig() if not config.DOT_CONFIG.exists() else config.load_kconfig(config.DOT_CONFIG)
    os.environ["KCONFIG_CONFIG"] = str(config.DOT_CONFIG)
    os.environ.setdefault("MENUCONFIG_STYLE", "aquatic")
    os.chdir(config.ROOT)
    kconfiglib_menuconfig.menuconfig(kconf)
    if config.DOT_CONFIG.exists():
        config.generate(config.DOT_CONFIG, config.CONFIG_PY)


def genconfig() -> None:
    config.generate(config.DOT_CONFIG, config.CONFIG_PY)
    print("wrote config.py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="knlp configuration commands")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("defconfig").add_argument("name")
    sub.add_parser("list")
    sub.add_parser("olddefconfig")
    sub.add_parser("savedefconfig").add_argument("name", nargs="?")
    sub.add_parser("allnoconfig")
    sub.add_parser("alldefconfig")
    sub.add_parser("menuconfig")
    sub.add_parser("genconfig")
    args = parser.parse_args(argv)
    try:
        if args.command == "defconfig":
            defconfig(args.name)
        elif args.command == "list":
            list_defconfigs()
        elif args.command == "savedefconfig":
            savedefconfig(args.name)
        else:
            globals()[args.command]()
    except config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
