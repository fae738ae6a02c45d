"""The pruning schedule is set on the Pruner: a time-budgeted run builds its optimizer once."""
import copy
import json

import pytest
import torch
from torch import nn

from lib import optimizers
from lib.lifecycle import rundir
from lib.training import engine
from tests.test_engine_support import lenet_spec, prepare, run, with_runtime
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)

BUILT = dict(total_steps=400, warmup_end=50, ramp_end=200, frequency=20)
SHRUNK = dict(total_steps=40, warmup_end=5, ramp_end=20, frequency=2)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _train(opt, model, steps=30):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 12, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name, pruning, variant", [("adamwprune", "state", "bitter7"), ("sgd", "magnitude", None),
                                                    ("adamw", "movement", None), ("adamwadv", "magnitude", None)])
def test_a_rescheduled_optimizer_trains_as_one_built_with_that_schedule(name, pruning, variant):
    common = dict(lr=1e-2, weight_decay=0.01, pruning=pruning, variant=variant, target_sparsity=0.8)
    direct_model, moved_model = _model(), _model()
    direct = optimizers.create(name, direct_model, **common, **SHRUNK)
    moved = optimizers.create(name, moved_model, **common, **BUILT)
    optimizers.reschedule(moved, **SHRUNK)
    a, b = _train(direct, direct_model), _train(moved, moved_model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert moved.sparsity() == direct.sparsity() == pytest.approx(0.8, abs=0.01)
    assert moved.cosine == direct.cosine


def test_set_schedule_is_checked_like_the_constructor():
    model = _model()
    opt = optimizers.create("adamw", model, lr=1e-2, weight_decay=0.0, pruning="magnitude", target_sparsity=0.5,
                            **BUILT)
    with pytest.raises(ValueError, match=r"ramp_end \(3\) is before warmup_end \(5\)"):
        opt.pruner.set_schedule(warmup_end=5, ramp_end=3)
    with pytest.raises(ValueError, match="pruning frequency must be"):
        opt.pruner.set_schedule(warmup_end=5, ramp_end=30, frequency=0)
    assert (opt.pruner.warmup_end, opt.pruner.ramp_end, opt.pruner.frequency) == (50, 200, 20)  # unchanged
    opt.pruner.set_schedule(warmup_end=1, ramp_end=2, frequency=1)
    _train(opt, model, steps=2)
    with pytest.raises(ValueError, match="already updated at step 2"):
        opt.pruner.set_schedule(warmup_end=5, ramp_end=30)


def _states_equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def test_a_time_budgeted_run_builds_its_optimizer_once(tmp_path, monkeypatch, one_thread):
    built, probes = [], []
    real_create, real_probe = optimizers.create, engine.Trainer._probe
    monkeypatch.setattr(optimizers, "create", lambda *a, **kw: built.append(a[0]) or real_create(*a, **kw))

    def probe(self):
        before = copy.deepcopy(self.optimizer.state_dict())
        measured = real_probe(self)
        probes.append(_states_equal(before, self.optimizer.state_dict()))
        return measured

    monkeypatch.setattr(engine.Trainer, "_probe", probe)
    spec = with_runtime(lenet_spec(LENET5_EPOCHS=20), time_budget_s=2)
    run_dir = prepare(tmp_path, spec)
    assert run(run_dir) == 0
    hp = json.loads((run_dir / rundir.HPARAMS).read_text())
    assert hp["time_budget"]["scale"] < 1  # the schedule shrank after the optimizer was built
    assert built == ["adamwprune"]  # old code: the run's, the probe's and the shrunk schedule's
    assert probes == [True]  # the probe's steps left no trace in the run's optimizer
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    if summary["steps"] == hp["total_steps"]:  # it finished the shrunk ramp (not stopped by a busy machine)
        assert summary["achieved_sparsity"] == pytest.approx(hp["target_sparsity"], abs=0.002)
