import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# One CPU thread for every test and every run a test starts (the engine reads
# KNLP_NUM_THREADS): the tensors are tiny, and on a shared 2-core machine a second
# OpenMP thread per process spins against the others and makes tests many times slower.
os.environ["KNLP_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def gpt2_ranks_dir():
    """A directory with GPT-2's BPE ranks file, fetched once (pip download of the
    openai-whisper sdist) into the project's default DATA_DIR and reused by later runs."""
    from pathlib import Path

    from gpt2.corpus import bpe_ranks

    directory = Path(ROOT) / "data" / "gpt2" / "tokenizer"
    if not (directory / bpe_ranks.RANKS_FILE).is_file():
        try:
            bpe_ranks.fetch(directory)
        except bpe_ranks.RanksError as err:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"PyPI unreachable, so GPT-2's ranks file cannot be fetched: {err}")
    return directory
