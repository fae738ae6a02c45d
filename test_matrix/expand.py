"""Expand one Config into the list of RunSpecs of its sweep.

Rules (fairness by construction):
- AdamWPrune runs only with `state` pruning: with pruning off it is AdamW by construction
  (tested bit for bit), and magnitude inside AdamWPrune is its own variant bitter1.
- Every other optimizer runs with the selected `none` / `magnitude` / `movement` methods.
- A dense run exists once per optimizer, not once per sparsity level.
- Every run is built from the same schedule knobs, so runs of one comparison share warm-up
  end, ramp end, frequency and shape; budgets differ only for bitter2 (flagged).
"""
from __future__ import annotations

from lib.configuration import model_registry, runspec
from lib.configuration.config import ConfigError
from lib.optimizers import registry as optimizer_registry
from lib.pruning import score_registry


def selected_models(cfg) -> list[str]:
    return [m.name for m in model_registry.entries() if cfg.get(m.symbol)]


def selected_optimizers(cfg) -> list[str]:
    return [o.name for o in optimizer_registry.OPTIMIZERS if cfg.get(o.kconfig)]


def selected_methods(cfg) -> list[str]:
    return [p for p in runspec.PRUNING_METHODS if cfg.get(f"PRUNING_{p.upper()}")]


def selected_variants(cfg) -> list[str]:
    return [s.name for s in score_registry.SCORES if s.kconfig and cfg.get(s.kconfig)]


def selected_sparsities(cfg) -> list[float]:
    return [level / 100 for level in runspec.SPARSITY_LEVELS if cfg.get(f"SPARSITY_{level}")]


def seeds(cfg) -> list[int]:
    return [cfg.SEED + i for i in range(cfg.TEST_MATRIX_SEEDS)]


def _points(cfg):
    """(optimizer, method, variant, sparsity) tuples before models and seeds."""
    sparsities = selected_sparsities(cfg)
    for optimizer in selected_optimizers(cfg):
        for method in selected_methods(cfg):
            if optimizer_registry.get(optimizer).state_pruning != (method == "state"):
                continue
            if method == "none":
                yield optimizer, method, None, 0.0
                continue
            variants = selected_variants(cfg) if method == "state" else [None]
            for variant in variants:
                for sparsity in sparsities:
                    yield optimizer, method, variant, sparsity


def expand(cfg) -> list[runspec.RunSpec]:
    """Every run the config asks for, in a stable order; ConfigError when there is none."""
    models = selected_models(cfg)
    if not models:
        raise ConfigError("no model selected; enable one under Models in 'make menuconfig'")
    if not selected_optimizers(cfg):
        raise ConfigError("no optimizer selected; enable one under Optimizers in 'make menuconfig'")
    if not selected_methods(cfg):
        raise ConfigError("no pruning method selected (choose 'None (dense)' for dense training) "
                          "under Pruning in 'make menuconfig'")
    if cfg.get("PRUNING_STATE") and not selected_variants(cfg):
        raise ConfigError("state pruning selected but no AdamWPrune variant; enable one (bitter7 is "
                          "recommended) under Optimizers > AdamWPrune variants")
    points = list(_points(cfg))
    if not points:
        raise ConfigError("the selected optimizers and pruning methods give no run: AdamWPrune runs "
                          "only with state pruning, other optimizers only with none/magnitude/movement")
    runs = [runspec.build(cfg, model=model, optimizer=o, pruning=p, variant=v, target_sparsity=s, seed=seed)
            for model in models for (o, p, v, s) in points for seed in seeds(cfg)]
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == len(ids), "run IDs must be unique"
    if any(r.nm for r in runs):
        from lib.pruning import nm_fit  # late: only N:M configs need torch here

        misfit = nm_fit.problem(runs)
        if misfit:
            raise ConfigError(misfit)
    return runs


def config_id(spec) -> str:
    """The configuration a run belongs to: its run ID without the seed (seeds aggregate)."""
    return spec.run_id.rsplit("-seed", 1)[0]


def schedule_of(spec) -> dict:
    """What must be equal across the pruned runs of one comparison (SPEC: one schedule)."""
    return {"warmup_end": spec.warmup_end, "ramp_end": spec.ramp_end, "frequency": spec.frequency,
            "shape": spec.shape}


def budget_of(spec) -> dict:
    """What must be equal across every run of one model: steps, batch and LR schedule.

    budget_factor is left out on purpose: it is the one allowed (flagged) difference.
    """
    return {"epochs": spec.epochs, "max_iters": spec.max_iters, "batch": spec.batch,
            "lr_schedule": spec.lr_schedule, "time_budget_s": spec.runtime.get("time_budget_s")}


def fairness_problems(runs) -> list[str]:
    """Why the runs would not form fair comparisons; empty when they do.

    Pruned runs of one model share the schedule; all runs of one model share the budget;
    only the variants in runspec.UNEQUAL_BUDGET may scale their budget, and they are
    flagged through RunSpec.unequal_budget.
    """
    problems = []
    by_model: dict[str, list] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    for model, group in by_model.items():
        pruned = [r for r in group if r.pruning != "none"]
        for label, runs_of, key in (("pruning schedule", pruned, schedule_of), ("budget", group, budget_of)):
            if runs_of and any(key(r) != key(runs_of[0]) for r in runs_of):
                odd = next(r for r in runs_of if key(r) != key(runs_of[0]))
                problems.append(f"{model}: {odd.run_id} has a different {label} than {runs_of[0].run_id}")
        for run in group:
            allowed = runspec.UNEQUAL_BUDGET.get(run.variant, 1.0)
            if run.budget_factor != allowed:
                problems.append(f"{run.run_id}: budget factor {run.budget_factor} (only "
                                f"{', '.join(runspec.UNEQUAL_BUDGET)} may differ from 1)")
    return problems
