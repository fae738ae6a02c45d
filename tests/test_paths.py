"""Configured paths are resolved by lib.configuration.paths alone."""
import re
from pathlib import Path
from types import SimpleNamespace

from lib.configuration import paths
from lib.configuration.config import ROOT

OWNER = ROOT / "lib" / "configuration" / "paths.py"


def test_relative_paths_start_at_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # never the current directory
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.from_root("runs") == ROOT / "runs"
    assert paths.from_root(" runs/a ") == ROOT / "runs" / "a"
    assert paths.from_root("~/data") == tmp_path / "home" / "data"
    assert paths.from_root(tmp_path / "abs") == tmp_path / "abs"
    assert paths.from_root("texts", tmp_path) == tmp_path / "texts"


def test_data_dir_defaults_to_data_under_the_root():
    assert paths.data_dir(SimpleNamespace(runtime={})) == ROOT / "data"
    assert paths.data_dir(SimpleNamespace(runtime={"data_dir": "/srv/d"})) == Path("/srv/d")


def test_every_user_of_a_configured_path_agrees(tmp_path):
    from gpt2.corpus import sources
    from lib.doctor import environment
    from test_matrix import sweep

    assert sweep.resolve("out", "X") == environment.project_path("out") == paths.from_root("out")
    options = sources.with_paths({"dataset": "local_text", "text_dir": "texts"})
    assert options["text_dir"] == str(ROOT / "texts")


def test_no_other_module_joins_the_root_itself():
    """The pattern each of the four old copies used: `p if p.is_absolute() else ROOT / p`."""
    pattern = re.compile(r"is_absolute\(\)\s+else\s+.*(ROOT|root)")
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if path == OWNER or parts[0] in ("tests", ".venv") or any(p.startswith(".") for p in parts):
            continue
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                      if pattern.search(line)]
    assert offenders == []
