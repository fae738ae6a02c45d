"""The training loop every model shares.

`Trainer(task, spec, run_dir, ctx).run()` trains the task's model as hparams.json says
(lib/configuration/resolve.py), writes the run directory's record (lib/lifecycle/rundir.py) and returns the exit
code: 0 completed, 1 failed (status.json says why). It raises BadInput or
CheckpointError for bad input, which lib/lifecycle/launch.py turns into exit code 2.

One optimizer step = grad_acc micro-batches per process, world_size processes. The
micro-batch with global index `micro * world_size + rank` of step `t` always holds the
same samples (lib/training/seeding.py), so a run is repeatable on the CPU, resumes exactly from
last.pt (model, optimizer and pruning state, RNG states, step; the data position is a
function of the step), and 2 processes give the samples of 1 process with twice the
accumulation.

Record, in the order that keeps a kill -9 harmless: a metrics line, then best.pt, then
last.pt; a resume drops metric lines newer than last.pt and redoes them. For a pruned
run, "best" only counts evaluations from the end of the sparsity ramp on, so it is never
the accuracy of a model that was still denser than the target.

Time budget (TIME_BUDGET_SECONDS): a fresh run first times a few steps and one
evaluation on a throwaway copy of its start, then shrinks total steps, LR warm-up and
the pruning schedule by the same factor (lib/resolve.apply_time_budget), so the run
that follows is complete, only shorter. The probe's time counts once, as part of the
run's elapsed time. A sweep may instead probe once per comparison and hand every run
the same step count (test_matrix/time_budget.py writes it to shared-budget.json, and
the run then does not probe). If the estimate proves wrong by more than 3% the run
stops cleanly at the budget and says so in status.json.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from lib.lifecycle import checkpoint, heartbeat, rundir, start_record
from lib.configuration import resolve, vocabulary
from lib.lifecycle.checkpoint import CheckpointError, FRESH_HINT
from lib.training.device import (autocast, optimizer_step, peak_memory_bytes, reset_peak_memory, resolve_amp,
                        resolve_compile)
from lib.lifecycle.faults import Fault
from lib.training.lr_schedule import lr_at
from lib.pruning.layers import layer_sparsity
from lib.training.seeding import batch_generator, capture_rng, epoch_permutation, restore_rng
from lib.training.task import BadInput, RunContext, Task

PROBE_WARMUP_STEPS = 3   # excluded from the timing (allocations, compilation and its recompiles)
PROBE_MIN_STEPS, PROBE_MAX_STEPS, PROBE_SECONDS = 3, 20, 2.0
# What apply_time_budget changes that the optimizer was built with (lib.optimizers.reschedule).
RESCHEDULED = ("total_steps", "warmup_end", "ramp_end", "frequency")
LAST_KEYS = ("model", "optimizer", "step", "rng", "clock", "interval", "fingerprint")


def fingerprint(hp: dict) -> str:
    """Which hparams.json a checkpoint belongs to: a hash over the names hparams.json had before
    issue 11 (vocabulary.legacy_hparams), so checkpoints written before the rename still match."""
    return hashlib.sha256(json.dumps(vocabulary.legacy_hparams(hp), sort_keys=True).encode()).hexdigest()[:16]


class Interrupted(Exception):
    pass


class Trainer:
    def __init__(self, task: Task, spec, run_dir: Path | str, ctx: RunContext, *, log=print,
                 stop_at_step: int | None = None, progress: bool | None = None):
        self.task, self.spec, self.run_dir, self.ctx, self.log = task, spec, Path(run_dir), ctx, log
        self.device, self.rank, self.world = ctx.device, ctx.rank, ctx.world_size
        self.main = ctx.rank == 0
        self.stop_at_step = stop_at_step  # tests: behave as if interrupted after this step
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.interrupted: str | None = None
        self.fault = Fault(self.rank)

    # ---------------------------------------------------------------- set-up
    def _plan(self) -> dict:
        amp, notes = resolve_amp(self.spec.runtime.get("amp"), self.device)
        use_compile, more = resolve_compile(bool(self.spec.runtime.get("compile")), self.device)
        for note in notes + more:
            self.log(f"notice: {note}")
        self.amp, self.use_compile = amp, use_compile
        data = {**self.task.describe(), "data_dir": str(self.ctx.data_dir)}
        hp = resolve.plan(self.spec, train_size=self.task.train_size, world_size=self.world,
                          device_type=self.device.type, amp=amp, compile=use_compile, metric=self.task.metric,
                          data=data, printer=self.log if self.main else (lambda _line: None))
        # CPU sums depend on the thread split: a resume with another count is another run.
        hp["cpu_threads"] = torch.get_num_threads() if self.device.type == "cpu" else None
        return hp

    def _load_resume(self, hp: dict) -> tuple[dict, dict | None]:
        """(hparams to train with, last.pt payload or None for a fresh start)."""
        last = self.run_dir / rundir.LAST
        if not last.exists():
            return hp, None
        saved = rundir.read_hparams(self.run_dir)  # one written before issue 11's rename resumes too
        if saved is None:
            raise CheckpointError(f"{last}: cannot resume, {self.run_dir / rundir.HPARAMS} is missing or "
                                  f"unreadable; {FRESH_HINT}")
        differs = resolve.unchanged(saved, hp)
        if differs:
            raise CheckpointError(f"{last}: written by a different configuration ({differs} was "
                                  f"{saved.get(differs)!r}, now {hp.get(differs)!r}); {FRESH_HINT}")
        payload = checkpoint.load(last, map_location=self.device, required=LAST_KEYS)
        if payload["fingerprint"] != fingerprint(saved):
            raise CheckpointError(f"{last}: does not belong to {self.run_dir / rundir.HPARAMS}; {FRESH_HINT}")
        return saved, payload

    def _new_optimizer(self):
        from lib import optimizers  # the one place that maps names to optimizers and pruning

        try:
            return optimizers.create(self.hp["optimizer"], self.model, **resolve.optimizer_kwargs(self.hp))
        except ValueError as err:  # a hyperparameter the optimizer refuses: bad input, not a crash
            raise BadInput(f"optimizer {self.hp['optimizer']}: {err}") from None

    def _reschedule(self) -> None:
        from lib import optimizers

        try:
            optimizers.reschedule(self.optimizer, **{k: self.hp[k] for k in RESCHEDULED})
        except ValueError as err:
            raise BadInput(f"optimizer {self.hp['optimizer']}: {err}") from None

    def _build(self, hp: dict, payload: dict | None) -> None:
        self.hp = hp
        self.model = self.task.model.to(self.device)
        self.optimizer = self._new_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        if payload is not None:
            last = self.run_dir / rundir.LAST
            try:
                self.model.load_state_dict(payload["model"])
                self.optimizer.load_state_dict(payload["optimizer"])
                if payload.get("scaler"):
                    self.scaler.load_state_dict(payload["scaler"])
            except (RuntimeError, KeyError, ValueError, TypeError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise CheckpointError(f"{last}: does not fit this model/optimizer ({first[:160]}); {FRESH_HINT}") from None
        self.eval_model = torch.compile(self.model) if self.use_compile else self.model
        self.train_model = self.eval_model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.eval_model, device_ids=ids)

    # ---------------------------------------------------------------- one step
    def _micro_indices(self, step: int, gm: int, perm: torch.Tensor | None):
        if perm is None:
            return None
        hp = self.hp
        start = (step % hp["steps_per_epoch"]) * hp["effective_batch"] + gm * hp["batch_size"]
        return perm[start:start + hp["batch_size"]]

    def _forward_backward(self, step: int, perm: torch.Tensor | None) -> torch.Tensor:
        """Accumulate the gradients of optimizer step `step` (0-based); mean loss, detached."""
        hp = self.hp
        acc = hp["grad_acc"]
        total = torch.zeros((), device=self.device)
        for micro in range(acc):
            gm = micro * self.world + self.rank
            batch = self.task.train_batch(self._micro_indices(step, gm, perm), hp["batch_size"],
                                          batch_generator(hp["seed"], step, gm))
            sync = self.train_model.no_sync() if self.world > 1 and micro < acc - 1 else contextlib.nullcontext()
            with sync:
                with autocast(self.amp, self.device):
                    loss = self.task.loss(self.train_model, batch)
                loss = self.fault.on_loss(step + 1, loss)
                scaled = loss.float() / acc
                (self.scaler.scale(scaled) if self.scaler.is_enabled() else scaled).backward()
            total += loss.detach().float()
        return total / acc

    def _set_lr(self, step: int) -> float:
        lr = lr_at(step, **resolve.lr_args(self.hp))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _optimizer_step(self) -> None:
        optimizer_step(self.optimizer, self.scaler)

    def _permutation(self, step: int) -> torch.Tensor | None:
        if not self.hp["epoch_based"]:
            return None
        # Drawn on the CPU (the same order on every device), then moved once per epoch.
        perm = epoch_permutation(self.hp["seed"], step // self.hp["steps_per_epoch"], self.hp["train_size"])
        return perm.to(self.device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _start_record(self) -> dict:
        perm, rng = self._permutation(0), capture_rng()  # tasks draw from the generator only; be safe
        batch = self.task.train_batch(self._micro_indices(0, 0, perm), self.hp["batch_size"],
                                      batch_generator(self.hp["seed"], 0, 0))
        restore_rng(rng)
        return start_record.record(self.model, perm, batch)

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self) -> dict:
        model = self.eval_model
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        with torch.no_grad(), autocast(self.amp, self.device):
            for batch in self.task.eval_batches(self.rank, self.world):
                sums += self.task.eval_sums(model, batch).to(sums)
        if self.world > 1:
            dist.all_reduce(sums)
        model.train()
        loss_sum, count, correct = (float(v) for v in sums)
        if count <= 0:
            raise BadInput(f"{self.spec.model}: the evaluation set is empty; check the dataset")
        loss = loss_sum / count
        accuracy = 100.0 * correct / count if self.task.metric == "accuracy" else None
        perplexity = (math.exp(loss) if loss < 700 else None) if self.task.metric == "perplexity" else None
        return {"test_loss": loss, "accuracy": accuracy, "perplexity": perplexity}

    def _log_initial_quality(self) -> None:
        """Iteration-based runs log the untrained model's validation loss: the baseline a
        reader compares the falling loss with."""
        rng = capture_rng()
        quality = self._evaluate()
        restore_rng(rng)
        ppl = f" (perplexity {quality['perplexity']:.1f})" if quality["perplexity"] else ""
        self.log(f"step 0: validation loss {quality['test_loss']:.4f}{ppl} at initialization")

    def _probe(self) -> dict:
        """Seconds per optimizer step and per evaluation, measured on a throwaway copy of the start."""
        snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        # The run's own optimizer takes the probe's steps and gets its state (moments, masks,
        # step counter) back afterwards, as a resume would: no second optimizer is built.
        opt_snapshot = copy.deepcopy(self.optimizer.state_dict())
        rng = capture_rng()
        began = time.perf_counter()
        timed, seconds, step = 0, 0.0, 0
        perm = self._permutation(0)
        while step < self.hp["total_steps"] and (timed < PROBE_MIN_STEPS or
                                                 (seconds < PROBE_SECONDS and timed < PROBE_MAX_STEPS)):
            if self.hp["epoch_based"] and step % self.hp["steps_per_epoch"] == 0:
                perm = self._permutation(step)
            t0 = time.perf_counter()
            self._set_lr(step)
            self._forward_backward(step, perm)
            self._optimizer_step()
            self._sync()
            if step >= PROBE_WARMUP_STEPS:
                timed, seconds = timed + 1, seconds + time.perf_counter() - t0
            step += 1
        if self.use_compile:
            self._evaluate()  # the first evaluation compiles the eval graph: not part of its cost
        t0 = time.perf_counter()
        self._evaluate()
        self._sync()
        eval_s = time.perf_counter() - t0
        step_s = seconds / max(timed, 1)
        times = torch.tensor([step_s, eval_s], dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(times, op=dist.ReduceOp.MAX)  # every rank must agree on the plan
        self.model.load_state_dict(snapshot)
        self.optimizer.load_state_dict(opt_snapshot)
        self.optimizer.zero_grad(set_to_none=True)
        restore_rng(rng)
        return {"step_s": float(times[0]), "eval_s": float(times[1]), "probe_s": time.perf_counter() - began}

    def _fit(self, hp: dict, measured: dict, *, spent_s: float) -> int:
        # Evaluations outside the per-step share: the last one (the run rarely ends on an
        # evaluation step) and, for iteration-based runs, the untrained model's.
        extra = measured["eval_s"] * (1 if hp["epoch_based"] else 2)
        return resolve.fit_steps(hp, budget_s=hp["time_budget_s"], spent_s=spent_s + extra,
                                 step_s=measured["step_s"], eval_s=measured["eval_s"])

    def measure(self) -> dict:
        """A sweep's probe of this run: its step and evaluation times and the steps that fit
        its time budget when the run itself does not probe (the sweep shares the result)."""
        hp = self._plan()
        self.amp, self.use_compile = hp["amp"], hp["compile"]
        self._build(hp, None)
        measured = self._probe()
        return {**measured, "fit_steps": self._fit(hp, measured, spent_s=0.0), "total_steps": hp["total_steps"],
                "budget_factor": hp["budget_factor"], "time_budget_s": hp["time_budget_s"]}

    # ---------------------------------------------------------------- record
    def _state(self, step: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "step": step, "best": self.best, "rng": capture_rng(), "run_id": self.hp["run_id"],
                "clock": {"elapsed": self._elapsed(), "train_time": self.train_time},
                "interval": dict(self.interval), "fingerprint": fingerprint(self.hp)}

    def _save_last(self, step: int) -> None:
        if self.main:
            checkpoint.save(self.run_dir / rundir.LAST, self._state(step))

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_start

    def _record(self, step: int, lr: float) -> dict:
        quality = self._evaluate()
        if not math.isfinite(quality["test_loss"]):
            raise FloatingPointError(f"test loss is {quality['test_loss']} at step {step}")
        interval = self.interval
        record = {"step": step, "epoch": resolve.epochs_done(self.hp, step),
                  "train_loss": interval["loss_sum"] / interval["steps"] if interval["steps"] else None,
                  **quality, "sparsity": float(self.optimizer.sparsity()), "lr": lr,
                  "wall_time": self._elapsed(),
                  "samples_per_s": (interval["steps"] * self.hp["effective_batch"] / interval["train_time"]
                                    if interval["train_time"] > 0 else None),
                  "memory_bytes": peak_memory_bytes(self.device)}
        self.interval = {"loss_sum": 0.0, "steps": 0, "train_time": 0.0}
        self.last_record = record
        if self.main:
            rundir.append_metrics(self.run_dir, record)
            self.log(self._line(record))
        eligible = self.hp["pruning"] == "none" or step >= self.hp["ramp_end"]
        if eligible and self._better(record):
            self.best = {k: record[k] for k in ("step", "epoch", "test_loss", "accuracy", "perplexity", "sparsity")}
            if self.main:
                checkpoint.save(self.run_dir / rundir.BEST, {"model": self.model.state_dict(), "best": self.best,
                                                             "run_id": self.hp["run_id"],
                                                             "fingerprint": fingerprint(self.hp)})
        return record

    def _better(self, record: dict) -> bool:
        if self.best is None:
            return True
        if self.task.metric == "accuracy":
            return record["accuracy"] > self.best["accuracy"]
        return record["test_loss"] < self.best["test_loss"]

    def _line(self, r: dict) -> str:
        where = f"step {r['step']}/{self.hp['total_steps']}"
        if r["epoch"] is not None:
            where += f" epoch {r['epoch']:.2f}"
        quality = f"acc {r['accuracy']:.2f}%" if r["accuracy"] is not None else f"ppl {r['perplexity'] or float('inf'):.2f}"
        train = f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "-"
        speed = f"{r['samples_per_s']:.0f} samples/s" if r["samples_per_s"] else ""
        tokens = getattr(self.task, "tokens_per_sample", None)
        if speed and tokens:
            speed += f" ({r['samples_per_s'] * tokens:.0f} tokens/s)"
        return (f"{where} | train {train} test {r['test_loss']:.4f} {quality} | sparsity "
                f"{100 * r['sparsity']:.1f}% | lr {r['lr']:.3g} | {speed}")

    def _summary(self, step: int) -> dict:
        opt, model = self.optimizer, self.model
        memory = {k: int(v) for k, v in opt.memory_bytes().items()}
        weights = memory.get("weights") or 0
        for key in ("state", "pruning", "transient_peak"):
            if key in memory and weights:
                memory[f"{key}_ratio"] = memory[key] / weights
        if weights and "state" in memory and "pruning" in memory:
            memory["state_plus_pruning_ratio"] = (memory["state"] + memory["pruning"]) / weights
        final = None
        if self.last_record is not None:
            final = {k: self.last_record[k] for k in ("step", "epoch", "test_loss", "accuracy", "perplexity", "sparsity")}
        with torch.no_grad():
            params = {"total": sum(p.numel() for p in model.parameters()), "prunable": int(opt.prunable_count()),
                      "nonzero": int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))}
        spec = self.spec
        return {"run_id": spec.run_id, "model": spec.model, "optimizer": spec.optimizer, "pruning": spec.pruning,
                "variant": spec.variant, "target_sparsity": spec.target_sparsity, "seed": spec.seed,
                "unequal_budget": spec.budget_factor != 1.0, "metric": self.task.metric, "final": final,
                "best": self.best, "achieved_sparsity": float(opt.sparsity()), "params": params, "memory": memory,
                "layers": layer_sparsity(opt.prunable) if spec.pruning != "none" else None,
                "device_peak_memory_bytes": peak_memory_bytes(self.device), "total_time_s": self._elapsed(),
                "steps": step,
                "samples_per_s": step * self.hp["effective_batch"] / self.train_time if self.train_time > 0 else None}

    def _finish_files(self, step: int) -> None:
        if not self.main:
            return
        rundir.write_json(self.run_dir / rundir.SUMMARY, self._summary(step))
        try:
            from lib.training.plots import plot_curves

            plot_curves(rundir.read_metrics(self.run_dir), self.run_dir / rundir.CURVES,
                        title=self.hp["run_id"], metric=self.task.metric)
        except Exception as err:  # a plot must never fail a finished run
            self.log(f"notice: training-curve plot not written ({err})")

    def _fail(self, step: int, reason: str) -> int:
        self.log(f"FAILED at step {step}: {reason}")
        if self.main:
            rundir.write_status(self.run_dir, rundir.FAILED, reason=reason, step=step)
            self._finish_files(self.done)
        return 1

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum, _frame):
        if self.interrupted is not None:
            raise KeyboardInterrupt  # a second Ctrl-C/TERM: stop now, resume from the last checkpoint
        self.interrupted = signal.Signals(signum).name

    @contextlib.contextmanager
    def _signals(self):
        # Under torchrun the agent stops workers with SIGTERM; a handler there would only delay that.
        if self.world > 1 or threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    # ---------------------------------------------------------------- the run
    def run(self) -> int:
        hp, payload = self._load_resume(self._plan())
        self.amp, self.use_compile = hp["amp"], hp["compile"]
        self._build(hp, payload)
        self.session_start = time.perf_counter()
        reset_peak_memory(self.device)
        self.best, self.last_record = None, None
        self.interval = {"loss_sum": 0.0, "steps": 0, "train_time": 0.0}
        if payload is not None:
            step = int(payload["step"])
            self.best, self.interval = payload["best"], dict(payload["interval"])
            clock = payload["clock"]
            self.elapsed_before, self.train_time = clock["elapsed"], clock["train_time"]
            restore_rng(payload["rng"])
            records = rundir.read_metrics(self.run_dir)
            if self.main:
                rundir.truncate_metrics(self.run_dir, step)
            kept = [r for r in records if r.get("step") is not None and r["step"] <= step]
            self.last_record = kept[-1] if kept else None
            self.log(f"resuming {hp['run_id']} from {self.run_dir / rundir.LAST} at step {step}/{hp['total_steps']}")
        else:
            step, self.elapsed_before, self.train_time = 0, 0.0, 0.0
            if self.main:
                checkpoint.remove_stale_temporaries(self.run_dir)
                for name in (rundir.METRICS, rundir.SUMMARY, rundir.BEST, rundir.CURVES):
                    (self.run_dir / name).unlink(missing_ok=True)  # leftovers of an attempt with no last.pt
            if hp["time_budget_s"]:
                # The sweep's probe of the slowest method of the comparison, when it made one:
                # every run of the comparison then trains the same number of steps.
                shared = rundir.read_json(self.run_dir / rundir.SHARED_BUDGET)
                if not (isinstance(shared, dict) and isinstance(shared.get("steps"), int)):
                    shared = None
                if shared:
                    measured, fit = {k: v for k, v in shared.items() if k != "steps"}, shared["steps"]
                else:
                    measured = self._probe()  # its time is part of the elapsed clock, which started above
                    fit = self._fit(hp, measured, spent_s=time.perf_counter() - self.session_start)
                hp = resolve.apply_time_budget(hp, fit, measured=measured)
                self.hp = hp
                self.log(f"time budget {hp['time_budget_s']} s: {measured['step_s'] * 1000:.1f} ms/step, "
                         f"{measured['eval_s']:.2f} s/evaluation -> {hp['total_steps']} of "
                         f"{hp['time_budget']['planned_steps']} steps (schedule scaled by {hp['time_budget']['scale']:.3f})"
                         + (f", shared by the comparison (probed on {shared.get('probed')})" if shared else ""))
                if hp["time_budget"]["scale"] != 1.0:
                    self._reschedule()  # the pruning schedule (and adamwadv's cosine) shrank with the run
            if self.main:
                rundir.write_json(self.run_dir / rundir.HPARAMS, hp)
                rundir.write_json(self.run_dir / start_record.FILE, self._start_record())
            self.log(f"run {hp['run_id']}: {hp['total_steps']} steps of {hp['batch_size']} x {hp['grad_acc']} x "
                     f"{hp['world_size']} = {hp['effective_batch']} samples on {hp['device']}"
                     + (f" ({hp['steps_per_epoch']} steps/epoch)" if hp["epoch_based"] else ""))
            if not hp["epoch_based"]:
                self._log_initial_quality()
        if self.main:
            rundir.write_status(self.run_dir, rundir.RUNNING, step=step)
        self.done = step
        with self._signals(), heartbeat.beating(self.run_dir, enabled=self.main):
            try:
                return self._loop(step)
            except FloatingPointError as err:
                return self._fail(self.done, str(err))
            except Interrupted as err:
                return self._fail(self.done, str(err))

    def _loop(self, step: int) -> int:
        hp = self.hp
        total, eval_every, ckpt_every = hp["total_steps"], hp["eval_every_steps"], hp["checkpoint_every_steps"]
        perm = self._permutation(step)
        span = hp["steps_per_epoch"] if hp["epoch_based"] else eval_every
        bar, lr, note = None, 0.0, None
        self.model.train()
        while step < total:
            if hp["epoch_based"] and step % hp["steps_per_epoch"] == 0:
                perm = self._permutation(step)
            if bar is None:
                first = step - step % span
                label = (f"epoch {step // span + 1}/{math.ceil(total / span)}" if hp["epoch_based"]
                         else f"steps {first + 1}-{min(first + span, total)}")
                bar = tqdm(total=min(span, total - first), initial=step - first, desc=label, leave=False,
                           disable=not (self.progress and self.main), dynamic_ncols=True)
            t0 = time.perf_counter()
            lr = self._set_lr(step)
            loss = self._forward_backward(step, perm)
            if self.world > 1:
                # One collective per step: every rank sees the same loss and the same stop decision.
                flags = torch.stack([loss, torch.tensor(float(self._out_of_time()), device=self.device)])
                dist.all_reduce(flags)
                value, out_of_time = float(flags[0]) / self.world, bool(flags[1] > 0)
            else:
                value, out_of_time = float(loss), self._out_of_time()
            if not math.isfinite(value):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(f"training loss is {value} at step {step + 1}; weights of step {step} kept "
                                         "(lower the learning rate or enable gradient clipping)")
            self._optimizer_step()
            self._sync()
            spent = time.perf_counter() - t0
            step += 1
            self.done = step
            self.train_time += spent
            self.interval["loss_sum"] += value
            self.interval["steps"] += 1
            self.interval["train_time"] += spent
            bar.update(1)
            if not bar.disable and (bar.n % 10 == 0 or step % span == 0):
                post = f"loss {value:.4f}"
                if self.last_record is not None and self.last_record["accuracy"] is not None:
                    post += f" acc {self.last_record['accuracy']:.2f}%"
                bar.set_postfix_str(post + f" sparsity {100 * float(self.optimizer.sparsity()):.1f}%", refresh=False)
            if step % span == 0 or step == total:
                bar.close()
                bar = None
            stopping = out_of_time or self.interrupted is not None or step == self.stop_at_step
            if step % eval_every == 0 or step == total or out_of_time:
                self._record(step, lr)
            if step % ckpt_every == 0 or step == total or stopping:
                self._save_last(step)
            if out_of_time and step < total:
                note = (f"time budget of {hp['time_budget_s']} s reached at step {step} of {total}; "
                        "the schedule did not complete")
                self.log(f"notice: {note}")
                break
            if self.interrupted is not None or step == self.stop_at_step:
                if bar is not None:
                    bar.close()
                why = f"signal {self.interrupted}" if self.interrupted else "stop requested"
                raise Interrupted(f"interrupted ({why}) at step {step}; last.pt saved, run again to resume")
        if bar is not None:
            bar.close()
        if self.main:
            self._finish_files(step)
            rundir.write_status(self.run_dir, rundir.COMPLETED, reason=note, step=step)
        self.log(f"completed {hp['run_id']} in {self._elapsed():.1f} s"
                 + (f": final {self.task.metric} {self._final_quality()}" if self.last_record else ""))
        return 0

    def _final_quality(self) -> str:
        r = self.last_record
        return f"{r['accuracy']:.2f}%" if r["accuracy"] is not None else f"{r['perplexity']:.2f}"

    def _out_of_time(self) -> bool:
        # A hard stop only when the probe's estimate was wrong: 3% over the budget. A shared
        # budget gives bitter2 its 1.21x steps (flagged as unequal), so its time scales alike.
        budget = self.hp["time_budget_s"]
        if budget and self.hp.get("time_budget", {}).get("shared"):
            budget *= self.hp["budget_factor"]
        return bool(budget) and self._elapsed() > budget * 1.03
