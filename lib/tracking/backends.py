"""The trackers, one class each, behind one interface; TRACKERS maps a Settings.kind to its class.

send(out) -> the last step the tracker now holds for that run (what the ledger records);
close(name) ends a tracker run that has everything; shutdown() ends them all. Any error
is raised to the follower, which turns it into one warning line and tries again later.
Each backend imports its package only when constructed (lib.extras installs the pin).
"""
from __future__ import annotations

import contextlib
import io
import netrc
import os
import socket
import sys
from pathlib import Path

from lib.tracking.feed import Outgoing

SUMMARY_PREFIX = "summary/"


class TrackioBackend:
    """trackio's local SQLite store. One run is open at a time (trackio keeps a current run),
    so every send opens the run (resume='allow'), logs and finishes it; afterwards the store
    is asked what landed, because trackio reports a failed write ("database is locked") only
    as a warning."""

    def __init__(self, settings, install: bool = True):
        from lib import extras

        loaded = sys.modules.get("trackio.utils")
        if loaded is not None and Path(loaded.TRACKIO_DIR).resolve() != Path(settings.directory).resolve():
            raise RuntimeError(f"trackio was imported for {loaded.TRACKIO_DIR}, not {settings.directory}; "
                               "send from a fresh process (python -m lib.tracking.follower)")
        os.environ["TRACKIO_DIR"] = settings.directory  # read by trackio when it is imported
        Path(settings.directory).mkdir(parents=True, exist_ok=True)
        self.trackio = extras.ensure("trackio", why="CONFIG_TRACKER_TRACKIO", install=install)
        from trackio.sqlite_storage import SQLiteStorage

        self.storage = SQLiteStorage
        self.project = settings.project
        self.announce = f"tracker: trackio, project {settings.project}, store {settings.directory}"

    def send(self, out: Outgoing) -> int | None:
        run = self.trackio.init(project=self.project, name=out.name, group=out.group, config=out.config,
                                resume="allow", embed=False, auto_log_cpu=False, auto_log_gpu=False)
        try:
            for step, values in out.lines:
                run.log(values, step=step)
            if out.summary:
                run.log({SUMMARY_PREFIX + k: v for k, v in out.summary.items()}, step=out.summary_step)
        finally:
            run.finish()
        return self.storage.get_max_step_for_run(self.project, out.name)

    def close(self, name: str) -> None:
        pass  # every send already finished its run

    def shutdown(self) -> None:
        pass


def wandb_key() -> str | None:
    """The API key W&B would use: WANDB_API_KEY, else a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        found = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return found[2] if found else None


def reachable(url: str, timeout: float = 3.0) -> bool:
    host = url.split("://")[-1].split("/")[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(asked: str) -> tuple[str, str]:
    """('online'|'offline', why) for the mode asked for."""
    if asked == "offline":
        return "offline", "CONFIG_TRACKER_WANDB_OFFLINE"
    if wandb_key() is None:
        return "offline", "no API key: set WANDB_API_KEY or run 'wandb login'"
    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    if not reachable(url):
        return "offline", f"{url} is not reachable"
    return "online", "API key found"


class WandbBackend:
    """W&B runs stay open while their run trains (wandb.init is slow) and close when it ends."""

    def __init__(self, settings, install: bool = True):
        from lib import extras

        self.mode, why = wandb_mode(settings.wandb_mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = extras.ensure("wandb", why="CONFIG_TRACKER_WANDB", install=install)
        self.settings = settings
        self.runs = {}
        files = Path(settings.directory) / "wandb"
        if self.mode == "offline":
            self.announce = (f"tracker: W&B offline ({why}); run files in {files}/offline-run-*, upload them "
                             f"with: wandb sync {files}/offline-run-*")
        else:
            self.announce = f"tracker: W&B online, project {settings.project}"

    def _open(self, out: Outgoing):
        run = self.runs.get(out.name)
        if run is None:
            quiet = self.wandb.Settings(console="off", silent=True, disable_git=True, disable_code=True,
                                        x_disable_stats=True)
            with contextlib.redirect_stderr(io.StringIO()):
                run = self.wandb.init(project=self.settings.project, name=out.name, id=out.ident, group=out.group,
                                      config=out.config, resume="allow", mode=self.mode, dir=self.settings.directory,
                                      reinit="create_new", settings=quiet)
            self.runs[out.name] = run
        elif out.config:
            run.config.update(out.config, allow_val_change=True)
        return run

    def send(self, out: Outgoing) -> int | None:
        run = self._open(out)
        for step, values in out.lines:
            run.log(values, step=step)
        if out.summary:
            run.summary.update(out.summary)
        return out.last_step

    def close(self, name: str) -> None:
        run = self.runs.pop(name, None)
        if run is not None:
            run.finish()

    def shutdown(self) -> None:
        for name in list(self.runs):
            self.close(name)


TRACKERS = {"trackio": TrackioBackend, "wandb": WandbBackend}
