import sys

import pytest

from lib import extras


def test_pins_reads_names_and_skips_comments(tmp_path):
    f = tmp_path / "extras.txt"
    f.write_text("# header\nRay[default]==2.0  # executor\n\nfoo==1.2\n")
    assert extras.pins(f) == {"ray": "Ray[default]==2.0", "foo": "foo==1.2"}


def test_ensure_imports_present_module_without_installing():
    assert extras.ensure("json") is sys.modules["json"]


def test_ensure_without_pin_says_so_in_one_line():
    with pytest.raises(extras.ExtraUnavailable, match="no pinned version"):
        extras.ensure("surely-not-a-real-package-knlp", module="surely_not_a_real_package_knlp")


def test_ensure_install_false_names_the_pip_command():
    with pytest.raises(extras.ExtraUnavailable, match="pip install"):
        extras.ensure("surely-not-a-real-package-knlp", module="surely_not_a_real_package_knlp", install=False)
