"""The sweep record a tracker gets carries the report's verdicts, sent after the report."""
import csv
import io
from collections import Counter

from lib.tracking import sweep_summary
from test_matrix import comparisons, report, sweep
from test_matrix_fakes import LENET_COMPARE, fake_engine, write_config
from test_report import make_results


def test_sweep_values_carry_the_verdicts_of_comparisons_csv(tmp_path):
    cfg, results = make_results(tmp_path)
    assert "verdicts" not in sweep_summary.sweep_values(results, [])  # no report yet: nothing to claim
    report.build(results, current_cfg=cfg, out=io.StringIO())
    with open(results / comparisons.COMPARISONS_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    values = sweep_summary.sweep_values(results, [])
    expected = Counter(r["verdict"] for r in rows)
    for verdict in sweep_summary.VERDICTS:
        assert values["verdicts_" + verdict.replace(" ", "_")] == expected[verdict]
    lines = values["verdicts"].splitlines()
    assert len(lines) == len(rows) and all(r["verdict"] in line and r["a"] in line for r, line in zip(rows, lines))


def test_the_sweep_sends_its_summary_after_the_report(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sweep.tracking, "send_sweep_summary",
                        lambda cfg, root, models, out=None: seen.append((root / comparisons.COMPARISONS_CSV).is_file()))
    cfg = write_config(tmp_path, LENET_COMPARE).replace(TEST_MATRIX_SEEDS=1)
    assert sweep.run(cfg, command=fake_engine(tmp_path), out=io.StringIO(), cores=2, make_report=True) == 0
    assert seen == [True]
