"""SPAM against a naive float64 transcription of the SPEC's rules."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.optimizers import create
from lib.optimizers.spam import Spam




def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).double()


def _loss(model, t):
    g = torch.Generator().manual_seed(t)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64) * (10.0 if t % 7 == 0 else 1.0)  # spikes
    y = torch.randint(0, 3, (16,), generator=g)
    return F.cross_entropy(model(x), y)


def _reference(steps, *, theta, interval, warmup, lr_at, wd=0.1, betas=(0.9, 0.999), eps=1e-8):
    model = _model()
    decay = {id(model[0].weight), id(model[2].weight)}
    m = {id(p): torch.zeros_like(p) for p in model.parameters()}
    v = {id(p): torch.zeros_like(p) for p in model.parameters()}
    b1, b2 = betas
    last_reset, clipped = 0, 0
    for t in range(1, steps + 1):
        model.zero_grad()
        _loss(model, t).backward()
        if interval and t > 1 and (t - 1) % interval == 0:
            for p in model.parameters():
                m[id(p)].zero_()
                v[id(p)].zero_()
            last_reset = t - 1
        k = t - 1 - last_reset
        factor = 0.5 * (1 - math.cos(math.pi * (k + 1) / warmup)) if last_reset and k < warmup else 1.0
        lr = lr_at(t) * factor
        with torch.no_grad():
            for p in model.parameters():
                g = p.grad.clone()
                if k >= 1:
                    bound = (theta * v[id(p)] / (1 - b2 ** k)).sqrt()
                    spike = g.abs() > bound
                    clipped += int(spike.sum())
                    g = torch.where(spike, g.sign() * bound, g)
                p *= 1 - lr * (wd if id(p) in decay else 0.0)
                m[id(p)] = b1 * m[id(p)] + (1 - b1) * g
                v[id(p)] = b2 * v[id(p)] + (1 - b2) * g * g
                n = k + 1  # updates since the reset, this one included
                p -= lr * (m[id(p)] / (1 - b1 ** n)) / ((v[id(p)] / (1 - b2 ** n)).sqrt() + eps)
    return model, clipped


def _train(steps, *, lr_at, **kw):
    model = _model()
    opt = create("adamwspam", model, lr=lr_at(1), weight_decay=0.1, **kw)
    for t in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(t)  # what the engine's schedule does before each step
        _loss(model, t).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt


@pytest.mark.parametrize("lr_at", [lambda t: 0.01, lambda t: 0.01 * (1 + 0.1 * (t % 4))])
def test_matches_reference_with_resets_warmup_and_clipping(lr_at):
    kw = dict(spam_theta=2.0, spam_interval=10, spam_warmup=4)
    got, opt = _train(37, lr_at=lr_at, **kw)
    want, clipped = _reference(37, theta=2.0, interval=10, warmup=4, lr_at=lr_at)
    assert clipped > 0  # the test exercises the spike clipping
    for a, b in zip(got.parameters(), want.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert opt._knlp_t == 37 and opt.spam.last_reset == 30  # one counter: resets after 10, 20, 30


def test_warmup_never_compounds_the_lr():
    model = _model()
    opt = create("adamwspam", model, lr=0.02, weight_decay=0.0, spam_interval=3, spam_warmup=5)
    seen = []
    for t in range(1, 12):
        _loss(model, t).backward()
        opt.step()
        opt.zero_grad()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == [0.02] * 11  # the group keeps the engine's LR; the factor is applied per step


def test_clip_threshold():
    p = nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = torch.optim.AdamW([p])
    v = torch.tensor([1e-4, 1e-4, 4e-4, 0.0, 1e-2, float("inf")], dtype=torch.float64)
    opt.state[p] = {"step": torch.tensor(3.0), "exp_avg": torch.zeros(6, dtype=torch.float64), "exp_avg_sq": v}
    g = np.array([0.5, -0.5, 0.01, 1e-6, -0.1, 1e9])
    p.grad = torch.tensor(g)
    Spam(theta=50.0).clip(opt, 3)
    bound = np.sqrt(50.0 * v.numpy() / (1 - 0.999 ** 3))
    want = np.where(np.abs(g) > bound, np.sign(g) * bound, g)
    np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-12)
    assert p.grad[5] == 1e9  # a pruned position (v = inf) is never clipped


def test_reset_restarts_bias_correction_and_keeps_pruned_marker():
    model = _model()
    opt = create("adamwspam", model, lr=0.01, weight_decay=0.0, spam_interval=4, spam_warmup=2)
    w = model[0].weight
    for t in range(1, 5):
        _loss(model, t).backward()
        opt.step()
        opt.zero_grad()
    st = opt.state[w]
    assert float(st["step"]) == 4
    st["exp_avg_sq"][0, 0] = float("inf")
    _loss(model, 5).backward()
    g = w.grad.clone()
    opt.step()  # step 5: reset first, so this is the first update of a fresh state
    assert float(st["step"]) == 1 and opt.spam.last_reset == 4
    assert torch.isinf(st["exp_avg_sq"][0, 0])
    want_v = (1 - 0.999) * g * g
    want_v[0, 0] = float("inf")
    torch.testing.assert_close(st["exp_avg_sq"], want_v, rtol=1e-12, atol=0)  # no clipping with no state
    torch.testing.assert_close(st["exp_avg"], (1 - 0.9) * g, rtol=1e-12, atol=0)


def test_bad_settings():
    with pytest.raises(ValueError, match="spam_theta"):
        Spam(theta=-1)
    with pytest.raises(ValueError, match="spam_warmup"):
        Spam(warmup=1.5)
