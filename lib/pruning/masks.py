"""Where a pruning mask lives, and the three things every method does with it.

Two representations, one interface (`sink_dead`, `prune`, `mask_grads`):

* StateMask, for the Adam family: a pruned position has exp_avg_sq = +inf (and
  max_exp_avg_sq with AMSGrad) and weight 0. Adam's own update there is
  m_hat / (sqrt(inf) + eps) = 0 and decay keeps 0 at 0, so torch's fused step needs no
  extra pass and the mask costs no memory at all (SPEC, "Masks").
* BitMask, for optimizers without a second moment (SGD): 1 bit per weight, packed in
  uint8, allocated at the first prune. Gradients are zeroed at pruned positions before
  each step and the optimizer state there is zeroed when a weight is pruned, so the
  update is exactly zero.

Positions are flat indices in the tensors' memory order (`flat`); optimizer state made
with torch.zeros_like(p, memory_format=preserve_format) shares that order.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lib.pruning import cpu_pass

INF = float("inf")
FMAX = float(torch.finfo(torch.float32).max)  # lib/optimizers/spam.py reads it from here


def flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of `t` in memory order (contiguous or dense permuted, e.g. channels_last)."""
    if t.is_contiguous():
        return t.view(-1)
    dims = sorted(range(t.dim()), key=lambda d: t.stride(d))
    expect = 1
    for d in dims:
        if t.size(d) != 1 and t.stride(d) != expect:
            raise ValueError(f"tensor of shape {tuple(t.shape)} with strides {t.stride()} has gaps or "
                             "overlaps; make the parameter contiguous before creating the optimizer")
        expect *= t.size(d)
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def group_of(optimizer, p):
    """The parameter group of `optimizer` that holds `p`, or None."""
    return groups_of(optimizer, [p])[0]


def groups_of(optimizer, params) -> list:
    """The parameter group holding each of `params` (None where none does), from one look
    at the groups: a model of thousands of small tensors asked group_of per tensor, which
    scans every group's list each time (quadratic: 0.8 s an update at 3,000 tensors)."""
    where = {id(q): g for g in optimizer.param_groups for q in g["params"]}
    return [where.get(id(p)) for p in params]


_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}
_F32_INF = 0x7F800000  # +inf's float32 bit pattern


def plain_float32(t: torch.Tensor) -> bool:
    """A float32 CPU tensor in one contiguous run (a table of small tensors reads it by address)."""
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def int_view(t: torch.Tensor):
    """A flat CPU float tensor's elements as integers of the same width (numpy), so a
    compiled loop can write bit patterns into any float dtype."""
    return t.view(_INT_OF_SIZE[t.element_size()]).numpy()


def inf_pattern(dtype) -> int:
    """The bit pattern of +inf in `dtype`, as an integer of its width."""
    return int(torch.tensor(float("inf"), dtype=dtype).view(_INT_OF_SIZE[torch.finfo(dtype).bits // 8]))


_GATHER = 0x0102040810204080  # times 8 bytes of 0/1: byte i's bit lands at bit 56 + i, no two terms collide
_REPEAT, _SELECT = 0x0101010101010101, 0x8040201008040201  # a byte in all 8 lanes; lane i keeps bit i


def pack_bits(b: torch.Tensor) -> torch.Tensor:
    """bool[n] -> uint8[ceil(n/8)], element i in bit (i % 8) of byte i // 8: each 8 flags
    are read as one int64 and gathered by one multiply."""
    n = b.numel()
    if n % 8 or not b.is_contiguous() or b.storage_offset() % 8:
        b = torch.cat([b.reshape(-1), b.new_zeros((-n) % 8)])
    return b.view(torch.uint8).view(torch.int64).mul(_GATHER).bitwise_right_shift_(56).to(torch.uint8)


def spread_bits(bits: torch.Tensor) -> torch.Tensor:
    """uint8[m] -> uint8[8m]: byte i is nonzero exactly when bit (i % 8) of byte i // 8 is set."""
    return bits.to(torch.int64).mul_(_REPEAT).bitwise_and_(_SELECT).view(torch.uint8)


def unpack_bits(bits: torch.Tensor, n: int) -> torch.Tensor:
    """uint8[ceil(n/8)] -> bool[n] (inverse of pack_bits)."""
    return spread_bits(bits)[:n].ne(0)


_TABLES = {}


def _alive_table(device, dtype):
    """(256, 8): row `byte` holds 1.0 where that byte's bit is clear (the weight is alive)."""
    key = (device, dtype)
    if key not in _TABLES:
        bits = torch.arange(256, device=device).unsqueeze(1).bitwise_right_shift(torch.arange(8, device=device))
        _TABLES[key] = bits.bitwise_and(1).eq(0).to(dtype)
    return _TABLES[key]


class _Mask:
    def count_dead(self, j) -> int:
        d = self.dead_mask(j)
        return 0 if d is None else int(torch.count_nonzero(d))


class StateMask(_Mask):
    """Pruned = exp_avg_sq is +inf. No storage of its own."""

    kind = "state"

    def __init__(self, optimizer, params):
        self.opt = optimizer
        self.params = params

    def prepare(self):
        """Give every prunable weight Adam state (as torch would at its first step), so a
        weight that never had a gradient can still carry its mask."""
        empty = [p for p in self.params if len(self.opt.state.get(p, ())) == 0]
        for p, g in zip(empty, groups_of(self.opt, empty) if empty else ()):
            st = self.opt.state[p]
            if len(st) == 0:
                if g is None:
                    raise ValueError("a prunable weight is in no parameter group of the optimizer")
                scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                if g.get("fused", False):
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                elif g.get("capturable", False):
                    st["step"] = torch.zeros((), dtype=scalar, device=p.device)
                else:
                    st["step"] = torch.tensor(0.0, dtype=scalar)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if g.get("amsgrad", False):
                    st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self._flat = {}  # j -> flat views of the weight and its second moments, made when first asked

    def _views(self, j):
        """(flat weight, [flat exp_avg_sq (and max_exp_avg_sq)]) of tensor j: made per update
        and per tensor pruned, not for every tensor up front (a model of thousands of small
        tensors paid for them all at every update)."""
        if j not in self._flat:
            p = self.params[j]
            st = self.opt.state[p]
            self._flat[j] = (flat(p.data), [flat(st[k]) for k in ("exp_avg_sq", "max_exp_avg_sq") if k in st])
        return self._flat[j]

    def _v(self, j):
        st = self.opt.state.get(self.params[j])
        return None if not st or "exp_avg_sq" not in st else flat(st["exp_avg_sq"])

    def sink_dead(self, j, sl, key, tmp):
        """-inf into `key` (float32 scores of positions `sl`, a slice) where the weight is
        pruned; `tmp` (float32, key's length) is scratch."""
        v = self._v(j)
        if v is not None:
            # v * 0 is 0 where v is finite and NaN where it is +inf; as 0 / -inf it is added
            # to the keys: three plain passes, where masked_fill_ took about 4x their time (CPU)
            sink = torch.mul(v[sl], 0.0, out=tmp[:key.numel()]).nan_to_num_(nan=-INF)
            key.add_(sink)
        return key

    def dead_rows(self, j, rows, block):
        """bool flags of the `block`-element rows `rows` of tensor j (flat): pruned or not."""
        v = self._v(j)
        if v is None:
            return None
        n = v.numel() // block
        return torch.isinf(v[:n * block].view(n, block).index_select(0, rows)).view(-1)

    def prune(self, j, a, b, keep):
        """keep: float32 1 (keep) / 0 (prune) for positions [a, b), any weight and state
        dtype; call prepare() first. Re-pruning a pruned position changes nothing."""
        w, seconds = self._views(j)
        for v in seconds:  # v / 0 = inf (0 / 0 = NaN -> inf); v / 1 = v exactly
            v[a:b].div_(keep).nan_to_num_(nan=INF, posinf=INF)
        w[a:b].mul_(keep)

    def dead_source(self, j):
        """(cpu_pass dead mode, numpy array) that shows cpu_pass tensor j's pruned positions:
        its float32 exp_avg_sq (+inf where pruned), or DEAD_NONE when stored otherwise."""
        v = self._v(j)
        if v is None or v.dtype != torch.float32 or v.device.type != "cpu":
            return cpu_pass.DEAD_NONE, None
        return cpu_pass.DEAD_STATE, v.numpy()

    def prune_bits(self, j, bits, count=None):
        """Prune tensor j where the packed numpy `bits` are set (`count` of them, if known;
        CPU): only those weights and second moments are written."""
        w, seconds = self._views(j)
        cpu_pass.scatter(bits, int_view(seconds[0]), inf_pattern(seconds[0].dtype), int_view(w), 0, count)
        for v in seconds[1:]:  # max_exp_avg_sq (AMSGrad)
            cpu_pass.scatter(bits, int_view(v), inf_pattern(v.dtype), count=count)

    def table_columns(self, j, commit=False):
        """(dead mode, address of what shows tensor j's pruned positions, [(address, int32
        pattern)] to write where it is pruned, address of a packed mask to OR) for a table of
        small tensors (cpu_pass.table_of), or None where its tensors are not plain float32."""
        p = self.params[j]
        st = self.opt.state.get(p, {})
        seconds = [st[k] for k in ("exp_avg_sq", "max_exp_avg_sq") if k in st]
        if not seconds or not all(plain_float32(t) for t in [p, *seconds]):
            return None
        return (cpu_pass.DEAD_STATE, seconds[0].data_ptr(),
                [(t.data_ptr(), _F32_INF) for t in seconds] + [(p.data_ptr(), 0)], 0)

    def prune_at(self, j, pos):
        """Prune the given flat positions (few: a band's losers); call prepare() first."""
        w, seconds = self._views(j)
        for v in seconds:
            v.index_fill_(0, pos, INF)
        w.index_fill_(0, pos, 0.0)

    def dead_mask(self, j):
        v = self._v(j)
        return None if v is None else torch.isinf(v)

    def mask_grads(self, dead_counts, chunk=1 << 18):
        """Zero the gradients at pruned positions. Adam's update needs no such pass (the
        inf does it); gradient-norm clipping does, so pruned positions stay out of the norm."""
        for j, p in enumerate(self.params):
            if dead_counts[j] and p.grad is not None:
                g, v = flat(p.grad), self._v(j)
                alive = torch.empty(min(chunk, g.numel()), dtype=g.dtype, device=g.device)
                for a in range(0, g.numel(), chunk):
                    b = min(a + chunk, g.numel())
                    g[a:b].mul_(torch.lt(v[a:b], INF, out=alive[:b - a]))

    def persistent_bytes(self) -> int:
        return 0

    def state_dict(self):
        return {}

    def load_state_dict(self, sd):
        pass


class BitMask(_Mask):
    """Pruned = bit set in a packed uint8 array per weight (1 bit per weight)."""

    kind = "bits"

    def __init__(self, optimizer, params):
        self.opt = optimizer
        self.params = params
        self.bits = [None] * len(params)

    def prepare(self):
        pass

    def _dead(self, j, a, b):
        return unpack_bits(self.bits[j][a // 8:(b + 7) // 8], b - a)

    def sink_dead(self, j, sl, key, tmp):
        bits = self.bits[j]
        if bits is not None:
            if sl.step in (None, 1):
                dead = self._dead(j, sl.start, sl.stop)
            else:
                idx = torch.arange(sl.start, sl.stop, sl.step, device=bits.device)[:key.numel()]
                dead = bits[idx >> 3].long().bitwise_right_shift(idx & 7).bitwise_and_(1).bool()
            key.masked_fill_(dead, -INF)
        return key

    def dead_rows(self, j, rows, block):
        """bool flags of the `block`-element rows `rows` of tensor j (block: a multiple of 8)."""
        bits = self.bits[j]
        if bits is None:
            return None
        per = block // 8
        n = bits.numel() // per
        return unpack_bits(bits[:n * per].view(n, per).index_select(0, rows).reshape(-1), rows.numel() * block)

    def _bits(self, j):
        """Tensor j's packed mask, allocated at its first prune."""
        if self.bits[j] is None:
            p = self.params[j]
            self.bits[j] = torch.zeros((p.numel() + 7) // 8, dtype=torch.uint8, device=p.device)
        return self.bits[j]

    def prune(self, j, a, b, keep):
        """keep: float 1 (keep) / 0 (prune) for positions [a, b)."""
        p = self.params[j]
        if a % 8:
            raise ValueError("mask chunks must start at a multiple of 8 elements")
        self._bits(j)[a // 8:(b + 7) // 8].bitwise_or_(pack_bits(keep == 0))
        flat(p.data)[a:b].mul_(keep)
        for s in self.opt.state.get(p, {}).values():
            if torch.is_tensor(s) and s.shape == p.shape:  # momentum etc.: zero, so the update is zero
                flat(s)[a:b].mul_(keep)

    def dead_source(self, j):
        bits = self.bits[j]
        return (cpu_pass.DEAD_NONE, None) if bits is None else (cpu_pass.DEAD_BITS, bits.numpy())

    def prune_bits(self, j, bits, count=None):
        """Prune tensor j where the packed numpy `bits` are set (`count` of them; CPU)."""
        p = self.params[j]
        mask = self._bits(j).numpy()
        np.bitwise_or(mask, bits, out=mask)
        cpu_pass.scatter(bits, int_view(flat(p.data)), 0, count=count)
        for s in self.opt.state.get(p, {}).values():
            if torch.is_tensor(s) and s.shape == p.shape:
                cpu_pass.scatter(bits, int_view(flat(s)), 0, count=count)

    def table_columns(self, j, commit=False):
        """As StateMask.table_columns; with `commit`, the mask is allocated if this is its
        first prune (its address is 0 otherwise)."""
        p = self.params[j]
        states = [s for s in self.opt.state.get(p, {}).values() if torch.is_tensor(s) and s.shape == p.shape]
        if len(states) > 2 or not all(plain_float32(t) for t in [p, *states]):
            return None
        bits = self.bits[j]
        dead = (cpu_pass.DEAD_NONE, 0) if bits is None else (cpu_pass.DEAD_BITS, bits.data_ptr())
        return (*dead, [(t.data_ptr(), 0) for t in [p, *states]], self._bits(j).data_ptr() if commit else 0)

    def prune_at(self, j, pos):
        p = self.params[j]
        # distinct live positions: adding their bit values is an OR
        bit = torch.ones_like(pos, dtype=torch.uint8).bitwise_left_shift_((pos & 7).to(torch.uint8))
        self._bits(j).index_put_((pos >> 3,), bit, accumulate=True)
        flat(p.data).index_fill_(0, pos, 0.0)
        for s in self.opt.state.get(p, {}).values():
            if torch.is_tensor(s) and s.shape == p.shape:
                flat(s).index_fill_(0, pos, 0.0)

    def dead_mask(self, j):
        return None if self.bits[j] is None else self._dead(j, 0, self.params[j].numel())

    def mask_grads(self, dead_counts, chunk=1 << 17):
        for j, p in enumerate(self.params):
            if dead_counts[j] and p.grad is not None:
                g = flat(p.grad)
                table = _alive_table(g.device, g.dtype)
                for a in range(0, g.numel(), chunk):
                    b = min(a + chunk, g.numel())
                    # one row lookup per byte gives its 8 keep flags: branch-free, no bool masks
                    alive = F.embedding(self.bits[j][a // 8:(b + 7) // 8].long(), table)
                    g[a:b].mul_(alive.view(-1)[:b - a])

    def persistent_bytes(self) -> int:
        return sum(b.numel() for b in self.bits if b is not None)

    def state_dict(self):
        return {"bits": [None if b is None else b.clone() for b in self.bits]}

    def load_state_dict(self, sd):
        bits = sd.get("bits")
        if not isinstance(bits, list) or len(bits) != len(self.params):
            raise ValueError("pruning state holds masks for a different set of prunable weights; "
                             "load a checkpoint of the same model")
        for j, (p, b) in enumerate(zip(self.params, bits)):
            if b is not None and b.numel() != (p.numel() + 7) // 8:
                raise ValueError(f"mask {j} has {b.numel()} bytes, expected {(p.numel() + 7) // 8}; "
                                 "load a checkpoint of the same model")
            self.bits[j] = None if b is None else b.to(device=p.device, dtype=torch.uint8).clone()


def representation(optimizer, params):
    """StateMask when the optimizer keeps Adam's second moment (as its registry entry says, see
    lib/optimizers/registry.py; for another torch optimizer: when it is an Adam), else BitMask."""
    second_moment = getattr(optimizer, "second_moment", isinstance(optimizer, torch.optim.Adam))
    return StateMask(optimizer, params) if second_moment else BitMask(optimizer, params)
