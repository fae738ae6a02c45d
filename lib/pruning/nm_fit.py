"""Refuse an N:M config while it is being expanded into runs, before anything trains.

The layers' shapes come from the architecture built on torch's meta device (no memory, no
initialisation cost), so `make`, `make test-matrix` and its DRY_RUN all say it up front."""
from __future__ import annotations


def problem(runs) -> str | None:
    """One line naming the first run whose N:M pattern does not fit, or None."""
    checked = set()
    for spec in runs:
        if not spec.nm or spec.pruning == "none":
            continue
        import torch

        from lib.export.models import build_model
        from lib.pruning import nm, prunable_weights

        try:
            n, m = nm.parse(spec.nm)
            nm.check_target(n, m, spec.target_sparsity)
            key = (spec.model, repr(sorted(spec.model_options.items())))
            if key in checked:
                continue
            checked.add(key)
            with torch.device("meta"):
                model = build_model(spec)
            include_tied = bool(spec.optimizer_args.get("prune_tied"))
            nm.check_shapes(n, m, [(name, p.shape) for name, p in prunable_weights(model, include_tied=include_tied)])
        except ValueError as err:
            return f"{spec.run_id}: {err} (CONFIG_PRUNING_MASK_NM)"
    return None
