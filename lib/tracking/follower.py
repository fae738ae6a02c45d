"""Forward run directories' files to a tracker:  python -m lib.tracking.follower SETTINGS_JSON ROOT [RUN_DIR...]

Watches RUN_DIRs (default: every run directory under ROOT) every --poll seconds until its
stdin closes (the sweep or run that started it ended, or died), then sends what is left
and exits; --once sends what is there now and exits (the backfill, `make track`).
stdout is for the trackers' chatter (the caller points it at a log file); stderr gets only
knlp's own lines: which tracker, and one line per kind of problem. Exit 0 always when the
tracker is unavailable (the runs' files remain the record), 1 when runs were left unsent.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import sys
import threading
import time
import warnings
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent.parent
if str(ROOT_DIR) not in sys.path:
    sys.path.insert(0, str(ROOT_DIR))

from lib.lifecycle import rundir  # noqa: E402
from lib.tracking import feed  # noqa: E402
from lib.tracking.settings import Settings  # noqa: E402

RETRY_S = (2.0, 5.0, 15.0, 30.0)  # waits after consecutive failures of one run's send
FAULT_ENV = "KNLP_TRACKER_FAULT"  # tests only: "raise:FIRST:LAST" or "slow:SECONDS", see Fault


class Fault:
    """Injected tracker failures for tests (never set in normal use):
    raise:FIRST:LAST  sends number FIRST..LAST (1-based) raise, as a locked database would
    slow:SECONDS      every send takes SECONDS longer, as a tracker on a slow network would"""

    def __init__(self, value: str | None):
        self.kind, self.args, self.sends = None, (), 0
        if value:
            kind, *args = value.split(":")
            if kind not in ("raise", "slow") or len(args) != (2 if kind == "raise" else 1):
                raise ValueError(f"{FAULT_ENV}={value!r} must be raise:FIRST:LAST or slow:SECONDS")
            self.kind, self.args = kind, tuple(float(a) for a in args)

    def before_send(self) -> None:
        self.sends += 1
        if self.kind == "raise" and self.args[0] <= self.sends <= self.args[1]:
            raise RuntimeError(f"injected tracker failure ({FAULT_ENV}) on send {self.sends}")
        if self.kind == "slow":
            time.sleep(self.args[0])


def _say(line: str) -> None:
    print(f"knlp: {line}", file=sys.stderr, flush=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def run_dirs_under(root: Path) -> list[Path]:
    try:
        return sorted(p for p in Path(root).iterdir() if p.is_dir() and (p / rundir.SPEC).is_file())
    except OSError:
        return []


def _signature(run_dir: Path) -> tuple:
    """Changes whenever a file the feed reads changes; unchanged runs are not even read."""
    sig = []
    for name in (rundir.METRICS, rundir.STATUS, rundir.SUMMARY, rundir.HPARAMS):
        try:
            st = (run_dir / name).stat()
            sig.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            sig.append(None)
    return tuple(sig)


def _try_lock(run_dir: Path):
    """An open, exclusively locked .tracker.lock, or None when another follower sends this run now
    (a sweep's follower and a `make track` of its directory). Closing it releases the lock."""
    try:
        handle = open(run_dir / feed.LOCK, "a+")
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


class Follower:
    def __init__(self, settings: Settings, backend, *, hint: str = ""):
        self.settings, self.backend = settings, backend
        self.key = settings.ledger_key()
        self.hint = hint
        self.seen: dict[Path, tuple] = {}
        self.failures: dict[Path, tuple[int, float]] = {}  # run -> (consecutive failures, retry after)
        self.warned: set[str] = set()
        self.sent_lines = 0
        self.fault = Fault(os.environ.get(FAULT_ENV))

    def warn_once(self, kind: str, line: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            _say(f"tracker {self.settings.label}: {line}; runs go on, their files stay the record"
                 + (f"; {self.hint}" if self.hint else ""))

    def poll(self, run_dirs, *, force: bool = False) -> bool:
        """One pass over the runs; True when every run's files have landed."""
        done = True
        for run_dir in run_dirs:
            run_dir = Path(run_dir)
            sig = _signature(run_dir)
            if not force and self.seen.get(run_dir) == sig:
                continue
            count, after = self.failures.get(run_dir, (0, 0.0))
            if count and time.time() < after and not force:
                done = False
                continue
            if self._send(run_dir):
                self.seen[run_dir] = sig
                self.failures.pop(run_dir, None)
            else:
                done = False
                self.failures[run_dir] = (count + 1, time.time() + RETRY_S[min(count, len(RETRY_S) - 1)])
        return done

    def _send(self, run_dir: Path) -> bool:
        """Send what is new in one run; False when it must be tried again."""
        lock = _try_lock(run_dir)
        if lock is None:
            return False
        with lock:
            ledger = feed.read_ledger(run_dir)
            out, entry = feed.outgoing(run_dir, ledger.get(self.key, {}))
            if out is None:
                if entry != ledger.get(self.key, {}) and self.key in ledger:
                    ledger[self.key] = entry
                    feed.write_ledger(run_dir, ledger)
                return True
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # trackers' own warnings go to their log, not the terminal
                    self.fault.before_send()
                    landed = self.backend.send(out)
                    if out.finished:
                        self.backend.close(out.name)
            except Exception as err:
                self.warn_once(type(err).__name__, f"could not log {out.name} ({_first_line(err)}), will retry")
                return False
            complete = True
            if out.lines:
                if landed is None or landed < out.last_step:
                    self.warn_once("partial", f"{out.name}: steps after {landed} did not land, will resend them")
                    complete = False
                if landed is not None:
                    entry["last_step"] = min(landed, out.last_step)
                    self.sent_lines += sum(1 for step, _ in out.lines if step <= landed)
            if complete and "pending_summary" in entry:
                entry["summary"] = entry["pending_summary"]
            entry.pop("pending_summary", None)
            ledger[self.key] = entry
            try:
                feed.write_ledger(run_dir, ledger)
            except OSError as err:  # a full disk: the tracker has the steps, the ledger will catch up
                self.warn_once("ledger", f"cannot write {run_dir / feed.LEDGER} ({_first_line(err)})")
                return False
            return complete


def make_backend(settings: Settings, install: bool = True):
    from lib.tracking.backends import TRACKERS

    return TRACKERS[settings.kind](settings, install=install)


def _watch_stdin(stop: threading.Event) -> None:
    try:
        while sys.stdin.buffer.read(1024):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def follow(settings: Settings, root: Path, run_dirs: list[Path] | None, *, once: bool, poll_s: float,
           drain_s: float, hint: str = "", stop: threading.Event | None = None) -> int:
    """Send the runs' files until `stop` is set (or once); returns the number of runs left unsent."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = make_backend(settings)
    except Exception as err:
        _say(f"tracker {settings.label} unavailable ({_first_line(err)}); runs go on without it, their files "
             "stay the record")
        return -1
    _say(backend.announce)
    follower = Follower(settings, backend, hint=hint)
    dirs = (lambda: run_dirs) if run_dirs else (lambda: run_dirs_under(root))
    stop = stop or threading.Event()
    if not once:
        while not stop.wait(poll_s):
            follower.poll(dirs())
    # The end: send what is left, retrying failed sends for up to drain_s seconds.
    deadline = time.time() + drain_s
    left = dirs()
    while not follower.poll(left, force=True) and time.time() < deadline:
        time.sleep(1.0)
    unsent = [d for d in left if d in follower.failures]
    if not run_dirs:  # a sweep's results directory, not chosen runs
        try:
            from lib.tracking.sweep_summary import log_sweep_summary

            log_sweep_summary(backend, settings, root, left)
        except Exception as err:
            follower.warn_once("sweep", f"could not log the sweep summary ({_first_line(err)})")
    try:
        backend.shutdown()
    except Exception as err:
        follower.warn_once("shutdown", f"could not close its runs ({_first_line(err)})")
    if unsent:
        _say(f"tracker {settings.label}: {len(unsent)} run(s) not fully sent; " + (hint or "send them later"))
    elif once:
        _say(f"tracker {settings.label}: {len(left)} runs sent to project {settings.project}")
    return len(unsent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.tracking.follower", description=__doc__.splitlines()[0])
    parser.add_argument("settings", help="lib.tracking.settings.Settings as JSON")
    parser.add_argument("root", type=Path, help="directory holding the run directories")
    parser.add_argument("run_dirs", nargs="*", type=Path, help="only these runs (default: all under ROOT)")
    parser.add_argument("--once", action="store_true", help="send what is there and exit")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between passes")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to keep retrying at the end")
    parser.add_argument("--hint", default="", help="what the user can do about unsent runs")
    args = parser.parse_args(argv)
    settings = Settings.from_json(args.settings)
    stop = threading.Event()
    if not args.once:
        threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    unsent = follow(settings, args.root, args.run_dirs or None, once=args.once, poll_s=args.poll,
                    drain_s=args.drain, hint=args.hint, stop=stop)
    return 1 if unsent > 0 or (args.once and unsent < 0) else 0


if __name__ == "__main__":
    sys.exit(main())
