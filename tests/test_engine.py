"""The engine end to end on LeNet-5: record schema, repeatability, skip/force, time budget."""
import json

import pytest

from lib.lifecycle import rundir
from tests.test_engine_support import (lenet_spec, load, prepare, run, same_weights, stable_metrics,
                                       with_runtime)
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_thread):
    run_dir = prepare(tmp_path_factory.mktemp("engine"), lenet_spec())
    assert run(run_dir) == 0
    return run_dir


def test_run_directory_is_complete(finished):
    for name in (rundir.SPEC, rundir.HPARAMS, rundir.STATUS, rundir.METRICS, rundir.SUMMARY, rundir.LOG,
                 rundir.BEST, rundir.LAST, rundir.CURVES):
        assert (finished / name).is_file(), name
    assert rundir.read_status(finished)["state"] == rundir.COMPLETED
    assert not list(finished.glob(".*.pt.*")), "temporary checkpoint files left behind"


def test_metrics_schema(finished):
    records = rundir.read_metrics(finished)
    assert [r["step"] for r in records] == [62, 124]  # one line per evaluation (every epoch)
    for r in records:
        assert tuple(r) == rundir.METRIC_FIELDS
        assert r["perplexity"] is None and 0 <= r["accuracy"] <= 100
        assert r["train_loss"] > 0 and r["test_loss"] > 0 and r["samples_per_s"] > 0 and r["memory_bytes"] > 0
        assert r["lr"] == pytest.approx(1e-3)
    assert records[-1]["epoch"] == 2.0
    assert records[-1]["sparsity"] == pytest.approx(0.9, abs=0.002)


def test_summary_schema(finished):
    summary = json.loads((finished / rundir.SUMMARY).read_text())
    assert set(summary) == set(rundir.SUMMARY_FIELDS)
    assert summary["metric"] == "accuracy" and summary["steps"] == 124
    assert summary["final"]["step"] == 124 and summary["best"]["step"] >= 93  # best only once fully pruned
    assert summary["achieved_sparsity"] == pytest.approx(0.9, abs=0.002)
    params = summary["params"]
    assert params["total"] == 61706 and params["prunable"] == 61470
    assert params["nonzero"] < 0.2 * params["total"]
    memory = summary["memory"]
    for key in ("state", "pruning", "transient_peak", "weights", "state_ratio", "pruning_ratio"):
        assert key in memory
    assert summary["device_peak_memory_bytes"] > 0 and summary["total_time_s"] > 0


def test_hparams_carry_the_fairness_keys(finished):
    hp = json.loads((finished / rundir.HPARAMS).read_text())
    assert hp["warmup_end"] == 20 and hp["ramp_end"] == 93 and hp["frequency"] == 10  # 93 = 3/4 of 124
    assert (hp["total_steps"], hp["batch_size"], hp["grad_acc"], hp["world_size"]) == (124, 64, 1, 1)
    assert hp["lr"] == 1e-3 and hp["steps_per_epoch"] == 62 and hp["effective_batch"] == 64
    assert hp["amp"] is None and hp["amp_requested"] == "bf16"  # AMP is off on the CPU


def test_checkpoints_load_weights_only(finished):
    last, best = load(finished / rundir.LAST), load(finished / rundir.BEST)
    assert last["step"] == 124 and "optimizer" in last and "rng" in last
    assert best["best"]["step"] == json.loads((finished / rundir.SUMMARY).read_text())["best"]["step"]


def test_completed_run_is_skipped_unless_forced(finished, capsys):
    before = (finished / rundir.LAST).stat().st_mtime_ns
    assert run(finished) == 0
    assert "already completed" in capsys.readouterr().out
    assert (finished / rundir.LAST).stat().st_mtime_ns == before


def test_force_reruns_and_keeps_the_old_outputs(tmp_path):
    run_dir = prepare(tmp_path, lenet_spec(LENET5_EPOCHS=1, PRUNING_NONE=True, PRUNING_STATE=False,
                                           OPTIMIZER_ADAMWPRUNE=False, OPTIMIZER_ADAMW=True))
    assert run(run_dir) == 0
    first = load(run_dir / rundir.LAST)["model"]
    assert run(run_dir, force=True) == 0
    old = list(run_dir.glob(".old-*"))
    assert len(old) == 1 and (old[0] / rundir.LAST).is_file() and (old[0] / rundir.METRICS).is_file()
    # a CPU run repeats exactly
    assert same_weights(first, load(run_dir / rundir.LAST)["model"])
    assert stable_metrics(run_dir) == stable_metrics(old[0])


def test_time_budget_shrinks_the_whole_schedule(tmp_path):
    spec = with_runtime(lenet_spec(LENET5_EPOCHS=20), time_budget_s=2)
    run_dir = prepare(tmp_path, spec)
    assert run(run_dir) == 0
    hp = json.loads((run_dir / rundir.HPARAMS).read_text())
    budget = hp["time_budget"]
    assert budget["planned_steps"] == 1240 and budget["step_s"] > 0
    assert hp["total_steps"] < 1240 and budget["scale"] == pytest.approx(hp["total_steps"] / 1240)
    assert hp["ramp_end"] == round(930 * budget["scale"]) or hp["ramp_end"] == hp["total_steps"]
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    assert summary["steps"] <= hp["total_steps"]
    # Wall time is not asserted (a busy machine stretches any step); what must hold is that
    # the run either finished its shrunken schedule or stopped at the budget and said so.
    log = (run_dir / rundir.LOG).read_text()
    assert summary["steps"] == hp["total_steps"] or f"reached at step {summary['steps']} of" in log
