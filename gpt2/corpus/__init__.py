"""GPT-2 training corpus: text sources -> tokenizers -> uint16 token shards -> memmap batches.

    tokenizers.py  tiktoken GPT-2 BPE and a byte tokenizer
    shards.py      the shard file format (header with magic, version, count)
    sources.py     generated text, local .txt files, FineWebEdu (streamed)
    build.py       source -> shards under DATA_DIR/gpt2/<dataset>-<tokenizer>/ (make prepare-gpt2-data)
    batches.py     training/validation windows read from the shards (training never calls the hub)
"""
from gpt2.corpus.batches import DataError, TokenData
from gpt2.corpus.build import PrepareError, prepare, read_meta, shard_dir
from gpt2.corpus.shards import ShardError
from gpt2.corpus.sources import SourceError
from gpt2.corpus.tokenizers import TokenizerError, get_tokenizer

# Every error that means "the data cannot be prepared or used as configured".
ERRORS = (DataError, PrepareError, ShardError, SourceError, TokenizerError)

__all__ = ["DataError", "ERRORS", "PrepareError", "ShardError", "SourceError", "TokenData", "TokenizerError",
           "get_tokenizer", "prepare", "read_meta", "shard_dir"]
