"""docs/extending.md followed to the letter: in a copy of the tree, a new pruning score (and a
new optimizer) is one registry entry plus its Kconfig symbol, and `make` trains with it.

The copy is diffed against the original afterwards, so a step the guide forgot (a name list
somewhere else that must also learn the new entry) fails here instead of in a user's hands.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_make import IGNORED, ROOT, make, tree  # noqa: F401 (tree is a fixture)

SCORE_FUNCTION = '''

def _wm(w, m, v, *, step, beta1, eps, out, tmp):
    import torch
    return torch.abs(w, out=out).mul_(torch.abs(m, out=tmp))
'''
SCORE_ENTRY = '''    Score("wm", "|w|*|m|", _wm, True, kconfig="ADAMWPRUNE_VARIANT_WM"),
'''
SCORE_SYMBOL = '''
config ADAMWPRUNE_VARIANT_WM
	bool "wm: |w|*|m| (a score added by the test of docs/extending.md)"
	help
	  Weight magnitude times momentum magnitude.
'''
OPTIMIZER_ENTRY = '''    Optimizer("nadam", "OPTIMIZER_NADAM", "torch.optim.NAdam", knobs=("betas", "eps", "momentum_decay"),
              defaults={"momentum_decay": 4e-3}, kconfig_knobs={"momentum_decay": "NADAM_MOMENTUM_DECAY"}),
'''
OPTIMIZER_SYMBOLS = '''
config OPTIMIZER_NADAM
	bool "NAdam (an optimizer added by the test of docs/extending.md)"
	help
	  torch.optim.NAdam: Adam with Nesterov momentum.

config NADAM_MOMENTUM_DECAY
	string "NAdam momentum decay"
	depends on OPTIMIZER_NADAM
	default "0.004"
	help
	  torch's default psi.
'''
# LeNet-5 on the shipped sample for 1 epoch (62 steps), pruning 90% from step 20
SAMPLE = """CONFIG_DEVICE_CPU=y
CONFIG_HYPER_PARAM_MANUAL=y
CONFIG_LENET5_DATASET_MNIST_SAMPLE=y
# CONFIG_DATA_DOWNLOAD is not set
CONFIG_LENET5_EPOCHS=1
CONFIG_PRUNING_WARMUP=20
CONFIG_PRUNING_FREQUENCY=10
CONFIG_SPARSITY_90=y
# CONFIG_OPTIMIZER_ADAMW is not set
"""


def insert(path: Path, before: str, text: str):
    """Put `text` before the one occurrence of `before` in `path`."""
    body = path.read_text()
    assert body.count(before) == 1, f"{path.name}: the guide's anchor {before!r} is not unique"
    at = body.index(before)
    path.write_text(body[:at] + text + body[at:])


def files(top: Path) -> dict[str, bytes]:
    """Relative path -> content of every file of a tree, skipping what the `tree` fixture skips
    and what a run writes (runs/, .config, config.py at the top)."""
    out = {}
    for directory, names, filenames in os.walk(top):
        skipped = set(IGNORED(ROOT if Path(directory) == top else directory, names + filenames))
        names[:] = [n for n in names if n not in skipped]
        for name in filenames:
            if name not in skipped:
                path = Path(directory) / name
                out[str(path.relative_to(top))] = path.read_bytes()
    return out


def changed_files(copy: Path) -> set[str]:
    """Files of the copy that differ from, or are missing in, the original tree."""
    ours, original = files(copy), files(ROOT)
    return {p for p in ours.keys() | original.keys() if ours.get(p) != original.get(p)}


def zero_fraction(summary: dict) -> float:
    """The prunable weights that are exactly 0 at the end, counted from the weights."""
    layers = summary["layers"]
    return sum(row["sparsity"] * row["size"] for row in layers) / sum(row["size"] for row in layers)


def train(tree: Path, config: str) -> dict:
    # the copy runs on this checkout's .venv as installed: a requirements.txt checked out after
    # that venv's stamp must not send make to rebuild it (a venv shared by several checkouts)
    stamp = (tree / ".venv" / ".installed").stat().st_mtime_ns
    if (tree / "requirements.txt").stat().st_mtime_ns > stamp:
        os.utime(tree / "requirements.txt", ns=(stamp, stamp))
    (tree / ".config").write_text(SAMPLE + config)
    result = make(tree)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (run_dir,) = (tree / "runs").iterdir()
    return {"run_id": run_dir.name, "hparams": json.loads((run_dir / "hparams.json").read_text()),
            "summary": json.loads((run_dir / "summary.json").read_text())}


@pytest.mark.slow
def test_a_new_score_is_one_registry_entry_and_one_kconfig_symbol(tree):
    registry = tree / "lib" / "pruning" / "score_registry.py"
    insert(registry, "\n\nSCORES = (", SCORE_FUNCTION)
    insert(registry, '    Score("magnitude"', SCORE_ENTRY)
    insert(tree / "kconfig" / "Kconfig.optimizers", "\nconfig ADAMWPRUNE_VARIANT_BITTER9\n", SCORE_SYMBOL)
    run = train(tree, "CONFIG_OPTIMIZER_ADAMWPRUNE=y\nCONFIG_PRUNING_STATE=y\n"
                      "# CONFIG_ADAMWPRUNE_VARIANT_BITTER7 is not set\nCONFIG_ADAMWPRUNE_VARIANT_WM=y\n")
    assert run["run_id"].startswith("lenet5-adamwprune-wm-state-s90-")
    assert run["hparams"]["variant"] == "wm" and run["hparams"]["pruning"] == "state"
    assert run["summary"]["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert zero_fraction(run["summary"]) == pytest.approx(0.9, abs=1e-3)
    assert changed_files(tree) == {"lib/pruning/score_registry.py", "kconfig/Kconfig.optimizers"}


@pytest.mark.slow
def test_a_new_optimizer_is_one_registry_entry_and_its_kconfig_symbols(tree):
    insert(tree / "lib" / "optimizers" / "registry.py", "    Optimizer(\"adamwprune\"", OPTIMIZER_ENTRY)
    insert(tree / "kconfig" / "Kconfig.optimizers", "\nconfig SGD_LEARNING_RATE\n", OPTIMIZER_SYMBOLS)
    run = train(tree, "CONFIG_OPTIMIZER_NADAM=y\nCONFIG_PRUNING_MAGNITUDE=y\n")
    assert run["run_id"].startswith("lenet5-nadam-magnitude-s90-")
    assert run["hparams"]["optimizer"] == "nadam"
    assert run["summary"]["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert zero_fraction(run["summary"]) == pytest.approx(0.9, abs=1e-3)
    assert changed_files(tree) == {"lib/optimizers/registry.py", "kconfig/Kconfig.optimizers"}
