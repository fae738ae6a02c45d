"""LeNet-5's registry entry (lib/configuration/model_registry.py): its Kconfig symbols to run values."""
from lib.configuration.model_registry import Model


def values(cfg) -> dict:
    return {"epochs": cfg.LENET5_EPOCHS, "max_iters": None, "lr": cfg.LENET5_LEARNING_RATE,
            "weight_decay": cfg.LENET5_WEIGHT_DECAY,
            "options": {"dataset": "mnist_sample" if cfg.LENET5_DATASET_MNIST_SAMPLE else "mnist"}}


# auto_batch: LeNet-5's activations are tiny, so its batch is bounded by the target, not
# memory, and torch.compile changes nothing (eager factor 1).
MODELS = (Model(name="lenet5", metric="accuracy", auto_batch=(4.0, 512, 1.0),
                datasets=("mnist", "mnist_sample"), values=values),)
