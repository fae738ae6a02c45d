"""The exported GPT-2 folder in Hugging Face transformers (a test-only extra): a short tiny run,
exported, loaded with GPT2LMHeadModel.from_pretrained; logits within 1e-5 in float32 and the
same 20 greedy tokens as knlp's own model."""
import json

import pytest
import torch

from gpt2 import hf_export
from lib.export.run_weights import load_run
from lib.export.write import export
from lib.extras import ensure
from tests.test_gpt2_train import gpt2_spec, start


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KNLP_NUM_THREADS", "1")
        tmp = tmp_path_factory.mktemp("hf")
        # byte tokenizer: 256 tokens, already a multiple of 64; the padded BPE vocabulary is
        # covered by test_padded_vocabulary_is_cut_back_and_linears_transposed
        code, run_dir = start(tmp, gpt2_spec(tmp))
    assert code == 0
    export(run_dir, "best", out=lambda _l: None)
    return run_dir


def knlp_greedy(model, idx, n, vocab):
    for _ in range(n):
        logits = model(idx[:, -model.config.block_size:])[:, -1, :vocab]
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx


def test_transformers_loads_the_export_with_the_same_logits_and_greedy_text(exported):
    transformers = ensure("transformers", why="tests/test_export_hf.py")
    rw = load_run(exported, "best")
    ours = rw.model.eval()
    theirs = transformers.GPT2LMHeadModel.from_pretrained(str(exported / "export" / "hf"),
                                                          dtype=torch.float32).eval()
    vocab = json.loads((exported / "export" / "hf" / "config.json").read_text())["vocab_size"]
    assert vocab == 256 and theirs.config.tie_word_embeddings
    assert theirs.lm_head.weight.data_ptr() == theirs.transformer.wte.weight.data_ptr()
    idx = torch.randint(1, 256, (3, ours.config.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(idx)[..., :vocab] - theirs(idx).logits).abs().max().item()
        assert diff < 1e-5
        prompt = idx[:1, :10]
        mine = knlp_greedy(ours, prompt, 20, vocab)
        hf = theirs.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones_like(prompt))
    assert torch.equal(mine, hf)
    # pruned weights are zero in the Hugging Face model too (Conv1D holds them transposed)
    for name, mask in rw.pruned.items():
        w = theirs.get_parameter(name)
        w = w.t() if name.endswith(hf_export.CONV1D) else w
        assert bool((w[mask] == 0).all())


def test_padded_vocabulary_is_cut_back_and_linears_transposed():
    from gpt2.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=50304, block_size=8, n_layer=1, n_head=2, n_embd=8))
    state = {k: v for k, v in model.state_dict().items()}
    out = hf_export.hf_state(state, 50257)
    assert "lm_head.weight" not in out and out["transformer.wte.weight"].shape == (50257, 8)
    assert torch.equal(out["transformer.h.0.attn.c_attn.weight"], state["transformer.h.0.attn.c_attn.weight"].t())
    assert torch.equal(out["transformer.h.0.ln_1.weight"], state["transformer.h.0.ln_1.weight"])


def test_missing_bpe_files_are_named_not_faked(tmp_path, monkeypatch):
    from gpt2.model import GPTConfig

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("KNLP_GPT2_BPE_DIR", raising=False)
    bad = tmp_path / "data" / "gpt2" / "tokenizer"
    bad.mkdir(parents=True)
    (bad / "vocab.bpe").write_text("#version: 0.2\n")  # wrong contents: refused by hash
    (bad / "encoder.json").write_text("{}")
    info = hf_export.write(tmp_path / "hf", {}, GPTConfig(vocab_size=50304, n_layer=1, n_head=1, n_embd=4,
                                                         block_size=4), "gpt2", tmp_path / "data")
    assert "tokenizer files not written" in info["note"] and not (tmp_path / "hf" / "vocab.json").exists()
