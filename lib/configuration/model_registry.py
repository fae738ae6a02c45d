"""The model registry: every model knlp trains, each declared once, in its own folder.

A model folder (lenet5/, resnet/, gpt2/ ...) holds
  Kconfig      its MODEL_<NAME> symbol(s) and its knobs,
  registry.py  MODELS = (Model(...), ...): what the rest of knlp needs to know about it,
  train.py     build_task(spec, ctx) -> lib.training.task.Task,
  export.py    (optional) how `make export` rebuilds the architecture (lib/export/models.py).
The folders are the ones kconfig/Kconfig.models sources (`source "<folder>/Kconfig"`), so
adding a model is a new folder plus that one line (docs/extending.md). lib/ and test_matrix/
name no model (tests/test_model_registry.py checks): they ask this registry.

Loading a registry.py must stay cheap (no torch): the sweep expansion and `make` read it
before anything trains.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lib.configuration import config

# Whether a larger value of a metric is better (test_matrix verdicts and reports).
HIGHER_IS_BETTER = {"accuracy": True, "perplexity": False}
_NAME = re.compile(r"[a-z][a-z0-9]*")


class RegistryError(config.ConfigError):
    """A model folder that does not declare what the registry needs; one line naming the fix
    (a ConfigError, so that make reports it as one line, like any fault of the Kconfig tree)."""


@dataclass(frozen=True)
class Model:
    """One trainable model, as its folder's registry.py declares it.

    values(cfg) -> {"epochs", "max_iters", "lr", "weight_decay", "options"}: the run's
    budget (epochs for an epoch-based task, max_iters for an iteration-based one, the other
    None), its base learning rate and weight decay, and spec.model_options.
    """
    name: str                                  # spec.model, run IDs, Kconfig MODEL_<NAME>
    metric: str                                # "accuracy" (higher is better) or "perplexity" (lower)
    # CONFIG_HYPER_PARAM_AUTO (lib/hwdetect.py): (scale of GPT-2 124M's compiled per-GPU batch,
    # default effective batch, factor on the batch without torch.compile)
    auto_batch: tuple[float, int, float]
    datasets: tuple[str, ...]                  # the values options["dataset"] can take
    values: Callable[[config.Config], dict]
    # LR schedule of spec.lr_schedule; None: the shared LR_SCHEDULE_* rule (lib/configuration/runspec.py)
    lr_schedule: Callable[[config.Config], dict] | None = None
    # what lib.optimizers.create needs from this model besides lr/weight_decay (e.g. grad_clip)
    optimizer_args: Callable[[config.Config], dict] | None = None
    # the model's name in run IDs, from spec.model_options; None: `name`
    run_tag: Callable[[dict], str] | None = None
    folder: str = ""                           # filled in by the registry from Kconfig.models

    @property
    def symbol(self) -> str:
        """The Kconfig symbol (no CONFIG_ prefix) that selects this model for a sweep."""
        return f"MODEL_{self.name.upper()}"

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    @property
    def kconfig(self) -> Path:
        return config.ROOT / self.folder / "Kconfig"

    def run_values(self, cfg) -> dict:
        """values(cfg), held to the entry's own declaration: the dataset must be one of `datasets`."""
        values = self.values(cfg)
        dataset = values["options"].get("dataset")
        if dataset not in self.datasets:
            raise RegistryError(f"{self.folder}/registry.py: {self.name} values() chose dataset {dataset!r}, which "
                                f"is not in its datasets {self.datasets}; add it there")
        return values

    def tag(self, options: dict) -> str:
        return self.run_tag(options) if self.run_tag else self.name

    def task_builder(self) -> Callable:
        """The folder's train.build_task(spec, ctx) -> Task, imported only when a run starts."""
        return importlib.import_module(f"{self.folder}.train").build_task


def _check(entry, folder: str) -> Model:
    where = f"{folder}/registry.py"
    if not isinstance(entry, Model):
        raise RegistryError(f"{where}: MODELS holds {entry!r}, not a Model; declare each as "
                            "lib.configuration.model_registry.Model(...)")
    if not _NAME.fullmatch(entry.name):
        raise RegistryError(f"{where}: model name {entry.name!r} must be lower-case letters and digits "
                            "(it becomes spec.model and the Kconfig symbol MODEL_<NAME>)")
    if entry.metric not in HIGHER_IS_BETTER:
        raise RegistryError(f"{where}: {entry.name} metric {entry.metric!r}; choose one of "
                            f"{', '.join(HIGHER_IS_BETTER)}")
    if not isinstance(entry.datasets, tuple) or not entry.datasets:
        raise RegistryError(f"{where}: {entry.name} datasets must be a non-empty tuple of dataset names")
    scale, target, eager = entry.auto_batch
    if not (scale > 0 and isinstance(target, int) and target > 0 and 0 < eager <= 1):
        raise RegistryError(f"{where}: {entry.name} auto_batch {entry.auto_batch!r} must be (scale > 0, "
                            "default effective batch >= 1, eager factor in (0, 1])")
    return dataclasses.replace(entry, folder=folder)


@functools.cache
def _registry() -> dict[str, Model]:
    models: dict[str, Model] = {}
    for folder in config.model_folders():
        if not folder.isidentifier():
            raise RegistryError(f"kconfig/Kconfig.models sources {folder}/Kconfig; a model folder's name must be "
                                "a Python identifier (letters, digits, _) so that its registry.py can be imported")
        if not (config.ROOT / folder / "registry.py").is_file():
            raise RegistryError(f"kconfig/Kconfig.models sources {folder}/Kconfig but {folder}/registry.py is "
                                "missing; add it (docs/extending.md, 'Adding a model') or remove the source line")
        declared = getattr(importlib.import_module(f"{folder}.registry"), "MODELS", None)
        if not isinstance(declared, (tuple, list)) or not declared:
            raise RegistryError(f"{folder}/registry.py must define MODELS = (Model(...), ...)")
        for entry in declared:
            entry = _check(entry, folder)
            if entry.name in models:
                raise RegistryError(f"model {entry.name!r} is declared by both {models[entry.name].folder}/ and "
                                    f"{folder}/; rename one")
            models[entry.name] = entry
    return models


def names() -> tuple[str, ...]:
    """Every model's name, in Kconfig.models order (the sweep's order)."""
    return tuple(_registry())


def entries() -> tuple[Model, ...]:
    return tuple(_registry().values())


def get(name: str) -> Model:
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(names())}") from None


def find(name: str | None) -> Model | None:
    """The entry of `name`, or None when no folder declares it (old or synthetic results)."""
    return _registry().get(name)


def metric_of(name: str | None, default: str = "accuracy") -> str:
    """The metric a model reports; `default` for a name no folder declares."""
    entry = find(name)
    return entry.metric if entry else default
