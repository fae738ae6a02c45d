"""create(name, model, **hparams): the one place that maps names to optimizers and pruning."""
from __future__ import annotations

from lib.optimizers import core
from lib.optimizers.groups import param_groups
from lib.optimizers.spam import Spam
from lib.pruning import Pruner, prunable_weights

NAMES = ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune")
PRUNING = ("none", "magnitude", "movement", "state")
BASES = ("adamw", "adamwspam")
DEFAULTS = dict(betas=(0.9, 0.999), eps=1e-8, momentum=0.9, eta_min=1e-6, total_steps=None, amsgrad=None,
                spam_theta=50.0, spam_interval=1000, spam_warmup=150, pruning=None, variant=None,
                base="adamw", target_sparsity=0.0, warmup_end=0, ramp_end=0, frequency=50, shape="cubic",
                scope="global", prune_tied=False, grad_clip=0.0, fused=None, nm=None)


def _number(name, value, *, low=None, low_open=False, high_open=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high_open is not None and value >= high_open:
        raise ValueError(f"{name} must be < {high_open}, got {value!r}")


def _check(name, hp):
    if name not in NAMES:
        raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(NAMES)}")
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
    if name == "adamwadv":
        steps = hp["total_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"adamwadv's cosine needs total_steps (a whole number >= 1), got {steps!r}")
    if hp["base"] not in BASES:
        raise ValueError(f"unknown base optimizer {hp['base']!r}; use one of {', '.join(BASES)}")
    if hp["base"] != "adamw" and name != "adamwprune":
        raise ValueError(f"base={hp['base']!r} only applies to adamwprune; use optimizer {hp['base']!r} directly")
    if hp["pruning"] not in PRUNING:
        raise ValueError(f"unknown pruning method {hp['pruning']!r}; use one of {', '.join(PRUNING)}")
    if hp["pruning"] == "state" and name != "adamwprune":
        raise ValueError(f"state-based pruning reads AdamWPrune's state; use optimizer adamwprune, "
                         f"not {name!r}, or pruning magnitude/movement")
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
        except RuntimeError:
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
    hp = {**DEFAULTS, **hparams, "lr": lr, "weight_decay": weight_decay}
    if hp["pruning"] is None:
        hp["pruning"] = "state" if name == "adamwprune" else "none"
    _check(name, hp)
    pruning = hp["pruning"]
    # the schedule, scope and variant are checked by the Pruner
    variant = (hp["variant"] or "bitter7") if pruning == "state" else None  # SPEC: the recommended variant

    groups = param_groups(model, weight_decay)
    betas = tuple(float(b) for b in hp["betas"])
    amsgrad = hp["amsgrad"] if hp["amsgrad"] is not None else name == "adamwadv"
    if name == "sgd":
        opt = _build(core.SGD, groups, hp["fused"], lr=lr, momentum=hp["momentum"])
    elif name == "adam":
        opt = _build(core.Adam, groups, hp["fused"], lr=lr, betas=betas, eps=hp["eps"], amsgrad=bool(amsgrad))
    else:
        cls = {"adamw": core.AdamW, "adamwadv": core.AdamWAdv, "adamwspam": core.AdamWSpam,
               "adamwprune": core.AdamWPrune}[name]
        opt = _build(cls, groups, hp["fused"], lr=lr, betas=betas, eps=hp["eps"], amsgrad=bool(amsgrad))

    spam = None
    if name == "adamwspam" or (name == "adamwprune" and hp["base"] == "adamwspam"):
        spam = Spam(hp["spam_theta"], hp["spam_interval"], hp["spam_warmup"])
    grad_clip = hp["grad_clip"] if hp["grad_clip"] > 0 else (1.0 if name == "adamwadv" else 0.0)
    cosine = (float(hp["eta_min"]), hp["total_steps"]) if name == "adamwadv" else None
    prunable = prunable_weights(model, include_tied=bool(hp["prune_tied"]))
    pruner = None
    if pruning != "none":
        pruner = Pruner(opt, prunable, method=pruning, variant=variant, target=hp["target_sparsity"],
                        warmup_end=hp["warmup_end"], ramp_end=hp["ramp_end"], frequency=hp["frequency"],
                        shape=hp["shape"], scope=hp["scope"], nm=hp["nm"])
    opt._knlp_setup(prunable=prunable, pruner=pruner, grad_clip=grad_clip, spam=spam, cosine=cosine)
    return opt
