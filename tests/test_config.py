"""The configuration spine: Kconfig tree, strict loading, config.py types, defconfigs."""
import importlib.util
import re
from pathlib import Path

import kconfiglib
import pytest

from lib.configuration import config
from scripts.kconfig import minimal_config

ROOT = config.ROOT
DEFCONFIGS = config.defconfig_names()
SEED_DEFCONFIGS = {"gpt2-finewebedu-bitter7", "gpt2-finewebedu-bitter8", "gpt2-finewebedu-spam-vs-bitter7",
                   "lenet5-bitter7", "lenet5-cpu-compare", "lenet5-sample-bitter7",
                   "resnet18-cifar10-bitter7", "resnet18-cifar10-compare", "resnet50-cifar100-bitter7",
                   "resnet50-cifar100-spam-vs-bitter7", "gpt2-tiny-cpu"}


def test_required_defconfigs_ship():
    assert SEED_DEFCONFIGS <= set(DEFCONFIGS)


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_defconfig_loads_without_any_warning(name):
    kconf = config.load_kconfig(config.defconfig_path(name))
    assert kconf.warnings == []
    assert kconf.missing_syms == []


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_defconfig_savedefconfig_roundtrip(name, tmp_path):
    first = tmp_path / "first.config"
    config.write_dot_config(config.load_kconfig(config.defconfig_path(name)), first)
    minimal = tmp_path / "minimal"
    minimal.write_text(minimal_config(config.load_kconfig(first)))
    second = tmp_path / "second.config"
    config.write_dot_config(config.load_kconfig(minimal), second)
    assert first.read_text() == second.read_text()
    shipped = [line for line in config.defconfig_path(name).read_text().splitlines()
               if line.startswith("CONFIG_") or line.startswith("# CONFIG_")]
    assert shipped == minimal.read_text().splitlines(), "shipped defconfigs are kept minimal"


def _write(tmp_path, text, name="test.config"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_py_is_typed_by_symbol_type(tmp_path):
    src = _write(tmp_path, "CONFIG_LENET5_DATASET_MNIST_SAMPLE=y\nCONFIG_SEED=7\n")
    out = tmp_path / "config.py"
    config.generate(src, out)
    spec = importlib.util.spec_from_file_location("generated_config", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.SEED == 7 and type(module.SEED) is int
    assert module.MODEL_LENET5 is True and module.MODEL_GPT2 is False
    assert module.LENET5_LEARNING_RATE == pytest.approx(1e-3) and type(module.LENET5_LEARNING_RATE) is float
    assert module.OUTPUT_DIR == "runs"
    assert module.BATCH_SIZE is None, "an int whose dependency is off has no value"
    assert module.SGD_LEARNING_RATE is None, "a decimal whose dependency is off has no value"


def test_every_kconfig_type_maps_to_python_type():
    kconf = config.new_kconfig()
    values = config.typed_values(kconf)
    for sym in kconf.unique_defined_syms:
        value = values[sym.name]
        if sym.orig_type == kconfiglib.BOOL:
            assert isinstance(value, bool)
        elif sym.orig_type == kconfiglib.INT:
            assert value is None or isinstance(value, int)
        elif sym.orig_type == kconfiglib.STRING:
            assert value is None or isinstance(value, (str, float))


def test_load_regenerates_stale_config_py(tmp_path):
    src = _write(tmp_path, "CONFIG_SEED=3\n")
    assert config.load(src).SEED == 3
    generated = Path(str(src) + ".py")
    assert generated.exists()
    src.write_text("CONFIG_SEED=4\n")
    import os
    os.utime(src, (generated.stat().st_mtime + 5,) * 2)
    assert config.load(src).SEED == 4


def test_config_is_read_only_and_names_missing_symbols(tmp_path):
    cfg = config.load(_write(tmp_path, "CONFIG_SEED=3\n"))
    with pytest.raises(AttributeError):
        cfg.SEED = 4
    with pytest.raises(AttributeError, match="CONFIG_NOPE"):
        cfg.NOPE
    assert cfg.replace(SEED=9).SEED == 9 and cfg.SEED == 3


@pytest.mark.parametrize("text, pattern", [
    ("CONFIG_SEED=1\nCONFIG_NOT_A_SYMBOL=y\n", r"test.config:2: CONFIG_NOT_A_SYMBOL: unknown symbol"),
    ("CONFIG_OPTIMIZERS_ADAMW=y\n", r"did you mean CONFIG_OPTIMIZER_ADAMW"),
    ("CONFIG_TEST_MATRIX_SEEDS=0\n", r"test.config:1: CONFIG_TEST_MATRIX_SEEDS.*out of range"),
    ("CONFIG_LENET5_EPOCHS=ten\n", r"test.config:1: CONFIG_LENET5_EPOCHS.*invalid"),
    ("CONFIG_PRUNING_STATE=y\n", r"test.config:1: CONFIG_PRUNING_STATE=y does not stick: needs OPTIMIZER_ADAMWPRUNE"),
    ("CONFIG_ADAMWPRUNE_VARIANT_BITTER3=y\n", r"CONFIG_ADAMWPRUNE_VARIANT_BITTER3=y does not stick: needs"),
    ("CONFIG_SEED=1\nCONFIG_SEED=2\n", r"test.config:2: CONFIG_SEED: .*set more than once"),
    ("CONFIG_DEVICE_CPU=y\nCONFIG_DEVICE_CUDA=y\n", r"CONFIG_DEVICE_CPU=y does not stick: another choice member"),
])
def test_bad_lines_are_errors_with_file_line_and_symbol(tmp_path, text, pattern):
    with pytest.raises(config.ConfigError, match=pattern):
        config.load_kconfig(_write(tmp_path, text))


def test_decimal_symbol_that_is_not_a_number_is_an_error(tmp_path):
    with pytest.raises(config.ConfigError, match=r"CONFIG_LENET5_LEARNING_RATE='fast' is not a number"):
        config.load(_write(tmp_path, 'CONFIG_LENET5_LEARNING_RATE="fast"\n'))


def test_olddefconfig_mode_drops_unknown_symbols(tmp_path, capsys):
    kconf = config.load_kconfig(_write(tmp_path, "CONFIG_GONE=y\nCONFIG_SEED=5\n"), drop_unknown=True)
    assert kconf.syms["SEED"].str_value == "5"
    assert "CONFIG_GONE" in capsys.readouterr().err


def test_unknown_defconfig_names_the_closest():
    with pytest.raises(config.ConfigError, match="closest: lenet5-bitter7"):
        config.defconfig_path("lenet5-bitter")


def test_missing_config_file_says_how_to_make_one(tmp_path):
    with pytest.raises(config.ConfigError, match="make defconfig-NAME"):
        config.load(tmp_path / ".config")


def _kconfig_symbols():
    kconf = config.new_kconfig()
    return kconf, [sym for sym in kconf.unique_defined_syms]


def _code_text():
    dirs = ["lib", "scripts", "test_matrix", *config.model_folders()]
    return "\n".join(p.read_text() for d in dirs for p in (ROOT / d).rglob("*.py"))


# Families the sweep expansion reads by pattern (MODEL_{name} ...), see test_matrix/expand.py.
FAMILIES = [r"MODEL_[A-Z0-9]+", r"OPTIMIZER_[A-Z]+", r"PRUNING_(NONE|MAGNITUDE|MOVEMENT|STATE)",
            r"ADAMWPRUNE_VARIANT_BITTER\d", r"SPARSITY_\d+"]


def test_every_symbol_is_used_by_code_and_has_help():
    kconf, symbols = _kconfig_symbols()
    code = _code_text()
    unused = []
    for sym in symbols:
        used = re.search(rf"\b{sym.name}\b", code) or any(re.fullmatch(f, sym.name) for f in FAMILIES)
        if not used and sym.choice is not None:
            # a choice is read through any one of its members (the others are "else")
            used = any(re.search(rf"\b{other.name}\b", code) for other in sym.choice.syms)
        if not used:
            unused.append(sym.name)
    assert unused == []
    assert [sym.name for sym in symbols if not any(node.help for node in sym.nodes)] == []
