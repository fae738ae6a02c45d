"""torch's optimizers with the project's additions, in one step() for all of them:

    pruning.before_update -> grad-norm clip (pruned positions excluded) -> SPAM stage
    -> torch's own fused/foreach update at the scheduled LR -> pruning.after_update(t)

One step counter `t` drives SPAM, the built-in cosine and the pruning schedule. With no
pruning, no clipping, no SPAM and no cosine, step() is exactly torch's step.
"""
from __future__ import annotations

import math

import torch


class KnlpMixin:
    def _knlp_setup(self, *, prunable, pruner=None, grad_clip=0.0, spam=None, cosine=None):
        # GradScaler must unscale and check for inf before our stages see the gradients,
        # not hand the scale to the fused kernel (which would run after them)
        self._step_supports_amp_scaling = False
        self._knlp_t = 0
        self.prunable = list(prunable)
        self.pruner = pruner
        self.grad_clip = float(grad_clip)
        self.spam = spam
        self.cosine = cosine  # (eta_min, total_steps) or None

    def _lr_for(self, base: float, t: int, spam_factor: float) -> float:
        lr = base
        if self.cosine is not None:
            eta_min, total = self.cosine
            c = 0.5 * (1.0 + math.cos(math.pi * min(t - 1, total) / total))
            lr = eta_min + (lr - eta_min) * c
        return lr * spam_factor

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        t = self._knlp_t + 1
        if self.pruner is not None:
            self.pruner.before_update()
        if self.grad_clip > 0:
            if self.pruner is not None:
                self.pruner.mask_grads()
            grads = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(grads, self.grad_clip)
        factor = self.spam.before_update(self, t) if self.spam is not None else 1.0
        bases = None
        if factor != 1.0 or self.cosine is not None:
            bases = [g["lr"] for g in self.param_groups]  # the engine's LR: never compounded
            for g, base in zip(self.param_groups, bases):
                g["lr"] = self._lr_for(base, t, factor)
        try:
            super().step()
        finally:
            if bases is not None:
                for g, base in zip(self.param_groups, bases):
                    g["lr"] = base
        self._knlp_t = t
        if self.pruner is not None:
            self.pruner.after_update(t)
        return loss

    # -- reporting ------------------------------------------------------------------------
    def sparsity(self) -> float:
        return self.pruner.sparsity() if self.pruner is not None else 0.0

    def prunable_count(self) -> int:
        return sum(p.numel() for _, p in self.prunable)

    def memory_bytes(self) -> dict:
        state = sum(v.numel() * v.element_size() for st in self.state.values()
                    for v in st.values() if torch.is_tensor(v))
        return {"state": int(state),
                "pruning": int(self.pruner.persistent_bytes()) if self.pruner is not None else 0,
                "transient_peak": int(self.pruner.transient_peak) if self.pruner is not None else 0,
                "weights": int(sum(p.numel() * p.element_size() for _, p in self.prunable))}

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self):
        sd = super().state_dict()
        sd["knlp"] = {"t": self._knlp_t,
                      "spam": self.spam.state_dict() if self.spam is not None else None,
                      "pruner": self.pruner.state_dict() if self.pruner is not None else None}
        return sd

    def load_state_dict(self, state_dict):
        sd = dict(state_dict)
        extra = sd.pop("knlp", None)
        if extra is None:
            raise ValueError("optimizer state has no 'knlp' entry (step counter, SPAM, masks); "
                             "load a state saved by lib.optimizers")
        if (extra["pruner"] is None) != (self.pruner is None) or (extra["spam"] is None) != (self.spam is None):
            raise ValueError("optimizer state was saved with different pruning/SPAM settings; "
                             "resume with the configuration of the saved run")
        super().load_state_dict(sd)
        self._knlp_t = int(extra["t"])
        if self.spam is not None:
            self.spam.load_state_dict(extra["spam"])
        if self.pruner is not None:
            self.pruner.load_state_dict(extra["pruner"])


class SGD(KnlpMixin, torch.optim.SGD):
    pass


class Adam(KnlpMixin, torch.optim.Adam):
    pass


class AdamW(KnlpMixin, torch.optim.AdamW):
    pass


class AdamWAdv(AdamW):
    """AdamW + AMSGrad + cosine LR to eta_min + grad-norm clip 1.0."""


class AdamWSpam(AdamW):
    """AdamW + SPAM."""


class AdamWPrune(AdamW):
    """AdamW (or AdamW + SPAM) + state-based pruning; with pruning off, exactly its base."""


_WRAPPED = {}


def knlp_class(name: str):
    """The class an optimizer registry entry names: one of this module's, or "torch.optim.NAME"
    given the stages above (made once per torch class)."""
    if name.startswith("torch.optim."):
        base = getattr(torch.optim, name[len("torch.optim."):], None)
        if not (isinstance(base, type) and issubclass(base, torch.optim.Optimizer)):
            raise ValueError(f"{name!r} is not a torch optimizer class; name one in torch.optim")
        return _WRAPPED.setdefault(base, type(base.__name__, (KnlpMixin, base), {}))
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, KnlpMixin)):
        raise ValueError(f"{name!r} is no optimizer class of lib/optimizers/core.py; "
                         "name one there or a torch.optim class as 'torch.optim.NAME'")
    return cls
