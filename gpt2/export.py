"""GPT-2 for `make export` and `make bench-sparse` (lib/export/models.py asks for these)."""
from __future__ import annotations

from pathlib import Path

import torch

# State-dict keys that share another weight's storage: not stored on their own.
TIED = frozenset({"lm_head.weight"})
HF = "hf"  # export/hf/: the Hugging Face folder


def build_model(spec):
    from gpt2.corpus import tokenizers
    from gpt2.model import GPT, config_from_options

    options = spec.model_options
    return GPT(config_from_options(options, tokenizers.vocab_size(options.get("tokenizer", "gpt2"))))


def constructor_text(spec) -> str:
    return "transformers.GPT2LMHeadModel.from_pretrained('export/hf')"


def example_input(spec, batch_size: int, model, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (batch_size, model.config.block_size), generator=generator)


def extra_exports(work: Path, rw, data_dir: Path) -> tuple[list[str], dict, list[str]]:
    """Write export/hf/ into `work`: (its entry in model.json's files, model.json's "hf",
    the lines `make export` prints about it)."""
    from gpt2 import hf_export

    info = hf_export.write(work / HF, rw.state, rw.model.config, rw.spec.model_options.get("tokenizer", "gpt2"),
                           data_dir)
    lines = [f"  {HF}/: {', '.join(info['files'])} (transformers.GPT2LMHeadModel.from_pretrained)"]
    if info["note"]:
        lines.append(f"  note: {info['note']}")
    return [HF + "/"], info, lines
