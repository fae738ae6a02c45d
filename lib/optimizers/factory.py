"""create(name, model, **hparams): builds the registered optimizer `name` with its pruning."""
from __future__ import annotations

from lib.optimizers import core, registry
from lib.optimizers.groups import param_groups
from lib.optimizers.registry import BASES, NAMES, PRUNING  # noqa: F401 (public names)
from lib.optimizers.spam import Spam
from lib.pruning import Pruner, prunable_weights
from lib.pruning.score_registry import RECOMMENDED

# what every optimizer accepts; the knobs one optimizer adds come from its registry entry
DEFAULTS = dict(betas=(0.9, 0.999), eps=1e-8, amsgrad=None, total_steps=None, pruning=None, variant=None,
                base=registry.BASES[0], target_sparsity=0.0, warmup_end=0, ramp_end=0, frequency=50, shape="cubic",
                scope="global", prune_tied=False, grad_clip=0.0, fused=None, nm=None, **registry.KNOB_DEFAULTS)


def _number(name, value, *, low=None, low_open=False, high_open=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high_open is not None and value >= high_open:
        raise ValueError(f"{name} must be < {high_open}, got {value!r}")


def _check(entry, hp):
    _number("lr", hp["lr"], low=0)
    _number("weight_decay", hp["weight_decay"], low=0)
    betas = hp["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        _number(f"betas[{i}]", b, low=0, high_open=1.0)
    _number("eps", hp["eps"], low=0, low_open=True)
    _number("momentum", hp["momentum"], low=0)
    _number("eta_min", hp["eta_min"], low=0)
    _number("grad_clip", hp["grad_clip"], low=0)
    if entry.cosine:
        steps = hp["total_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{entry.name}'s cosine needs total_steps (a whole number >= 1), got {steps!r}")
    with_bases = [o.name for o in registry.OPTIMIZERS if o.bases]
    if hp["base"] not in BASES:
        raise ValueError(f"unknown base optimizer {hp['base']!r}; use one of {', '.join(BASES)}")
    if hp["base"] != BASES[0] and not entry.bases:
        raise ValueError(f"base={hp['base']!r} only applies to {', '.join(with_bases)}; "
                         f"use optimizer {hp['base']!r} directly")
    if hp["pruning"] not in PRUNING:
        raise ValueError(f"unknown pruning method {hp['pruning']!r}; use one of {', '.join(PRUNING)}")
    if hp["pruning"] == "state" and not entry.state_pruning:
        state = [o.name for o in registry.OPTIMIZERS if o.state_pruning]
        raise ValueError(f"state-based pruning reads AdamWPrune's state; use optimizer {' or '.join(state)}, "
                         f"not {entry.name!r}, or pruning magnitude/movement")
    if hp["fused"] not in (None, True, False):
        raise ValueError(f"fused must be None (auto), True or False, got {hp['fused']!r}")


def reschedule(opt, *, total_steps, warmup_end, ramp_end, frequency) -> None:
    """Set the step counts of a built optimizer's schedules, as create() would have with them:
    adamwadv's cosine length and the pruning ramp. A time-budgeted run learns its length only
    after the optimizer exists (lib/training/engine.py), and must not build a second one."""
    if opt.cosine is not None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"adamwadv's cosine needs total_steps (a whole number >= 1), got {total_steps!r}")
        opt.cosine = (opt.cosine[0], total_steps)
    if opt.pruner is not None:
        opt.pruner.set_schedule(warmup_end=warmup_end, ramp_end=ramp_end, frequency=frequency)


def _build(cls, groups, fused, **kw):
    """torch's fused kernel where the device supports it, else foreach (same math)."""
    if fused is not False:
        try:
            return cls(groups, fused=True, **kw)
        except (RuntimeError, TypeError):  # TypeError: a torch class with no fused kernel at all
            if fused:
                raise
    return cls(groups, foreach=True, **kw)


def create(name, model, *, lr, weight_decay, **hparams):
    """A torch optimizer for `model` with the SPEC's groups, SPAM, clipping and pruning.

    The result has .sparsity(), .prunable_count() and .memory_bytes() (dict of ints:
    state, pruning, transient_peak, weights); see lib/optimizers/core.py for the step.
    """
    unknown = sorted(set(hparams) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown optimizer hyperparameter(s) {', '.join(unknown)}; "
                         f"known: lr, weight_decay, {', '.join(DEFAULTS)}")
    entry = registry.get(name)
    hp = {**DEFAULTS, **hparams, "lr": lr, "weight_decay": weight_decay}
    if hp["pruning"] is None:
        hp["pruning"] = "state" if entry.state_pruning else "none"
    _check(entry, hp)
    pruning = hp["pruning"]
    # the schedule, scope and variant are checked by the Pruner
    variant = (hp["variant"] or RECOMMENDED) if pruning == "state" else None

    groups = param_groups(model, weight_decay)
    hp["betas"] = tuple(float(b) for b in hp["betas"])
    hp["amsgrad"] = bool(hp["amsgrad"] if hp["amsgrad"] is not None else entry.amsgrad)
    opt = _build(core.knlp_class(entry.cls), groups, hp["fused"], lr=lr, **{k: hp[k] for k in entry.knobs})
    opt.second_moment = entry.second_moment  # where masks live (lib/pruning/masks.py representation)

    spam = None
    if registry.base_of(entry, hp["base"]).spam:
        spam = Spam(hp["spam_theta"], hp["spam_interval"], hp["spam_warmup"])
    grad_clip = hp["grad_clip"] if hp["grad_clip"] > 0 else entry.grad_clip
    cosine = (float(hp["eta_min"]), hp["total_steps"]) if entry.cosine else None
    prunable = prunable_weights(model, include_tied=bool(hp["prune_tied"]))
    pruner = None
    if pruning != "none":
        pruner = Pruner(opt, prunable, method=pruning, variant=variant, target=hp["target_sparsity"],
                        warmup_end=hp["warmup_end"], ramp_end=hp["ramp_end"], frequency=hp["frequency"],
                        shape=hp["shape"], scope=hp["scope"], nm=hp["nm"])
    opt._knlp_setup(prunable=prunable, pruner=pruner, grad_clip=grad_clip, spam=spam, cosine=cosine)
    return opt
