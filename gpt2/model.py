"""GPT-2: a decoder-only transformer with a tied output head.

Sizes come from a GPTConfig: the published 124M model (12 layers, 12 heads, width 768,
context 1024, vocabulary 50257 padded to 50304) or a tiny one for CPUs and tests.

Two choices matter for the rest of the project:
- The output head `lm_head` is an nn.Linear whose weight *is* the token embedding's
  Parameter (one object, not a copy), so lib.pruning can see the tie and leave it alone
  by default, and the optimizer holds one state for it.
- With targets, forward() returns only the mean loss and never builds the full
  [batch, time, vocabulary] logits: the head and the cross-entropy are fused and run in
  chunks of tokens (LinearCrossEntropy). At vocabulary 50304 the full logits of a
  8 x 256 batch are 412 MB in fp32, allocated and copied several times per step by the
  plain path; on a CPU that memory traffic costs more than the head's matmul itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Size of one chunk of fp32 logits in the fused head + loss. On the CPU it must be big
# enough for efficient matmuls and small enough to be reused from the allocator instead
# of mapped and faulted in afresh each step. Measured on a 2-core Xeon (4 layers, width
# 256, vocabulary 50304, batch 8 x 256, AdamW, one run each): 20 tokens per chunk ran at
# 1,258 tokens/s, 64 at 2,067, 128-256 (26-52 MB) at ~2,280, 1024 at 2,117, the whole
# batch at ~2,000. On a GPU fewer, larger chunks keep kernel launches few.
LOSS_CHUNK_BYTES = {"cpu": 32 << 20, "cuda": 256 << 20}
MIN_LOSS_CHUNK = 64


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in its linears and LayerNorms
    # tokens per chunk of the fused head + loss; 0 picks one from LOSS_CHUNK_BYTES
    loss_chunk: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPT-2 {name}={getattr(self, name)} must be positive; fix the GPT2_* size options")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPT-2 width {self.n_embd} is not a multiple of the head count {self.n_head}; "
                             "set GPT2_TINY_N_EMBD to a multiple of GPT2_TINY_N_HEAD")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPT-2 dropout {self.dropout} must be in [0, 1); fix GPT2_DROPOUT")


def padded_vocab(vocab_size: int, pad: bool) -> int:
    """The model's vocabulary: the tokenizer's, rounded up to a multiple of 64 when asked
    (50257 -> 50304): matmul shapes that GPUs tile well, and the extra rows are never targets."""
    return -(-vocab_size // 64) * 64 if pad else vocab_size


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # [B, T, C] -> [B, heads, T, head size], the layout SDPA expects
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm transformer block, as in GPT-2."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _head_loss_pass(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                    want_h: bool, want_w: bool):
    """Loss sum over chunks of tokens, plus d(mean loss)/dh and d(mean loss)/dweight if wanted.

    Each chunk of logits is made once in one reused buffer and used for the loss and both
    gradients (softmax minus one-hot, in place), then overwritten by the next chunk.
    Reductions run in fp32 (fp64 stays fp64); under autocast the matmuls run in the
    autocast dtype, as an ordinary Linear would.
    """
    device_type = h.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else h.dtype
    acc = torch.promote_types(dtype, torch.float32)
    n = h.shape[0]
    with torch.autocast(device_type=device_type, enabled=False):
        hd, w = h.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(h) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=acc) if want_w else None
        total = torch.zeros((), dtype=acc, device=h.device)
        buf = torch.empty((min(chunk, n), w.shape[0]), dtype=dtype, device=h.device)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            hc, tc = hd[start:stop], targets[start:stop].unsqueeze(1)
            logits = torch.mm(hc, w.t(), out=buf[: stop - start])
            x = logits if dtype == acc else logits.to(acc)
            picked = x.gather(1, tc)
            peak = x.amax(dim=1, keepdim=True)
            x.sub_(peak).exp_()  # x now holds exp(logit - peak)
            norm = x.sum(dim=1, keepdim=True)
            total += (peak + norm.log() - picked).sum()
            if want_h or want_w:
                x.div_(norm * n)  # softmax / n
                x.scatter_add_(1, tc, torch.full_like(picked, -1.0 / n))  # minus one-hot / n
                g = x if dtype == acc else x.to(dtype)
                if want_h:
                    grad_h[start:stop] = torch.mm(g, w)
                if want_w:
                    if grad_w.dtype == g.dtype:
                        grad_w.addmm_(g.t(), hc)
                    else:
                        grad_w += torch.mm(g.t(), hc).to(acc)
    return total / n, grad_h, grad_w


class LinearCrossEntropy(torch.autograd.Function):
    """mean_i cross_entropy(h_i @ W.T, t_i) with the gradients made during forward;
    backward() only scales them by the incoming gradient."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int):
        loss, grad_h, grad_w = _head_loss_pass(h, weight, targets, chunk,
                                               ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk: int = 0) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T` against `targets` without the full logits.

    h: [N, D], weight: [V, D], targets: [N] int64 in [0, V).
    """
    if chunk <= 0:
        budget = LOSS_CHUNK_BYTES.get(h.device.type, LOSS_CHUNK_BYTES["cuda"])
        chunk = max(MIN_LOSS_CHUNK, budget // (4 * weight.shape[0]))
    h, targets = h.contiguous(), targets.contiguous()
    if not torch.is_grad_enabled() or not (h.requires_grad or weight.requires_grad):
        # Evaluation: autograd.Function would still report the inputs as needing grads.
        return _head_loss_pass(h, weight, targets, int(chunk), False, False)[0]
    return LinearCrossEntropy.apply(h, weight, targets, int(chunk))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # The tie: one Parameter object shared by the embedding and the head.
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that feed the residual stream, so the
        # stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Distinct parameters (the tied weight once); without position embeddings if asked."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-LayerNorm hidden states [B, T, n_embd] of token ids [B, T]."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds the model's context {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] without targets; the mean next-token loss (a scalar) with them."""
        x = self.hidden(idx)
        if targets is None:
            return self.lm_head(x)
        return linear_cross_entropy(x.reshape(-1, x.shape[-1]), self.lm_head.weight, targets.reshape(-1),
                                    self.config.loss_chunk)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, new_tokens: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample `new_tokens` tokens after `idx` (for eyeballing what a run learned)."""
        for _ in range(new_tokens):
            context = idx[:, -self.config.block_size:]
            logits = self.lm_head(self.hidden(context)[:, -1, :]) / max(temperature, 1e-6)
            nxt = torch.multinomial(F.softmax(logits.float(), dim=-1), 1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


def config_from_options(options: dict, vocab_size: int) -> GPTConfig:
    """GPTConfig from a RunSpec's model_options and the tokenizer's vocabulary size."""
    return GPTConfig(vocab_size=padded_vocab(vocab_size, bool(options.get("vocab_pad", True))),
                     block_size=int(options["block_size"]), n_layer=int(options["n_layer"]),
                     n_head=int(options["n_head"]), n_embd=int(options["n_embd"]),
                     dropout=float(options.get("dropout") or 0.0),
                     loss_chunk=int(options.get("loss_chunk", 0)))
