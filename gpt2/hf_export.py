"""knlp's GPT-2 as a Hugging Face folder that transformers.GPT2LMHeadModel loads.

The architectures match (pre-LayerNorm blocks, tanh GELU = HF's "gelu_new", LayerNorm eps
1e-5, biases, tied head); what differs is storage: HF's Conv1D keeps a linear's weight as
[in, out] (ours is nn.Linear's [out, in]), the head is not stored (HF ties it to wte on
load), and the vocabulary is cut back from the padded size (50304) to the tokenizer's
(50257): the padding rows are never targets nor inputs, so the first 50257 logits are
unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from gpt2.corpus import tokenizers

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
EOT = {"gpt2": 50256, "byte": tokenizers.ByteTokenizer.eot}


def hf_state(state: dict, vocab_size: int) -> dict:
    """HF GPT2LMHeadModel tensors from a knlp GPT state dict (lm_head.weight left out: tied)."""
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight":
            continue
        if name.endswith(CONV1D):
            t = t.t()
        elif name == "transformer.wte.weight":
            t = t[:vocab_size]
        out[name] = t.contiguous().clone()
    return out


def hf_config(model_config, vocab_size: int, tokenizer: str) -> dict:
    c = model_config
    eot = EOT[tokenizer]
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
            "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
            "n_head": c.n_head, "n_inner": None, "activation_function": "gelu_new",
            "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
            "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "summary_type": "cls_index", "summary_use_proj": True, "summary_activation": None,
            "summary_proj_to_labels": True, "summary_first_dropout": 0.1,
            "use_cache": True, "bos_token_id": eot, "eos_token_id": eot, "tie_word_embeddings": True,
            "torch_dtype": "float32"}


def _tiktoken_cache_files() -> Path | None:
    """tiktoken's own cached copies (named by the SHA-1 of their URL) gathered in a temp folder."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
        os.path.join(tempfile.gettempdir(), "data-gym-cache")
    found = {}
    for name in tokenizers.BPE_FILES:
        path = Path(cache) / hashlib.sha1((tokenizers.BPE_URL + name).encode()).hexdigest()
        if not path.is_file():
            return None
        found[name] = path
    return found


def bpe_files(data_dir: Path) -> dict | None:
    """{'vocab.bpe': path, 'encoder.json': path} of GPT-2's checked files, or None when absent."""
    for directory in (os.environ.get(tokenizers.BPE_DIR_ENV), data_dir / "gpt2" / "tokenizer"):
        if directory and all((Path(directory) / n).is_file() for n in tokenizers.BPE_FILES):
            files = {n: Path(directory) / n for n in tokenizers.BPE_FILES}
            break
    else:
        files = _tiktoken_cache_files()
    if files is None:
        return None
    for name, path in files.items():
        if hashlib.sha256(path.read_bytes()).hexdigest() != tokenizers.BPE_FILES[name]:
            return None
    return files


def write_tokenizer(out: Path, files: dict, block_size: int) -> list[str]:
    """GPT2Tokenizer's files: vocab.json is encoder.json, merges.txt is vocab.bpe, byte for byte."""
    shutil.copyfile(files["encoder.json"], out / "vocab.json")
    shutil.copyfile(files["vocab.bpe"], out / "merges.txt")
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size, "add_prefix_space": False,
         **special}, indent=2) + "\n")
    return ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]


def write(out: Path, state: dict, model_config, tokenizer: str, data_dir: Path) -> dict:
    """Write config.json, model.safetensors (+ tokenizer files for the BPE) into `out`."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    vocab = tokenizers.vocab_size(tokenizer)
    save_file(hf_state(state, vocab), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(model_config, vocab, tokenizer), indent=2) + "\n")
    written, note = ["config.json", "model.safetensors"], None
    if tokenizer == "gpt2":
        files = bpe_files(data_dir)
        if files is None:
            note = (f"tokenizer files not written: GPT-2's vocab.bpe and encoder.json were not found (put them in "
                    f"{data_dir / 'gpt2' / 'tokenizer'} or {tokenizers.BPE_DIR_ENV}, then export again), or load "
                    "the tokenizer with GPT2Tokenizer.from_pretrained('gpt2')")
        else:
            written += write_tokenizer(out, files, model_config.block_size)
    else:
        note = "byte tokenizer: token id = UTF-8 byte, 0 = end of text; no Hugging Face tokenizer files"
    return {"files": written, "vocab_size": vocab, "note": note}
