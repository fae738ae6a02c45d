"""The mask machinery shared by every pruning method; methods differ only in the score.

A Pruner is driven by its optimizer: `before_update()` before the weights change (movement
accumulates its score, bit masks zero pruned gradients) and `after_update(t)` after
optimizer step t (mask update on the schedule's steps).
"""
from __future__ import annotations

import torch

from lib.pruning import scores
from lib.pruning.apportion import apportion, depth_fractions
from lib.pruning.masks import flat, representation
from lib.pruning.schedule import check_schedule, is_update_step, sparsity_at
from lib.pruning.select import Ledger, chunks, find_cut

METHODS = ("magnitude", "movement", "state")
SCOPES = ("global", "layer")
_SEED = 0x6B6E6C70  # sampling seed, mixed with the step: repeatable, and no global RNG draw


class _Keys:
    """Scores of a subset of the prunable tensors, -inf at pruned positions (select.py)."""

    def __init__(self, pruner, js):
        self.pr = pruner
        self.js = list(js)
        self.sizes = [pruner.sizes[j] for j in self.js]
        self.chunk = pruner.chunk
        self.steps = {}
        if pruner.method == "state" and scores.uses_state(pruner.variant):
            for j in self.js:
                st = pruner.opt.state.get(pruner.params[j], {})
                self.steps[j] = int(st["step"]) if "step" in st else 0

    def _raw(self, j, sel):
        pr = self.pr
        p = pr.params[j]
        if pr.method == "movement":
            return flat(pr.movement[j])[sel].clone()
        w = flat(p.detach())[sel]
        if pr.method == "magnitude" or not scores.uses_state(pr.variant) or self.steps[j] < 1:
            return w.float().abs()
        st = pr.opt.state[p]
        m, v = flat(st["exp_avg"])[sel], flat(st["exp_avg_sq"])[sel]
        return scores.score(pr.variant, w, m, v, step=self.steps[j], beta1=pr.beta1(j))

    def keys(self, i, a, b):
        j = self.js[i]
        return self.pr.rep.sink_dead(j, a, b, self._raw(j, slice(a, b)))

    def sample(self, i, idx):
        j = self.js[i]
        idx = idx.to(self.pr.params[j].device)
        return self.pr.rep.sink_dead_at(j, idx, self._raw(j, idx))


class Pruner:
    def __init__(self, optimizer, named_params, *, method, variant=None, target=0.0, warmup_end=0,
                 ramp_end=0, frequency=50, shape="cubic", scope="global", chunk=None,
                 sample_size=1 << 19):
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r}; use one of none, {', '.join(METHODS)}")
        if scope not in SCOPES:
            raise ValueError(f"unknown pruning scope {scope!r}; use one of {', '.join(SCOPES)}")
        check_schedule(warmup_end=warmup_end, ramp_end=ramp_end, final=target, shape=shape, frequency=frequency)
        if method == "state":
            scores.check_variant(variant)
        if not named_params:
            raise ValueError("the model has no prunable weights (nn.Linear / nn.Conv*); use pruning='none'")
        self.opt = optimizer
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.sizes = [p.numel() for p in self.params]
        self.total = sum(self.sizes)
        self.method, self.variant = method, variant
        self.target, self.warmup_end, self.ramp_end = float(target), warmup_end, ramp_end
        self.frequency, self.shape = frequency, shape
        self.scope = "layer" if (scope == "layer" or variant == "bitter4") else "global"
        on_gpu = self.params[0].device.type != "cpu"
        self.chunk = chunk or (1 << 24 if on_gpu else 1 << 18)  # CPU: a chunk's temporaries stay in L2
        self.sample_size = sample_size
        self.rep = representation(optimizer, self.params)
        self.dead = [0] * len(self.params)
        self.movement = ([torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                          for p in self.params] if method == "movement" else None)
        self.last_update = 0
        self.transient_peak = 0
        self.passes = 0

    # -- hooks called by the optimizer -------------------------------------------------
    def before_update(self):
        if self.movement is not None:
            for p, s in zip(self.params, self.movement):
                if p.grad is not None:
                    s.addcmul_(p.grad, p.detach(), value=-1.0)  # Sanh et al.: S -= g * w
        if self.rep.kind == "bits" and any(self.dead):
            self.rep.mask_grads(self.dead)

    def mask_grads(self):
        """Zero pruned gradients (before gradient-norm clipping)."""
        if any(self.dead):
            self.rep.mask_grads(self.dead)

    def after_update(self, t: int):
        if self.target > 0 and is_update_step(t, warmup_end=self.warmup_end, ramp_end=self.ramp_end,
                                               frequency=self.frequency):
            self.update(t)

    # -- the mask update ----------------------------------------------------------------
    def beta1(self, j) -> float:
        p = self.params[j]
        for g in self.opt.param_groups:
            if any(q is p for q in g["params"]):
                return float(g.get("betas", (0.9, 0.999))[0])
        return 0.9

    def update(self, t: int):
        s = sparsity_at(t, warmup_end=self.warmup_end, ramp_end=self.ramp_end, final=self.target, shape=self.shape)
        goal = round(s * self.total)  # pruned weights after this update
        self.rep.prepare()
        ledger = Ledger()
        gen = torch.Generator().manual_seed(_SEED + t)
        self.passes = 0
        with torch.no_grad():
            if self.scope == "global":
                self._cut(range(len(self.params)), self.total - goal, gen, ledger)
            else:
                frac = (depth_fractions(self.sizes, s) if self.variant == "bitter4" else [s] * len(self.sizes))
                counts = apportion([f * n for f, n in zip(frac, self.sizes)], goal, self.dead, self.sizes)
                for j, c in enumerate(counts):
                    if c > self.dead[j]:
                        self._cut([j], self.sizes[j] - c, gen, ledger)
        self.last_update = t
        self.transient_peak = ledger.peak

    def _cut(self, js, keep, gen, ledger):
        src = _Keys(self, js)
        alive = sum(self.sizes[j] - self.dead[j] for j in src.js)
        cut = find_cut(src, keep, alive, generator=gen, sample_size=self.sample_size, ledger=ledger)
        self.passes += cut.passes
        if not cut.prune_all and cut.tau == -float("inf"):
            return
        pruned = [0] * len(src.js)
        for i, a, b in chunks(src):
            ledger.hold((b - a) * 8)
            if cut.prune_all:
                pb = torch.ones(b - a, dtype=torch.bool, device=self.params[src.js[i]].device)
            else:
                key = src.keys(i, a, b)
                pb = key < cut.tau  # pruned positions score -inf: re-marking them is a no-op
                n_tie = cut.ties.get((i, a), 0)
                if n_tie:
                    pb[torch.nonzero(key == cut.tau).view(-1)[:n_tie]] = True
            self.rep.prune(src.js[i], a, b, pb)
            pruned[i] += int(torch.count_nonzero(pb))
            ledger.free((b - a) * 8)
        for i, j in enumerate(src.js):
            self.dead[j] = pruned[i]

    # -- reporting and persistence ------------------------------------------------------
    def sparsity(self) -> float:
        return sum(self.dead) / self.total

    def pruned_count(self) -> int:
        return sum(self.dead)

    def persistent_bytes(self) -> int:
        extra = sum(s.numel() * s.element_size() for s in self.movement) if self.movement else 0
        return extra + self.rep.persistent_bytes()

    def recount(self):
        self.dead = [self.rep.count_dead(j) for j in range(len(self.params))]

    def state_dict(self) -> dict:
        return {"method": self.method, "variant": self.variant, "scope": self.scope,
                "names": list(self.names), "last_update": self.last_update,
                "transient_peak": self.transient_peak, "dead": list(self.dead),
                "movement": [s.clone() for s in self.movement] if self.movement else None,
                "mask": self.rep.state_dict()}

    def load_state_dict(self, sd: dict):
        if sd.get("method") != self.method or sd.get("variant") != self.variant:
            raise ValueError(f"checkpoint pruned with {sd.get('method')}/{sd.get('variant')}, this run uses "
                             f"{self.method}/{self.variant}; resume with the same pruning settings")
        if sd.get("names") != self.names:
            raise ValueError("checkpoint has a different set of prunable weights; resume the same model")
        self.rep.load_state_dict(sd["mask"])
        if self.movement is not None:
            for s, saved in zip(self.movement, sd["movement"]):
                s.copy_(saved)
        self.last_update = int(sd["last_update"])
        self.transient_peak = int(sd["transient_peak"])
        self.recount()
