"""A disk that refuses writes (full, read-only, a file in the way): one line naming the path
and the cause, the run recorded failed with that reason, no temporaries left behind."""
import errno
import subprocess

import pytest
import torch

from lib.lifecycle import rundir
from tests.test_engine_support import lenet_spec, prepare, run
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)
from test_matrix_fakes import load_script, use_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _full_disk_save(obj, handle, *args, **kwargs):
    """What torch.save does on a full disk: a partial file, then a RuntimeError hiding the OSError."""
    handle.write(b"PK" + bytes(100))
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726") from None


def test_a_full_disk_at_the_first_checkpoint_is_one_line_and_a_failed_status(tmp_path, monkeypatch, capsys):
    run_dir = prepare(tmp_path, lenet_spec(LENET5_EPOCHS=1))
    monkeypatch.setattr(torch, "save", _full_disk_save)
    assert run(run_dir) == 1
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"cannot write {run_dir / rundir.BEST}: No space left on device"  # the first evaluation's
    assert len(err) == 1 and expected in err[0], err
    status = rundir.read_status(run_dir)
    assert status["state"] == "failed" and expected in status["reason"]
    assert not list(run_dir.glob(".*.pt.*")) and not list(run_dir.glob("*.pt"))
    assert "Traceback" not in (run_dir / rundir.LOG).read_text()


def test_an_output_path_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    config = tmp_path / "test.config"
    config.write_text(f'CONFIG_DEVICE_CPU=y\nCONFIG_PRUNING_NONE=y\nCONFIG_OUTPUT_DIR="{blocker}"\n')
    use_config(monkeypatch, config)
    assert load_script("run").main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {blocker}/" in err[0] and "Not a directory" in err[0], err
    assert blocker.read_text() == "not a directory\n"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root and a kernel that lets us mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_mid_run(small_tmpfs, capsys):
    # dense LeNet-5 writes best.pt (~0.25 MB), then last.pt (~0.77 MB), which finds no room
    (small_tmpfs / "ballast").write_bytes(bytes(300_000))
    run_dir = prepare(small_tmpfs, lenet_spec(LENET5_EPOCHS=1, PRUNING_NONE=True, PRUNING_STATE=False,
                                                OPTIMIZER_ADAMWPRUNE=False, OPTIMIZER_ADAMW=True))
    assert run(run_dir) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write {run_dir / rundir.LAST}: No space left on device" in err[0], err
    status = rundir.read_status(run_dir)
    assert status["state"] == "failed" and "No space left on device" in status["reason"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".") and p.name not in (".lock",)]
