"""Bad configuration input is refused at configuration time, in one line, before any run exists."""
import os
import subprocess
import sys

import pytest

from lib.configuration import config, decimal_ranges


def _load(tmp_path, text):
    path = tmp_path / "test.config"
    path.write_text(text)
    return config.load(path)


def test_config_py_is_regenerated_by_content_not_by_file_time(tmp_path):
    # the repro: an older .config copied back with `cp -p` keeps an old mtime
    path = tmp_path / "test.config"
    path.write_text("CONFIG_SEED=3\n")
    assert config.load(path).SEED == 3
    generated = tmp_path / "test.config.py"
    path.write_text("CONFIG_SEED=4\n")
    old = generated.stat().st_mtime - 3600
    os.utime(path, (old, old))
    assert config.load(path).SEED == 4
    # and an unchanged .config is not regenerated
    before = generated.stat().st_mtime_ns
    assert config.load(path).SEED == 4 and generated.stat().st_mtime_ns == before


def test_a_kconfig_change_regenerates_config_py(tmp_path, monkeypatch):
    path = tmp_path / "test.config"
    path.write_text("CONFIG_SEED=3\n")
    config.load(path)
    extra = tmp_path / "Kconfig.extra"
    extra.write_text("# a change to the tree\n")
    monkeypatch.setattr(config, "kconfig_files", lambda real=config.kconfig_files: real() + [extra])
    assert config._stale(path, tmp_path / "test.config.py")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "NaN"])
def test_non_finite_decimals_are_one_line_errors(tmp_path, value):
    with pytest.raises(config.ConfigError) as err:
        _load(tmp_path, f'CONFIG_LENET5_LEARNING_RATE="{value}"\n')
    message = str(err.value)
    assert "test.config:1: CONFIG_LENET5_LEARNING_RATE" in message and "not a finite number" in message
    assert "\n" not in message


@pytest.mark.parametrize("line, words", [
    ('CONFIG_LENET5_LEARNING_RATE="-1"', "must be > 0"),
    ('CONFIG_LENET5_WEIGHT_DECAY="-0.1"', "must be >= 0"),
    ('CONFIG_ADAM_BETA2="1"', "must be in [0, 1)"),
    ('CONFIG_OPTIMIZER_SGD=y\nCONFIG_SGD_MOMENTUM="1.5"', "must be in [0, 1)"),
])
def test_out_of_range_decimals_are_refused_with_the_range(tmp_path, line, words):
    with pytest.raises(config.ConfigError, match=r"out of range: it " + words.replace("[", r"\[").replace(")", r"\)")):
        _load(tmp_path, line + "\n")


def test_every_range_names_a_decimal_symbol_and_admits_its_default():
    kconf = config.new_kconfig()
    for name in decimal_ranges.RANGES:
        sym = kconf.syms[name]
        assert config._is_decimal_symbol(sym), name
        assert decimal_ranges.problem(name, float(sym.defaults[0][0].str_value)) is None, name


def test_int_out_of_range_states_the_range(tmp_path):
    with pytest.raises(config.ConfigError, match=r"CONFIG_TEST_MATRIX_SEEDS=0 does not stick: out of range: "
                                                 r"allowed 1\.\.1000"):
        _load(tmp_path, "CONFIG_TEST_MATRIX_SEEDS=0\n")


def test_menuconfig_without_a_terminal_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "scripts.kconfig", "menuconfig"], cwd=config.ROOT,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "needs an interactive terminal" in result.stderr
    assert "Traceback" not in result.stderr
