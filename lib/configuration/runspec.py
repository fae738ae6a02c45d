"""What one training run is: a RunSpec, built from a Config and the sweep's axes.

The test matrix builds many RunSpecs from one Config (test_matrix/expand.py); a single
run is a matrix of one. The engine trains exactly what its RunSpec says.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from lib.optimizers import registry as optimizer_registry
from lib.pruning import score_registry

MODELS = ("lenet5", "resnet18", "resnet50", "gpt2")
OPTIMIZERS = optimizer_registry.NAMES
PRUNING_METHODS = score_registry.PRUNING_METHODS
VARIANTS = score_registry.STATE_VARIANTS
SPARSITY_LEVELS = (50, 70, 80, 90, 95, 99)

# variant -> step-budget factor of the unequal-budget variants (bitter2, SPEC), from the score registry
UNEQUAL_BUDGET = score_registry.BUDGET_FACTOR
GPT2_124M_SHAPE = (12, 12, 768, 1024)  # n_layer, n_head, n_embd, block_size


@dataclass(frozen=True)
class RunSpec:
    model: str
    optimizer: str
    pruning: str
    variant: str | None
    sparsity: float
    seed: int
    # budget: epochs for the CNNs, iterations for GPT-2; budget_factor > 1 only for bitter2
    epochs: int | None
    max_iters: int | None
    budget_factor: float
    # one pruning schedule per comparison, in optimizer steps (ramp_end 0 = 3/4 of the base budget)
    prune_warmup: int
    prune_ramp_end: int
    prune_frequency: int
    prune_shape: str
    prune_scope: str
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
    prune_nm: str = ""

    @property
    def unequal_budget(self) -> bool:
        return self.budget_factor != 1.0

    @property
    def model_tag(self) -> str:
        """The model as run IDs name it: a GPT-2 other than 124M is "gpt2tiny", so that a tiny
        CPU run and a 124M run never share a run directory."""
        shape = tuple(self.model_options.get(k) for k in ("n_layer", "n_head", "n_embd", "block_size"))
        return "gpt2tiny" if self.model == "gpt2" and shape != GPT2_124M_SHAPE else self.model

    @property
    def run_id(self) -> str:
        parts = [self.model_tag, self.optimizer]
        if self.variant:
            parts.append(self.variant)
        parts.append(self.pruning)
        if self.pruning != "none":
            parts.append(f"s{round(self.sparsity * 100)}")
        if self.prune_nm:
            parts.append("nm" + self.prune_nm.replace(":", "of"))
        parts.append(settings_digest(self))
        parts.append(f"seed{self.seed}")
        return "-".join(parts)

    @property
    def comparison_key(self) -> tuple:
        """Runs with the same key form one comparison and must share schedule and budget."""
        return (self.model, self.sparsity if self.pruning != "none" else None)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if not data["prune_nm"]:
            del data["prune_nm"]  # unstructured runs keep the spec.json they always had
        data["run_id"] = self.run_id
        data["unequal_budget"] = self.unequal_budget
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("optimizer_args",):
            if isinstance(values.get(key, {}).get("betas"), list):
                values[key] = {**values[key], "betas": tuple(values[key]["betas"])}
        return cls(**values)


def settings_digest(spec: RunSpec) -> str:
    """8 hex digits of every setting but the seed: runs that differ in anything (dataset, LR,
    threads ...) get different run IDs and directories; the seeds of one config share it."""
    data = dataclasses.asdict(spec)
    data.pop("seed")
    text = json.dumps(data, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _model_values(cfg, model: str) -> dict:
    if model == "lenet5":
        return {"epochs": cfg.LENET5_EPOCHS, "max_iters": None, "lr": cfg.LENET5_LEARNING_RATE,
                "weight_decay": cfg.LENET5_WEIGHT_DECAY,
                "options": {"dataset": "mnist_sample" if cfg.LENET5_DATASET_MNIST_SAMPLE else "mnist"}}
    if model in ("resnet18", "resnet50"):
        return {"epochs": cfg.RESNET_EPOCHS, "max_iters": None, "lr": cfg.RESNET_LEARNING_RATE,
                "weight_decay": cfg.RESNET_WEIGHT_DECAY,
                "options": {"dataset": "cifar10" if model == "resnet18" else "cifar100",
                            "augment": cfg.RESNET_AUGMENT,
                            "stem": "imagenet" if (model == "resnet50" and cfg.RESNET50_STEM_IMAGENET) else "cifar"}}
    if model == "gpt2":
        size = (dict(zip(("n_layer", "n_head", "n_embd", "block_size"), GPT2_124M_SHAPE)) if cfg.GPT2_SIZE_124M else
                {"n_layer": cfg.GPT2_TINY_N_LAYER, "n_head": cfg.GPT2_TINY_N_HEAD,
                 "n_embd": cfg.GPT2_TINY_N_EMBD, "block_size": cfg.GPT2_TINY_BLOCK_SIZE})
        dataset = ("finewebedu" if cfg.GPT2_DATASET_FINEWEBEDU else
                   "local_text" if cfg.GPT2_DATASET_LOCAL_TEXT else
                   "python_docs" if cfg.GPT2_DATASET_PYTHON_DOCS else "generated")
        return {"epochs": None, "max_iters": cfg.GPT2_MAX_ITERS, "lr": cfg.GPT2_LEARNING_RATE,
                "weight_decay": cfg.GPT2_WEIGHT_DECAY,
                "options": {**size, "dataset": dataset, "text_dir": cfg.GPT2_TEXT_DIR,
                            "doc_dir": cfg.GPT2_SYSTEM_DOC_DIR,
                            "tokenizer": "byte" if cfg.GPT2_TOKENIZER_BYTE else "gpt2",
                            "vocab_pad": cfg.GPT2_VOCAB_PAD, "token_budget": cfg.GPT2_TOKEN_BUDGET,
                            "val_fraction": cfg.GPT2_VAL_FRACTION, "eval_iters": cfg.GPT2_EVAL_ITERS,
                            "dropout": cfg.GPT2_DROPOUT, "prune_tied": cfg.GPT2_PRUNE_TIED_EMBEDDING}}
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def _lr_schedule(cfg, model: str, model_values: dict) -> dict:
    if model == "gpt2":
        return {"kind": "warmup_cosine", "warmup": cfg.GPT2_WARMUP_ITERS, "min_lr": cfg.GPT2_MIN_LR}
    kind = "cosine" if cfg.LR_SCHEDULE_COSINE else "step" if cfg.LR_SCHEDULE_STEP else "constant"
    return {"kind": kind, "warmup": cfg.LR_WARMUP_EPOCHS, "min_lr": 0.0,
            "step_epochs": cfg.LR_STEP_EPOCHS, "step_gamma": cfg.LR_STEP_GAMMA}


def _optimizer_args(cfg, model: str, optimizer: str, model_values: dict) -> dict:
    args = {"lr": model_values["lr"], "weight_decay": model_values["weight_decay"],
            "betas": (cfg.ADAM_BETA1, cfg.ADAM_BETA2), "eps": cfg.ADAM_EPS}
    args.update(optimizer_registry.kconfig_args(optimizer_registry.get(optimizer), cfg))
    if model == "gpt2":
        args["grad_clip"] = cfg.GPT2_GRAD_CLIP
        args["prune_tied"] = cfg.GPT2_PRUNE_TIED_EMBEDDING
    return args


def build(cfg, *, model: str, optimizer: str, pruning: str, variant: str | None,
          sparsity: float, seed: int) -> RunSpec:
    """The RunSpec for one point of the sweep, with every knob taken from `cfg`."""
    values = _model_values(cfg, model)
    pruned = pruning != "none"
    return RunSpec(
        model=model, optimizer=optimizer, pruning=pruning, variant=variant,
        sparsity=sparsity if pruned else 0.0, seed=seed,
        epochs=values["epochs"], max_iters=values["max_iters"],
        budget_factor=UNEQUAL_BUDGET.get(variant, 1.0),
        prune_warmup=cfg.PRUNING_WARMUP if pruned else 0,
        prune_ramp_end=cfg.PRUNING_RAMP_END if pruned else 0,
        prune_frequency=cfg.PRUNING_FREQUENCY if pruned else 0,
        prune_shape=("linear" if cfg.PRUNING_SCHEDULE_LINEAR else "cubic") if pruned else "cubic",
        prune_scope=("layer" if cfg.PRUNING_SCOPE_LAYER else "global") if pruned else "global",
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
        prune_nm=f"{cfg.PRUNING_NM_N}:{cfg.PRUNING_NM_M}" if pruned and cfg.PRUNING_MASK_NM else "",
    )
