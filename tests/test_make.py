"""The Makefile's configuration targets, run the way a user runs them, in a copy of the tree."""
import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SKIP_ANYWHERE = {".venv", ".git", "__pycache__", ".pytest_cache"}
_SKIP_AT_TOP = {"data", "runs", "results", ".config", ".config.old", "config.py"}


def IGNORED(directory, names):
    top = Path(directory) == ROOT
    return [n for n in names if n in _SKIP_ANYWHERE or (top and n in _SKIP_AT_TOP)]


@pytest.fixture
def tree(tmp_path):
    """A copy of the repository sharing this checkout's .venv (make must not rebuild it)."""
    copy = tmp_path / "knlp"
    shutil.copytree(ROOT, copy, ignore=IGNORED)
    venv = ROOT / ".venv"
    if not (venv / ".installed").exists():
        pytest.skip("needs the project's .venv (make deps)")
    (copy / ".venv").symlink_to(venv)
    return copy


def make(tree, *args, **kwargs):
    env = {**os.environ, "MAKEFLAGS": ""}
    return subprocess.run(["make", "-s", *args], cwd=tree, capture_output=True, text=True, env=env,
                          timeout=120, **kwargs)


def test_defconfig_writes_config_and_config_py(tree):
    result = make(tree, "defconfig-lenet5-sample-bitter7")
    assert result.returncode == 0, result.stderr
    assert "CONFIG_OPTIMIZER_ADAMWPRUNE=y" in (tree / ".config").read_text()
    assert "OPTIMIZER_ADAMWPRUNE = True" in (tree / "config.py").read_text()


def test_unknown_defconfig_names_closest_and_leaves_config_alone(tree):
    make(tree, "defconfig-lenet5-bitter7")
    before = (tree / ".config").read_bytes()
    result = make(tree, "defconfig-lenet5-bitter")
    assert result.returncode != 0
    assert "unknown defconfig 'lenet5-bitter'; closest: lenet5-bitter7" in result.stderr
    assert (tree / ".config").read_bytes() == before


def test_every_defconfig_has_an_explicit_rule(tree):
    database = make(tree, "-pn", "help").stdout
    for name in os.listdir(tree / "defconfigs"):
        assert f"\ndefconfig-{name}:" in database


def test_savedefconfig_writes_named_defconfig_and_roundtrips(tree):
    make(tree, "defconfig-resnet18-cifar10-compare")
    first = (tree / ".config").read_text()
    assert make(tree, "savedefconfig", "DEFCONFIG=mine").returncode == 0
    assert make(tree, "defconfig-mine").returncode == 0
    assert (tree / ".config").read_text() == first


def test_olddefconfig_allnoconfig_alldefconfig(tree):
    assert make(tree, "alldefconfig").returncode == 0
    assert "CONFIG_OPTIMIZER_ADAMW=y" in (tree / ".config").read_text()
    assert make(tree, "allnoconfig").returncode == 0
    assert "# CONFIG_OPTIMIZER_ADAMW is not set" in (tree / ".config").read_text()
    (tree / ".config").write_text((tree / ".config").read_text() + "CONFIG_REMOVED_LONG_AGO=y\n")
    result = make(tree, "olddefconfig")
    assert result.returncode == 0 and "CONFIG_REMOVED_LONG_AGO" in result.stderr
    assert "REMOVED_LONG_AGO" not in (tree / ".config").read_text()


def test_make_without_config_says_how_to_make_one(tree):
    result = make(tree)
    assert result.returncode != 0
    assert "make defconfig-" in result.stderr + result.stdout


def test_bad_config_line_is_an_error_naming_file_line_symbol(tree):
    make(tree, "defconfig-lenet5-sample-bitter7")
    with open(tree / ".config", "a") as handle:
        handle.write("CONFIG_LENET5_EPOCHS=-3\n")
    result = make(tree, "savedefconfig")
    assert result.returncode != 0
    assert "CONFIG_LENET5_EPOCHS" in result.stderr and ".config:" in result.stderr


def _read_until(fd, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.time() + timeout
    while time.time() < deadline and needle not in seen:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def test_menuconfig_starts_in_a_terminal_and_quits_cleanly(tree):
    make(tree, "defconfig-lenet5-sample-bitter7")
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(tree)
        os.environ.update(TERM="xterm", LINES="40", COLUMNS="120")
        python = str(tree / ".venv/bin/python")
        os.execv(python, [python, "-m", "scripts.kconfig", "menuconfig"])
    screen = _read_until(fd, b"General", 30)
    assert b"General" in screen, screen[-500:]
    os.write(fd, b"Q")
    _read_until(fd, b"\x00", 3)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
