"""The optimizer and score registries: every entry trains, resumes, and says true things.

Parametrized over the registries, so a new entry is tested without a new test.
"""
import io

import pytest
import torch

from lib.configuration import config
from lib.optimizers import create, registry
from lib.pruning import score_registry
from tests.test_optimizers import Net, _loss

SCHEDULE = dict(target_sparsity=0.8, warmup_end=3, ramp_end=24, frequency=4)


def _setups():
    """(id, optimizer, hyperparameters): every optimizer, on each of its bases, pruning as a
    sweep would prune it ("state" for a state-pruning optimizer, else magnitude)."""
    for entry in registry.OPTIMIZERS:
        extra = dict(total_steps=30) if entry.cosine else {}
        pruning = "state" if entry.state_pruning else "magnitude"
        for base in entry.bases or [None]:
            hp = {**SCHEDULE, **extra, "pruning": pruning, **({"base": base} if base else {})}
            if base and registry.get(base).spam:
                hp.update(spam_interval=9, spam_warmup=4)
            yield f"{entry.name}-{base or pruning}", entry.name, hp


SETUPS = list(_setups())


def _steps(model, opt, first, last):
    for t in range(first, last + 1):
        _loss(model, t).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _fresh(name, hp):
    torch.manual_seed(0)
    model = Net()
    return model, create(name, model, lr=0.05, weight_decay=0.1, **hp)


@pytest.mark.parametrize("name, hp", [s[1:] for s in SETUPS], ids=[s[0] for s in SETUPS])
def test_every_optimizer_trains_prunes_and_resumes_bit_identically(name, hp):
    whole, opt = _fresh(name, hp)
    before = [p.detach().clone() for p in whole.parameters()]
    _steps(whole, opt, 1, 30)
    assert all(not torch.equal(a, b) for a, b in zip(before, whole.parameters()))
    assert opt.sparsity() == pytest.approx(0.8, abs=0.01)
    zeros = sum(int((p == 0).sum()) for _, p in opt.prunable)
    assert zeros == opt.pruner.pruned_count()  # the mask holds: pruned weights stay exactly 0

    model, opt = _fresh(name, hp)
    _steps(model, opt, 1, 13)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed, opt2 = _fresh(name, hp)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    _steps(resumed, opt2, 14, 30)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("entry", registry.OPTIMIZERS, ids=registry.NAMES)
def test_second_moment_flag_matches_the_optimizer_state(entry):
    """StateMask holds masks in exp_avg_sq: an entry may claim it only if the state has one."""
    model, opt = _fresh(entry.name, dict(total_steps=30) if entry.cosine else {})
    _steps(model, opt, 1, 2)
    has = all("exp_avg_sq" in opt.state[p] for _, p in opt.prunable)
    assert has == entry.second_moment


def _symbols():
    return {sym.name for sym in config.new_kconfig().unique_defined_syms}


def test_every_registered_kconfig_symbol_exists():
    symbols = _symbols()
    named = [o.kconfig for o in registry.OPTIMIZERS]
    named += [sym for o in registry.OPTIMIZERS for sym in (*o.kconfig_knobs.values(), *o.bases.values())]
    named += [s.kconfig for s in score_registry.SCORES if s.kconfig]
    assert [n for n in named if n not in symbols] == []


def test_every_optimizer_and_variant_symbol_has_an_entry():
    """A Kconfig option without its registry entry would be offered in menuconfig and ignored."""
    symbols = _symbols()
    optimizers = {s for s in symbols if s.startswith("OPTIMIZER_")}
    variants = {s for s in symbols if s.startswith("ADAMWPRUNE_VARIANT_")}
    assert optimizers == {o.kconfig for o in registry.OPTIMIZERS}
    assert variants == {s.kconfig for s in score_registry.SCORES if s.kconfig}


def test_budget_factor_stands_once():
    from lib.configuration import runspec
    from lib.pruning import scores
    assert runspec.UNEQUAL_BUDGET is score_registry.BUDGET_FACTOR is scores.BUDGET_FACTOR
    assert score_registry.BUDGET_FACTOR == {"bitter2": 1.21}


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'; use one of sgd, adam"):
        registry.get("adamx")
    with pytest.raises(ValueError, match="unknown importance variant 'bitter10'; use one of bitter0"):
        score_registry.get("bitter10")
