"""The architecture a RunSpec trained, built without its data (for export and benchmarks)."""
from __future__ import annotations

from torch import nn

from lib.training.task import BadInput

RESNET_CLASSES = {"cifar10": 10, "cifar100": 100}


def build_model(spec) -> nn.Module:
    """A freshly initialised model of the run's architecture, on the CPU, in contiguous layout."""
    options = spec.model_options
    if spec.model == "lenet5":
        from lenet5.model import LeNet5

        return LeNet5()
    if spec.model in ("resnet18", "resnet50"):
        from resnet import model as resnet

        dataset = options.get("dataset", "cifar10" if spec.model == "resnet18" else "cifar100")
        if dataset not in RESNET_CLASSES:
            raise BadInput(f"unknown ResNet dataset {dataset!r} in spec.json; expected one of "
                           f"{', '.join(RESNET_CLASSES)}")
        return resnet.build(spec.model, RESNET_CLASSES[dataset], options.get("stem", "cifar"))
    if spec.model == "gpt2":
        from gpt2.corpus import tokenizers
        from gpt2.model import GPT, config_from_options

        return GPT(config_from_options(options, tokenizers.vocab_size(options.get("tokenizer", "gpt2"))))
    raise BadInput(f"spec.json names model {spec.model!r}, which this version cannot rebuild")


def constructor_text(spec) -> str:
    """How someone without knlp's code rebuilds the architecture (written into export/model.json)."""
    options = spec.model_options
    if spec.model == "lenet5":
        return "lenet5.model.LeNet5() (conv 5x5 1->6, pool, conv 5x5 6->16, pool, 400-120-84-10, ReLU)"
    if spec.model in ("resnet18", "resnet50"):
        dataset = options.get("dataset", "cifar10" if spec.model == "resnet18" else "cifar100")
        text = f"torchvision.models.{spec.model}(weights=None, num_classes={RESNET_CLASSES.get(dataset)})"
        if options.get("stem", "cifar") == "cifar":
            text += ("; then conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False) "
                     "and maxpool = nn.Identity() (CIFAR stem)")
        return text
    return "transformers.GPT2LMHeadModel.from_pretrained('export/hf')"
