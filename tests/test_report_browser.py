"""report.html in a real headless browser (Debian's chromium): it renders, makes no network
request, logs no console error, and its first screen shows the verdict table (slow).

Chromium is installed by this test's set-up under CI (apt-get); elsewhere the test is
skipped with the reason when it is missing and cannot be installed.
"""
import io
import socket
import subprocess
import threading

import pytest

from test_matrix import report
import chromium as browser_install
from test_matrix_fakes import LENET_COMPARE

pytestmark = pytest.mark.slow

# Chromium's own service traffic (component updater, account and time services), which
# its flags do not fully switch off; requests by the page itself would go anywhere else.
BROWSER_SERVICE_HOSTS = ("update.googleapis.com", "accounts.google.com", "clients2.google.com")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--enable-logging=stderr", "--v=0",
         "--force-color-profile=srgb", "--hide-scrollbars"]
# the verdict cells' backgrounds in html_report.STYLE
BETTER_RGB, WORSE_RGB = (0x1B, 0x7F, 0x3B), (0xB3, 0x26, 0x1E)


class Proxy:
    """An HTTP proxy that serves nothing and records the first line of every request."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.requests = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
                except OSError:
                    pass

    def page_requests(self) -> list[str]:
        return [r for r in self.requests if not any(host in r for host in BROWSER_SERVICE_HOSTS)]

    def close(self):
        self.sock.close()


def _open(chromium, page, tmp_path, *action):
    proxy = Proxy()
    try:
        done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                               f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
                               *action, page.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        proxy.close()
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done, console, proxy.page_requests()


@pytest.fixture(scope="module")
def chromium():
    return browser_install.chromium()


def test_the_detectors_see_a_request_and_a_console_error(chromium, tmp_path):
    # a page that does both, so that a silent browser run below means something
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><p>x</p><img src="http://example.invalid/a.png"><script>nope();</script>')
    done, console, requests = _open(chromium, page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert any("example.invalid" in r for r in requests), requests
    assert any("nope is not defined" in line for line in console), console


def test_report_renders_offline_without_errors_and_shows_verdicts(chromium, tmp_path, monkeypatch):
    from PIL import Image

    from tests import test_report
    # four seeds with clear differences, so the first screen holds 'better' and 'worse' cells
    monkeypatch.setattr(test_report, "FINAL", {
        "lenet5-adamw-none": [98.0, 99.0, 97.0, 98.5], "lenet5-adamw-magnitude-s90": [96.0, 97.1, 95.0, 96.4],
        "lenet5-adamw-movement-s90": [96.1, 97.0, 95.2, 96.5],
        "lenet5-adamwprune-bitter7-state-s90": [97.0, 98.0, 96.1, 97.3]})
    cfg, results = test_report.make_results(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=4"))
    report.build(results, current_cfg=cfg, out=io.StringIO())
    page = results / "report.html"

    done, console, requests = _open(chromium, page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert requests == [] and console == [], (requests, console)
    dom = done.stdout
    assert '<table class="sortable" id="verdicts">' in dom and 'class="v-better"' in dom and 'class="v-worse"' in dom
    assert dom.count('<details class="config"') == 4

    shot = tmp_path / "shot.png"
    done, console, requests = _open(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1400,900")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert requests == [] and console == [], (requests, console)
    pixels = list(Image.open(shot).convert("RGB").getdata())
    # whole verdict cells, not a stray pixel: at least a 40 x 10 block's worth of each colour
    assert pixels.count(BETTER_RGB) > 400 and pixels.count(WORSE_RGB) > 400
