"""The mask machinery shared by every pruning method; methods differ only in the score.

A Pruner is driven by its optimizer: `before_update()` before the weights change (movement
accumulates its score, bit masks zero pruned gradients) and `after_update(t)` after
optimizer step t (mask update on the schedule's steps).
"""
from __future__ import annotations

import torch

from lib.pruning import nm as nm_masks
from lib.pruning import scores
from lib.pruning.apportion import apportion, depth_fractions
from lib.pruning.masks import flat, group_of, representation
from lib.pruning.schedule import check_schedule, is_update_step, sparsity_at
from lib.pruning.select import CHUNK_WORK_BYTES, Ledger, NeedExact, chunks, count, find_cut

METHODS = ("magnitude", "movement", "state")
SCOPES = ("global", "layer")
_SEED = 0x6B6E6C70  # sampling seed, mixed with the step: repeatable, and no global RNG draw


class _Keys:
    """Scores of a subset of the prunable tensors, -inf at pruned positions (select.py).

    keys() returns the scores: a view of a reused buffer, valid until the next call."""

    def __init__(self, pruner, js, exact):
        self.pr = pruner
        self.js = list(js)
        # Scores that are never negative leave a pruned weight (w = 0) at exactly 0, so
        # 0 can stand for "pruned" with no pass to mark it; select.py asks for the exact
        # marking (-inf) only if the threshold itself falls to 0.
        self.exact = exact or not pruner.nonnegative
        self.floor = -float("inf") if self.exact else 0.0
        self.sizes = [pruner.sizes[j] for j in self.js]
        self.chunk = pruner.chunk
        self.buf = None
        self.views = {}  # j -> flat (w, m, v, step, beta1): built once per update, not per chunk
        use_state = pruner.method == "state" and scores.uses_state(pruner.variant)
        for j in self.js:
            p = pruner.params[j]
            st = pruner.opt.state.get(p, {})
            step = int(st["step"]) if use_state and "step" in st else 0
            m = flat(st["exp_avg"]) if step >= 1 else None
            v = flat(st["exp_avg_sq"]) if step >= 1 else None
            src = flat(pruner.movement[j]) if pruner.method == "movement" else flat(p.detach())
            self.views[j] = (src, m, v, step, pruner.beta1(j))

    def _score(self, j, sl, out, tmp):
        pr = self.pr
        w, m, v, step, beta1 = self.views[j]
        if pr.method == "movement":
            out.copy_(w[sl])
        elif m is None:
            torch.abs(w[sl], out=out)
        else:
            scores.score(pr.variant, w[sl], m[sl], v[sl], step=step, beta1=beta1, out=out, tmp=tmp)
        return pr.rep.sink_dead(j, sl, out, tmp) if self.exact else out

    def keys(self, i, a, b):
        j = self.js[i]
        dev = self.pr.params[j].device
        if self.buf is None or self.buf.device != dev:
            self.buf = torch.empty(2, self.chunk, device=dev)
        return self._score(j, slice(a, b), self.buf[0, :b - a], self.buf[1, :b - a])

    def sample(self, i, start, stride):
        j = self.js[i]
        n = len(range(start, self.sizes[i], stride))
        out = torch.empty(2, n, device=self.pr.params[j].device)
        return self._score(j, slice(start, self.sizes[i], stride), out[0], out[1])


class Pruner:
    def __init__(self, optimizer, named_params, *, method, variant=None, target=0.0, warmup_end=0,
                 ramp_end=0, frequency=50, shape="cubic", scope="global", chunk=None,
                 sample_size=1 << 19, nm=None):
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
        self.nm = nm_masks.NMPattern(nm, self.names, self.params, self.target) if nm else None  # "2:4"
        self.scope = "layer" if (scope == "layer" or variant == "bitter4") else "global"
        self.nonnegative = method == "magnitude" or (method == "state" and variant != "bitter5")
        on_gpu = self.params[0].device.type != "cpu"
        # CPU: 2**18 floats keep a chunk's few buffers in L2 (measured best of 2**16..2**19);
        # GPU: large chunks, so each kernel has work enough; both keep float sums exact (< 2**24)
        self.chunk = chunk or (1 << 22 if on_gpu else 1 << 18)
        self.sample_size = sample_size
        self.rep = representation(optimizer, self.params)
        self.dead = [0] * len(self.params)
        self.movement = ([torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                          for p in self.params] if method == "movement" else None)
        self.last_update = 0
        self.transient_peak = 0
        self.overshoot = 0  # weights kept beyond the target after a 6-sigma sampling miss (select.py)

    # -- hooks called by the optimizer -------------------------------------------------
    def before_update(self):
        if self.movement is not None:
            for p, s in zip(self.params, self.movement):
                if p.grad is not None:
                    s.addcmul_(p.grad, p.detach(), value=-1.0)  # Sanh et al.: S -= g * w
        if self.rep.kind == "bits" and any(self.dead):
            self.rep.mask_grads(self.dead)

    def mask_grads(self):
        """Zero pruned gradients (before gradient-norm clipping); bit masks did it already."""
        if self.rep.kind != "bits" and any(self.dead):
            self.rep.mask_grads(self.dead)

    def after_update(self, t: int):
        if self.target > 0 and is_update_step(t, warmup_end=self.warmup_end, ramp_end=self.ramp_end,
                                               frequency=self.frequency):
            self.update(t)

    # -- the mask update ----------------------------------------------------------------
    def beta1(self, j) -> float:
        g = group_of(self.opt, self.params[j])
        return float(g.get("betas", (0.9, 0.999))[0]) if g is not None else 0.9

    def update(self, t: int):
        s = sparsity_at(t, warmup_end=self.warmup_end, ramp_end=self.ramp_end, final=self.target, shape=self.shape)
        goal = round(s * self.total)  # pruned weights after this update
        self.rep.prepare()
        ledger = Ledger()
        gen = torch.Generator().manual_seed(_SEED + t)
        with torch.no_grad():
            if self.nm is not None:  # N:M semi-structured masks
                nm_masks.update(self, s, goal, ledger)
            elif self.scope == "global":
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
        js = list(js)
        alive = sum(self.sizes[j] - self.dead[j] for j in js)
        pruned = {}  # (i, a) -> pruned positions in that chunk, from the latest pass over it

        def commit(i, a, b, keep_flags, n_pruned):
            self.rep.prune(js[i], a, b, keep_flags)
            pruned[(i, a)] = n_pruned

        kw = dict(generator=gen, commit=commit, sample_size=self.sample_size, ledger=ledger)
        src = _Keys(self, js, exact=False)
        try:
            cut = find_cut(src, keep, alive, **kw)
        except NeedExact:  # nothing was committed: the first pass stops at the floor
            src = _Keys(self, js, exact=True)
            cut = find_cut(src, keep, alive, **kw)
        self.overshoot += cut.overshoot
        if cut.needs_pass():
            self._prune_pass(src, cut, pruned, ledger)
        # committed or re-pruned chunks give the counts; with neither, below tau everything
        # was pruned already
        dead = [0] * len(js) if pruned else [self.dead[j] for j in js]
        for (i, _), c in pruned.items():
            dead[i] += c
        if not cut.needs_pass():
            for i, pos in cut.drop_flat.items():  # the band's losers, one index pass per tensor
                self.rep.prune_at(js[i], pos)
                dead[i] += pos.numel()
        for i, j in enumerate(js):
            self.dead[j] = dead[i]

    def _prune_pass(self, src, cut, pruned, ledger):
        """Prune key < tau, the band's drops and the ties, chunk by chunk (recomputing keys)."""
        buf = None
        for i, a, b in chunks(src):
            n = b - a
            ledger.hold(n * CHUNK_WORK_BYTES)
            dev = self.params[src.js[i]].device
            if buf is None or buf.device != dev:
                buf = torch.empty(self.chunk, device=dev)
            keep = buf[:n]
            if cut.prune_all:
                keep.zero_()
            else:
                key = src.keys(i, a, b)
                torch.ge(key, cut.tau, out=keep)  # pruned positions are below tau: re-marked, a no-op
                if (i, a) in cut.drop:
                    keep.index_fill_(0, cut.drop[(i, a)], 0.0)
                if (i, a) in cut.ties:
                    keep.index_fill_(0, torch.nonzero(key == cut.tau).view(-1)[:cut.ties[(i, a)]], 0.0)
            self.rep.prune(src.js[i], a, b, keep)
            pruned[(i, a)] = n - count(keep)
            ledger.free(n * CHUNK_WORK_BYTES)

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
                "transient_peak": self.transient_peak, "overshoot": self.overshoot, "dead": list(self.dead),
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
        self.overshoot = int(sd.get("overshoot", 0))
        self.recount()
