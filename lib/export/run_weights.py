"""A finished run's weights and pruning masks, read back from its own files.

The masks come from last.pt's optimizer state (Adam family: exp_avg_sq = inf; SGD: the
packed bits), rebuilt through the same optimizer factory the run used, and the per-layer
pruned counts from the pruner's own ledger saved with it ("the run's accounting"). best.pt
holds only weights; for a pruned run it is from the end of the ramp on (lib/training/engine.py),
when the masks no longer change, so last.pt's masks are best.pt's masks too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lib.lifecycle import checkpoint, rundir
from lib.configuration import resolve
from lib.export.models import build_model
from lib.pruning.layout import to_logical
from lib.configuration.runspec import RunSpec
from lib.training.task import BadInput

WHICH = ("best", "last")


@dataclass
class RunWeights:
    run_dir: Path
    spec: RunSpec
    hp: dict
    which: str
    step: int
    model: torch.nn.Module          # the architecture, holding the exported weights
    state: dict                     # name -> contiguous CPU tensor, pruned positions +0.0
    pruned: dict                    # prunable name -> bool tensor (True = pruned), logical layout
    accounting: dict                # prunable name -> pruned count in the run's own ledger
    nonzero_at_pruned: int          # weights that were not exactly 0 at a pruned position (expected 0)


def read_masks(model, hp, optimizer_state) -> tuple[dict, dict]:
    """({name: pruned mask}, {name: the ledger's pruned count}) from a saved optimizer state."""
    from lib import optimizers

    if hp.get("pruning", "none") == "none":
        return {}, {}
    opt = optimizers.create(hp["optimizer"], model, **resolve.optimizer_kwargs(hp))
    opt.load_state_dict(optimizer_state)
    pruner = opt.pruner
    ledger = optimizer_state["knlp"]["pruner"]["dead"]
    masks, counts = {}, {}
    for j, (name, p) in enumerate(zip(pruner.names, pruner.params)):
        dead = pruner.rep.dead_mask(j)
        masks[name] = (torch.zeros(p.shape, dtype=torch.bool) if dead is None
                       else to_logical(dead.cpu(), p.detach().cpu()))
        counts[name] = int(ledger[j])
    return masks, counts


def load_run(run_dir: Path | str, which: str = "best") -> RunWeights:
    run_dir = Path(run_dir)
    if which not in WHICH:
        raise BadInput(f"WHICH={which!r}: choose best or last")
    status = rundir.read_status(run_dir)
    if status is None or status.get("state") != rundir.COMPLETED:
        state = status.get("state") if status else "no status.json"
        raise BadInput(f"{run_dir}: not a finished run ({state}); finish it with 'make' first or pass RUN=<a completed run>")
    spec_data, hp = rundir.read_json(run_dir / rundir.SPEC), rundir.read_hparams(run_dir)
    if not isinstance(spec_data, dict) or not isinstance(hp, dict):
        raise BadInput(f"{run_dir}: spec.json or hparams.json missing or unreadable; not a knlp run directory")
    spec = RunSpec.from_dict(spec_data)
    model = build_model(spec)
    last = checkpoint.load(run_dir / rundir.LAST, required=("model", "optimizer", "step"))
    model.load_state_dict(last["model"])
    for name, p in model.named_parameters():
        # the run's memory layout (LeNet-5 trains channels_last): masks are stored in that order
        p.data = last["model"][name].detach().clone()
    pruned, accounting = read_masks(model, hp, last["optimizer"])
    step = int(last["step"])
    if which == "best":
        if not (run_dir / rundir.BEST).is_file():
            raise BadInput(f"{run_dir}: no {rundir.BEST} (no evaluation after the end of the ramp); use WHICH=last")
        best = checkpoint.load(run_dir / rundir.BEST, required=("model",))
        model.load_state_dict(best["model"])
        step = int((best.get("best") or {}).get("step") or step)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    _drop_tied(model, state)
    bad = 0
    for name, mask in pruned.items():
        w = state[name]
        bad += int(torch.count_nonzero(w[mask]))
        w.masked_fill_(mask, 0.0)  # also turns -0.0 (a negative weight times a 0 mask) into +0.0
        model.get_parameter(name).data.copy_(w)
    return RunWeights(run_dir, spec, hp, which, step, model, state, pruned, accounting, bad)


def _drop_tied(model, state: dict) -> None:
    """Keep one name per shared tensor (GPT-2's lm_head.weight is wte): safetensors refuses aliases."""
    seen = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen and name in state:
            del state[name]
        seen.setdefault(id(p), name)
