"""Training-curve plot of one run (curves.png) from its metrics.jsonl records."""
from __future__ import annotations

from pathlib import Path

from lib.lifecycle.atomic import atomic_write


def plot_curves(records: list[dict], path: Path | str, *, title: str, metric: str) -> bool:
    """Loss, quality metric, sparsity and LR against the optimizer step; False if nothing to plot."""
    points = [r for r in records if r.get("step") is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in points]

    def series(key):
        return [r.get(key) if r.get(key) is not None else float("nan") for r in points]

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    ax = axes[0][0]
    ax.plot(steps, series("train_loss"), marker=".", label="train")
    ax.plot(steps, series("test_loss"), marker=".", label="test")
    ax.set_ylabel("loss")
    ax.legend()
    ax = axes[0][1]
    ax.plot(steps, series(metric), marker=".", color="tab:green")
    ax.set_ylabel("accuracy (%)" if metric == "accuracy" else "perplexity")
    if metric == "perplexity":
        ax.set_yscale("log")
    ax = axes[1][0]
    ax.plot(steps, [100 * v for v in series("sparsity")], marker=".", color="tab:red")
    ax.set_ylabel("sparsity (%)")
    ax = axes[1][1]
    ax.plot(steps, series("lr"), marker=".", color="tab:purple")
    ax.set_ylabel("learning rate (last step)")
    for ax in axes.flat:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100), binary=True)
    plt.close(fig)
    return True
