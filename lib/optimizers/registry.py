"""Every optimizer, defined once: its class, knobs, defaults, Kconfig symbols and pruning abilities.

Adding an optimizer is one `Optimizer(...)` entry in OPTIMIZERS (its class in
lib/optimizers/core.py, or any torch.optim class) plus its Kconfig symbols
(docs/extending.md). lib.optimizers.create builds from the entry; the run specification
(lib/configuration/runspec.py) reads the entry's Kconfig knobs; the sweep expansion reads
the names and selecting symbols. This module imports no torch: the sweep planner reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lib.pruning.score_registry import PRUNING_METHODS

PRUNING = PRUNING_METHODS
SPAM_KNOBS = {"spam_theta": "SPAM_THETA", "spam_interval": "SPAM_INTERVAL", "spam_warmup": "SPAM_WARMUP"}
SPAM_DEFAULTS = {"spam_theta": 50.0, "spam_interval": 1000, "spam_warmup": 150}


@dataclass(frozen=True)
class Optimizer:
    name: str
    kconfig: str  # the OPTIMIZER_* symbol that selects it
    # its class: a name in lib/optimizers/core.py, or "torch.optim.NAME" (given the project's
    # step stages, lib/optimizers/core.py knlp_class)
    cls: str
    # constructor arguments besides the parameter groups and lr, taken from create()'s hyperparameters
    knobs: tuple = ("betas", "eps", "amsgrad")
    # defaults of the hyperparameters this optimizer adds to the shared ones (betas, eps, amsgrad,
    # total_steps, grad_clip, the pruning schedule: lib/optimizers/factory.py DEFAULTS)
    defaults: dict = field(default_factory=dict)
    # hyperparameter -> Kconfig symbol, for the run specification (lr here overrides the model's)
    kconfig_knobs: dict = field(default_factory=dict)
    amsgrad: bool = False  # AMSGrad when the caller leaves amsgrad unset
    grad_clip: float = 0.0  # gradient-norm clip when the caller sets none (0: no clipping)
    spam: bool = False  # SPAM's spike clipping and moment resets (lib/optimizers/spam.py)
    cosine: bool = False  # its own cosine LR to eta_min over total_steps
    # keeps Adam's exp_avg_sq, where a pruned position is held as +inf at no memory cost
    # (lib/pruning/masks.py StateMask); otherwise masks are bits
    second_moment: bool = True
    # runs "state" pruning (AdamWPrune's own scores), and only that in a sweep
    state_pruning: bool = False
    # base optimizer -> the Kconfig choice symbol selecting it; the base's SPAM and knobs apply
    bases: dict = field(default_factory=dict)


OPTIMIZERS = (
    Optimizer("sgd", "OPTIMIZER_SGD", "SGD", knobs=("momentum",), defaults={"momentum": 0.9},
              kconfig_knobs={"lr": "SGD_LEARNING_RATE", "momentum": "SGD_MOMENTUM"}, second_moment=False),
    Optimizer("adam", "OPTIMIZER_ADAM", "Adam"),
    Optimizer("adamw", "OPTIMIZER_ADAMW", "AdamW"),
    Optimizer("adamwadv", "OPTIMIZER_ADAMWADV", "AdamWAdv", amsgrad=True, grad_clip=1.0, cosine=True,
              defaults={"eta_min": 1e-6},
              kconfig_knobs={"eta_min": "ADAMWADV_ETA_MIN", "amsgrad": "ADAMWADV_AMSGRAD"}),
    Optimizer("adamwspam", "OPTIMIZER_ADAMWSPAM", "AdamWSpam", spam=True, kconfig_knobs=SPAM_KNOBS,
              defaults=SPAM_DEFAULTS),
    Optimizer("adamwprune", "OPTIMIZER_ADAMWPRUNE", "AdamWPrune", state_pruning=True,
              bases={"adamw": "ADAMWPRUNE_BASE_ADAMW", "adamwspam": "ADAMWPRUNE_BASE_ADAMWSPAM"}),
)

BY_NAME = {o.name: o for o in OPTIMIZERS}
assert len(BY_NAME) == len(OPTIMIZERS), "optimizer names must be unique"
NAMES = tuple(BY_NAME)
KNOB_DEFAULTS = {k: v for o in OPTIMIZERS for k, v in o.defaults.items()}
assert all(KNOB_DEFAULTS[k] == v for o in OPTIMIZERS for k, v in o.defaults.items()), \
    "a hyperparameter two optimizers share must have one default"
# every optimizer a state-pruning one may run on top of ("adamw" first: the default base)
BASES = tuple(dict.fromkeys(b for o in OPTIMIZERS for b in o.bases))


def get(name) -> Optimizer:
    """The registered optimizer `name`; ValueError naming the choices otherwise."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(NAMES)}") from None


def base_of(entry: Optimizer, base: str) -> Optimizer:
    """The optimizer whose SPAM and knobs apply: the base for an entry with bases, else itself."""
    return get(base) if entry.bases else entry


def kconfig_args(entry: Optimizer, cfg) -> dict:
    """The entry's hyperparameters read from a Config (its base's too, and which base)."""
    args = {key: getattr(cfg, sym) for key, sym in entry.kconfig_knobs.items()}
    if entry.bases:
        base = next((b for b, sym in entry.bases.items() if getattr(cfg, sym)), next(iter(entry.bases)))
        args["base"] = base
        if base != entry.name:
            args.update(kconfig_args(get(base), cfg))
    return args
