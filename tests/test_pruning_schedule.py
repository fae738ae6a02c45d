"""The sparsity schedule against its closed form, and the steps that update masks."""
import pytest

from lib.pruning.schedule import is_update_step, sparsity_at


def _ref(t, t0, t1, sf, shape):
    if t <= t0:
        return 0.0
    p = min(1.0, (t - t0) / (t1 - t0))
    return sf * (1 - (1 - p) ** 3) if shape == "cubic" else sf * p


@pytest.mark.parametrize("shape", ["cubic", "linear"])
def test_values_follow_the_formula(shape):
    for t in range(0, 400, 7):
        got = sparsity_at(t, warmup_end=100, ramp_end=300, final=0.9, shape=shape)
        assert got == pytest.approx(_ref(t, 100, 300, 0.9, shape), abs=1e-12)


def test_warmup_ramp_and_after():
    kw = dict(warmup_end=100, ramp_end=300, final=0.8)
    assert sparsity_at(0, **kw) == 0.0 and sparsity_at(100, **kw) == 0.0
    assert sparsity_at(300, **kw) == 0.8 and sparsity_at(10_000, **kw) == 0.8
    # cubic prunes early: half way it is already at 7/8 of the final sparsity (published: 1/8)
    assert sparsity_at(200, **kw) == pytest.approx(0.8 * 7 / 8)
    assert sparsity_at(200, shape="linear", **kw) == pytest.approx(0.4)
    values = [sparsity_at(t, **kw) for t in range(400)]
    assert values == sorted(values)


def test_one_shot_when_ramp_end_equals_warmup_end():
    assert sparsity_at(49, warmup_end=50, ramp_end=50, final=0.5) == 0.0
    assert sparsity_at(50, warmup_end=50, ramp_end=50, final=0.5) == 0.5


def test_update_steps():
    steps = [t for t in range(1, 400) if is_update_step(t, warmup_end=100, ramp_end=275, frequency=50)]
    assert steps == [150, 200, 250, 275]  # every 50 after warm-up, and once more at the ramp end
    steps = [t for t in range(1, 400) if is_update_step(t, warmup_end=0, ramp_end=100, frequency=50)]
    assert steps == [50, 100]


@pytest.mark.parametrize("kw, match", [
    (dict(final=1.0), r"\[0, 1\)"),
    (dict(final=-0.1), r"\[0, 1\)"),
    (dict(warmup_end=300, ramp_end=100), "before warmup_end"),
    (dict(shape="cubed"), "unknown sparsity schedule shape"),
    (dict(warmup_end=-1), "warmup_end"),
    (dict(warmup_end=0, ramp_end=0), "ramp_end must be at least 1"),
])
def test_bad_schedules_are_rejected(kw, match):
    args = dict(warmup_end=100, ramp_end=300, final=0.5, shape="cubic")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        sparsity_at(10, **args)
