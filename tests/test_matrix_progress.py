"""Progress over a whole matrix: counts, ETA from past runs, one line per finished run."""
import io
from pathlib import Path

from test_matrix.executor import Job, Outcome
from test_matrix.progress import Progress, fmt_duration


def test_eta_and_lines():
    out = io.StringIO()
    progress = Progress(total=6, already_done=2, already_failed=0, slots=2,
                        estimates={r: 10.0 for r in "abcd"}, stream=out, bar=False)
    progress.queue("abcd")
    assert progress.eta() == 20.0  # 4 runs of 10 s on 2 slots
    progress("start", Job("a", Path("a")), None)
    progress.started["a"] -= 4  # started 4 s ago
    assert abs(progress.eta() - 18.0) < 0.1
    progress("finish", Job("a", Path("a")), Outcome("a", "completed", None, 9.0))
    progress("finish", Job("b", Path("b")), Outcome("b", "failed", "loss is NaN at step 3", 2.0))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[3/6] done    a in 9s (3 done, 0 failed")
    assert lines[1].startswith("[4/6] FAILED  b after 2s: loss is NaN at step 3 (3 done, 1 failed")
    progress.close()


def test_eta_without_history_uses_this_sweeps_runs():
    progress = Progress(total=3, already_done=0, already_failed=0, slots=1, stream=io.StringIO(), bar=False)
    progress.queue(["x", "y", "z"])
    assert progress.eta() is None
    progress("start", Job("x", Path("x")), None)
    progress("finish", Job("x", Path("x")), Outcome("x", "completed", None, 30.0))
    assert progress.eta() == 60.0
    assert fmt_duration(60.0) == "1m00s" and fmt_duration(3725) == "1h02m" and fmt_duration(None) == "?"
    progress("tick", None, None)
    progress.close()
