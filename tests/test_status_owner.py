"""status.json has one writer: lib.lifecycle.rundir (write_status and the helpers beside it).

Every other module passes its facts to those functions; none opens, dumps or replaces the
file itself, so its format and its full-disk fallback live in one place.
"""
import ast
from pathlib import Path

import pytest

from lib.configuration.config import ROOT
from lib.lifecycle import heartbeat, rundir

OWNER = ROOT / "lib" / "lifecycle" / "rundir.py"
WRITERS = {"write_json", "atomic_write_text", "write_text", "write_bytes", "open", "dump", "replace", "rename"}


def _names_status(node) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr == "STATUS":
            return True
        if isinstance(sub, ast.Name) and sub.id == "STATUS":
            return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.endswith("status.json"):
            return True
    return False


def status_writes(path: Path) -> list[int]:
    """Lines of `path` that call a file-writing function on the status file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in WRITERS:
            continue
        target = [*node.args, *(k.value for k in node.keywords)]
        if isinstance(node.func, ast.Attribute):
            target.append(node.func.value)  # (run_dir / STATUS).write_text(...)
        if any(_names_status(t) for t in target):
            found.append(node.lineno)
    return found


def _sources():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] in ("tests", ".venv") or any(p.startswith(".") for p in parts):
            continue
        yield path


def test_only_rundir_writes_status_json():
    offenders = [f"{p.relative_to(ROOT)}:{line}" for p in _sources() if p != OWNER for line in status_writes(p)]
    assert offenders == [], f"status.json written outside lib/lifecycle/rundir.py: {offenders}"


def test_the_check_sees_a_direct_write(tmp_path):
    # What lib/lifecycle/heartbeat.py did before: the check must catch it.
    sample = tmp_path / "old_heartbeat.py"
    sample.write_text("rundir.write_json(Path(run_dir) / rundir.STATUS, status)\n"
                      "(Path(d) / 'status.json').write_text('{}')\n")
    assert status_writes(sample) == [1, 2]


def test_heartbeat_goes_through_the_owner(tmp_path):
    rundir.write_status(tmp_path, rundir.RUNNING, step=3)
    assert heartbeat.beat(tmp_path, now=123.0)
    status = rundir.read_status(tmp_path)
    assert (status["heartbeat"], status["step"], status["state"]) == (123.0, 3, rundir.RUNNING)
    heartbeat.mark_stopped(tmp_path)
    assert rundir.read_status(tmp_path)["heartbeat"] == 0
    rundir.write_status(tmp_path, rundir.COMPLETED, step=9)
    assert not heartbeat.beat(tmp_path)  # never puts life back into a finished run
    assert "heartbeat" not in rundir.read_status(tmp_path)


@pytest.mark.parametrize("given, expected", [(None, 7), (11, 11)])
def test_record_failure_keeps_the_last_known_step(tmp_path, given, expected):
    rundir.write_status(tmp_path, rundir.RUNNING, step=7)
    rundir.record_failure(tmp_path, "killed by SIGKILL", step=given, recorded_by="test_matrix")
    status = rundir.read_status(tmp_path)
    assert (status["state"], status["step"], status["recorded_by"]) == (rundir.FAILED, expected, "test_matrix")
