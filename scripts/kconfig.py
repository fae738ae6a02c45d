"""Configuration commands behind the Makefile's kernel-style targets.

    kconfig.py defconfig NAME      .config from defconfigs/NAME
    kconfig.py list                the shipped defconfigs with their descriptions
    kconfig.py olddefconfig        bring .config up to date with the Kconfig tree
    kconfig.py savedefconfig [NAME] [--force]  minimal config to defconfigs/NAME (a plain name), or stdout
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


import kconfiglib

from lib.configuration import config


def _finish(kconf, what: str, source=None) -> None:
    values = config.typed_values(kconf, source)  # refuses bad decimals before .config is touched
    config.write_dot_config(kconf, config.DOT_CONFIG)
    config.write_config_py(values, config.CONFIG_PY, config_file=config.DOT_CONFIG)
    print(f"wrote .config and config.py ({what})")


def defconfig(name: str) -> None:
    path = config.defconfig_path(name)
    _finish(config.load_kconfig(path), f"from defconfigs/{name}", path)


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
    _finish(kconf, "updated to the current Kconfig tree", config.DOT_CONFIG)


def minimal_config(kconf) -> str:
    fd, tmp = tempfile.mkstemp(suffix=".defconfig")
    os.close(fd)
    try:
        kconf.write_min_config(tmp, header="")
        return Path(tmp).read_text()
    finally:
        os.unlink(tmp)


def defconfig_target(name: str) -> Path:
    """defconfigs/NAME for a plain file name; ConfigError for anything that could land elsewhere."""
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise config.ConfigError(f"DEFCONFIG={name!r} must be a plain file name such as my-lenet5 (it is written "
                                 "to defconfigs/NAME); to save elsewhere, run 'make savedefconfig > PATH'")
    path = config.DEFCONFIG_DIR / name
    if path.is_dir():
        raise config.ConfigError(f"defconfigs/{name} is a directory; choose another DEFCONFIG name")
    return path


def savedefconfig(name: str | None, force: bool = False) -> None:
    kconf = config.load_kconfig(config.DOT_CONFIG)
    text = minimal_config(kconf)
    if not name:
        sys.stdout.write(text)
        return
    path = defconfig_target(name)
    if path.exists() and not force:
        raise config.ConfigError(f"defconfigs/{name} exists; overwrite it with 'make savedefconfig "
                                 f"DEFCONFIG={name} FORCE=1', or choose another name")
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

    if not (sys.stdin.isatty() and sys.stdout.isatty()) or os.environ.get("TERM", "dumb") == "dumb":
        raise config.ConfigError("menuconfig needs an interactive terminal; without one use 'make defconfig-NAME', "
                                 "or edit .config and run 'make olddefconfig'")

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
    save = sub.add_parser("savedefconfig")
    save.add_argument("name", nargs="?")
    save.add_argument("--force", action="store_true", help="overwrite an existing defconfigs/NAME")
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
            savedefconfig(args.name, args.force)
        else:
            globals()[args.command]()
    except config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
