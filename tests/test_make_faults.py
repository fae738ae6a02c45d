"""make targets given bad paths: one line, nothing written outside the tree or overwritten."""
from test_make import make, tree  # noqa: F401  (the fixture)


def test_savedefconfig_refuses_paths_outside_defconfigs(tree):  # noqa: F811
    make(tree, "defconfig-lenet5-sample-bitter7")
    for name in ("../../x", "../escape", str(tree.parent / "abs"), ".hidden", "sub/dir"):
        result = make(tree, "savedefconfig", f"DEFCONFIG={name}")
        assert result.returncode != 0, name
        ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
        assert len(ours) == 1 and "must be a plain file name" in ours[0], result.stderr
    assert not (tree.parent / "x").exists() and not (tree / "escape").exists() and not (tree.parent / "abs").exists()


def test_savedefconfig_asks_for_force_before_overwriting(tree):  # noqa: F811
    shipped = tree / "defconfigs" / "lenet5-cpu-compare"
    before = shipped.read_text()
    make(tree, "defconfig-lenet5-sample-bitter7")
    result = make(tree, "savedefconfig", "DEFCONFIG=lenet5-cpu-compare")
    assert result.returncode != 0 and "FORCE=1" in result.stderr
    assert shipped.read_text() == before
    result = make(tree, "savedefconfig", "DEFCONFIG=lenet5-cpu-compare", "FORCE=1")
    assert result.returncode == 0, result.stderr
    assert shipped.read_text() != before and "CONFIG_LENET5_DATASET_MNIST_SAMPLE=y" in shipped.read_text()


def test_report_takes_a_directory_with_a_space(tree):  # noqa: F811
    result = make(tree, "report", "DIR=no such dir")
    assert result.returncode != 0
    assert "no such dir" in result.stderr and "Traceback" not in result.stderr, result.stderr
