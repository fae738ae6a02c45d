"""mlp2's registry entry: its Kconfig symbols to run values."""
from lib.configuration.model_registry import Model


def values(cfg) -> dict:
    return {"epochs": cfg.MLP2_EPOCHS, "max_iters": None, "lr": cfg.MLP2_LEARNING_RATE, "weight_decay": 0.0,
            "options": {"dataset": "blobs", "hidden": cfg.MLP2_HIDDEN}}


MODELS = (Model(name="mlp2", metric="accuracy", auto_batch=(4.0, 64, 1.0), datasets=("blobs",), values=values),)
