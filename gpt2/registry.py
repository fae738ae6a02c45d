"""GPT-2's registry entry: its GPT2_* Kconfig symbols to run values, LR schedule and run-ID name."""
from lib.configuration.model_registry import Model

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size")
SHAPE_124M = (12, 12, 768, 1024)  # the published model, in SHAPE_KEYS order


def values(cfg) -> dict:
    size = (dict(zip(SHAPE_KEYS, SHAPE_124M)) if cfg.GPT2_SIZE_124M else
            {"n_layer": cfg.GPT2_TINY_N_LAYER, "n_head": cfg.GPT2_TINY_N_HEAD,
             "n_embd": cfg.GPT2_TINY_N_EMBD, "block_size": cfg.GPT2_TINY_BLOCK_SIZE})
    dataset = ("finewebedu" if cfg.GPT2_DATASET_FINEWEBEDU else
               "local_text" if cfg.GPT2_DATASET_LOCAL_TEXT else
               "python_docs" if cfg.GPT2_DATASET_PYTHON_DOCS else "generated")
    return {"epochs": None, "max_iters": cfg.GPT2_MAX_ITERS, "lr": cfg.GPT2_LEARNING_RATE,
            "weight_decay": cfg.GPT2_WEIGHT_DECAY,
            "options": {**size, "dataset": dataset, "text_dir": cfg.GPT2_TEXT_DIR,
                        "doc_dir": cfg.GPT2_SYSTEM_DOC_DIR,
                        "tokenizer": "byte" if cfg.GPT2_TOKENIZER_BYTE else "gpt2",
                        "vocab_pad": cfg.GPT2_VOCAB_PAD, "token_budget": cfg.GPT2_TOKEN_BUDGET,
                        "val_fraction": cfg.GPT2_VAL_FRACTION, "eval_iters": cfg.GPT2_EVAL_ITERS,
                        "dropout": cfg.GPT2_DROPOUT, "prune_tied": cfg.GPT2_PRUNE_TIED_EMBEDDING}}


def lr_schedule(cfg) -> dict:
    return {"kind": "warmup_cosine", "warmup": cfg.GPT2_WARMUP_ITERS, "min_lr": cfg.GPT2_MIN_LR}


def optimizer_args(cfg) -> dict:
    return {"grad_clip": cfg.GPT2_GRAD_CLIP, "prune_tied": cfg.GPT2_PRUNE_TIED_EMBEDDING}


def run_tag(options: dict) -> str:
    """A GPT-2 other than 124M is "gpt2tiny" in run IDs, so that a tiny CPU run and a 124M
    run never share a run directory."""
    return "gpt2" if tuple(options.get(k) for k in SHAPE_KEYS) == SHAPE_124M else "gpt2tiny"


# auto_batch: the seed's per-GPU rows (lib/hwdetect.py ROWS) are GPT-2 124M's, hence scale 1;
# eager factor 0.5 as GELU and LayerNorm outputs are saved unfused without torch.compile.
MODELS = (Model(name="gpt2", metric="perplexity", auto_batch=(1.0, 1024, 0.5),
                datasets=("finewebedu", "local_text", "python_docs", "generated"), values=values,
                lr_schedule=lr_schedule, optimizer_args=optimizer_args, run_tag=run_tag),)
