"""Debian's headless chromium for the browser tests, installed on demand.

Under CI (CI=true) the browser must be there: it is installed with apt-get and a failed
install fails the test. Elsewhere it is installed when this user may (root with apt-get),
and otherwise the test is skipped with the command that would install it.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    under_ci = os.environ.get("CI") == "true"
    if under_ci or (os.geteuid() == 0 and shutil.which("apt-get")):
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=600)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True,
                              timeout=1200)
        found = shutil.which("chromium")
        if not found and under_ci:
            pytest.fail(f"could not install chromium under CI: {done.stderr.strip()[-300:]}")
    if not found:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get: "
                    "apt-get install -y chromium); CI installs it")
    return found
