"""Resolved hyperparameters (hparams.json): every number the engine trains with.

The engine builds the optimizer, the LR schedule, the batches and the evaluation
cadence from this dict and from nothing else, so hparams.json is a complete record
of what ran (after AUTO, steps per epoch, default ramp end, time budget), and a test
can prove that each config symbol reaches the run by looking at it.

Top-level keys the test matrix checks for fairness: warmup_end, ramp_end, frequency,
total_steps, batch_size, grad_acc, world_size, effective_batch, lr.

Rules (SPEC):
- Effective batch = batch_size * grad_acc * world_size. AUTO asks lib/hwdetect for the
  split. MANUAL takes BATCH_SIZE * GRAD_ACC as the effective batch and splits it over
  the DDP processes (accumulation first, then the batch), so adding processes never
  changes the effective batch.
- Epoch-based runs drop the last partial optimizer step of an epoch, so every step has
  the same effective batch: steps_per_epoch = train_size // effective_batch.
- base_steps = epochs * steps_per_epoch (or max_iters); total_steps = round(base_steps
  * budget_factor) (bitter2's 1.21); the pruning schedule comes from base_steps only:
  ramp_end 0 means round(0.75 * base_steps).
- The LR warm-up and step size are given in epochs for the CNNs and converted with the
  real steps_per_epoch; GPT-2 gives them in iterations.
- A time budget measured to fit fewer steps shrinks the whole schedule by the same
  factor (apply_time_budget), so a budgeted run is a complete shorter run.
"""
from __future__ import annotations

from lib import hwdetect
from lib.training.lr_schedule import check as check_lr
from lib.lifecycle import same_run
from lib.training.task import BadInput


def batch_plan(spec, *, world_size: int, device_type: str, compile: bool, gpus=None, printer=print) -> dict:
    """batch_size, grad_acc (per process) and effective batch for this run."""
    b = spec.batch
    if b.get("auto"):
        if gpus is None:
            gpus = hwdetect.detect_gpus() if device_type == "cuda" else []
        try:
            auto = hwdetect.resolve(spec.model, compile=compile, target=b.get("target") or None, gpus=gpus,
                                    world_size=world_size, printer=printer)
        except ValueError as err:
            raise BadInput(str(err)) from None
        return {"batch_mode": "auto", "batch_size": auto.batch_size, "grad_acc": auto.grad_acc,
                "effective_batch": auto.effective_batch, "batch_reason": f"{auto.found}: {auto.reason}"}
    batch, acc = b.get("batch_size"), b.get("grad_acc")
    if not isinstance(batch, int) or not isinstance(acc, int) or batch < 1 or acc < 1:
        raise BadInput(f"MANUAL batch needs BATCH_SIZE >= 1 and GRAD_ACC >= 1, got {batch!r} and {acc!r}; "
                       "set them in 'make menuconfig'")
    effective = batch * acc
    if effective % world_size:
        raise BadInput(f"MANUAL effective batch {batch} x {acc} = {effective} cannot be split over "
                       f"{world_size} DDP processes; make BATCH_SIZE x GRAD_ACC a multiple of {world_size}")
    share = effective // world_size
    per_batch = hwdetect.largest_divisor_at_most(share, batch)
    reason = f"MANUAL {batch} x {acc}"
    if world_size > 1:
        reason += f" split over {world_size} processes"
    return {"batch_mode": "manual", "batch_size": per_batch, "grad_acc": share // per_batch,
            "effective_batch": effective, "batch_reason": reason}


def plan(spec, *, train_size: int | None, world_size: int, device_type: str, amp: str | None,
         compile: bool, metric: str, data: dict | None = None, gpus=None, printer=print) -> dict:
    """The resolved hyperparameters of a fresh run (before any time-budget shrink)."""
    hp = {"run_id": spec.run_id, "model": spec.model, "seed": spec.seed, "metric": metric,
          "world_size": world_size, "device": device_type, "device_requested": spec.runtime.get("device"),
          "amp": amp, "amp_requested": spec.runtime.get("amp"), "compile": compile,
          "compile_requested": bool(spec.runtime.get("compile")),
          "backend": None if world_size == 1 else ("nccl" if device_type == "cuda" else "gloo")}
    hp.update(batch_plan(spec, world_size=world_size, device_type=device_type, compile=compile, gpus=gpus,
                         printer=printer))
    effective = hp["effective_batch"]

    epoch_based = train_size is not None
    if epoch_based:
        if not spec.epochs or spec.epochs < 1:
            raise BadInput(f"{spec.model} trains for epochs but got {spec.epochs!r}; set its epochs in 'make menuconfig'")
        steps_per_epoch = train_size // effective
        if steps_per_epoch < 1:
            raise BadInput(f"the effective batch {effective} is larger than the {train_size} training samples; "
                           "lower TARGET_EFFECTIVE_BATCH or BATCH_SIZE x GRAD_ACC")
        base_steps = spec.epochs * steps_per_epoch
        unit = steps_per_epoch  # epochs -> steps for LR warm-up, step size and intervals
    else:
        if not spec.max_iters or spec.max_iters < 1:
            raise BadInput(f"{spec.model} trains for iterations but got {spec.max_iters!r}; set max iterations")
        steps_per_epoch, base_steps, unit = None, spec.max_iters, 1
    total_steps = int(round(base_steps * spec.budget_factor))
    hp.update(epoch_based=epoch_based, train_size=train_size, steps_per_epoch=steps_per_epoch,
              epochs=spec.epochs, max_iters=spec.max_iters, budget_factor=spec.budget_factor,
              unequal_budget=spec.budget_factor != 1.0, base_steps=base_steps, total_steps=total_steps)

    rt = spec.runtime
    for key in ("eval_interval", "checkpoint_interval"):
        if not isinstance(rt.get(key), int) or rt[key] < 1:
            raise BadInput(f"{key} must be a positive integer, got {rt.get(key)!r}; set it in 'make menuconfig'")
    hp.update(eval_interval=rt["eval_interval"], eval_every_steps=rt["eval_interval"] * unit,
              checkpoint_interval=rt["checkpoint_interval"], checkpoint_every_steps=rt["checkpoint_interval"] * unit,
              time_budget_s=rt.get("time_budget_s") or 0, data_dir=rt.get("data_dir"), download=bool(rt.get("download")))

    pruned = spec.pruning != "none"
    ramp_end = (spec.ramp_end or int(round(0.75 * base_steps))) if pruned else 0
    hp.update(pruning=spec.pruning, variant=spec.variant, target_sparsity=spec.target_sparsity,
              warmup_end=spec.warmup_end if pruned else 0, ramp_end=ramp_end,
              frequency=spec.frequency if pruned else 0, shape=spec.shape, scope=spec.scope)
    if spec.nm and pruned:
        hp["nm"] = spec.nm  # only when set: unstructured runs keep their fingerprint

    args = dict(spec.optimizer_args)
    sched = spec.lr_schedule
    hp.update(lr=float(args.get("lr", 0.0)), lr_schedule=sched.get("kind"),
              lr_warmup_steps=int(round((sched.get("warmup") or 0) * unit)),
              lr_min=float(sched.get("min_lr") or 0.0), lr_quantum=unit,
              lr_step_size=int(round((sched.get("step_epochs") or 0) * unit)),
              lr_gamma=float(sched.get("step_gamma") or 0.1))
    hp["optimizer"] = spec.optimizer
    hp["optimizer_args"] = args  # JSON-ready as the RunSpec holds it; create() makes betas a tuple
    hp["model_options"] = dict(spec.model_options)
    hp["data"] = dict(data or {})
    validate(hp)
    return hp


def validate(hp: dict) -> None:
    """BadInput (one line, with the fix) for a schedule that cannot run as asked."""
    try:
        check_lr(**lr_args(hp))
    except ValueError as err:
        raise BadInput(str(err)) from None
    if hp["pruning"] == "none":
        return
    if not 0 < hp["target_sparsity"] < 1:
        raise BadInput(f"target sparsity must be between 0 and 1, got {hp['target_sparsity']!r}")
    if hp["frequency"] < 1:
        raise BadInput(f"pruning frequency must be at least 1 step, got {hp['frequency']}")
    if hp.get("nm"):
        from lib.pruning import nm  # late: planning a sweep need not import torch

        try:
            nm.check_target(*nm.parse(hp["nm"]), hp["target_sparsity"])
        except ValueError as err:
            raise BadInput(f"{err} (CONFIG_PRUNING_MASK_NM)") from None
    if not hp["warmup_end"] < hp["ramp_end"] <= hp["total_steps"]:
        raise BadInput(f"pruning must start before it ends and end within the run: warm-up end {hp['warmup_end']}, "
                       f"ramp end {hp['ramp_end']}, run of {hp['total_steps']} steps; lower CONFIG_PRUNING_WARMUP, "
                       "or set CONFIG_PRUNING_RAMP_END to 0 (3/4 of the run)")


# The pruning settings hparams.json shares with lib.optimizers.create(), under its names.
SCHEDULE = ("target_sparsity", "warmup_end", "ramp_end", "frequency", "shape", "scope")


def lr_args(hp: dict) -> dict:
    """Keyword arguments of lib.training.lr_schedule.lr_at/check for this run."""
    return {"kind": hp["lr_schedule"], "base_lr": hp["lr"], "total_steps": hp["total_steps"],
            "warmup_steps": hp["lr_warmup_steps"], "min_lr": hp["lr_min"], "quantum": hp["lr_quantum"],
            "step_size": hp["lr_step_size"], "gamma": hp["lr_gamma"]}


def optimizer_kwargs(hp: dict) -> dict:
    """Keyword arguments for lib.optimizers.create(hp["optimizer"], model, **kwargs)."""
    kwargs = dict(hp["optimizer_args"])
    kwargs.update({key: hp[key] for key in ("total_steps", "pruning", "variant", *SCHEDULE)})
    if hp.get("nm"):
        kwargs["nm"] = hp["nm"]
    return kwargs


def fit_steps(hp: dict, *, budget_s: float, spent_s: float, step_s: float, eval_s: float) -> int:
    """Optimizer steps that fit in what is left of the budget, evaluations included."""
    per_step = step_s + eval_s / hp["eval_every_steps"]
    left = budget_s * 0.97 - spent_s  # 3% margin for checkpoints and the final record
    return max(int(left // per_step), 0) if per_step > 0 else hp["total_steps"]


def apply_time_budget(hp: dict, steps: int, *, measured: dict) -> dict:
    """A copy of `hp` shrunk to `steps` optimizer steps, every schedule scaled alike."""
    out = dict(hp)
    out["time_budget"] = {**measured, "fit_steps": steps, "planned_steps": hp["total_steps"], "scale": 1.0}
    if steps >= hp["total_steps"]:
        return out
    if steps < 1:
        raise BadInput(f"a time budget of {hp['time_budget_s']} s fits no optimizer step "
                       f"({measured.get('step_s', 0):.3g} s each); raise CONFIG_TIME_BUDGET_SECONDS")
    scale = steps / hp["total_steps"]

    def shrink(value: int) -> int:
        return int(round(value * scale))

    out.update(total_steps=steps, base_steps=shrink(hp["base_steps"]), lr_warmup_steps=shrink(hp["lr_warmup_steps"]),
               lr_step_size=max(shrink(hp["lr_step_size"]), 1) if hp["lr_step_size"] else 0)
    if hp["pruning"] != "none":
        out.update(warmup_end=shrink(hp["warmup_end"]), ramp_end=min(max(shrink(hp["ramp_end"]), 1), steps),
                   frequency=max(shrink(hp["frequency"]), 1))
    out["time_budget"]["scale"] = scale
    try:
        validate(out)
    except BadInput as err:
        raise BadInput(f"the time budget of {hp['time_budget_s']} s fits only {steps} of {hp['total_steps']} "
                       f"steps, too few for the schedule ({err}); raise CONFIG_TIME_BUDGET_SECONDS") from None
    return out


def unchanged(saved: dict, current: dict) -> str | None:
    """None when a saved hparams.json belongs to the same run, else the first differing key."""
    ignore = {"time_budget", "batch_reason", "data"}
    if saved.get("time_budget", {}).get("scale", 1.0) != 1.0:
        # Re-derive the shrunk schedule from the current plan to compare like with like.
        try:
            current = apply_time_budget(current, saved["time_budget"]["fit_steps"], measured=saved["time_budget"])
        except BadInput:
            return "time_budget"
    return same_run.first_key(same_run.difference(saved, current, ignore=ignore))


def epochs_done(hp: dict, step: int) -> float | None:
    return step / hp["steps_per_epoch"] if hp["epoch_based"] else None

