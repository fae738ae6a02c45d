"""lib.training.lr_schedule against torch's own schedulers (an independent, recursive computation)."""
import math

import pytest
import torch

from lib.training.lr_schedule import check, lr_at


def torch_lrs(make_scheduler, steps, base=0.1):
    """LR of each optimizer step as torch's scheduler gives it (scheduler stepped per step)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def ours(steps, **kw):
    return [lr_at(t, total_steps=steps, **kw) for t in range(steps)]


def test_cosine_per_step_matches_cosine_annealing():
    expect = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=0.001), 50)
    got = ours(50, kind="cosine", base_lr=0.1, min_lr=0.001)
    assert got == pytest.approx(expect, rel=1e-9, abs=1e-12)


def test_cosine_per_epoch_changes_only_at_epoch_boundaries():
    spe, epochs = 7, 6
    # torch's scheduler stepped once per epoch, each LR repeated for the epoch's steps
    per_epoch = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs), epochs)
    expect = [lr for lr in per_epoch for _ in range(spe)]
    got = ours(spe * epochs, kind="cosine", base_lr=0.1, quantum=spe)
    assert got == pytest.approx(expect, rel=1e-9, abs=1e-12)


def test_linear_warmup_then_cosine_matches_sequential_lr():
    warm, steps = 10, 60

    def make(o):
        w = torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1)
        c = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps - warm, eta_min=0.01)
        return torch.optim.lr_scheduler.SequentialLR(o, [w, c], milestones=[warm])

    expect = torch_lrs(make, steps)
    got = ours(steps, kind="warmup_cosine", base_lr=0.1, warmup_steps=warm, min_lr=0.01)
    assert got == pytest.approx(expect, rel=1e-9, abs=1e-12)


def test_step_schedule_matches_step_lr():
    expect = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=15, gamma=0.3), 70)
    got = ours(70, kind="step", base_lr=0.1, step_size=15, gamma=0.3)
    assert got == pytest.approx(expect, rel=1e-12)


def test_constant_with_warmup():
    got = ours(8, kind="constant", base_lr=0.5, warmup_steps=4)
    assert got == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5, 0.5])


def test_nanogpt_closed_form():
    # nanoGPT's get_lr with lr_decay_iters = total: coeff = 0.5 * (1 + cos(pi * ratio))
    base, floor, warm, total = 6e-4, 6e-5, 20, 200
    for it in range(warm, total):
        ratio = (it - warm) / (total - warm)
        assert lr_at(it, kind="warmup_cosine", base_lr=base, total_steps=total, warmup_steps=warm,
                     min_lr=floor) == pytest.approx(floor + 0.5 * (1 + math.cos(math.pi * ratio)) * (base - floor))


@pytest.mark.parametrize("kw, words", [
    (dict(kind="linear"), "unknown LR schedule"),
    (dict(base_lr=0.0), "positive"),
    (dict(total_steps=0), "at least 1"),
    (dict(warmup_steps=100), "shorter"),
    (dict(kind="step", step_size=0), "step size"),
    (dict(min_lr=1.0), "minimum LR"),
])
def test_check_rejects_bad_schedules(kw, words):
    args = dict(kind="cosine", base_lr=0.1, total_steps=100, warmup_steps=0, min_lr=0.0)
    args.update(kw)
    with pytest.raises(ValueError, match=words):
        check(**args)
