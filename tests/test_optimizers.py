"""Optimizers against naive float64 implementations of the SPEC's update rules."""
import io
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.optimizers import create, param_groups




class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 6)
        self.fc1 = nn.Linear(6, 16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 7)

    def forward(self, idx):
        return self.fc2(torch.tanh(self.ln(self.fc1(self.emb(idx).mean(1)))))


def _batch(t):
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randint(0, 7, (12, 3), generator=g), torch.randint(0, 7, (12,), generator=g)


def _loss(model, t):
    x, y = _batch(t)
    return F.cross_entropy(model(x), y)


def _train(name, steps, *, dtype=torch.float64, lr_at=None, **kw):
    torch.manual_seed(0)
    model = Net().to(dtype)
    lr = kw.pop("lr", 0.05)
    opt = create(name, model, lr=lr, weight_decay=kw.pop("weight_decay", 0.1), **kw)
    for t in range(1, steps + 1):
        if lr_at:
            for g in opt.param_groups:
                g["lr"] = lr_at(t)
        _loss(model, t).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt


def _reference(name, steps, *, lr=0.05, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, momentum=0.9,
               amsgrad=False, eta_min=1e-6, total_steps=None, clip=0.0, lr_at=None):
    """The SPEC's update rules written out per tensor, in float64."""
    torch.manual_seed(0)
    model = Net().double()
    decay = {id(model.fc1.weight), id(model.fc2.weight)}  # no decay: biases, norm, embedding
    st = {id(p): dict(m=torch.zeros_like(p), v=torch.zeros_like(p), vmax=torch.zeros_like(p),
                      b=torch.zeros_like(p)) for p in model.parameters()}
    b1, b2 = betas
    for t in range(1, steps + 1):
        base = lr_at(t) if lr_at else lr
        model.zero_grad()
        _loss(model, t).backward()
        ps = list(model.parameters())
        if clip > 0:
            norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in ps))
            if norm > clip:
                for p in ps:
                    p.grad.mul_(clip / (norm + 1e-6))
        lr_t = base
        if total_steps:
            lr_t = eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * min(t - 1, total_steps) / total_steps))
        with torch.no_grad():
            for p in ps:
                s, g = st[id(p)], p.grad.clone()
                wd = weight_decay if id(p) in decay else 0.0
                if name == "sgd":
                    g += wd * p
                    s["b"] = momentum * s["b"] + g
                    p -= lr_t * s["b"]
                    continue
                if name == "adam":
                    g += wd * p
                else:
                    p *= 1 - lr_t * wd
                s["m"] = b1 * s["m"] + (1 - b1) * g
                s["v"] = b2 * s["v"] + (1 - b2) * g * g
                v = s["v"]
                if amsgrad:
                    s["vmax"] = torch.maximum(s["vmax"], s["v"])
                    v = s["vmax"]
                m_hat = s["m"] / (1 - b1 ** t)
                p -= lr_t * m_hat / ((v / (1 - b2 ** t)).sqrt() + eps)
    return model


def _close(a, b, tol=1e-9):
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_update_rule_matches_reference(name):
    kw = dict(momentum=0.8) if name == "sgd" else dict(betas=(0.85, 0.99), eps=1e-7)
    model, _ = _train(name, 25, **kw)
    _close(model, _reference(name, 25, **kw))


def test_adamwadv_is_amsgrad_cosine_and_clipped():
    model, opt = _train("adamwadv", 25, total_steps=20, eta_min=1e-3, lr=0.2)
    _close(model, _reference("adamwadv", 25, amsgrad=True, eta_min=1e-3, total_steps=20, clip=1.0, lr=0.2))
    assert all(g["lr"] == 0.2 for g in opt.param_groups)  # the engine's LR is left as it was


def test_engine_lr_is_used_every_step():
    lr_at = lambda t: 0.05 * (1 + t % 3)  # noqa: E731
    model, _ = _train("adamw", 12, lr_at=lr_at)
    _close(model, _reference("adamw", 12, lr_at=lr_at))


def test_grad_clip_reaches_the_update():
    model, _ = _train("adamw", 10, grad_clip=0.05)
    _close(model, _reference("adamw", 10, clip=0.05))


def test_adamwprune_without_pruning_is_adamw_bit_for_bit():
    ref, _ = _train("adamw", 50, dtype=torch.float32)
    for kw in (dict(pruning="none"), dict(target_sparsity=0.0)):
        got, _ = _train("adamwprune", 50, dtype=torch.float32, **kw)
        for a, b in zip(ref.parameters(), got.parameters()):
            assert torch.equal(a, b)


def test_adamwprune_on_spam_without_pruning_is_adamwspam_bit_for_bit():
    kw = dict(spam_theta=5.0, spam_interval=15, spam_warmup=4)
    ref, _ = _train("adamwspam", 50, dtype=torch.float32, **kw)
    got, _ = _train("adamwprune", 50, dtype=torch.float32, base="adamwspam", pruning="none", **kw)
    for a, b in zip(ref.parameters(), got.parameters()):
        assert torch.equal(a, b)


def test_param_groups_decay_weights_only_and_tied_once():
    m = Net()
    m.head = nn.Linear(6, 7, bias=False)
    m.head.weight = m.emb.weight  # tied to the embedding
    groups = param_groups(m, 0.1)
    decay = {id(p) for p in groups[0]["params"]}
    assert decay == {id(m.fc1.weight), id(m.fc2.weight)} and groups[0]["weight_decay"] == 0.1
    assert groups[1]["weight_decay"] == 0.0
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(m.parameters()))


BASE = dict(weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8)


@pytest.mark.parametrize("name, change", [
    ("adamw", dict(weight_decay=0.5)), ("adamw", dict(betas=(0.8, 0.999))), ("adamw", dict(betas=(0.9, 0.9))),
    ("adamw", dict(eps=1e-3)), ("adam", dict(weight_decay=0.5)), ("adamw", dict(amsgrad=True)),
    ("sgd", dict(momentum=0.5)), ("sgd", dict(weight_decay=0.5)), ("adamw", dict(grad_clip=0.01)),
    ("adamwspam", dict(spam_theta=1.5)), ("adamwspam", dict(spam_interval=7)),
    ("adamwspam", dict(spam_interval=7, spam_warmup=5)),
    ("adamwadv", dict(eta_min=0.04)), ("adamwadv", dict(total_steps=10)), ("adamwadv", dict(amsgrad=False)),
    ("adamwprune", dict(base="adamwspam", spam_theta=1.5)),
    ("adamwprune", dict(variant="bitter0")), ("adamwprune", dict(scope="layer")),
    ("adamwprune", dict(shape="linear")), ("adamwprune", dict(frequency=3)),
    ("adamwprune", dict(target_sparsity=0.5)), ("adamwprune", dict(warmup_end=6)),
    ("adamwprune", dict(ramp_end=18)), ("adamw", dict(pruning="movement")),
])
def test_every_hyperparameter_reaches_its_use(name, change):
    base = dict(BASE, total_steps=40, spam_theta=50.0, spam_interval=1000, spam_warmup=3)
    if name == "adamwprune" or change.get("pruning"):
        base.update(target_sparsity=0.7, warmup_end=2, ramp_end=14, frequency=4, variant="bitter7")
        base.setdefault("pruning", "state" if name == "adamwprune" else "magnitude")
        if change.get("pruning"):
            base.pop("variant")
    if name != "adamwprune":
        base.pop("variant", None)
    a, _ = _train(name, 20, dtype=torch.float32, **base)
    b, _ = _train(name, 20, dtype=torch.float32, **{**base, **change})
    assert any(not torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


RESUME = [
    ("adamwprune", dict(variant="bitter7", base="adamwspam", spam_interval=9, spam_warmup=4, grad_clip=1.0)),
    ("adamwprune", dict(variant="bitter4")),
    ("sgd", dict(pruning="magnitude", scope="layer")),
    ("adamw", dict(pruning="movement")),
    ("adamwadv", dict(total_steps=30, pruning="magnitude")),
]


@pytest.mark.parametrize("name, kw", RESUME, ids=[r[0] + "-" + str(i) for i, r in enumerate(RESUME)])
def test_resume_mid_ramp_is_bit_identical(name, kw):
    sched = dict(target_sparsity=0.8, warmup_end=3, ramp_end=24, frequency=4)
    whole, _ = _train(name, 30, dtype=torch.float32, **sched, **kw)

    torch.manual_seed(0)
    model = Net()
    opt = create(name, model, lr=0.05, weight_decay=0.1, **sched, **kw)
    for t in range(1, 14):
        _loss(model, t).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    model2 = Net()
    model2.load_state_dict(saved["model"])
    opt2 = create(name, model2, lr=0.05, weight_decay=0.1, **sched, **kw)
    opt2.load_state_dict(saved["opt"])
    assert opt2.sparsity() == opt.sparsity()
    for t in range(14, 31):
        _loss(model2, t).backward()
        opt2.step()
        opt2.zero_grad(set_to_none=True)
    for a, b in zip(whole.parameters(), model2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name, kw, match", [
    ("adamx", {}, "unknown optimizer 'adamx'"),
    ("adamw", dict(target_sparsity=1.0, pruning="magnitude", ramp_end=5), r"\[0, 1\)"),
    ("adamw", dict(target_sparsity=-0.2, pruning="magnitude", ramp_end=5), r"\[0, 1\)"),
    ("adamwprune", dict(target_sparsity=0.5, warmup_end=10, ramp_end=5), "before warmup_end"),
    ("adamwprune", dict(variant="bitter11", target_sparsity=0.5, ramp_end=5), "unknown importance variant"),
    ("adamw", dict(pruning="state", target_sparsity=0.5, ramp_end=5), "use optimizer adamwprune"),
    ("sgd", dict(pruning="state"), "use optimizer adamwprune"),
    ("adamw", dict(pruning="pruny"), "unknown pruning method"),
    ("adamw", dict(betas=(0.9, 1.0)), r"betas\[1\]"),
    ("adamw", dict(eps=0.0), "eps"),
    ("adamw", dict(lr=-1.0), "lr"),
    ("adamw", dict(weight_decay=-0.1), "weight_decay"),
    ("adamw", dict(momentum_typo=0.9), "unknown optimizer hyperparameter"),
    ("adamwadv", {}, "total_steps"),
    ("adamw", dict(base="adamwspam"), "only applies to adamwprune"),
    ("adamwprune", dict(base="sgd"), "unknown base optimizer"),
    ("adamwspam", dict(spam_theta=0.0), "spam_theta"),
    ("adamwspam", dict(spam_interval=-1), "spam_interval"),
    ("adamwprune", dict(target_sparsity=0.5, ramp_end=5, frequency=0), "frequency"),
    ("adamwprune", dict(target_sparsity=0.5, ramp_end=5, scope="row"), "scope"),
    ("adamwprune", dict(target_sparsity=0.5, ramp_end=5, shape="cubed"), "shape"),
])
def test_bad_hyperparameters_raise_one_line_errors(name, kw, match):
    args = dict(lr=0.01, weight_decay=0.0)
    args.update(kw)
    with pytest.raises(ValueError, match=match) as err:
        create(name, Net(), **args)
    assert "\n" not in str(err.value)


def test_state_dict_loads_with_weights_only_and_refuses_other_settings():
    _, opt = _train("adamwprune", 5, dtype=torch.float32, target_sparsity=0.5, warmup_end=1, ramp_end=4,
                    frequency=1)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    other = create("adamw", Net(), lr=0.05, weight_decay=0.1)
    with pytest.raises(ValueError, match="different pruning"):
        other.load_state_dict(sd)


def test_grad_scaler_skips_inf_steps_and_unscales():
    torch.manual_seed(0)
    model = Net()
    opt = create("adamwprune", model, lr=0.05, weight_decay=0.1, target_sparsity=0.5, warmup_end=0,
                 ramp_end=2, frequency=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [p.detach().clone() for p in model.parameters()]
    scaler.scale(_loss(model, 1)).backward()
    model.fc1.weight.grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # skipped
    assert opt._knlp_t == 0
    opt.zero_grad()
    scaler.scale(_loss(model, 2)).backward()
    scaler.step(opt)
    scaler.update()
    assert opt._knlp_t == 1 and all(torch.isfinite(p).all() for p in model.parameters())
