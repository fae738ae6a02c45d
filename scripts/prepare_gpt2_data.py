"""make prepare-gpt2-data: tokenize the GPT-2 text that .config selects into shards, once.

Writes DATA_DIR/gpt2/<dataset>-<tokenizer>/ (train_*.bin, val.bin, meta.json); does
nothing when shards of the same recipe are already there (--force rebuilds them).
Exit status: 0 done, 2 bad configuration or data (one line says what and how to fix).
"""
import argparse
import sys
from pathlib import Path


from gpt2 import corpus
from gpt2.corpus import sources
from gpt2.corpus.build import DEFAULT_SHARD_TOKENS
from lib.configuration import config as lib_config
from lib.configuration import paths, runspec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(lib_config.DOT_CONFIG), help="config file (default .config)")
    parser.add_argument("--force", action="store_true", help="rebuild the shards even if they are up to date")
    parser.add_argument("--bpe-dir", help="directory with GPT-2's vocab.bpe and encoder.json, or gpt2.tiktoken "
                                          "(offline tiktoken)")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                        help="tokens per training shard file")
    args = parser.parse_args(argv)
    try:
        cfg = lib_config.load(args.config)
        if not cfg.get("MODEL_GPT2"):
            raise lib_config.ConfigError(f"{args.config} does not select GPT-2 (CONFIG_MODEL_GPT2=y); "
                                         "load a gpt2 defconfig (make list-defconfigs) or use make menuconfig")
        # The data knobs do not depend on optimizer or pruning: any point of the sweep has them.
        spec = runspec.build(cfg, model="gpt2", optimizer="adamw", pruning="none", variant=None,
                             target_sparsity=0.0, seed=cfg.SEED)
        options = sources.with_paths(spec.model_options)
        corpus.prepare(options, paths.data_dir(spec), shard_tokens=args.shard_tokens, force=args.force,
                     bpe_dir=args.bpe_dir)
    except (lib_config.ConfigError, *corpus.ERRORS) as err:
        print(f"prepare-gpt2-data: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prepare-gpt2-data: interrupted; nothing was kept, run it again", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
