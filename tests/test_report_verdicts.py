"""Verdicts of the report against scipy called directly on the runs' own numbers; pairing
checks from start.json; report.html is self-contained; the lenet5-study defconfig."""
import io
import math
import re

import pandas as pd
import pytest
from scipy import stats as sps

from lib.configuration import config as lib_config
from lib.lifecycle import rundir, start_record
from test_matrix import comparisons, report
from test_matrix.expand import config_id, expand, fairness_problems, schedule_of, budget_of
from test_matrix_fakes import run_path, stem
from test_report import FINAL, make_results


def build(results, cfg=None):
    out = io.StringIO()
    report.build(results, current_cfg=cfg, out=out)
    return stem(out.getvalue())


def _comparisons(results):
    """comparisons.csv with configurations named as tests name them (no settings digest)."""
    table = pd.read_csv(results / comparisons.COMPARISONS_CSV)
    table[["a", "b"]] = table[["a", "b"]].map(stem)
    return table


def _holm_by_hand(p):
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_comparisons_equal_scipy_on_the_summaries(tmp_path):
    cfg, results = make_results(tmp_path)
    printed = build(results, cfg)
    table = _comparisons(results)
    key = lambda a, b: table[(table["a"] == a) & (table["b"] == b)].iloc[0]  # noqa: E731
    mag, mov, b7, dense = ("lenet5-adamw-magnitude-s90", "lenet5-adamw-movement-s90",
                           "lenet5-adamwprune-bitter7-state-s90", "lenet5-adamw-none")
    assert len(table) == 6  # 3 pairs of methods + 3 against AdamW dense, all at 90%
    expected = {(mov, mag): None, (mag, dense): None, (mov, dense): None}
    for a, b in expected:
        row = key(a, b)
        test = sps.ttest_rel(FINAL[a], FINAL[b])
        assert row["diff"] == pytest.approx(sum(FINAL[a]) / 2 - sum(FINAL[b]) / 2)
        assert row["t_p"] == pytest.approx(test.pvalue, rel=1e-9)
        ci = test.confidence_interval(0.95)
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
        assert row["n_pairs"] == 2 and row["dropped_seeds"] == 0
        expected[(a, b)] = test.pvalue
    holm = _holm_by_hand(list(expected.values()))
    for (a, b), adjusted in zip(expected, holm):
        assert key(a, b)["holm_p"] == pytest.approx(adjusted, rel=1e-9)
        assert key(a, b)["verdict"] == ("no detectable difference" if adjusted >= 0.05 else "?")
    # bitter7's seed 2 failed: dropped from both sides of each of its pairs and counted
    for b in (mag, mov, dense):
        row = key(b7, b)
        assert row["n_pairs"] == 1 and row["dropped_seeds"] == 1 and row["verdict"] == "too few pairs"
        assert math.isnan(row["t_p"]) and math.isnan(row["holm_p"])
    lines = printed.strip().splitlines()
    assert all(line.startswith("verdict lenet5 90%: ") for line in lines[-6:])  # the output ends with verdicts
    assert "adamwprune bitter7 vs adamw magnitude: too few pairs (1 paired seeds, 1 dropped)" in printed
    md = (results / "report.md").read_text()
    assert "## Verdicts" in md and md.count("no detectable difference") >= 3


def test_a_clear_difference_is_a_verdict_and_follows_the_metric(tmp_path, monkeypatch):
    final = {"lenet5-adamw-none": [98.0, 99.0, 97.0, 98.5], "lenet5-adamw-magnitude-s90": [96.0, 97.1, 95.0, 96.4],
             "lenet5-adamw-movement-s90": [96.1, 97.0, 95.2, 96.5],
             "lenet5-adamwprune-bitter7-state-s90": [97.0, 98.0, 96.1, 97.3]}
    monkeypatch.setattr("test_report.FINAL", final)
    from test_matrix_fakes import LENET_COMPARE
    cfg, results = make_results(tmp_path, LENET_COMPARE.replace("SEEDS=2", "SEEDS=4"))
    build(results, cfg)
    table = _comparisons(results).set_index(["a", "b"])
    row = table.loc[("lenet5-adamw-magnitude-s90", "lenet5-adamw-none")]
    assert row["verdict"] == "worse" and row["holm_p"] < 0.05
    assert table.loc[("lenet5-adamwprune-bitter7-state-s90", "lenet5-adamw-magnitude-s90"), "verdict"] == "better"


def _write_start(run_dir, weights="w", data="d"):
    rundir.write_json(run_dir / start_record.FILE, {"weights": weights, "data_order": data})


def test_pairing_is_checked_and_a_mismatched_seed_is_dropped(tmp_path):
    cfg, results = make_results(tmp_path)
    for run in expand(cfg):
        _write_start(results / run.run_id, weights=f"w{run.seed}", data=f"d{run.seed}")
    text = build(results, cfg)
    assert "paired lenet5: seed k of every configuration (4 configurations, 2 seeds) started from the same" in text
    _write_start(run_path(results, "lenet5-adamw-movement-s90-seed2"), weights="other", data="d2")
    text = build(results, cfg)
    assert ("NOT PAIRED lenet5: lenet5-adamw-movement-s90-seed2 has other weights than lenet5-adamw-none-seed2"
            in text)
    table = _comparisons(results).set_index(["a", "b"])
    row = table.loc[("lenet5-adamw-movement-s90", "lenet5-adamw-none")]
    assert (row["n_pairs"], row["dropped_seeds"], row["dropped_start_differs"]) == (1, 1, 1)
    assert table.loc[("lenet5-adamw-magnitude-s90", "lenet5-adamw-none"), "n_pairs"] == 2


def test_seeds_needed_uses_the_kconfig_difference(tmp_path):
    from test_matrix_fakes import LENET_COMPARE
    cfg, results = make_results(tmp_path, LENET_COMPARE + 'CONFIG_TEST_MATRIX_DIFFERENCE_ACCURACY="1.5"\n')
    build(results, cfg)
    table = _comparisons(results)
    row = table[(table["a"] == "lenet5-adamw-movement-s90") & (table["b"] == "lenet5-adamw-none")].iloc[0]
    assert row["detect_diff"] == 1.5
    sd, n = row["sd_diff"], row["seeds_needed"]

    def power(k):  # the noncentral t directly: P(T > c) + P(T < -c) = P(T > c) + P(T' > c), T' at -nc
        c, nc = sps.t.ppf(0.975, k - 1), 1.5 * math.sqrt(k) / sd
        return sps.nct.sf(c, k - 1, nc) + sps.nct.sf(c, k - 1, -nc)
    assert power(n) >= 0.8 > power(n - 1)
    with pytest.raises(lib_config.ConfigError, match="TEST_MATRIX_DIFFERENCE_ACCURACY='-1' is not a positive number"):
        comparisons.detect_differences({"TEST_MATRIX_DIFFERENCE_ACCURACY": "-1"})


def test_report_html_is_self_contained_with_layers_and_differing_hparams(tmp_path):
    cfg, results = make_results(tmp_path)
    run_dir = run_path(results, "lenet5-adamw-magnitude-s90-seed1")
    summary = rundir.read_json(run_dir / rundir.SUMMARY)
    summary["layers"] = [{"layer": "conv1.weight", "size": 150, "sparsity": 0.42},
                         {"layer": "fc3.weight", "size": 840, "sparsity": 0.97}]
    rundir.write_json(run_dir / rundir.SUMMARY, summary)
    hp = rundir.read_json(run_dir / rundir.HPARAMS)
    rundir.write_json(run_dir / rundir.HPARAMS, dict(hp, pruning="magnitude", seed=1))
    build(results, cfg)
    page = (results / "report.html").read_text()
    assert page.index('id="verdicts"') < page.index('id="configurations"') < page.index("<h2>Plots")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"(src|href)=\"(?!data:)", page) and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 3  # the three plots of plots/
    assert "conv1.weight" in page and ">42.0<" in page and ">97.0<" in page
    assert "<td>pruning</td><td>magnitude</td>" in page  # differs between configurations; seed never shown
    assert "<td>seed</td>" not in page
    assert "loss is NaN at step 40" in page  # the failed run and its reason


def test_lenet5_study_expands_to_the_planned_runs_with_one_schedule_and_equal_budgets():
    cfg = lib_config.from_defconfig("lenet5-study")
    runs = expand(cfg)
    assert len(runs) == 50 and {r.seed for r in runs} == {1, 2, 3, 4, 5}
    configs = {stem(config_id(r)) for r in runs}
    expected = {"lenet5-adamw-none"} | {f"lenet5-adamw-{m}-s{s}" for m in ("magnitude", "movement") for s in (50, 70, 90)} \
        | {f"lenet5-adamwprune-bitter7-state-s{s}" for s in (50, 70, 90)}
    assert configs == expected
    assert all(r.model_options["dataset"] == "mnist_sample" and not r.runtime["download"] for r in runs)
    assert fairness_problems(runs) == []
    pruned = [r for r in runs if r.pruning != "none"]
    assert len({tuple(sorted(schedule_of(r).items())) for r in pruned}) == 1
    assert len({repr(sorted(budget_of(r).items())) for r in runs}) == 1
    assert all(r.budget_factor == 1.0 and not r.unequal_budget for r in runs)


def test_report_of_many_synthetic_runs(tmp_path, capsys):
    from test_matrix_fakes import load_script
    bench = load_script("bench_report")
    assert bench.main(["--runs", "60", "--seeds", "3", "--dir", str(tmp_path / "big")]) == 0
    assert "60 synthetic runs (20 configurations x 3 seeds)" in capsys.readouterr().out
    page = (tmp_path / "big" / "report.html").read_text()
    assert page.count('<details class="config"') == 20
    table = pd.read_csv(tmp_path / "big" / comparisons.COMPARISONS_CSV)
    assert len(table) > 20 and set(table["verdict"]) <= {"better", "worse", "no detectable difference", "too few pairs"}
    assert bench.main(["--runs", "60", "--dir", str(tmp_path / "big")]) == 2  # never writes into a full directory
    assert "is not empty" in capsys.readouterr().err


def test_labels_are_methods_unless_two_configurations_share_one(tmp_path):
    from test_matrix import results, synthetic
    # 100 configurations: the lenet5 and resnet18 grids (49 each), then lenet5 dense and
    # adamw magnitude at 50% again with another learning rate
    synthetic.make(tmp_path / "r", runs=100, seeds=1, fail_every=0)
    rows = comparisons.build(results.select(tmp_path / "r").runs, comparisons.DETECT_DEFAULTS)
    at = lambda level: {x for r in rows if r.model == "lenet5" and r.sparsity == level  # noqa: E731
                        for x in (r.a_label, r.b_label)}
    assert {"adamw magnitude", "adamwprune bitter7"} <= at(70.0)
    assert {"lenet5-adamw-magnitude-s50", "lenet5-adamw-magnitude-s50-lr0.002"} <= at(50.0)
    assert "adamw magnitude" not in at(50.0) and "adamwprune bitter7" in at(50.0)
