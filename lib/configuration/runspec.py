"""What one training run is: a RunSpec, built from a Config and the sweep's axes.

The test matrix builds many RunSpecs from one Config (test_matrix/expand.py); a single
run is a matrix of one. The engine trains exactly what its RunSpec says.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from lib.configuration import model_registry, vocabulary
from lib.optimizers import registry as optimizer_registry
from lib.pruning import score_registry

OPTIMIZERS = optimizer_registry.NAMES
PRUNING_METHODS = score_registry.PRUNING_METHODS
VARIANTS = score_registry.STATE_VARIANTS
SPARSITY_LEVELS = (50, 70, 80, 90, 95, 99)

# variant -> step-budget factor of the unequal-budget variants (bitter2, SPEC), from the score registry
UNEQUAL_BUDGET = score_registry.BUDGET_FACTOR


@dataclass(frozen=True)
class RunSpec:
    model: str
    optimizer: str
    pruning: str
    variant: str | None
    target_sparsity: float
    seed: int
    # budget: epochs for the CNNs, iterations for GPT-2; budget_factor > 1 only for bitter2
    epochs: int | None
    max_iters: int | None
    budget_factor: float
    # one pruning schedule per comparison, in optimizer steps (ramp_end 0 = 3/4 of the base budget);
    # the names lib.optimizers.create() takes (lib/configuration/vocabulary.py)
    warmup_end: int
    ramp_end: int
    frequency: int
    shape: str
    scope: str
    # arguments for lib.optimizers.create besides the schedule (lr, weight_decay, betas ...)
    optimizer_args: dict
    # learning-rate schedule: kind constant|cosine|step|warmup_cosine, warmup (epochs or iters), min_lr ...
    lr_schedule: dict
    # batch: auto, target (0 = model default), batch_size, grad_acc (manual), ddp_nproc
    batch: dict
    # runtime: device auto|cpu|cuda, compile, amp None|"bf16"|"fp16", time_budget_s,
    # eval_interval, checkpoint_interval, data_dir, download
    runtime: dict
    # per-model knobs (dataset choice, sizes, augmentation, stem ...)
    model_options: dict = field(default_factory=dict)
    # N:M semi-structured masks ("2:4"), or "" for unstructured (lib/pruning/nm.py)
    nm: str = ""

    @property
    def unequal_budget(self) -> bool:
        return self.budget_factor != 1.0

    @property
    def model_tag(self) -> str:
        """The model as run IDs name it: its registry entry may tell sizes apart (a GPT-2 other
        than 124M is "gpt2tiny"); a model no folder declares keeps its name."""
        entry = model_registry.find(self.model)
        return entry.tag(self.model_options) if entry else self.model

    @property
    def run_id(self) -> str:
        parts = [self.model_tag, self.optimizer]
        if self.variant:
            parts.append(self.variant)
        parts.append(self.pruning)
        if self.pruning != "none":
            parts.append(f"s{round(self.target_sparsity * 100)}")
        if self.nm:
            parts.append("nm" + self.nm.replace(":", "of"))
        parts.append(settings_digest(self))
        parts.append(f"seed{self.seed}")
        return "-".join(parts)

    @property
    def comparison_key(self) -> tuple:
        """Runs with the same key form one comparison and must share schedule and budget."""
        return (self.model, self.target_sparsity if self.pruning != "none" else None)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if not data["nm"]:
            del data["nm"]  # unstructured runs keep the spec.json they always had
        data["run_id"] = self.run_id
        data["unequal_budget"] = self.unequal_budget
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        """The RunSpec of a spec.json, also one written under the names before issue 11."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vocabulary.upgrade_spec(data).items() if k in names})


def settings_digest(spec: RunSpec) -> str:
    """8 hex digits of every setting but the seed: runs that differ in anything (dataset, LR,
    threads ...) get different run IDs and directories; the seeds of one config share it.

    The hash is taken over a fixed canonical form: the fields under the names they had before
    the one-vocabulary rename (vocabulary.legacy_spec), keys sorted, tuples as lists; so a field
    renamed in the code leaves every existing run's ID (and its run directory) as it was."""
    data = vocabulary.legacy_spec(dataclasses.asdict(spec))
    data.pop("seed")
    text = json.dumps(data, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _lr_schedule(cfg, model: str, model_values: dict) -> dict:
    """The model's own schedule rule if its registry entry has one, else the shared LR_SCHEDULE_* one."""
    own = model_registry.get(model).lr_schedule
    if own is not None:
        return own(cfg)
    kind = "cosine" if cfg.LR_SCHEDULE_COSINE else "step" if cfg.LR_SCHEDULE_STEP else "constant"
    return {"kind": kind, "warmup": cfg.LR_WARMUP_EPOCHS, "min_lr": 0.0,
            "step_epochs": cfg.LR_STEP_EPOCHS, "step_gamma": cfg.LR_STEP_GAMMA}


def _optimizer_args(cfg, model: str, optimizer: str, model_values: dict) -> dict:
    args = {"lr": model_values["lr"], "weight_decay": model_values["weight_decay"],
            "betas": [cfg.ADAM_BETA1, cfg.ADAM_BETA2], "eps": cfg.ADAM_EPS}  # JSON's form: spec.json reads back equal
    args.update(optimizer_registry.kconfig_args(optimizer_registry.get(optimizer), cfg))
    own = model_registry.get(model).optimizer_args  # e.g. GPT-2's grad_clip (gpt2/registry.py)
    if own is not None:
        args.update(own(cfg))
    return args


def build(cfg, *, model: str, optimizer: str, pruning: str, variant: str | None,
          target_sparsity: float, seed: int) -> RunSpec:
    """The RunSpec for one point of the sweep, with every knob taken from `cfg`."""
    values = model_registry.get(model).run_values(cfg)
    pruned = pruning != "none"
    return RunSpec(
        model=model, optimizer=optimizer, pruning=pruning, variant=variant,
        target_sparsity=target_sparsity if pruned else 0.0, seed=seed,
        epochs=values["epochs"], max_iters=values["max_iters"],
        budget_factor=UNEQUAL_BUDGET.get(variant, 1.0),
        warmup_end=cfg.PRUNING_WARMUP if pruned else 0,
        ramp_end=cfg.PRUNING_RAMP_END if pruned else 0,
        frequency=cfg.PRUNING_FREQUENCY if pruned else 0,
        shape=("linear" if cfg.PRUNING_SCHEDULE_LINEAR else "cubic") if pruned else "cubic",
        scope=("layer" if cfg.PRUNING_SCOPE_LAYER else "global") if pruned else "global",
        optimizer_args=_optimizer_args(cfg, model, optimizer, values),
        lr_schedule=_lr_schedule(cfg, model, values),
        batch={"auto": cfg.HYPER_PARAM_AUTO, "target": cfg.TARGET_EFFECTIVE_BATCH or 0,
               "batch_size": cfg.BATCH_SIZE, "grad_acc": cfg.GRAD_ACC, "ddp_nproc": cfg.DDP_NPROC},
        runtime={"device": "cpu" if cfg.DEVICE_CPU else "cuda" if cfg.DEVICE_CUDA else "auto",
                 "compile": cfg.COMPILE,
                 "amp": ("fp16" if cfg.AMP_FP16 else "bf16") if cfg.MIXED_PRECISION else None,
                 "time_budget_s": cfg.TIME_BUDGET_SECONDS, "eval_interval": cfg.EVAL_INTERVAL,
                 "checkpoint_interval": cfg.CHECKPOINT_INTERVAL, "data_dir": cfg.DATA_DIR,
                 "download": cfg.DATA_DOWNLOAD, "threads": cfg.CPU_THREADS},
        model_options=values["options"],
        nm=f"{cfg.PRUNING_NM_N}:{cfg.PRUNING_NM_M}" if pruned and cfg.PRUNING_MASK_NM else "",
    )
