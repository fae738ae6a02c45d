"""`make bench-sparse`: does the exported sparsity buy speed on this machine? Measured, not claimed.

For every prunable layer, on the input it really sees at the run's batch shape (captured
from one dense forward of a random batch), and for the whole forward pass:
  dense     the layer's own op (F.linear / F.conv2d) with the exported dense weight;
  csr       the weight as torch's sparse CSR (CPU and CUDA): F.linear on a CSR weight;
            a convolution as im2col (F.unfold, its cost included) then CSR x columns;
  2:4       CUDA only, layers whose masks are exactly 2 of every 4: torch.sparse's
            to_sparse_semi_structured on a half-precision copy (reported against a dense
            half-precision F.linear, which is the fair baseline there).
Times are the best of several repeats of a loop of at least `min_time` seconds, dense and
sparse loops alternating (other processes only ever add time); ratio = sparse / dense, above 1 means sparse is slower.
Memory is the bytes of each weight format (CSR: values + column indices + row pointers).
Every sparse result is checked against the dense one before it is timed.
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

REPEATS = 7


def best_times(*fns, min_time: float = 0.05, repeats: int = REPEATS) -> list:
    """Seconds per call of each function: the best of `repeats` loops, each of enough calls to
    last `min_time`. The functions' loops alternate, so on a shared machine a burst of load
    hits all of them alike and their ratio stays fair (other processes only ever add time)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def loop(fn, calls):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        return time.perf_counter() - start

    counts = []
    for fn in fns:
        loop(fn, 1)  # warm up
        calls = 1
        while loop(fn, calls) < min_time:
            calls *= 2
        counts.append(calls)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, (fn, calls) in enumerate(zip(fns, counts)):
            best[i] = min(best[i], loop(fn, calls) / calls)
    return best


def csr_bytes(w: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in (w.values(), w.col_indices(), w.crow_indices()))


def dense_bytes(w: torch.Tensor) -> int:
    return w.numel() * w.element_size()


class CsrLinear(nn.Module):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x):
        return F.linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias).view(*x.shape[:-1], -1)


class CsrConv2d(nn.Module):
    """im2col + CSR matmul: torch offers no sparse convolution on dense inputs."""

    def __init__(self, layer: nn.Conv2d):
        super().__init__()
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError("only zero-padded, ungrouped convolutions with numeric padding")
        self.conv = layer
        self.weight = layer.weight.detach().reshape(layer.out_channels, -1).to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x):
        c = self.conv
        b, _, h, w = x.shape
        cols = F.unfold(x, c.kernel_size, dilation=c.dilation, padding=c.padding, stride=c.stride)  # [B, K, L]
        oh = (h + 2 * c.padding[0] - c.dilation[0] * (c.kernel_size[0] - 1) - 1) // c.stride[0] + 1
        ow = (w + 2 * c.padding[1] - c.dilation[1] * (c.kernel_size[1] - 1) - 1) // c.stride[1] + 1
        out = F.linear(cols.transpose(1, 2).reshape(-1, cols.shape[1]), self.weight, self.bias)  # [B*L, out]
        return out.view(b, oh * ow, -1).transpose(1, 2).reshape(b, -1, oh, ow)


def csr_module(layer: nn.Module) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return CsrLinear(layer)
    if isinstance(layer, nn.Conv2d):
        return CsrConv2d(layer)
    raise ValueError(f"no CSR form for {type(layer).__name__}")


def is_2_4(w: torch.Tensor) -> bool:
    rows = w.reshape(w.shape[0], -1)
    return rows.shape[1] % 4 == 0 and bool(((rows.view(-1, 4) != 0).sum(dim=1) <= 2).all())


def _semi_structured(layer, x):
    """{semi_ms, semi_dense16_ms, semi_ratio, semi_bytes, semi_note}: the 2:4 kernel on CUDA
    against dense float16, or only a note saying why it was not measured."""
    out = {"semi_ms": None, "semi_dense16_ms": None, "semi_ratio": None, "semi_bytes": None}
    if not torch.cuda.is_available() or layer.weight.device.type != "cuda":
        return {**out, "semi_note": "needs CUDA"}
    if not isinstance(layer, nn.Linear) or not is_2_4(layer.weight):
        return {**out, "semi_note": "not a 2:4 linear layer"}
    try:
        from torch.sparse import to_sparse_semi_structured

        w16 = layer.weight.detach().half()
        x16 = x.reshape(-1, x.shape[-1]).half()
        sw = to_sparse_semi_structured(w16)
        if not torch.allclose(F.linear(x16, sw).float(), F.linear(x16, w16).float(), atol=1e-2, rtol=1e-2):
            return {**out, "semi_note": "2:4 result differs from dense"}
        t, dense16 = best_times(lambda: F.linear(x16, sw), lambda: F.linear(x16, w16))
        parts = [getattr(sw, a, None) for a in ("packed", "meta", "packed_t", "meta_t")]
        return {"semi_ms": t * 1e3, "semi_dense16_ms": dense16 * 1e3, "semi_ratio": t / dense16,
                "semi_bytes": sum(p.numel() * p.element_size() for p in parts if torch.is_tensor(p)),
                "semi_note": f"fp16: 2:4/dense {t / dense16:.2f}x"}
    except Exception as err:  # shape limits, no cuSPARSELt/CUTLASS kernel for this GPU ...
        reason = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        return {**out, "semi_note": f"unavailable: {reason}"}


def input_shapes(model: nn.Module, names: list, batch) -> dict:
    """The input shape each named layer receives in one forward of `batch` (only shapes are
    kept: a 124M GPT-2's 48 layer inputs at full batch would hold gigabytes)."""
    seen, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        hooks.append(modules[name].register_forward_pre_hook(
            lambda m, a, n=name: seen.__setitem__(n, (tuple(a[0].shape), a[0].dtype))))
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for h in hooks:
            h.remove()
    return seen


def bench_layers(model: nn.Module, names: list, batch, min_time: float, repeats: int = REPEATS) -> list:
    rows = []
    modules = dict(model.named_modules())
    shapes = input_shapes(model, names, batch)
    g = torch.Generator(device=batch.device).manual_seed(0)
    with torch.no_grad():
        for name in names:
            layer = modules[name]
            shape, dtype = shapes[name]
            x = torch.randn(shape, dtype=dtype, device=batch.device, generator=g)  # times do not depend on values
            w = layer.weight.detach()
            row = {"layer": name, "shape": list(w.shape), "input": list(x.shape),
                   "sparsity": 1.0 - int(torch.count_nonzero(w)) / w.numel(), "dense_bytes": dense_bytes(w)}
            sparse = csr_module(layer)
            diff = float((sparse(x) - layer(x)).abs().max())
            scale = float(layer(x).abs().max()) or 1.0
            if diff > 1e-4 * scale + 1e-5:
                raise RuntimeError(f"{name}: CSR result differs from dense by {diff}")
            dense_s, csr_s = best_times(lambda: layer(x), lambda: sparse(x), min_time=min_time, repeats=repeats)
            row.update(dense_ms=dense_s * 1e3, csr_ms=csr_s * 1e3, csr_ratio=csr_s / dense_s, csr_bytes=csr_bytes(sparse.weight),
                       csr_max_abs_diff=diff)
            row.update(_semi_structured(layer, x))
            rows.append(row)
    return rows


def bench_forward(model: nn.Module, names: list, batch, min_time: float, repeats: int = REPEATS) -> dict:
    sparse = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = sparse.get_submodule(parent_name) if parent_name else sparse
        setattr(parent, child, csr_module(getattr(parent, child)))
    with torch.no_grad():
        ref, got = model(batch), sparse(batch)
        diff = float((ref - got).abs().max())
        dense_s, csr_s = best_times(lambda: model(batch), lambda: sparse(batch), min_time=min_time,
                                    repeats=repeats)
    prunable = [dict(model.named_modules())[n].weight.detach() for n in names]
    return {"layer": "whole forward", "input": list(batch.shape), "dense_ms": dense_s * 1e3, "csr_ms": csr_s * 1e3,
            "csr_ratio": csr_s / dense_s, "csr_max_abs_diff": diff,
            "dense_bytes": sum(dense_bytes(w) for w in prunable),
            "csr_bytes": sum(csr_bytes(w.reshape(w.shape[0], -1).to_sparse_csr()) for w in prunable),
            "sparsity": 1.0 - sum(int(torch.count_nonzero(w)) for w in prunable) / sum(w.numel() for w in prunable)}
