"""Every config symbol a run reads reaches the engine: change it, see hparams.json change.

For each scenario (a shipped defconfig, optionally with a different optimizer or
method), a recording Config captures every symbol that lib.configuration.runspec.build reads. Each of
those symbols is then changed the way a user would in menuconfig (through kconfiglib,
so dependencies and choices behave as in real life), the run is re-resolved with the
engine's own lib.configuration.resolve.plan, and the resolved hyperparameters must differ.
"""
import kconfiglib
import pytest

from lib.configuration import config, runspec
from lib.configuration.config import Config, load_kconfig, typed_values
from lib.lifecycle.launch import resolve_nproc
from lib.configuration.resolve import plan
from lib.training.task import BadInput
from test_matrix.expand import expand

TRAIN_SIZES = {"lenet5": 4000, "resnet18": 50000, "resnet50": 50000, "gpt2": None}


class Recording(Config):
    def __init__(self, values):
        super().__init__(values)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        if not name.startswith("_"):
            self.read.add(name)
        return super().__getattr__(name)

    def get(self, name, default=None):
        self.read.add(name)
        return super().get(name, default)


def resolved(values: dict, axes: dict) -> dict:
    spec = runspec.build(Config(values), **axes)
    try:
        hp = plan(spec, train_size=TRAIN_SIZES[spec.model], world_size=resolve_nproc(spec), device_type="cpu",
                  amp=spec.runtime["amp"], compile=spec.runtime["compile"], metric="accuracy", printer=lambda _l: None)
    except BadInput as err:
        return {"rejected": str(err)}  # the engine saw the value and refused it: an effect too
    # amp/compile are resolved to off on the CPU; what the config asked for is kept in *_requested
    return hp


def perturb(kconf, name: str) -> bool:
    """Change symbol `name` as a user could; False when this config offers no change."""
    sym = kconf.syms[name]
    before = sym.str_value
    if not sym.visibility:
        return False
    if sym.choice is not None:
        if sym.tri_value == 2:
            other = next((s for s in sym.choice.syms if s is not sym and s.visibility), None)
            if other is None:
                return False
            other.set_value(2)
        else:
            sym.set_value(2)
    elif sym.orig_type == kconfiglib.BOOL:
        sym.set_value(0 if sym.tri_value == 2 else 2)
    elif sym.orig_type in (kconfiglib.INT, kconfiglib.HEX):
        value = int(before, 0)
        high = max((int(hi.str_value, 0) for _lo, hi, _c in sym.ranges), default=value + 2)
        sym.set_value(str(value + 1 if value + 1 <= high else value - 1))
    else:
        try:
            number = float(before)
            sym.set_value(repr(number * 0.5) if number else "0.25")
        except ValueError:
            sym.set_value(before + "_changed")
    return sym.str_value != before


# (defconfig, extra assignments, which run of the expanded sweep to check)
SCENARIOS = [
    ("lenet5-sample-bitter7", {}, {}),
    ("lenet5-sample-bitter7", {"OPTIMIZER_SGD": 2, "PRUNING_MAGNITUDE": 2}, {"optimizer": "sgd"}),
    ("lenet5-sample-bitter7", {"OPTIMIZER_ADAMWADV": 2, "PRUNING_MOVEMENT": 2}, {"optimizer": "adamwadv"}),
    ("lenet5-sample-bitter7", {"OPTIMIZER_ADAMWSPAM": 2, "PRUNING_NONE": 2}, {"optimizer": "adamwspam"}),
    ("lenet5-sample-bitter7", {"ADAMWPRUNE_BASE_ADAMWSPAM": 2, "HYPER_PARAM_AUTO": 2,
                               "TARGET_EFFECTIVE_BATCH": "128"}, {}),
    ("resnet18-cifar10-bitter7", {}, {}),
    ("resnet50-cifar100-spam-vs-bitter7", {}, {}),
    ("gpt2-finewebedu-bitter7", {}, {}),
]


def scenario_kconfig(defconfig: str, assignments: dict):
    kconf = load_kconfig(config.defconfig_path(defconfig))
    for name, value in assignments.items():
        sym = kconf.syms[name]
        sym.set_value(value)
        assert (sym.tri_value if isinstance(value, int) else sym.str_value) == value, f"{name} did not stick"
    return kconf


@pytest.mark.parametrize("defconfig, assignments, pick", SCENARIOS)
def test_every_symbol_read_reaches_hparams(defconfig, assignments, pick):
    base_values = typed_values(scenario_kconfig(defconfig, assignments))
    first = next(s for s in expand(Config(base_values)) if all(getattr(s, k) == v for k, v in pick.items()))
    axes = {"model": first.model, "optimizer": first.optimizer, "pruning": first.pruning,
            "variant": first.variant, "target_sparsity": first.target_sparsity, "seed": first.seed}
    recorder = Recording(base_values)
    runspec.build(recorder, **axes)
    base = resolved(base_values, axes)
    assert "rejected" not in base, base
    # SGD takes SGD_LEARNING_RATE instead of the model's Adam-family rate (documented in Kconfig)
    not_applicable = {"LENET5_LEARNING_RATE", "RESNET_LEARNING_RATE"} if axes["optimizer"] == "sgd" else set()

    checked, silent = [], []
    for name in sorted(recorder.read):
        kconf = scenario_kconfig(defconfig, assignments)
        if name in not_applicable or not perturb(kconf, name):
            continue
        values = typed_values(kconf)
        if values.get(name) == base_values.get(name):
            continue  # the change did not stick (dependency unmet): users cannot make it either
        checked.append(name)
        if resolved(values, axes) == base:
            silent.append(name)
    assert len(checked) >= 10, f"only {checked} could be changed"
    assert not silent, f"{defconfig} {assignments}: changing {silent} does not change hparams.json"


def test_symbols_checked_cover_the_run_knobs():
    """The scenario for the sample defconfig really exercises the core knobs."""
    path = config.defconfig_path("lenet5-sample-bitter7")
    values = typed_values(load_kconfig(path))
    recorder = Recording(values)
    spec = expand(Config(values))[0]
    runspec.build(recorder, model=spec.model, optimizer=spec.optimizer, pruning=spec.pruning,
                  variant=spec.variant, target_sparsity=spec.target_sparsity, seed=spec.seed)
    for name in ("LENET5_EPOCHS", "LENET5_LEARNING_RATE", "LENET5_WEIGHT_DECAY", "PRUNING_WARMUP",
                 "PRUNING_RAMP_END", "PRUNING_FREQUENCY", "BATCH_SIZE", "GRAD_ACC", "DDP_NPROC", "EVAL_INTERVAL",
                 "CHECKPOINT_INTERVAL", "TIME_BUDGET_SECONDS", "ADAM_BETA1", "ADAM_EPS", "LR_WARMUP_EPOCHS"):
        assert name in recorder.read


def test_seed_reaches_hparams():
    cfg = config.from_defconfig("lenet5-sample-bitter7")
    a, b = expand(cfg)[0], expand(cfg.replace(SEED=cfg.SEED + 5))[0]
    kw = dict(train_size=4000, world_size=1, device_type="cpu", amp=None, compile=False, metric="accuracy",
              printer=lambda _l: None)
    assert plan(a, **kw)["seed"] != plan(b, **kw)["seed"]
