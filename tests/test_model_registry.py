"""The model registry: every model is one folder plus one `source` line, and each one trains.

The throwaway-model test copies tests/throwaway_model/mlp2/ into a copy of the tree, adds its
source line to kconfig/Kconfig.models and trains it with plain `make`, editing nothing else.
"""
import difflib
import filecmp
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from lib.configuration import config, model_registry
from lib.export.write import export
from lib.lifecycle import launch, rundir
from test_matrix.expand import expand
from tests.test_make import _SKIP_ANYWHERE, _SKIP_AT_TOP, ROOT, make, tree  # noqa: F401  (tree is a fixture)

THROWAWAY = Path(__file__).resolve().parent / "throwaway_model" / "mlp2"
MLP2_SOURCE = 'source "mlp2/Kconfig"\n'
MLP2_CONFIG = """\
# CONFIG_MODEL_LENET5 is not set
CONFIG_MODEL_MLP2=y
CONFIG_DEVICE_CPU=y
CONFIG_HYPER_PARAM_MANUAL=y
# CONFIG_OPTIMIZER_ADAMW is not set
CONFIG_OPTIMIZER_ADAMWPRUNE=y
CONFIG_PRUNING_WARMUP=4
CONFIG_PRUNING_FREQUENCY=2
"""


def _files(top: Path) -> set[str]:
    """Paths under `top` that the tree copy carries (what a developer could have edited)."""
    out = set()
    for directory, names, files in os.walk(top):
        skip = _SKIP_ANYWHERE | (_SKIP_AT_TOP if Path(directory) == top else set())
        names[:] = [n for n in names if n not in skip]
        out.update(str((Path(directory) / f).relative_to(top)) for f in files if f not in skip)
    return out


def _edited_besides_mlp2(copy: Path) -> list[str]:
    """Every file of the copy that differs from this checkout, other than mlp2/ and its source line."""
    ours, theirs = _files(ROOT), _files(copy)
    problems = sorted(f"only in copy: {p}" for p in theirs - ours if not p.startswith("mlp2/"))
    problems += sorted(f"missing in copy: {p}" for p in ours - theirs)
    for path in sorted(ours & theirs):
        if filecmp.cmp(ROOT / path, copy / path, shallow=False):
            continue
        if path == "kconfig/Kconfig.models":
            added = [line for line in difflib.ndiff((ROOT / path).read_text().splitlines(keepends=True),
                                                    (copy / path).read_text().splitlines(keepends=True))
                     if line[:2] in ("+ ", "- ")]
            if added == ["+ " + MLP2_SOURCE]:
                continue
        problems.append(f"edited: {path}")
    return problems


def test_a_new_model_is_a_folder_and_one_source_line_and_trains_through_make(tree):  # noqa: F811
    shutil.copytree(THROWAWAY, tree / "mlp2", ignore=shutil.ignore_patterns("__pycache__"))
    models_kconfig = tree / "kconfig" / "Kconfig.models"
    text = models_kconfig.read_text()
    last = text.rindex('source "')
    end = text.index("\n", last) + 1
    models_kconfig.write_text(text[:end] + MLP2_SOURCE + text[end:])
    (tree / ".config").write_text(MLP2_CONFIG)

    result = make(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (tree / "runs").iterdir()
    assert run_dir.name.startswith("mlp2-adamwprune-bitter7-state-s90-") and run_dir.name.endswith("-seed1")
    for name in (rundir.SPEC, rundir.HPARAMS, rundir.STATUS, rundir.METRICS, rundir.SUMMARY, rundir.LOG,
                 rundir.LAST, rundir.CURVES):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / rundir.STATUS).read_text())["state"] == rundir.COMPLETED
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    assert summary["model"] == "mlp2" and summary["metric"] == "accuracy"
    # four separable blobs: a trained MLP is far above the 25% of guessing, even 90% pruned
    assert summary["final"]["accuracy"] > 60
    assert summary["achieved_sparsity"] == pytest.approx(0.9, abs=0.01)
    assert json.loads((run_dir / rundir.SPEC).read_text())["model_options"] == {"dataset": "blobs", "hidden": 32}

    assert _edited_besides_mlp2(tree) == []


def test_make_names_a_model_folder_without_registry_in_one_line(tree):  # noqa: F811
    shutil.copytree(THROWAWAY, tree / "mlp2", ignore=shutil.ignore_patterns("__pycache__", "registry.py"))
    models_kconfig = tree / "kconfig" / "Kconfig.models"
    models_kconfig.write_text(models_kconfig.read_text().replace("endmenu", MLP2_SOURCE + "endmenu"))
    (tree / ".config").write_text(MLP2_CONFIG)
    result = make(tree)
    assert result.returncode != 0 and not (tree / "runs").exists()
    # make's own "*** ... Error 2" line is "make[1]: ***" when the tests run under make (CI)
    lines = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    assert lines == ["make: kconfig/Kconfig.models sources mlp2/Kconfig but mlp2/registry.py is missing; add it "
                     "(docs/extending.md, 'Adding a model') or remove the source line"]


def test_the_edit_check_sees_an_edited_file(tree):  # noqa: F811
    (tree / "lib" / "hwdetect.py").write_text((tree / "lib" / "hwdetect.py").read_text() + "\n")
    (tree / "kconfig" / "Kconfig.models").write_text((tree / "kconfig" / "Kconfig.models").read_text()
                                                     + MLP2_SOURCE + "# another line\n")
    assert _edited_besides_mlp2(tree) == ["edited: kconfig/Kconfig.models", "edited: lib/hwdetect.py"]


# ---- what the registry declares ----

def test_the_registry_is_the_folders_kconfig_models_sources_in_order():
    assert model_registry.names() == ("lenet5", "resnet18", "resnet50", "gpt2")
    assert [m.folder for m in model_registry.entries()] == ["lenet5", "resnet", "resnet", "gpt2"]
    assert config.model_folders() == ["lenet5", "resnet", "gpt2"]
    assert all(m.kconfig in config.kconfig_files() for m in model_registry.entries())


def _selecting(entry) -> config.Config:
    """Every symbol at its default, with only `entry`'s model selected."""
    kconf = config.new_kconfig()
    for other in model_registry.entries():
        kconf.syms[other.symbol].set_value(2 if other is entry else 0)
    return config.Config(config.typed_values(kconf), f"defaults + {entry.symbol}")


@pytest.mark.parametrize("name", model_registry.names())
def test_each_entry_is_consistent_with_its_kconfig(name):
    entry = model_registry.get(name)
    kconf = config.new_kconfig()
    sym = kconf.syms[entry.symbol]
    assert sym.nodes and all(Path(node.filename).resolve() == entry.kconfig for node in sym.nodes)
    values = entry.run_values(_selecting(entry))
    assert set(values) == {"epochs", "max_iters", "lr", "weight_decay", "options"}
    assert (values["epochs"] is None) != (values["max_iters"] is None)
    assert values["lr"] > 0 and values["weight_decay"] >= 0
    assert values["options"]["dataset"] in entry.datasets
    assert entry.higher_is_better == (entry.metric == "accuracy")


def test_datasets_are_the_ones_the_data_code_knows():
    from gpt2.corpus import sources
    from lenet5 import data as lenet5_data  # noqa: F401  (its loader names mnist and mnist_sample)
    from resnet import data as resnet_data

    assert set(model_registry.get("gpt2").datasets) == set(sources.DATASETS)
    assert set(model_registry.get("lenet5").datasets) == {"mnist", "mnist_sample"}
    for name in ("resnet18", "resnet50"):
        assert set(model_registry.get(name).datasets) <= set(resnet_data.DATASETS)


def test_shipped_run_ids_are_the_ones_computed_before_the_registry():
    """Run IDs include a digest of the RunSpec: moving per-model symbols to the folders
    must not change a single value (these IDs were computed on the tree before the move)."""
    want = {"lenet5-sample-bitter7": "lenet5-adamwprune-bitter7-state-s90-b1d66e2a-seed1",
            "gpt2-tiny-cpu": "gpt2tiny-adamwprune-bitter7-state-s50-1f8312c4-seed1",
            "gpt2-finewebedu-bitter7": "gpt2-adamwprune-bitter7-state-s50-2968c2fe-seed1",
            "resnet50-cifar100-bitter7": "resnet50-adamwprune-bitter7-state-s50-19431b0d-seed1"}
    assert {name: [s.run_id for s in expand(config.from_defconfig(name))] for name in want} == \
        {name: [run_id] for name, run_id in want.items()}


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown model 'bert'; choose one of lenet5, resnet18, resnet50, gpt2"):
        model_registry.get("bert")
    assert model_registry.find("bert") is None and model_registry.metric_of("bert") == "accuracy"
    assert model_registry.metric_of("gpt2") == "perplexity"


# ---- a broken model folder is one line naming the fix ----

@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """A tree whose Kconfig.models the test writes, with its folders importable."""
    (tmp_path / "kconfig").mkdir()
    monkeypatch.setattr(config, "ROOT", tmp_path)
    monkeypatch.setattr(config, "MODELS_KCONFIG", tmp_path / "kconfig" / "Kconfig.models")
    monkeypatch.syspath_prepend(str(tmp_path))
    model_registry._registry.cache_clear()
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("knlpfake", "knlpother"))]:
        del sys.modules[name]
    model_registry._registry.cache_clear()


def _folder(root: Path, name: str, registry: str | None):
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    (root / name / "Kconfig").write_text("")
    if registry is not None:
        (root / name / "registry.py").write_text("from lib.configuration.model_registry import Model\n" + registry)


ENTRY = 'Model(name="{name}", metric="{metric}", auto_batch=(1.0, 64, 1.0), datasets=("d",), values=dict)'


@pytest.mark.parametrize("folders, message", [
    ({"knlpfake": None}, "sources knlpfake/Kconfig but knlpfake/registry.py is missing"),
    ({"knlpfake": "MODELS = ()\n"}, "knlpfake/registry.py must define MODELS"),
    ({"knlpfake": f"MODELS = ({ENTRY.format(name='Fake', metric='accuracy')},)\n"}, "must be lower-case"),
    ({"knlpfake": f"MODELS = ({ENTRY.format(name='fake', metric='bleu')},)\n"}, "metric 'bleu'; choose one of"),
    ({"knlpfake": "MODELS = (" + ENTRY.format(name='fake', metric='accuracy').replace('("d",)', '()') + ",)\n"},
     "datasets must be a non-empty tuple"),
    ({"knlpfake": f"MODELS = ({ENTRY.format(name='fake', metric='accuracy')},)\n",
      "knlpother": f"MODELS = ({ENTRY.format(name='fake', metric='accuracy')},)\n"},
     "'fake' is declared by both knlpfake/ and knlpother/"),
])
def test_a_broken_model_folder_is_one_line(fake_tree, folders, message):
    for name, registry in folders.items():
        _folder(fake_tree, name, registry)
    (fake_tree / "kconfig" / "Kconfig.models").write_text(
        "".join(f'source "{name}/Kconfig"\n' for name in folders) + '# source "commented/Kconfig"\n')
    with pytest.raises(model_registry.RegistryError, match=message) as err:
        model_registry.names()
    assert "\n" not in str(err.value)


def test_a_good_fake_folder_is_registered(fake_tree):
    _folder(fake_tree, "knlpfake", f"MODELS = ({ENTRY.format(name='fake', metric='perplexity')},)\n")
    (fake_tree / "kconfig" / "Kconfig.models").write_text('menu "Models"\n\tsource "knlpfake/Kconfig"\nendmenu\n')
    assert model_registry.names() == ("fake",)
    entry = model_registry.get("fake")
    assert (entry.folder, entry.symbol, entry.higher_is_better, entry.tag({})) == ("knlpfake", "MODEL_FAKE",
                                                                                  False, "fake")
    assert entry.run_values({"options": {"dataset": "d"}}) == {"options": {"dataset": "d"}}  # values=dict
    with pytest.raises(model_registry.RegistryError, match="chose dataset 'e', which is not in its datasets"):
        entry.run_values({"options": {"dataset": "e"}})


# ---- every registered model builds its task and trains a few steps on the CPU ----

# Per model: .config lines for a run of a few steps, and how its data is made offline.
TINY = {
    "lenet5": "CONFIG_LENET5_DATASET_MNIST_SAMPLE=y\nCONFIG_LENET5_EPOCHS=1\nCONFIG_BATCH_SIZE=500\n",
    "resnet18": "CONFIG_RESNET_EPOCHS=1\nCONFIG_BATCH_SIZE=8\n",
    "resnet50": "CONFIG_RESNET_EPOCHS=1\nCONFIG_BATCH_SIZE=4\n",
    "gpt2": ("CONFIG_GPT2_SIZE_TINY=y\nCONFIG_GPT2_DATASET_GENERATED=y\nCONFIG_GPT2_TOKENIZER_BYTE=y\n"
             "CONFIG_GPT2_TOKEN_BUDGET=20000\nCONFIG_GPT2_VAL_FRACTION=\"0.1\"\nCONFIG_GPT2_MAX_ITERS=4\n"
             "CONFIG_GPT2_WARMUP_ITERS=1\nCONFIG_GPT2_EVAL_ITERS=2\nCONFIG_BATCH_SIZE=4\n"
             "CONFIG_EVAL_INTERVAL=2\nCONFIG_CHECKPOINT_INTERVAL=2\n"),
}


def test_every_registered_model_has_a_tiny_run_here():
    assert set(TINY) == set(model_registry.names()), "add the new model's few-step settings to TINY"


def _fake_cifar(classes: int, n_train: int = 16, n_test: int = 8):
    """Tiny CIFAR-shaped uint8 images, each class its own colour (no download, no files)."""
    def images(n):
        labels = torch.arange(n) % classes
        base = (labels[:, None] * 37 % 200 + 20)[:, :, None, None].expand(n, 3, 32, 32)
        return base.to(torch.uint8).contiguous(), labels
    return (*images(n_train), *images(n_test))


@pytest.mark.parametrize("name", model_registry.names())
def test_every_model_builds_its_task_and_trains_a_few_steps(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KNLP_NUM_THREADS", "1")
    if model_registry.get(name).folder == "resnet":
        from resnet import data as resnet_data

        monkeypatch.setattr(resnet_data, "load", lambda dataset, *_a: (
            _fake_cifar(resnet_data.stats(dataset)[2]), {"dataset": dataset, "source": "generated by the test"}))
    others = "".join(f"# CONFIG_{m.symbol} is not set\n" for m in model_registry.entries() if m.name != name)
    path = tmp_path / "tiny.config"
    path.write_text(f"{others}CONFIG_{model_registry.get(name).symbol}=y\nCONFIG_DEVICE_CPU=y\n"
                    "CONFIG_HYPER_PARAM_MANUAL=y\n# CONFIG_OPTIMIZER_ADAMW is not set\nCONFIG_OPTIMIZER_ADAMWPRUNE=y\n"
                    "CONFIG_PRUNING_WARMUP=1\nCONFIG_PRUNING_RAMP_END=0\nCONFIG_PRUNING_FREQUENCY=1\n# CONFIG_DATA_DOWNLOAD is not set\n"
                    f"CONFIG_DATA_DIR=\"{tmp_path / 'data'}\"\n{TINY[name]}")
    (spec,) = expand(config.Config(config.typed_values(config.load_kconfig(path)), str(path)))
    run_dir = rundir.prepare(tmp_path / "run", spec, None)
    assert launch.run(run_dir, progress=False) == 0, (run_dir / rundir.LOG).read_text()[-2000:]
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    entry = model_registry.get(name)
    assert summary["model"] == name and summary["metric"] == entry.metric
    assert summary["final"][entry.metric] is not None
    assert 0 < summary["achieved_sparsity"] <= spec.target_sparsity + 0.01
    # and its folder's export.py rebuilds the architecture the weights fit
    info = export(run_dir, "last", out=lambda _line: None)
    assert info["model"] == name and info["constructor"] and info["sparsity"] == pytest.approx(
        summary["achieved_sparsity"], abs=0.01)


# ---- lib/ and test_matrix/ are model-agnostic ----

# The doctor's probes train LeNet-5 and a tiny GPT-2 on purpose (lib/doctor/checks.py: fixed
# small models that exercise conv and attention paths on each device); synthetic.py labels
# fabricated run directories with real model names so that reports look like real ones.
MAY_NAME_MODELS = {"lib/doctor/checks.py", "lib/doctor/ddp.py", "test_matrix/synthetic.py"}


def _model_mentions(path: Path, words: set[str]) -> list[str]:
    """String constants (not docstrings) equal to a model or folder name, and imports of a model folder."""
    import ast

    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and node.value in words:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for module in modules:
            if module.split(".")[0] in words:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {module}")
    return found


def test_lib_and_test_matrix_name_no_model():
    words = set(model_registry.names()) | {m.folder for m in model_registry.entries()}
    found = [hit for d in ("lib", "test_matrix") for p in sorted((ROOT / d).rglob("*.py"))
             if str(p.relative_to(ROOT)) not in MAY_NAME_MODELS for hit in _model_mentions(p, words)]
    assert found == []
