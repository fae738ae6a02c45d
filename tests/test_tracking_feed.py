"""What the tracking follower sends from a run directory, and the tracker settings (no tracker needed)."""
import json
import shutil

import pytest

from lib.lifecycle import rundir
from lib.tracking import feed, settings as tracking_settings
from test_matrix_fakes import write_config


def make_run(tmp_path, run_id="lenet5-adamwprune-bitter7-state-s90-seed2", steps=(), state="running"):
    run_dir = tmp_path / run_id
    run_dir.mkdir()
    rundir.write_json(run_dir / rundir.SPEC, {"run_id": run_id})
    rundir.write_json(run_dir / rundir.HPARAMS, {"lr": 0.001, "total_steps": 100})
    for step in steps:
        rundir.append_metrics(run_dir, {"step": step, "train_loss": 1.0 / step, "accuracy": 50.0 + step,
                                        "wall_time": step * 0.5})
    rundir.write_status(run_dir, state, step=max(steps, default=0))
    return run_dir


def land(out, entry):
    """What the follower stores after a send that fully landed."""
    entry = dict(entry)
    if out.lines:
        entry["last_step"] = out.last_step
    if "pending_summary" in entry:
        entry["summary"] = entry.pop("pending_summary")
    return entry


def test_flatten_keeps_numbers_and_nests_keys():
    summary = {"run_id": "x", "final": {"accuracy": 97.5, "step": 10, "perplexity": None}, "unequal_budget": False,
               "memory": {"weights": 4000, "state_ratio": 2.0}, "layers": {"conv1": {"sparsity": 0.5}},
               "bad": float("nan")}
    assert feed.flatten(summary) == {"final/accuracy": 97.5, "final/step": 10, "unequal_budget": 0,
                                     "memory/weights": 4000, "memory/state_ratio": 2.0, "layers/conv1/sparsity": 0.5}


def test_new_lines_go_once_and_the_summary_only_when_the_run_ended(tmp_path):
    run_dir = make_run(tmp_path, steps=[1, 2])
    out, entry = feed.outgoing(run_dir, {})
    assert out.name == "lenet5-adamwprune-bitter7-state-s90-seed2"
    assert out.ident.startswith(out.name + "-") and feed.outgoing(run_dir, {})[0].ident == out.ident
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    shutil.copytree(run_dir, copy / run_dir.name)
    assert feed.outgoing(copy / run_dir.name, {})[0].ident != out.ident  # same run ID, another run
    assert out.group == "lenet5-adamwprune-bitter7-state-s90"
    assert out.config == {"lr": 0.001, "total_steps": 100}
    assert [s for s, _ in out.lines] == [1, 2] and out.summary is None and not out.finished
    assert out.lines[1][1] == {"train_loss": 0.5, "accuracy": 52.0, "wall_time": 1.0}
    entry = land(out, entry)
    assert feed.outgoing(run_dir, entry)[0] is None  # nothing new
    rundir.append_metrics(run_dir, {"step": 3, "train_loss": 0.25})
    rundir.write_json(run_dir / rundir.SUMMARY, {"final": {"accuracy": 53.0}, "achieved_sparsity": 0.9})
    out, entry = feed.outgoing(run_dir, entry)
    assert [s for s, _ in out.lines] == [3] and out.summary is None  # still running: summary may be stale
    entry = land(out, entry)
    rundir.write_status(run_dir, rundir.COMPLETED, step=3)
    out, entry = feed.outgoing(run_dir, entry)
    assert out.lines == [] and out.finished
    assert out.summary == {"final/accuracy": 53.0, "achieved_sparsity": 0.9} and out.summary_step == 3
    assert feed.outgoing(run_dir, land(out, entry))[0] is None


def test_a_resumed_run_continues_and_a_fresh_start_is_a_new_tracker_run(tmp_path):
    run_dir = make_run(tmp_path, steps=[1, 2, 3, 4])
    out, entry = feed.outgoing(run_dir, {})
    entry = land(out, entry)
    # Resume from the checkpoint at step 2: lines 3 and 4 are written again, then 5.
    rundir.truncate_metrics(run_dir, 2)
    for step in (3, 4, 5):
        rundir.append_metrics(run_dir, {"step": step, "train_loss": 1.0 / step, "accuracy": 50.0 + step,
                                        "wall_time": step * 0.7})
    out, entry = feed.outgoing(run_dir, entry)
    assert out.name == "lenet5-adamwprune-bitter7-state-s90-seed2" and [s for s, _ in out.lines] == [5]
    entry = land(out, entry)
    # --fresh: metrics.jsonl starts over with other values.
    (run_dir / rundir.METRICS).unlink()
    rundir.append_metrics(run_dir, {"step": 1, "train_loss": 2.0, "wall_time": 0.3})
    out, entry = feed.outgoing(run_dir, entry)
    assert out.name == "lenet5-adamwprune-bitter7-state-s90-seed2-attempt2" and [s for s, _ in out.lines] == [1]
    assert entry["attempt"] == 2 and "last_step" not in entry


def test_waits_for_hparams_until_the_run_ends(tmp_path):
    run_dir = make_run(tmp_path, steps=[1])
    (run_dir / rundir.HPARAMS).unlink()
    assert feed.outgoing(run_dir, {})[0] is None
    rundir.write_status(run_dir, rundir.FAILED, reason="crashed")
    out, _ = feed.outgoing(run_dir, {})
    assert out.config is None and [s for s, _ in out.lines] == [1] and out.finished


def test_tracker_ident_is_safe_for_wandb():
    ident = feed.tracker_ident("gpt2-adamw/x:y seed1" + "x" * 200, "/some/dir")
    assert ident.startswith("gpt2-adamw-x-y-seed1xx") and len(ident) == 109
    assert ident[-8:] == feed.digest("/some/dir")[:8] != feed.tracker_ident("a", "/other/dir")[-8:]


def test_settings_default_to_none_and_resolve_project_and_directories(tmp_path):
    base = "CONFIG_DEVICE_CPU=y\nCONFIG_OPTIMIZER_ADAMW=y\nCONFIG_PRUNING_NONE=y\n"
    root = tmp_path / "results"
    assert tracking_settings.from_config(write_config(tmp_path, base), root, ["lenet5"]) is None
    chosen = tracking_settings.from_config(write_config(tmp_path, base + "CONFIG_TRACKER_TRACKIO=y\n"), root,
                                           ["lenet5", "gpt2", "lenet5"])
    assert (chosen.kind, chosen.project, chosen.directory) == ("trackio", "knlp-gpt2-lenet5", str(root / "trackio"))
    cfg = write_config(tmp_path, base + 'CONFIG_TRACKER_WANDB=y\nCONFIG_TRACKER_WANDB_OFFLINE=y\n'
                       'CONFIG_TRACKER_PROJECT="study"\n')
    chosen = tracking_settings.from_config(cfg, root, ["lenet5"])
    assert (chosen.kind, chosen.project, chosen.directory, chosen.wandb_mode) == ("wandb", "study", str(root),
                                                                                   "offline")
    assert tracking_settings.Settings.from_json(chosen.to_json()) == chosen
    with pytest.raises(ValueError, match="unknown tracker"):
        tracking_settings.Settings.from_json(json.dumps({"kind": "mlflow", "project": "p", "directory": "/x"}))


def test_trackio_directory_can_be_shared(tmp_path):
    cfg = write_config(tmp_path, f'CONFIG_DEVICE_CPU=y\nCONFIG_TRACKER_TRACKIO=y\n'
                                 f'CONFIG_TRACKER_TRACKIO_DIR="{tmp_path / "shared"}"\n')
    assert tracking_settings.from_config(cfg, tmp_path / "r", ["resnet18"]).directory == str(tmp_path / "shared")
