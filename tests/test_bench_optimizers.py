"""scripts/bench_optimizers.py on a small ramp: every figure line is JSON, the update step's
ratios come from timed steps, and the mask update timed inside a step is part of it."""
import json

from scripts import bench_optimizers


def test_update_figures_time_the_step_and_the_mask_update_inside_it(capsys):
    bench_optimizers.main(["--blocks", "1", "--seeds", "2", "--updates", "3", "--plain", "1", "--warmup-end", "2",
                           "--ramp-end", "22", "--frequency", "5", "--methods", "adamwprune-bitter7"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    upd = next(x for x in lines if x["figure"] == "update_step_ratio")
    assert upd["updates_timed"] >= 2 * 3 and upd["passes"] == 1
    assert 0 < upd["min"] <= upd["median"] <= upd["max"]
    # the mask update runs inside the step, after torch's own update: a part of every step
    assert 0 < upd["mask_update_median"] <= upd["mask_update_max"] <= upd["max"]
    assert upd["mask_update_median"] < upd["median"]
    sp = next(x for x in lines if x["figure"] == "sparsity")
    assert sp["max_error_of_N"] == 0.0 and sp["value"] == 0.9
