"""SPAM: spike-aware Adam with momentum reset (SPEC, "SPAM"), as a stage that runs before
torch's own Adam update. It keeps no state but the step of the last reset: the step
counter is the optimizer's one counter (the published code incremented it twice)."""
from __future__ import annotations

import math

import torch

from lib.pruning.masks import FMAX, flat


def _whole(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


class Spam:
    def __init__(self, theta=50.0, interval=1000, warmup=150):
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"spam_theta must be a number > 0, got {theta!r}")
        _whole("spam_interval", interval, 0)
        _whole("spam_warmup", warmup, 0)
        self.theta, self.interval, self.warmup = float(theta), interval, warmup
        self.last_reset = 0  # optimizer step after which m and v were last reset
        self._buf = None  # clip's chunk buffer, kept across steps

    def before_update(self, opt, t: int) -> float:
        """Reset when due, clip spikes in the gradients, and return the LR factor for step t."""
        if self.interval and t > 1 and (t - 1) % self.interval == 0:
            self.reset(opt)
            self.last_reset = t - 1
        k = t - 1 - self.last_reset  # Adam updates held by m and v
        if k >= 1:  # no state, no statistic: a reset never freezes learning
            self.clip(opt, k)
        if self.last_reset and k < self.warmup:
            return 0.5 * (1.0 - math.cos(math.pi * (k + 1) / self.warmup))
        return 1.0

    @torch.no_grad()
    def clip(self, opt, k: int, chunk: int = 1 << 17):
        buf = self._buf
        for group in opt.param_groups:
            root = math.sqrt(self.theta / (1.0 - group["betas"][1] ** k))  # sqrt(theta v_hat) = sqrt(v) * root
            for p in group["params"]:
                st = opt.state.get(p)
                if p.grad is None or not st or "exp_avg_sq" not in st:
                    continue
                g, v = flat(p.grad), flat(st["exp_avg_sq"])
                if buf is None or buf.device != v.device or buf.dtype != v.dtype or buf.numel() < chunk:
                    buf = self._buf = torch.empty(chunk, dtype=v.dtype, device=v.device)
                # chunk by chunk so the bound stays in cache
                for a in range(0, g.numel(), chunk):
                    b = min(a + chunk, g.numel())
                    # |g| > sqrt(theta v_hat) -> sign(g) sqrt(theta v_hat). A pruned position
                    # (v = inf) gets a bound of ~1e19 instead of inf: it never clips, and sqrt
                    # skips the slow path that +inf takes on CPU
                    # (the clamp stays below FMAX, whose sqrt is slow too, and fits bf16/fp16)
                    bound = torch.clamp(v[a:b], max=min(FMAX / 2, torch.finfo(v.dtype).max), out=buf[:b - a]).sqrt_().mul_(root)
                    torch.minimum(g[a:b], bound, out=g[a:b])
                    torch.maximum(g[a:b], bound.neg_(), out=g[a:b])

    @torch.no_grad()
    def reset(self, opt):
        for st in opt.state.values():
            if "exp_avg" not in st:
                continue
            st["exp_avg"].zero_()
            for key in ("exp_avg_sq", "max_exp_avg_sq"):
                if key in st:  # a pruned position keeps its +inf marker
                    st[key].masked_fill_(torch.isfinite(st[key]), 0.0)
            st["step"].zero_()  # torch's bias correction restarts from here

    def state_dict(self) -> dict:
        return {"last_reset": self.last_reset}

    def load_state_dict(self, sd: dict):
        self.last_reset = int(sd["last_reset"])
