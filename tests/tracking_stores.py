"""Read back what the trackers stored, independently of lib/tracking (for the tracking tests).

trackio reads its directory from TRACKIO_DIR once, at import, so its store is read in a
fresh process per directory. W&B's offline .wandb files are read here with a small reader
of their documented record format (W&B's LevelDB-style log of protobuf Records).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_DUMP = textwrap.dedent('''
    import json, sys
    from trackio.sqlite_storage import SQLiteStorage
    project = sys.argv[1]
    runs = {}
    for name in SQLiteStorage.get_runs(project):
        runs[name] = {"config": SQLiteStorage.get_run_config(project, name),
                      "logs": SQLiteStorage.get_logs(project, name)}
    print(json.dumps(runs, default=str))
''')


def trackio_runs(directory: Path, project: str) -> dict:
    """{run name: {"config": ..., "logs": [{"step": ..., metric: value, ...}, ...]}} of a trackio store."""
    env = dict(os.environ, TRACKIO_DIR=str(directory))
    done = subprocess.run([sys.executable, "-c", _DUMP, project], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def split_rows(logs: list[dict]) -> tuple[list[dict], dict]:
    """(metric rows as {step, values}, the summary/ values) of one trackio run's logs."""
    rows, summary = [], {}
    for row in logs:
        values = {k: v for k, v in row.items() if k not in ("step", "timestamp")}
        if any(k.startswith("summary/") for k in values):
            summary.update({k[len("summary/"):]: v for k, v in values.items()})
        else:
            rows.append({"step": row["step"], **values})
    return rows, summary


# W&B's transaction log: a 7-byte header (':W&B', magic 0xBEE1, version 0), then 32 KiB
# blocks of chunks, each with crc32 (4), length (2, little-endian) and type (1: full,
# 2: first, 3: middle, 4: last) before its data.
_BLOCK, _CHUNK_HEADER = 32768, 7


def wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, records = 7, b"", []
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:
            pos += left_in_block  # block trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        chunk = data[pos + _CHUNK_HEADER:pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _config(config) -> dict:
    """W&B stores each config value as {"value": ...}; its own keys start with '_'."""
    found = {}
    for item in config.update:
        if not _key(item).startswith("_"):
            value = json.loads(item.value_json)
            found[_key(item)] = value["value"] if isinstance(value, dict) and "value" in value else value
    return found


def wandb_runs(directory: Path) -> dict:
    """{run name: {"id", "group", "config", "history": [row, ...], "summary"}} of offline run files."""
    runs = {}
    for path in sorted(Path(directory).glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = runs.setdefault(record.run.display_name, {"history": [], "summary": {}, "config": {}})
                run.update(id=record.run.run_id, group=record.run.run_group)
                current = run
            elif kind == "history":
                row = {_key(item): json.loads(item.value_json) for item in record.history.item}
                current["history"].append({k: v for k, v in row.items() if not k.startswith("_") or k == "_step"})
            elif kind == "summary":
                current["summary"].update({_key(item): json.loads(item.value_json) for item in record.summary.update
                                           if not _key(item).startswith("_")})
            elif kind == "config":
                current["config"].update(_config(record.config))
            if kind == "run":
                run["config"].update(_config(record.run.config))
    return runs


def rendered_dashboard(directory: Path, project: str, browser: str, timeout: float = 90.0) -> tuple[str, str]:
    """(URL, DOM after its scripts ran) of `trackio show` on `directory`, rendered by headless chromium."""
    import re
    import signal
    import time

    env = dict(os.environ, TRACKIO_DIR=str(directory), BROWSER="true")  # BROWSER: open no window
    show = subprocess.Popen([str(Path(sys.executable).with_name("trackio")), "show", "--project", project],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        url, deadline = None, time.time() + timeout
        while url is None and time.time() < deadline:
            line = show.stdout.readline()
            if not line:
                break
            found = re.search(r"launched at: (http://\S+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
            url = found.group(1) if found else None
        assert url is not None, "trackio show printed no URL"
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=timeout).stdout
        return url, dom
    finally:
        os.killpg(show.pid, signal.SIGTERM)
        show.wait(timeout=30)
