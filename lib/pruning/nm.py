"""N:M semi-structured masks: after the ramp, exactly N of every M consecutive weights
along each layer's input dimension survive (2:4 is what NVIDIA's sparse tensor cores run).

Groups: a weight w of shape [out, ...] is read as rows w[o].flatten() (a Linear's input
features; a convolution's in_channels x kh x kw, the im2col reduction axis), cut into
consecutive groups of M. Every row length must be a multiple of M: a layer that is not is
refused when the pruner is created, before any training step (docs/export.md).

The ramp: the same schedule s(t) and update steps as unstructured pruning, with the final
sparsity fixed at 1 - N/M. At each update every layer prunes round-to-total s(t) of its
weights (lib/pruning/apportion.py: the global count is round(s(t) * N) as always), taking
its lowest-scoring live weights among those whose group still has room, i.e. fewer than
M - N pruned. Pruned weights stay pruned, so groups fill monotonically; at the ramp's end
s = 1 - N/M leaves no group with room, which is exactly N of M everywhere.
Ties at the cut go to the lower flat position (repeatable).

Memory: the scores of one layer at a time in float32 plus the sort's indices (int64), held
while that layer is updated (ledger: NM_WORK_BYTES per element of the largest layer).
"""
from __future__ import annotations

import torch

from lib.pruning.apportion import apportion
from lib.pruning.layout import to_logical, to_memory_order

NM_WORK_BYTES = 4 * 4 + 3 * 8  # keys, sorted keys, dead/keep flags; two index tensors, positions


def parse(text) -> tuple[int, int]:
    """'2:4' (or (2, 4)) -> (2, 4); ValueError naming the fix otherwise."""
    try:
        n, m = (int(x) for x in (text.split(":") if isinstance(text, str) else text))
    except (ValueError, TypeError):
        raise ValueError(f"N:M pattern {text!r} is not of the form N:M, e.g. 2:4") from None
    if not 1 <= n < m:
        raise ValueError(f"N:M pattern {n}:{m} must keep 1 <= N < M weights per group; 2:4 is the usual choice")
    return n, m


def final_sparsity(n: int, m: int) -> float:
    return 1.0 - n / m


def check_target(n: int, m: int, target: float) -> None:
    if abs(target - final_sparsity(n, m)) > 1e-9:
        raise ValueError(f"N:M {n}:{m} masks end at exactly {100 * final_sparsity(n, m):g}% sparsity, but the target "
                         f"is {100 * target:g}%; select only that sparsity level, or unstructured masks")


def check_shapes(n: int, m: int, named_shapes) -> None:
    for name, shape in named_shapes:
        shape = tuple(shape)
        row = 1
        for d in shape[1:]:
            row *= d
        if len(shape) < 2 or row % m:
            dims = "x".join(str(d) for d in shape[1:]) or "none"
            raise ValueError(f"N:M {n}:{m}: {name} has input size {row} ({dims}), not a multiple of M={m}; every "
                             f"prunable layer needs one: choose unstructured masks, or an M that divides {row}")


class NMPattern:
    def __init__(self, pattern, names, params, target):
        self.n, self.m = parse(pattern)
        check_target(self.n, self.m, float(target))
        check_shapes(self.n, self.m, [(nm, p.shape) for nm, p in zip(names, params)])

    def caps(self, sizes) -> list:
        """Most weights each layer may lose: M - N per group."""
        return [size // self.m * (self.m - self.n) for size in sizes]


def select(keys: torch.Tensor, dead: torch.Tensor, n: int, m: int, goal: int) -> torch.Tensor:
    """Pruned flags [G, M] with `goal` pruned in all: `dead` plus the lowest `keys` among live
    weights whose group has fewer than M - N pruned. keys: float [G, M]; dead: bool [G, M]."""
    already = int(dead.sum())
    if goal < already:
        raise ValueError(f"goal {goal} is below the {already} weights already pruned (masks are monotone)")
    room = (m - n) - dead.sum(dim=1)
    if bool((room < 0).any()):
        raise ValueError("a group already has more than M - N pruned weights")
    # live weights first in ascending key order (two stable sorts: by key, then dead last)
    by_key = torch.sort(keys, dim=1, stable=True).indices
    order = by_key.gather(1, torch.sort(dead.gather(1, by_key).to(torch.uint8), dim=1, stable=True).indices)
    rank = torch.arange(m, device=keys.device).expand_as(order)
    eligible = rank < room.unsqueeze(1)
    values = keys.gather(1, order)[eligible]  # listed by group, then rank: equal keys in position order
    positions = (order + torch.arange(keys.shape[0], device=keys.device).unsqueeze(1) * m)[eligible]
    extra = goal - already
    if extra > values.numel():
        raise ValueError(f"cannot prune {extra} more weights: only {values.numel()} fit the {n}:{m} pattern")
    chosen = positions[torch.sort(values, stable=True).indices[:extra]]
    out = dead.clone().view(-1)
    out[chosen] = True
    return out.view_as(dead)


def keys_of(pruner, j, bufs) -> torch.Tensor:
    """Float32 scores of tensor j in memory order, -inf where pruned: the pruner's own scoring
    (through the update's shared chunk buffers `bufs`)."""
    from lib.pruning.pruner import _Keys  # late: pruner.py imports this module

    src = _Keys(pruner, [j], bufs)
    out = torch.empty(pruner.sizes[j], device=pruner.params[j].device)
    for a in range(0, pruner.sizes[j], pruner.chunk):
        b = min(a + pruner.chunk, pruner.sizes[j])
        out[a:b] = src.keys(0, a, b, True)
    return out


def update(pruner, s: float, goal: int, ledger, bufs) -> None:
    """One N:M mask update to sparsity s (goal = round(s * total) pruned after it); called by
    Pruner.update in place of the unstructured selection, after rep.prepare()."""
    pat = pruner.nm
    counts = apportion([s * n for n in pruner.sizes], goal, pruner.dead, pat.caps(pruner.sizes))
    for j, c in enumerate(counts):
        if c <= pruner.dead[j]:
            continue
        p = pruner.params[j]
        ledger.hold(pruner.sizes[j] * NM_WORK_BYTES)
        keys = keys_of(pruner, j, bufs)
        dead_mem = pruner.rep.dead_mask(j)
        dead = (torch.zeros(p.shape[0], pruner.sizes[j] // p.shape[0], dtype=torch.bool, device=p.device)
                if dead_mem is None else to_logical(dead_mem, p))
        pruned = select(to_logical(keys, p).view(-1, pat.m), dead.reshape(-1, pat.m), pat.n, pat.m, c)
        keep = to_memory_order((~pruned).to(torch.float32), p)
        for a in range(0, keep.numel(), pruner.chunk):
            b = min(a + pruner.chunk, keep.numel())
            pruner.rep.prune(j, a, b, keep[a:b])
        pruner.dead[j] = c
        ledger.free(pruner.sizes[j] * NM_WORK_BYTES)
