"""trackio tracking end to end: parallel sweeps, kill and resume, injected failures, backfill, dashboard."""
import importlib.util
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib import extras
from lib.lifecycle import rundir
from lib.tracking import feed
from lib.tracking.settings import Settings
from test_matrix import single, sweep
from test_matrix.expand import expand
from chromium import chromium
from test_matrix_fakes import LENET_COMPARE, fake_engine, load_script, use_config, write_config
from tracking_stores import rendered_dashboard, split_rows, trackio_runs

if importlib.util.find_spec("trackio") is None:  # not imported here: it fixes its directory when imported
    extras.ensure("trackio", why="tests/test_tracking_trackio.py")

ROOT = Path(__file__).resolve().parent.parent
TRACKIO = "\nCONFIG_TRACKER_TRACKIO=y\n"
PROJECT = "knlp-lenet5"
VOLATILE = ("wall_time", "samples_per_s", "memory_bytes")
ONE_RUN = "CONFIG_DEVICE_CPU=y\nCONFIG_OPTIMIZER_ADAMW=y\nCONFIG_PRUNING_NONE=y\n"


def numbers(record: dict, skip=("step",)) -> dict:
    return {k: v for k, v in record.items() if k not in skip and v is not None}


def assert_run_landed(store: dict, run_dir: Path, *, exact=True) -> None:
    """The tracker run of `run_dir` has its config, each metrics line once with its values, its summary."""
    run_id = run_dir.name
    assert run_id in store, sorted(store)
    rows, summary = split_rows(store[run_id]["logs"])
    lines = rundir.read_metrics(run_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in lines]  # every line, once, in order
    skip = ("step",) if exact else ("step",) + VOLATILE
    assert [numbers(r, skip) for r in rows] == [numbers(r, skip) for r in lines]
    config = store[run_id]["config"]
    assert {k: config[k] for k in rundir.read_json(run_dir / rundir.HPARAMS)} == rundir.read_json(run_dir / rundir.HPARAMS)
    assert config["_Group"] == run_id.rsplit("-seed", 1)[0]
    written = rundir.read_json(run_dir / rundir.SUMMARY)
    assert summary["final/accuracy"] == written["final"]["accuracy"]
    assert summary["best/accuracy"] == written["best"]["accuracy"]
    assert summary["achieved_sparsity"] == written["achieved_sparsity"]
    for key, value in written["memory"].items():
        assert summary[f"memory/{key}"] == value


def test_eight_parallel_runs_land_with_every_line_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    cfg = write_config(tmp_path, LENET_COMPARE + TRACKIO).replace(TEST_MATRIX_PARALLEL_JOBS=8)
    out = io.StringIO()
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, make_report=False) == 0, out.getvalue()
    results = tmp_path / "results"
    store = trackio_runs(results / "trackio", PROJECT)
    runs = sorted(p for p in results.iterdir() if (p / rundir.SPEC).exists())
    assert len(runs) == 8 and sorted(store) == [p.name for p in runs] + ["sweep-results"]
    for run_dir in runs:
        assert_run_landed(store, run_dir)
    sweep_row = store["sweep-results"]["logs"]
    assert len(sweep_row) == 1 and sweep_row[0]["runs"] == sweep_row[0]["runs_completed"] == 8
    # The same sweep again: everything is skipped and nothing is sent twice.
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=out, cores=2, make_report=False) == 0
    again = trackio_runs(results / "trackio", PROJECT)
    assert all(len(again[name]["logs"]) == len(store[name]["logs"]) for name in store)


@pytest.mark.slow
def test_a_killed_and_resumed_run_has_no_duplicate_steps(tmp_path):
    from tests.test_engine_support import lenet_spec

    # 5 epochs, a metrics line per epoch, last.pt every 2 epochs; dies (like kill -9) in epoch 4,
    # so the resume starts from epoch 2 and writes the line of epoch 3 again.
    spec = lenet_spec(LENET5_EPOCHS=5, CHECKPOINT_INTERVAL=2)
    cfg = write_config(tmp_path, ONE_RUN + TRACKIO)
    run_dir = rundir.prepare(tmp_path / "runs" / spec.run_id, spec, None)
    tracker = single.tracking.start(cfg, run_dir.parent, [spec.model], [run_dir], poll_s=0.3, out=io.StringIO())
    key = Settings(kind="trackio", project=PROJECT, directory=str(run_dir.parent / "trackio")).ledger_key()
    launch = [sys.executable, "-m", "lib.lifecycle.launch", "--run-dir", str(run_dir)]
    died = subprocess.run(launch, cwd=ROOT, env=dict(os.environ, KNLP_FAULT="exit:191"), capture_output=True)
    assert died.returncode == 17 and len(rundir.read_metrics(run_dir)) == 3
    deadline = time.time() + 60
    while feed.read_ledger(run_dir).get(key, {}).get("last_step") != 186 and time.time() < deadline:
        time.sleep(0.2)  # the follower sent the three lines of the killed attempt
    assert feed.read_ledger(run_dir)[key]["last_step"] == 186
    resumed = subprocess.run(launch, cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in (run_dir / rundir.LOG).read_text()
    tracker.stop()
    assert tracker.proc.returncode == 0
    store = trackio_runs(run_dir.parent / "trackio", PROJECT)
    assert list(store) == [spec.run_id]
    assert [r["step"] for r in rundir.read_metrics(run_dir)] == [62, 124, 186, 248, 310]
    # The rewritten line of epoch 3 keeps its first values; only the clock fields may differ.
    assert_run_landed(store, run_dir, exact=False)


def _one_run(tmp_path, monkeypatch, fault: str, steps: int = 10, step_s: float = 0.1):
    monkeypatch.setenv("FAKE_STEPS", str(steps))
    monkeypatch.setenv("FAKE_STEP_S", str(step_s))
    monkeypatch.setenv("KNLP_TRACKER_FAULT", fault)
    cfg = write_config(tmp_path, ONE_RUN + TRACKIO)
    spec = expand(cfg)[0]
    out = io.StringIO()
    assert single.run(cfg, spec, command=fake_engine(tmp_path), out=out) == 0, out.getvalue()
    run_dir = single.run_dir_of(cfg, spec)
    assert rundir.read_status(run_dir)["state"] == rundir.COMPLETED
    return run_dir


def test_tracker_failures_mid_run_are_one_line_and_everything_lands_later(tmp_path, monkeypatch, capfd):
    run_dir = _one_run(tmp_path, monkeypatch, "raise:1:3")
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "could not log" in line]
    assert len(warnings) == 1 and "injected tracker failure" in warnings[0] and "runs go on" in warnings[0], err
    assert_run_landed(trackio_runs(run_dir.parent / "trackio", PROJECT), run_dir)


def test_a_slow_tracker_does_not_slow_the_run(tmp_path, monkeypatch):
    run_dir = _one_run(tmp_path, monkeypatch, "slow:4")
    fake = rundir.read_json(run_dir / rundir.SUMMARY)["fake"]
    # 10 steps of 0.1 s; a run that waited for even one send would take 4 s longer.
    assert fake["end"] - fake["start"] < 3.0


def test_backfill_sends_runs_made_without_a_tracker_once(tmp_path, monkeypatch, capfd):
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), cores=2, make_report=False) == 0
    results = tmp_path / "results"
    assert not (results / "trackio").exists() and not (results / "tracker-log.txt").exists()
    write_config(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=1") + TRACKIO, name="tracked.config")
    track = load_script("track")
    use_config(monkeypatch, tmp_path / "test.config")
    assert track.main([str(results)]) == 2
    assert "no tracker is selected" in capfd.readouterr().err
    use_config(monkeypatch, tmp_path / "tracked.config")
    assert track.main([str(results)]) == 0
    assert "tracker trackio: 4 runs sent to project knlp-lenet5" in capfd.readouterr().err
    store = trackio_runs(results / "trackio", PROJECT)
    for run_dir in (p for p in results.iterdir() if (p / rundir.SPEC).exists()):
        assert_run_landed(store, run_dir)
    assert store["sweep-results"]["logs"][0]["runs_completed"] == 4
    assert track.main([str(results)]) == 0  # nothing new: nothing sent twice
    again = trackio_runs(results / "trackio", PROJECT)
    assert {k: len(v["logs"]) for k, v in again.items()} == {k: len(v["logs"]) for k, v in store.items()}
    assert track.main([str(tmp_path / "nowhere")]) == 2
    assert "holds no run directories" in capfd.readouterr().err


@pytest.mark.slow
def test_eight_followers_writing_one_store_at_once_all_land(tmp_path, monkeypatch):
    """Eight single runs in eight terminals sharing one trackio directory: SQLite's writer lock."""
    cfg = write_config(tmp_path, LENET_COMPARE)
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), cores=2, make_report=False) == 0
    runs = sorted(p for p in (tmp_path / "results").iterdir() if (p / rundir.SPEC).exists())
    settings = Settings(kind="trackio", project=PROJECT, directory=str(tmp_path / "shared"))
    procs = [subprocess.Popen([sys.executable, "-m", "lib.tracking.follower", settings.to_json(), str(r.parent),
                               str(r), "--once"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for r in runs]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    store = trackio_runs(tmp_path / "shared", PROJECT)
    for run_dir in runs:
        assert_run_landed(store, run_dir)


@pytest.mark.slow
def test_dashboard_starts_on_localhost_and_renders_in_headless_chromium(tmp_path, monkeypatch):
    browser = chromium()
    monkeypatch.setenv("FAKE_STEP_S", "0.01")
    cfg = write_config(tmp_path, LENET_COMPARE + TRACKIO).replace(TEST_MATRIX_SEEDS=1)
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), cores=2, make_report=False) == 0
    url, dom = rendered_dashboard(tmp_path / "results" / "trackio", PROJECT, browser)
    assert url.startswith("http://127.0.0.1:")  # bound to this machine only
    assert "<title>Trackio Dashboard" in dom
    for run_dir in (p for p in (tmp_path / "results").iterdir() if (p / rundir.SPEC).exists()):
        assert run_dir.name in dom  # the page rendered the runs, not just its shell


def test_the_sweep_record_gets_the_reports_verdicts(tmp_path, monkeypatch):
    import csv
    from collections import Counter

    from test_matrix import comparisons

    monkeypatch.setenv("FAKE_STEP_S", "0.01")
    cfg = write_config(tmp_path, LENET_COMPARE + TRACKIO)
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), cores=2, make_report=True) == 0
    results = tmp_path / "results"
    with open(results / comparisons.COMPARISONS_CSV, newline="") as handle:
        verdicts = Counter(row["verdict"] for row in csv.DictReader(handle))
    logs = trackio_runs(results / "trackio", PROJECT)["sweep-results"]["logs"]
    last = logs[-1]  # sent again once the report had written its verdicts
    assert sum(verdicts.values()) > 0
    assert {v: last["verdicts_" + v.replace(" ", "_")] for v in verdicts} == dict(verdicts)
