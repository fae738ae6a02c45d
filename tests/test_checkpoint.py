"""Checkpoint files and RNG states: atomic, weights_only, clear errors, exact round trips."""
import random

import numpy as np
import pytest
import torch

from lib.lifecycle import checkpoint
from lib.training import seeding
from lib.lifecycle.checkpoint import CheckpointError


def test_save_load_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    payload = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 7, "best": None, "rng": seeding.capture_rng(),
               "names": ["a", "b"], "clock": {"elapsed": 1.5}}
    checkpoint.save(path, payload)
    loaded = checkpoint.load(path, required=("model", "step"))
    assert loaded["format"] == checkpoint.FORMAT and loaded["step"] == 7 and loaded["best"] is None
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert not list(tmp_path.glob(".last.pt.*")), "temporary file left behind"


def test_replacement_is_atomic_when_the_write_fails(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"step": 1})
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoint.save(path, {"step": 2, "bad": Unpicklable()})
    assert path.read_bytes() == before and not list(tmp_path.glob(".last.pt.*"))


@pytest.mark.parametrize("damage, words", [
    (lambda b: b[: len(b) // 2], "corrupt"),
    (lambda b: b"", "corrupt"),
    (lambda b: b"not a zip at all" * 10, "corrupt"),
])
def test_damaged_files_raise_one_line_naming_the_file(tmp_path, damage, words):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"step": 3, "model": {"w": torch.ones(1000)}})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert str(path) in message and words in message and "--fresh" in message and "\n" not in message


def test_foreign_and_incomplete_files_are_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"step": 1}, path)  # no format marker: not written by us
    with pytest.raises(CheckpointError, match="not a knlp checkpoint"):
        checkpoint.load(path)
    checkpoint.save(path, {"step": 1})
    with pytest.raises(CheckpointError, match="missing model"):
        checkpoint.load(path, required=("model", "step"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "absent.pt")


def test_pickled_code_is_not_executed(tmp_path):
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"format": checkpoint.FORMAT, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        checkpoint.load(path)


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".last.pt.abc123").write_bytes(b"half")
    (tmp_path / ".best.pt.zz").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("x")
    checkpoint.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    seeding.seed_everything(5)
    random.gauss(0, 1)  # leave a cached gaussian in Python's generator
    np.random.standard_normal()
    checkpoint.save(tmp_path / "r.pt", {"rng": seeding.capture_rng()})
    expect = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    seeding.seed_everything(99)
    seeding.restore_rng(checkpoint.load(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2:] == got[2:]


def test_data_order_is_a_function_of_seed_epoch_and_step():
    a, b = seeding.epoch_permutation(1, 0, 100), seeding.epoch_permutation(1, 0, 100)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, seeding.epoch_permutation(1, 1, 100))
    assert not torch.equal(a, seeding.epoch_permutation(2, 0, 100))
    g1, g2 = seeding.batch_generator(1, 5, 0), seeding.batch_generator(1, 5, 1)
    assert not torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    assert torch.equal(torch.rand(4, generator=seeding.batch_generator(1, 5, 0)),
                       torch.rand(4, generator=seeding.batch_generator(1, 5, 0)))


def test_zeroed_bytes_inside_tensor_data_are_refused_by_the_checksum(tmp_path):
    # the repro: 4,000 zero bytes in the middle of last.pt loaded silently before
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"step": 3, "model": {"w": torch.randn(50_000, generator=torch.Generator().manual_seed(0))}})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = bytes(4000)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert str(path) in message and "checksum" in message and "FRESH=1" in message and "\n" not in message


def test_checksum_covers_every_value_and_ignores_container_type():
    base = {"model": {"w": torch.ones(3)}, "step": 1, "betas": (0.9, 0.99)}
    assert checkpoint.checksum(base) == checkpoint.checksum({**base, "betas": [0.9, 0.99]})
    assert checkpoint.checksum(base) != checkpoint.checksum({**base, "step": 2})
    assert checkpoint.checksum(base) != checkpoint.checksum({**base, "model": {"w": torch.tensor([1.0, 1.0, 1.5])}})
    assert checkpoint.checksum(base) != checkpoint.checksum({**base, "model": {"w": torch.ones(3, dtype=torch.float64)}})
