"""The mask machinery shared by every pruning method; methods differ only in the score.

A Pruner is driven by its optimizer: `before_update()` before the weights change (movement
accumulates its score, bit masks zero pruned gradients) and `after_update(t)` after
optimizer step t (mask update on the schedule's steps).
"""
from __future__ import annotations

import numpy as np
import torch

from lib.pruning import nm as nm_masks
from lib.pruning import cpu_pass, resolve_cpu, score_registry, scores
from lib.pruning.apportion import apportion, depth_fractions
from lib.pruning.masks import plain_float32, flat, groups_of, representation
from lib.pruning.schedule import check_schedule, is_update_step, sparsity_at
from lib.pruning.bracket import BLOCK, ITEM_SLACK, RANGE, SAMPLE_KEYS, SCRATCH_BYTES, mix_seed, reads_in_place
from lib.pruning.select import (BAND_BYTES, COLLECT_BYTES, RESOLVE_BYTES, SELECT_WORK_BYTES, Ledger, digits_for,
                                 hist_bytes, prune_lowest)

METHODS = tuple(m for m in score_registry.PRUNING_METHODS if m != "none")
SCOPES = ("global", "layer")
# One update's temporaries stay below TRANSIENT_BUDGET x the prunable weights' bytes (from
# about 1M weights up; the smallest chunk and the counts set a floor below that)
TRANSIENT_BUDGET = 0.12
# the single bracketed pass (bracket.py) may use a little more: its bits, band and sample
# are never held together with the radix route's counts
BRACKET_BUDGET = 0.14
SAMPLE_BYTES = 9  # per sampled key: the keys, numpy's copy to partition, one bool flag
BRACKET_WORK_BYTES = 3  # per chunk element: two bool flags and the packing scratch
MIN_CHUNK, MAX_CHUNK = 1 << 12, 1 << 22  # float flag sums stay exact below 2**24
# bytes per chunk element the scores need beyond select's: the score and its scratch
# (float32), float32 copies of w, m, v when they are stored in another dtype, unpacked
# bit-mask flags, and what a variant allocates itself (its registry entry's work_bytes)
SCORE_BYTES, CONVERT_BYTES, BITS_BYTES = 8, 12, 3
LAYER_SAMPLE_KEYS = 1 << 15  # the least a layer pruned on its own samples (scope = layer)
TABLE_ROOM = 1 << 16  # weights in a table of a model below 1M weights (from 1M up: a chunk's worth)


class _Buffers:
    """The float32 chunk buffers every source of one update shares, made and held in the
    ledger when first asked for: the compiled loops read a table's tensors in place and
    never ask (so a model they read whole leaves the buffers' bytes to the bracket's band)."""

    def __init__(self, pruner, ledger):
        self.ledger, self.bytes, self.made = ledger, pruner.chunk * pruner.source_bytes, False
        self._pr = pruner
        self._out = self._tmp = self._conv = None

    def _make(self):
        if not self.made:
            self.ledger.hold(self.bytes)
            self.made = True
            pr = self._pr
            n, dev = pr.chunk, pr.params[0].device
            self._out, self._tmp = torch.empty(n, device=dev), torch.empty(n, device=dev)
            self._conv = [torch.empty(n, device=dev) for _ in range(3)] if pr.converts else None

    @property
    def out(self):
        self._make()
        return self._out

    @property
    def tmp(self):
        self._make()
        return self._tmp

    @property
    def conv(self):
        self._make()
        return self._conv

    def release(self):
        if self.made:
            self.ledger.free(self.bytes)
        self._out = self._tmp = self._conv = None
        self.made = False


class _Views(dict):
    """Tensor j's flat (w, m, v, step, beta1) as the scores read them, made once per update
    when first asked: a model of thousands of small tensors whose compiled pass reads its
    tensors through a table of addresses (cpu_pass) needs none of them."""

    def __init__(self, pruner):
        super().__init__()
        self.pr, self.betas = pruner, None
        self.use_state = pruner.method == "state" and scores.uses_state(pruner.variant)

    def step(self, j) -> int:
        """The Adam steps tensor j's state holds, for a score that reads the state (else 0)."""
        st = self.pr.opt.state.get(self.pr.params[j], {})
        return int(st["step"]) if self.use_state and "step" in st else 0

    def __missing__(self, j):
        pr = self.pr
        if self.betas is None:
            self.betas = pr.beta1s()
        p = pr.params[j]
        st = pr.opt.state.get(p, {})
        step = self.step(j)
        m = flat(st["exp_avg"]) if step >= 1 else None
        v = flat(st["exp_avg_sq"]) if step >= 1 else None
        src = flat(pr.movement[j]) if pr.method == "movement" else flat(p.detach())
        self[j] = got = (src, m, v, step, self.betas[j])
        return got


class _Keys:
    """The scores of some prunable tensors, as select.prune_lowest reads them."""

    def __init__(self, pruner, js, bufs):
        self.pr, self.js, self.bufs = pruner, list(js), bufs
        self.sizes = [pruner.sizes[j] for j in self.js]
        self.offsets = [pruner.offsets[j] for j in self.js]
        self.dead = [pruner.dead[j] for j in self.js]
        self.chunk = pruner.chunk
        self.device = pruner.params[self.js[0]].device
        # scores that are never negative leave a pruned weight (w = 0) at exactly 0: no
        # pass is needed to mark it, unless the cut falls among the zeros (select.py)
        self.dead_key = 0.0 if pruner.nonnegative else None
        self.views = _Views(pruner)  # j -> flat (w, m, v, step, beta1), made when first asked
        self._cpu = {}  # (i, exact) -> cpu_inputs

    def _f32(self, t, k, n):
        """t as float32: itself, or a copy into conversion buffer k."""
        return t if t is None or t.dtype == torch.float32 else self.bufs.conv[k][:n].copy_(t)

    def keys(self, i, a, b, exact):
        pr, j, n = self.pr, self.js[i], b - a
        w, m, v, step, beta1 = self.views[j]
        out, tmp = self.bufs.out[:n], self.bufs.tmp[:n]
        if pr.method == "movement":
            out.copy_(w[a:b])
        elif m is None:
            torch.abs(self._f32(w[a:b], 0, n), out=out)
        else:
            scores.score(pr.variant, self._f32(w[a:b], 0, n), self._f32(m[a:b], 1, n), self._f32(v[a:b], 2, n),
                         step=step, beta1=beta1, out=out, tmp=tmp)
        if self.dead_key is None:
            out.add_(0.0)  # -0.0 becomes +0.0: select.py orders float patterns, and -0.0 == 0.0
        return pr.rep.sink_dead(j, slice(a, b), out, tmp) if exact else out

    def squared_keys(self, i, a, b):
        """The scores of [a, b) squared, within score_registry.SQUARED_REL relative (a view
        of a reused buffer, like keys()); None where the score has no cheaper squared form,
        or no optimizer state yet. Never-negative scores only: pruned positions show 0."""
        pr, j, n = self.pr, self.js[i], b - a
        entry = pr.score
        w, m, v, step, beta1 = self.views[j]
        if pr.method != "state" or entry is None or entry.squared is None or m is None or self.dead_key is None:
            return None
        return entry.squared(self._f32(w[a:b], 0, n), self._f32(v[a:b], 2, n), eps=scores.EPS,
                             out=self.bufs.out[:n], tmp=self.bufs.tmp[:n])

    def cpu_inputs(self, i, exact):
        """(kind, x, m, v, dead_mode, dead) numpy views of tensor i for cpu_pass, whose
        compiled loop computes the keys itself: |w|, bitter7's, bitter0's, or movement's
        buffer as it is (m: the first moment, bitter0's only); None where it cannot
        (another score, 2-byte dtypes, or exact keys whose pruned positions the loop
        cannot see), and the pass reads keys() instead."""
        if (i, exact) not in self._cpu:  # once per update: a pass over many small tensors asks often
            self._cpu[(i, exact)] = self._cpu_inputs(i, exact)
        return self._cpu[(i, exact)]

    _KINDS = {"bitter7": cpu_pass.BITTER7, "bitter0": cpu_pass.BITTER0}

    def _stored(self, i):
        """(kind, w, m, v) of tensor i as stored (m only for BITTER0, v only where the
        score reads it), or None where no compiled loop computes its score."""
        pr, j = self.pr, self.js[i]
        p = pr.params[j]
        if pr.method == "movement":
            return cpu_pass.KEYS, pr.movement[j], None, None
        if self.views.step(j) < 1:
            return cpu_pass.ABS, p.detach(), None, None
        st = pr.opt.state[p]
        kind = self._KINDS.get(pr.score.kernel)
        if kind is None:
            return None
        return kind, p.detach(), st["exp_avg"] if kind == cpu_pass.BITTER0 else None, st["exp_avg_sq"]

    def _cpu_inputs(self, i, exact):
        pr, j = self.pr, self.js[i]
        dead_mode, dead = pr.rep.dead_source(j)
        stored = self._stored(i)
        if stored is None or exact and dead_mode == cpu_pass.DEAD_NONE and self.dead[i]:
            return None
        kind, w, m, v = stored
        if any(t is not None and t.dtype != torch.float32 for t in (w, m, v)):
            return None
        w, m, v = (None if t is None else flat(t).numpy() for t in (w, m, v))
        return kind, w, m, v, dead_mode, dead

    def cpu_table(self, exact):
        """(indices, table): the tensors that the compiled loops read together through one
        table of addresses (cpu_pass.table_of), in pieces (cpu_pass.items_of), or None when
        there are none; the others go one call each. Once per update."""
        key = ("table", exact)
        if key not in self._cpu:
            if "rows" not in self._cpu:  # both exact and not ask on some updates: checked once
                self._cpu["rows"] = self._table_rows()
            picked = [(i, row) for i, row, unmarked in self._cpu["rows"] if not (exact and unmarked and self.dead[i])]
            self._cpu[key] = ([i for i, _ in picked], cpu_pass.table_of([r for _, r in picked])) if picked \
                else None
        return self._cpu[key]

    def _table_rows(self):
        """(index, table row, whether its pruned positions are unmarked) of every tensor a
        table may hold (cpu_table): an exact pass leaves out the unmarked ones with pruned
        positions."""
        # a pass holds band slots for every weight of a small tensor: a chunk's worth of them
        # from 1M weights up keeps the update within its memory budget
        room = self.chunk if self.pr.total >= 1 << 20 else max(TABLE_ROOM, self.chunk)
        rows = []
        for i, n in enumerate(self.sizes):
            small = n <= cpu_pass.TABLE_MAX
            if n == 0 or small and n > room:
                continue
            stored = self._stored(i)
            cols = self.pr.rep.table_columns(self.js[i])
            # table_columns checked the weight and the state the mask writes; what else is read:
            # movement's buffer, bitter0's first moment
            if stored is None or cols is None or not all(
                    plain_float32(t) for t in (stored[1] if self.pr.method == "movement" else None, stored[2])
                    if t is not None):
                continue
            dead_mode, dead_at = cols[0], cols[1]
            kind, w, m, v = stored
            if dead_mode == cpu_pass.DEAD_STATE and v is None:
                v_at = dead_at  # |w| (no state read) still sees the pruned positions there
            else:
                v_at = 0 if v is None else v.data_ptr()
            room -= n if small else 0
            rows.append((i, (kind, w.data_ptr(), 0 if m is None else m.data_ptr(), v_at, dead_mode,
                             dead_at if dead_mode == cpu_pass.DEAD_BITS else 0, n), dead_mode == cpu_pass.DEAD_NONE))
        return rows

    def prune_table(self, idx, tab, bits, new, threads):
        """Prune the table's tensors where their bits (from byte tab[:, T_BITS] of `bits`)
        are set; new[e]: how many are, per entry. One compiled call for all of them, the
        threads taking pieces in turn (cpu_pass.scatter_items)."""
        go = [e for e in range(len(idx)) if new[e]]
        if not go:
            return
        cols = [self.pr.rep.table_columns(self.js[idx[e]], commit=True) for e in go]
        width = max(len(c[2]) for c in cols)
        targets = np.zeros((len(go), width), np.int64)
        patterns = np.zeros((len(go), width), np.int32)
        for r, c in enumerate(cols):
            for k, (at, pattern) in enumerate(c[2]):
                targets[r, k] = at
                patterns[r, k] = pattern
        masks = np.array([c[3] for c in cols], np.int64)
        rows = tab[go][:, [cpu_pass.T_BITS, cpu_pass.T_N]]
        cpu_pass.scatter_items(bits, rows, cpu_pass.items_of(rows[:, 1].tolist()), targets, patterns, masks, threads)

    def prune_bits(self, i, bits, count=None):
        self.pr.rep.prune_bits(self.js[i], bits, count)

    def keys_of(self, i, pos):
        """keys(i, .., exact=False) at tensor i's flat positions pos (a few: new tensors),
        where squared_keys() is not None."""
        pr, j = self.pr, self.js[i]
        w, m, v, step, beta1 = self.views[j]
        wi, vi = w.index_select(0, pos).float(), v.index_select(0, pos).float()
        # a score with a squared form reads w and v only (score_registry): m is not gathered
        return pr.score.compute(wi, None, vi, step=step, beta1=beta1, eps=scores.EPS,
                                out=torch.empty_like(wi), tmp=torch.empty_like(wi))

    def keys_at(self, i, rows, block):
        """Scores of the `block`-element rows `rows` (ascending) of tensor i, pruned
        positions showing what keys(..., exact=False) shows them as (a view of a reused
        buffer; at most chunk // block rows)."""
        pr, j = self.pr, self.js[i]
        w, m, v, step, beta1 = self.views[j]
        n_rows = w.numel() // block
        k = rows.numel() * block

        def gather(t):
            return None if t is None else t[:n_rows * block].view(n_rows, block).index_select(0, rows).view(-1)
        parts = [w] if pr.method == "movement" or m is None else [w, m, v]
        held = sum(k * (t.element_size() + (4 if t.dtype != torch.float32 else 0)) for t in parts)
        if self.dead_key is None:  # the pruned flags, and what finding them gathers
            held += k * (1 + (self.pr.opt.state[self.pr.params[j]]["exp_avg_sq"].element_size()
                              if pr.rep.kind == "state" else 1))
        self.bufs.ledger.hold(held)
        try:
            out, tmp = self.bufs.out[:k], self.bufs.tmp[:k]
            wi = gather(w)
            if pr.method == "movement":
                out.copy_(wi)
            elif m is None:
                torch.abs(wi.float(), out=out)
            else:
                scores.score(pr.variant, wi, gather(m), gather(v), step=step, beta1=beta1, out=out, tmp=tmp)
            if self.dead_key is None:
                out.add_(0.0)
                dead = pr.rep.dead_rows(j, rows, block)
                if dead is not None:
                    out.masked_fill_(dead, -float("inf"))
            return out
        finally:
            self.bufs.ledger.free(held)

    def prune(self, i, a, b, keep):
        self.pr.rep.prune(self.js[i], a, b, keep)

    def prune_at(self, i, pos):
        self.pr.rep.prune_at(self.js[i], pos)


class Pruner:
    def __init__(self, optimizer, named_params, *, method, variant=None, target=0.0, warmup_end=0,
                 ramp_end=0, frequency=50, shape="cubic", scope="global", chunk=None, cap=None, digits=None,
                 nm=None, sample=None, band_cap=None):
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
        self.offsets = [sum(self.sizes[:j]) for j in range(len(self.sizes))]
        self.total = sum(self.sizes)
        self.method, self.variant = method, variant
        self.target, self.warmup_end, self.ramp_end = float(target), warmup_end, ramp_end
        self.frequency, self.shape = frequency, shape
        self.nm = nm_masks.NMPattern(nm, self.names, self.params, self.target) if nm else None  # "2:4"
        self.score = score_registry.for_method(method, variant)  # None: movement's own buffer
        self.depth_scaled = self.score is not None and self.score.depth_scaled_layers
        self.scope = "layer" if (scope == "layer" or self.depth_scaled) else "global"
        self.nonnegative = self.score is not None and self.score.nonnegative
        self.rep = representation(optimizer, self.params)
        self._size_buffers(chunk, cap, digits, sample, band_cap)
        self.dead = [0] * len(self.params)
        self.movement = ([torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
                          for p in self.params] if method == "movement" else None)
        self.last_update = self.update_step = 0
        self.transient_peak = 0
        self.selections = []  # select.Selection of each prune_lowest call of the latest update
        if self.target > 0 and self.params[0].device.type == "cpu" and cpu_pass.available():
            # the compiled loops, loaded now (about half a second, once per process) rather
            # than by the first mask update, which then costs what the others do
            cpu_pass.warm()

    def set_schedule(self, *, warmup_end: int, ramp_end: int, frequency: int | None = None) -> None:
        """Move the sparsity ramp (a time budget measured after construction shrinks the run):
        the same Pruner then prunes as one constructed with these steps would. Before the
        first mask update only, so no mask was made on the old schedule."""
        frequency = self.frequency if frequency is None else frequency
        check_schedule(warmup_end=warmup_end, ramp_end=ramp_end, final=self.target, shape=self.shape,
                       frequency=frequency)
        if self.last_update:
            raise ValueError(f"the masks were already updated at step {self.last_update}; set the pruning "
                             "schedule before training")
        self.warmup_end, self.ramp_end, self.frequency = warmup_end, ramp_end, frequency

    def _size_buffers(self, chunk, cap, digits, sample=None, band_cap=None):
        """Chunk length, collected-band cap and radix digits that keep one update's
        temporaries within TRANSIENT_BUDGET of the weight bytes; the bracket's sample and
        band within BRACKET_BUDGET."""
        weight_bytes = sum(p.numel() * p.element_size() for p in self.params)
        self.converts = any(p.dtype != torch.float32 for p in self.params)
        self.source_bytes = (SCORE_BYTES + (CONVERT_BYTES if self.converts else 0)
                             + (BITS_BYTES if self.rep.kind == "bits" else 0)
                             + (self.score.work_bytes if self.score else 0))
        budget = TRANSIENT_BUDGET * weight_bytes
        self.digits = tuple(digits) if digits else digits_for(weight_bytes, TRANSIENT_BUDGET)
        per_elem = self.source_bytes + SELECT_WORK_BYTES
        fit = int((0.6 * budget - hist_bytes(self.digits)) / per_elem) // MIN_CHUNK * MIN_CHUNK
        self.chunk = chunk or min(MAX_CHUNK, max(MIN_CHUNK, fit))
        self.cap = cap if cap is not None else max(1024, int(0.3 * budget / COLLECT_BYTES))
        bufs = self.chunk * self.source_bytes
        room = BRACKET_BUDGET * weight_bytes - bufs
        bits = self.total // 8 + 8 * len(self.params)
        # the compiled loops resolve a band in 4 bytes a key, torch in 22 (resolve_cpu.py); their
        # pieces collect it in slots of ITEM_SLACK times their share, at least 512 a piece
        # (bracket.piece_slots), a tensor outside their table in scratch of eight times a
        # range's share (cpu_pass.block_cap) and then a copy
        compiled = self.params[0].device.type == "cpu" and cpu_pass.available()
        if compiled:
            room -= (self.total // cpu_pass.ITEM + len(self.params)) * 512 * SCRATCH_BYTES
            per_call = BAND_BYTES + SCRATCH_BYTES * min(1.0, 8 * min(RANGE, max(self.sizes)) / self.total)
            collect = resolve_cpu.RESOLVE_BYTES + max(SCRATCH_BYTES * ITEM_SLACK, per_call)
        else:
            collect = BAND_BYTES + RESOLVE_BYTES
        self.band_cap = (band_cap if band_cap is not None else
                         max(0, int((room - bits - self.chunk * BRACKET_WORK_BYTES) / collect)))
        # a pass that reads every tensor in place (bracket.reads_in_place) makes no chunk buffers:
        # their bytes go to the band (at 85M weights the middle of the ramp's band needs them)
        self.band_cap_in_place = self.band_cap
        if band_cap is None and compiled:
            self.band_cap_in_place = max(0, int((room + bufs - bits - self.chunk * BRACKET_WORK_BYTES) / collect))
        fit_sample = int(0.8 * room / SAMPLE_BYTES) // BLOCK * BLOCK
        self.sample = sample if sample is not None else min(SAMPLE_KEYS, max(0, fit_sample))

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
    def beta1s(self) -> list:
        """Each prunable tensor's beta1 (0.9 where its group has no betas)."""
        return [float(g.get("betas", (0.9, 0.999))[0]) if g is not None else 0.9
                for g in groups_of(self.opt, self.params)]

    def update(self, t: int):
        s = sparsity_at(t, warmup_end=self.warmup_end, ramp_end=self.ramp_end, final=self.target, shape=self.shape)
        goal = round(s * self.total)  # pruned weights after this update
        self.update_step = t
        self.rep.prepare()
        ledger = Ledger()
        self.selections = []
        with torch.no_grad():
            bufs = _Buffers(self, ledger)
            try:
                if self.nm is not None:  # N:M semi-structured masks
                    nm_masks.update(self, s, goal, ledger, bufs)
                elif self.scope == "global":
                    self._prune(range(len(self.params)), goal - sum(self.dead), bufs, ledger)
                else:
                    frac = (depth_fractions(self.sizes, s) if self.depth_scaled else [s] * len(self.sizes))
                    counts = apportion([f * n for f, n in zip(frac, self.sizes)], goal, self.dead, self.sizes)
                    for j, c in enumerate(counts):
                        if c > self.dead[j]:
                            self._prune([j], c - self.dead[j], bufs, ledger)
            finally:
                bufs.release()
        self.last_update = t
        self.transient_peak = ledger.peak

    def _prune(self, js, count, bufs, ledger):
        src = _Keys(self, js, bufs)
        # a layer pruned on its own (scope = layer) samples its share of the model's sample:
        # its band is about as many keys as the whole model's, and the layers' samples add up
        sample = self.sample if len(js) == len(self.params) else \
            min(self.sample, max(LAYER_SAMPLE_KEYS, self.sample * sum(src.sizes) // self.total // BLOCK * BLOCK))
        band_cap = self.band_cap_in_place if not bufs.made and reads_in_place(src) else self.band_cap
        sel = prune_lowest(src, count, cap=self.cap, digits=self.digits, ledger=ledger, sample=sample,
                           band_cap=band_cap, seed=mix_seed(self.update_step, sum(self.dead) + count))
        for j, d in zip(src.js, sel.dead):
            self.dead[j] = d
        self.selections.append(sel)

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
