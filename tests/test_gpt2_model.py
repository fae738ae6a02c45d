"""GPT-2 model: shapes, the fused head + loss against F.cross_entropy, and the weight tie."""
import math

import pytest
import torch
import torch.nn.functional as F

from gpt2.model import GPT, GPTConfig, config_from_options, linear_cross_entropy, padded_vocab

TINY = dict(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=32)


def tiny(**changes) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **changes}))


def batch(vocab=256, b=4, t=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g), torch.randint(0, vocab, (b, t), generator=g)


def test_forward_backward_tiny():
    model = tiny()
    x, y = batch()
    logits = model(x)
    assert logits.shape == (4, 32, 256)
    loss = model(x, y)
    assert loss.dim() == 0
    # at initialisation the prediction is close to uniform
    assert abs(loss.item() - math.log(256)) < 0.1
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_fused_loss_matches_cross_entropy(chunk):
    torch.manual_seed(0)
    h = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    loss = linear_cross_entropy(h, w, t, chunk=chunk)
    loss.backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy(h2 @ w2.t(), t)
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-12)
    assert torch.allclose(h.grad, h2.grad, atol=1e-12)
    assert torch.allclose(w.grad, w2.grad, atol=1e-12)


def test_fused_loss_scales_incoming_gradient():
    torch.manual_seed(0)
    h = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 12, (10,))
    (3.0 * linear_cross_entropy(h, w, t, chunk=4)).backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (3.0 * F.cross_entropy(h2 @ w2.t(), t)).backward()
    assert torch.allclose(h.grad, h2.grad) and torch.allclose(w.grad, w2.grad)


def test_model_loss_equals_plain_cross_entropy_fp32():
    model = tiny()
    x, y = batch()
    fused = model(x, y)
    plain = F.cross_entropy(model(x).view(-1, 256), y.view(-1))
    assert torch.allclose(fused, plain, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(x, y), plain, atol=1e-5)


def test_fused_loss_under_cpu_autocast_is_close():
    model = tiny()
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, y)
    loss.backward()
    assert loss.dtype == torch.float32
    assert abs(loss.item() - model(x, y).item()) < 0.05
    assert torch.isfinite(model.lm_head.weight.grad).all()


def test_tied_head_is_one_parameter():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # listed once, under the embedding
    # the shared weight's gradient holds both uses (embedding lookup and output head)
    x, y = batch()
    model(x, y).backward()
    grad = model.transformer.wte.weight.grad
    unused_as_input = torch.ones(256, dtype=torch.bool)
    unused_as_input[x.unique()] = False
    # rows never looked up still get gradient: from the head, through the tie
    assert grad[unused_as_input].abs().sum() > 0


def test_tied_head_not_prunable_by_default():
    from lib.pruning import prunable_weights

    model = tiny()
    default = [n for n, _ in prunable_weights(model)]
    assert "lm_head.weight" not in default
    assert all("wte" not in n and "wpe" not in n for n in default)
    assert len(default) == 4 * 2  # c_attn, attn.c_proj, c_fc, mlp.c_proj per layer
    included = [p for _, p in prunable_weights(model, include_tied=True)]
    assert any(p is model.transformer.wte.weight for p in included)


def test_state_dict_round_trip_keeps_tie():
    model = tiny()
    other = tiny()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(model.state_dict())
    assert other.lm_head.weight is other.transformer.wte.weight
    assert torch.equal(other.transformer.wte.weight, model.transformer.wte.weight)


def test_published_124m_size():
    cfg = GPTConfig(vocab_size=padded_vocab(50257, True))
    assert cfg.vocab_size == 50304
    with torch.device("meta"):
        model = GPT(cfg)
    # 124M: 50304 x 768 tied embedding + 1024 x 768 positions + 12 blocks
    assert model.num_parameters() == 124_475_904
    assert model.num_parameters(non_embedding=True) == 124_475_904 - 1024 * 768


def test_config_validation_and_options():
    with pytest.raises(ValueError, match="multiple of the head count"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.5)
    cfg = config_from_options({"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "vocab_pad": True,
                               "dropout": 0.1}, 50257)
    assert (cfg.vocab_size, cfg.block_size, cfg.dropout) == (50304, 16, 0.1)
    assert config_from_options({"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8, "vocab_pad": False},
                               50257).vocab_size == 50257


def test_sequence_longer_than_context_is_refused():
    model = tiny()
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_generate_appends_tokens():
    model = tiny()
    out = model.generate(torch.zeros(1, 4, dtype=torch.long), 5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 9) and int(out.max()) < 256


@pytest.mark.slow
def test_torch_compile_gives_the_same_loss_and_gradients():
    """The engine may torch.compile the model; the fused loss must survive it (~25 s on CPU)."""
    model = tiny()
    x, y = batch()
    ref = model(x, y)
    ref.backward()
    grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model)
    loss = compiled(x, y)
    loss.backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(model.lm_head.weight.grad, grad, atol=1e-6)
