"""ResNet-18 (CIFAR-10) and ResNet-50 (CIFAR-100): registry entries sharing the RESNET_* knobs."""
from lib.configuration.model_registry import Model

DATASET = {"resnet18": "cifar10", "resnet50": "cifar100"}


def _values(model: str):
    def values(cfg) -> dict:
        return {"epochs": cfg.RESNET_EPOCHS, "max_iters": None, "lr": cfg.RESNET_LEARNING_RATE,
                "weight_decay": cfg.RESNET_WEIGHT_DECAY,
                "options": {"dataset": DATASET[model], "augment": cfg.RESNET_AUGMENT,
                            "stem": "imagenet" if (model == "resnet50" and cfg.RESNET50_STEM_IMAGENET) else "cifar"}}
    return values


# auto_batch eager factor 0.5: without torch.compile every BatchNorm, ReLU and residual add
# saves its own output for backward (Inductor fuses and recomputes them), roughly doubling
# activation memory.
MODELS = (Model(name="resnet18", metric="accuracy", auto_batch=(2.0, 512, 0.5),
                datasets=(DATASET["resnet18"],), values=_values("resnet18")),
          Model(name="resnet50", metric="accuracy", auto_batch=(1.5, 512, 0.5),
                datasets=(DATASET["resnet50"],), values=_values("resnet50")))
