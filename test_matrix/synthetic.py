"""Synthetic results directories: many run directories in the engine's formats, without
training, to measure and test the report at the scale of a large sweep.

Every value is drawn from a seeded generator; nothing here is a measurement of a method.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path

from lib.lifecycle import rundir, start_record
from lib.pruning.score_registry import STATE_VARIANTS
from test_matrix import plan as plan_file

METHODS = [("adamw", "magnitude", None), ("adamw", "movement", None)] + [
    ("adamwprune", "state", v) for v in STATE_VARIANTS]
SPARSITIES = (0.5, 0.7, 0.9, 0.95)
MODELS = ("lenet5", "resnet18")
LAYERS = (("conv1.weight", 150), ("conv2.weight", 2400), ("fc1.weight", 48000), ("fc2.weight", 10080),
          ("fc3.weight", 840))


def _points():
    """(model, optimizer, pruning, variant, sparsity) in plan order: dense first per model."""
    for model in itertools.cycle(MODELS):
        yield model, "adamw", "none", None, 0.0
        for (optimizer, pruning, variant), sparsity in itertools.product(METHODS, SPARSITIES):
            yield model, optimizer, pruning, variant, sparsity


def _spec(model, optimizer, pruning, variant, sparsity, seed, lr) -> dict:
    name = {"none": "none", "state": f"{variant}-state"}.get(pruning, pruning)
    config = f"{model}-{optimizer}-{name}" + ("" if pruning == "none" else f"-s{round(100 * sparsity)}")
    if lr is not None:
        config += f"-lr{lr:g}"
    return {"run_id": f"{config}-seed{seed}", "model": model, "optimizer": optimizer, "pruning": pruning,
            "variant": variant, "target_sparsity": sparsity, "seed": seed, "unequal_budget": False,
            "optimizer_args": {"lr": lr or 1e-3, **({"base": "adamw"} if optimizer == "adamwprune" else {})}}


def make(results_dir: Path | str, runs: int = 1000, seeds: int = 5, fail_every: int = 97) -> list[dict]:
    """Write `runs` run directories (runs / seeds configurations) and their plan; return the specs."""
    results_dir = Path(results_dir)
    configs = runs // seeds
    points = list(itertools.islice(_points(), configs))
    repeats = {}
    specs = []
    for point in points:
        count = repeats.setdefault(point, 0)
        repeats[point] = count + 1  # once the grid is used up, a learning rate tells configurations apart
        lr = None if count == 0 else 1e-3 * (count + 1)
        specs += [_spec(*point, seed, lr) for seed in range(1, seeds + 1)]
    rng = random.Random(0)
    quality = {}
    for index, spec in enumerate(specs):
        run_dir = results_dir / spec["run_id"]
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_json(run_dir / rundir.SPEC, spec)
        seed = spec["seed"]
        rundir.write_json(run_dir / start_record.FILE, {"weights": f"{spec['model']}-w{seed}",
                                                        "data_order": f"{spec['model']}-d{seed}"})
        rundir.write_json(run_dir / rundir.HPARAMS, {
            "run_id": spec["run_id"], "seed": seed, "lr": spec["optimizer_args"]["lr"], "pruning": spec["pruning"],
            "warmup_end": 100, "ramp_end": 465, "frequency": 50, "total_steps": 620, "effective_batch": 64})
        if fail_every and index % fail_every == fail_every - 1:
            rundir.write_status(run_dir, rundir.FAILED, reason="training loss is nan at step 301 (synthetic)")
            continue
        base = quality.setdefault(spec["run_id"].rsplit("-seed", 1)[0], 97.0 - 3 * spec["target_sparsity"] ** 4
                                  + rng.gauss(0, 0.2))
        final = base + rng.gauss(0, 0.25) + 0.1 * seed
        for step in range(62, 621, 62):
            rundir.append_metrics(run_dir, {"step": step, "accuracy": final - 30.0 / step, "train_loss": 6.0 / step})
        layers = None if spec["pruning"] == "none" else [
            {"layer": name, "size": size, "sparsity": min(1.0, spec["target_sparsity"] * (0.6 + 0.1 * i))}
            for i, (name, size) in enumerate(LAYERS)]
        rundir.write_json(run_dir / rundir.SUMMARY, {
            "run_id": spec["run_id"], "metric": "accuracy", "final": {"step": 620, "accuracy": final},
            "best": {"step": 558, "accuracy": final + 0.05}, "achieved_sparsity": spec["target_sparsity"],
            "total_time_s": 8.0 + rng.random(), "layers": layers,
            "memory": {"weights": 245880, "state": 491760, "pruning": 0, "state_plus_pruning_ratio": 2.0}})
        rundir.write_status(run_dir, rundir.COMPLETED)
    rundir.write_json(results_dir / plan_file.PLAN, {"version": plan_file.VERSION, "created": "synthetic",
                                                    "config_source": "synthetic", "config": {}, "runs": specs})
    return specs
