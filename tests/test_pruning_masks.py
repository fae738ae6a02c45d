"""Mask storage: bit packing against numpy, memory-order views, and what a prune writes."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from lib.pruning.masks import BitMask, StateMask, flat, pack_bits, representation, unpack_bits




@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1001])
def test_pack_matches_numpy_and_roundtrips(n):
    b = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3
    packed = pack_bits(b)
    want = np.packbits(b.numpy(), bitorder="little")
    assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
    assert np.array_equal(packed.numpy(), want)
    assert torch.equal(unpack_bits(packed, n), b)


def test_flat_follows_memory_order():
    w = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    f = flat(w)
    assert f.data_ptr() == w.data_ptr()
    assert torch.equal(f, w.permute(0, 2, 3, 1).reshape(-1))  # NHWC is the memory order
    with pytest.raises(ValueError, match="gaps"):
        flat(torch.randn(4, 6)[:, ::2])


def _stepped(opt_cls, **kw):
    lin = nn.Linear(8, 4)
    opt = opt_cls(lin.parameters(), lr=0.1, **kw)
    lin(torch.randn(3, 8)).sum().backward()
    opt.step()
    return lin, opt


def test_state_mask_marks_second_moment_and_zeroes_weight():
    lin, opt = _stepped(torch.optim.AdamW, amsgrad=True)
    rep = representation(opt, [lin.weight])
    assert isinstance(rep, StateMask)
    rep.prepare()
    pb = torch.zeros(32, dtype=torch.bool)
    pb[[0, 5, 31]] = True
    rep.prune(0, 0, 32, (~pb).float())
    st = opt.state[lin.weight]
    assert torch.isinf(flat(st["exp_avg_sq"])).nonzero().view(-1).tolist() == [0, 5, 31]
    assert torch.isinf(flat(st["max_exp_avg_sq"])).sum() == 3
    assert (flat(lin.weight)[pb] == 0).all() and (flat(lin.weight)[~pb] != 0).all()
    assert rep.count_dead(0) == 3 and rep.persistent_bytes() == 0
    key = torch.ones(32)
    rep.sink_dead(0, slice(0, 32), key, torch.empty(32))
    assert (key[pb] == -float("inf")).all() and (key[~pb] == 1).all()


def test_bit_mask_zeroes_weight_and_momentum():
    lin, opt = _stepped(torch.optim.SGD, momentum=0.9)
    rep = representation(opt, [lin.weight])
    assert isinstance(rep, BitMask)
    pb = torch.zeros(32, dtype=torch.bool)
    pb[[1, 2, 17]] = True
    rep.prune(0, 0, 32, (~pb).float())
    buf = flat(opt.state[lin.weight]["momentum_buffer"])
    assert (buf[pb] == 0).all() and (buf[~pb] != 0).all()
    assert (flat(lin.weight)[pb] == 0).all()
    assert rep.count_dead(0) == 3 and rep.persistent_bytes() == 4  # 32 weights, 1 bit each
    lin.weight.grad = torch.ones_like(lin.weight)
    rep.mask_grads([3])
    assert torch.equal(flat(lin.weight.grad) == 0, pb)
    key = torch.ones(3)
    rep.sink_dead(0, slice(1, 32, 16), key[:2], torch.empty(2))  # positions 1 and 17
    assert key.tolist() == [-float("inf"), -float("inf"), 1.0]
    key = torch.ones(32)
    rep.sink_dead(0, slice(0, 32), key, torch.empty(32))
    assert torch.equal(key == -float("inf"), pb)
