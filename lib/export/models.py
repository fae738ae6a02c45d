"""The architecture a RunSpec trained, built without its data (for export and benchmarks).

Each model folder says how in its export.py (build_model, constructor_text, example_input;
optionally TIED and extra_exports); this module finds it through the model registry.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from torch import nn

from lib.configuration import model_registry
from lib.training.task import BadInput


def exporter(spec) -> ModuleType:
    """The export.py of the folder that declares spec.model."""
    entry = model_registry.find(spec.model)
    if entry is None:
        raise BadInput(f"spec.json names model {spec.model!r}, which this version cannot rebuild")
    name = f"{entry.folder}.export"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            raise
        raise BadInput(f"model {spec.model!r} cannot be exported: {entry.folder}/export.py is missing "
                       "(docs/extending.md, 'Adding a model')") from None


def build_model(spec) -> nn.Module:
    """A freshly initialised model of the run's architecture, on the CPU, in contiguous layout."""
    return exporter(spec).build_model(spec)


def constructor_text(spec) -> str:
    """How someone without knlp's code rebuilds the architecture (written into export/model.json)."""
    return exporter(spec).constructor_text(spec)


def tied_weights(spec) -> frozenset:
    """State-dict keys stored only through the weight they are tied to (GPT-2's head)."""
    return frozenset(getattr(exporter(spec), "TIED", ()))
