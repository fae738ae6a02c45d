"""Plots of a sweep (PNG, matplotlib without a display).

- metric_vs_sparsity.png: final metric vs target sparsity per method, error bars = std over
  seeds; dense runs as dashed horizontal lines (they have no sparsity axis).
- curves-<model>.png: test metric and training loss vs optimizer step per configuration,
  mean over seeds.
- memory.png: optimizer state and pruning buffers per method, from the runs' accounting.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lib.configuration import model_registry  # noqa: E402
from lib.lifecycle.atomic import atomic_write  # noqa: E402

LEGEND_MAX = 24


def memory_columns(table: pd.DataFrame) -> tuple[str | None, str | None, str | None]:
    """(optimizer state bytes, pruning buffer bytes, state+pruning per weight byte) columns.

    The engine's summary.json holds memory = {weights, state, pruning, transient_peak,
    <key>_ratio, state_plus_pruning_ratio} from the optimizer's own accounting.
    """
    present = set(table.columns)
    pick = lambda name: name if name in present else None  # noqa: E731
    return pick("memory.state"), pick("memory.pruning"), pick("memory.state_plus_pruning_ratio")


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110), binary=True)
    plt.close(fig)


def method_label(row) -> str:
    if row["variant"]:
        return f"{row['optimizer']} {row['variant']}"
    return f"{row['optimizer']} {'dense' if row['pruning'] == 'none' else row['pruning']}"


def metric_vs_sparsity(table: pd.DataFrame, path: Path) -> Path | None:
    models = list(dict.fromkeys(table["model"]))
    if table.empty or not table["final_mean"].notna().any():
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = table[(table["model"] == model) & table["final_mean"].notna()]
        metric = rows["metric"].iloc[0] if len(rows) else "accuracy"
        pruned = rows[rows["pruning"] != "none"]
        methods = list(pruned.groupby(pruned.apply(method_label, axis=1), sort=False)) if len(pruned) else []
        for index, (label, group) in enumerate(methods):
            group = group.sort_values("target_sparsity")
            # Nudge methods apart sideways so error bars at one sparsity do not hide each other.
            dodge = 0.6 * (index - (len(methods) - 1) / 2)
            ax.errorbar(group["target_sparsity"] + dodge, group["final_mean"], yerr=group["final_std"].fillna(0),
                        marker="o", capsize=3, label=label)
        for index, (_, row) in enumerate(rows[rows["pruning"] == "none"].iterrows()):
            ax.axhline(row["final_mean"], color="0.3", linestyle=("--", ":", "-.")[index % 3], linewidth=1,
                       label=f"{row['optimizer']} dense")
        levels = sorted(set(pruned["target_sparsity"].dropna()))
        if levels:  # ticks at the real levels; a margin so that one level is not a zoomed-in sliver
            ax.set_xticks(levels)
            ax.set_xlim(levels[0] - 5, levels[-1] + 5)
        ax.set_title(model)
        ax.set_xlabel("target sparsity (%)")
        ax.set_ylabel(f"final {metric}")
        if metric == "perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def curves(runs, path_for_model) -> list[Path]:
    """One figure per model: test metric and train loss vs step, one line per configuration."""
    made = []
    by_model: dict[str, list] = {}
    for run in runs:
        if run.metrics:
            by_model.setdefault(run.spec.get("model"), []).append(run)
    for model, model_runs in by_model.items():
        records = pd.DataFrame([dict(m, config=r.config_id) for r in model_runs for m in r.metrics])
        if records.empty or "step" not in records:
            continue
        metric = model_registry.metric_of(model)
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        for config, group in records.groupby("config", sort=False):
            mean = group.groupby("step")[[c for c in (metric, "train_loss") if c in group]].mean(numeric_only=True)
            if metric in mean:
                left.plot(mean.index, mean[metric], label=config)
            if "train_loss" in mean:
                right.plot(mean.index, mean["train_loss"], label=config)
        left.set(title=f"{model}: test {metric} (mean over seeds)", xlabel="optimizer step", ylabel=metric)
        right.set(title=f"{model}: training loss", xlabel="optimizer step", ylabel="train loss")
        if metric == "perplexity":
            left.set_yscale("log")
        for ax in (left, right):
            ax.grid(alpha=0.3)
        if records["config"].nunique() <= LEGEND_MAX:  # past that a legend hides the plot; report.html names each curve
            left.legend(fontsize=7)
        fig.tight_layout()
        path = path_for_model(model)
        _save(fig, path)
        made.append(path)
    return made


def memory(table: pd.DataFrame, path: Path) -> Path | None:
    optimizer, buffers, _ratio = memory_columns(table)
    if not optimizer and not buffers:
        return None
    rows = table[[c for c in (optimizer, buffers) if c]].notna().any(axis=1)
    rows = table[rows]
    if rows.empty:
        return None
    # Memory does not depend on the seed and barely on sparsity: one bar per model and method.
    labels = rows.apply(lambda r: f"{r['model']}\n{method_label(r)}", axis=1)
    grouped = rows.assign(label=labels).groupby("label", sort=False)
    largest = max(float(rows[c].max()) for c in (optimizer, buffers) if c)
    unit, scale = next((u, s) for u, s in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("bytes", 1))
                       if largest >= s or s == 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * grouped.ngroups), 4.5))
    bottom = None
    for column, name in ((optimizer, "optimizer state"), (buffers, "pruning buffers")):
        if not column:
            continue
        values = grouped[column].mean().fillna(0) / scale
        ax.bar(values.index, values.values, bottom=bottom, label=name)
        bottom = values.values if bottom is None else bottom + values.values
    ax.set_ylabel(unit)
    ax.set_title("Optimizer and pruning memory per method (run accounting)")
    ax.legend()
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def make_all(table: pd.DataFrame, runs, plot_dir: Path) -> list[Path]:
    plot_dir.mkdir(parents=True, exist_ok=True)
    made = []
    if not table.empty:
        made.append(metric_vs_sparsity(table, plot_dir / "metric_vs_sparsity.png"))
    made += curves(runs, lambda model: plot_dir / f"curves-{model}.png")
    if not table.empty:
        made.append(memory(table, plot_dir / "memory.png"))
    return [p for p in made if p is not None]
