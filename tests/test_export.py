"""make export and make bench-sparse on short LeNet-5 runs: round trips bit for bit, pruned
positions zero, per-layer counts equal to the run's own ledger, every benchmark figure printed."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lenet5.model import LeNet5
from lib.configuration import config
from lib.lifecycle import rundir
from lib.configuration.config import ROOT
from lib.export import bench_run, compact
from lib.export.write import export, same_bits
from lib.training.task import BadInput
from test_matrix.expand import expand
from tests.test_engine_support import FAST, lenet_spec, prepare, run
from tests.test_engine_support import one_thread  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):  # noqa: F811
    """A 90% AdamWPrune bitter7 run (masks in Adam's state) and an SGD magnitude run (bit masks)."""
    tmp = tmp_path_factory.mktemp("export")
    out = {}
    for name, changes in (("adam", {}), ("sgd", {"OPTIMIZER_SGD": 2, "OPTIMIZER_ADAMWPRUNE": 0,
                                                 "PRUNING_MAGNITUDE": 2})):
        kconf = config.load_kconfig(config.defconfig_path("lenet5-sample-bitter7"))
        for symbol, value in changes.items():  # as menuconfig would, so dependent defaults follow
            kconf.syms[symbol].set_value(value)
        spec = expand(config.Config(config.typed_values(kconf)).replace(**FAST))[0]
        run_dir = prepare(tmp, spec, name)
        assert run(run_dir) == 0
        out[name] = run_dir
    return out


def ledger(run_dir):
    """The run's own per-layer pruned counts, read straight from last.pt."""
    last = torch.load(run_dir / rundir.LAST, map_location="cpu", weights_only=True)
    pruner = last["optimizer"]["knlp"]["pruner"]
    return dict(zip(pruner["names"], pruner["dead"]))


@pytest.mark.parametrize("name", ["adam", "sgd"])
@pytest.mark.parametrize("which", ["best", "last"])
def test_export_round_trips_with_the_runs_counts(runs, name, which):
    run_dir = runs[name]
    lines = []
    info = export(run_dir, which, out=lines.append)
    folder = run_dir / "export"
    dense = load_file(str(folder / "model.safetensors"))
    net = LeNet5()
    net.load_state_dict(dense)  # the plain constructor loads it, strictly
    source = torch.load(run_dir / (rundir.BEST if which == "best" else rundir.LAST), map_location="cpu",
                        weights_only=True)["model"]
    record = json.loads((folder / "sparsity.json").read_text())
    counts = ledger(run_dir)
    assert [layer["name"] for layer in record["layers"]] == list(counts)
    for layer in record["layers"]:
        w, saved = dense[layer["name"]], source[layer["name"]]
        assert layer["shape"] == list(w.shape) and layer["pruned"] == counts[layer["name"]]
        zero = w == 0
        assert int(zero.sum()) >= layer["pruned"]
        assert not bool(torch.signbit(w[zero]).any())  # +0.0, not -0.0
        assert torch.equal(w[~zero], saved.contiguous()[~zero])  # survivors are the checkpoint's values
    for key, t in dense.items():
        if key not in counts:
            assert same_bits(t, source[key].contiguous())
    summary = rundir.read_json(run_dir / rundir.SUMMARY)
    assert record["pruned"] == sum(counts.values()) == round(summary["achieved_sparsity"] * record["prunable"])
    assert info["nonzero_at_pruned"] == 0
    back = compact.load(folder / "model.compact.safetensors")
    assert back.keys() == dense.keys() and all(same_bits(back[k], dense[k]) for k in dense)
    assert info["bytes"]["compact"] == (folder / "model.compact.safetensors").stat().st_size
    assert info["compact_ratio"] < 0.25  # 90% sparse: 1 bit + 10% of the floats
    assert any("compact.safetensors" in line and f"{info['compact_ratio']:.3f}x" in line for line in lines)


def test_compact_keeps_every_bit():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 13, generator=g)
    pruned = torch.rand(7, 13, generator=g) < 0.6
    w[pruned] = 0.0
    w[0, ~pruned[0]] = -0.0  # survivors that are exactly -0.0 stay -0.0
    w[1, 1], pruned[1, 1] = float("nan"), False
    state = {"a.weight": w, "a.bias": torch.randn(7, generator=g), "n": torch.tensor(3)}
    tensors, layout = compact.pack(state, {"a.weight": pruned})
    assert tensors["a.weight:mask"].numel() == (7 * 13 + 7) // 8
    assert tensors["a.weight:values"].numel() == int((~pruned).sum())
    back = compact.unpack(tensors, layout)
    assert back.keys() == state.keys() and all(same_bits(back[k], state[k]) for k in state)


def test_bench_sparse_prints_every_figure(runs, capsys):
    run_dir = runs["adam"]
    export(run_dir, "best", out=lambda _l: None)
    rows = bench_run.run(run_dir, device="cpu", min_time=0.001, repeats=2)
    text = capsys.readouterr().out
    names = ["conv1", "conv2", "fc1", "fc2", "fc3", "whole forward"]
    assert [r["layer"] for r in rows] == names
    lines = [json.loads(line) for line in (run_dir / "export" / "bench_sparse.jsonl").read_text().splitlines()]
    assert [r["layer"] for r in lines] == names
    for r in rows:
        assert r["dense_ms"] > 0 and r["csr_ms"] > 0 and r["dense_bytes"] > 0 and r["csr_bytes"] > 0
        assert r["csr_ratio"] == pytest.approx(r["csr_ms"] / r["dense_ms"])
        row = next(line for line in text.splitlines() if line.startswith(r["layer"]))
        for figure in (f"{r['dense_ms']:.3f}", f"{r['csr_ms']:.3f}", f"{r['csr_ratio']:.2f}x",
                       f"{r['dense_bytes']:,}", f"{r['csr_bytes']:,}"):
            assert figure in row
        assert ("slower" if r["csr_ratio"] > 1 else "faster") in row
    assert "CSR is slower than dense on" in text and "need CUDA" in text
    assert rows[-1]["csr_max_abs_diff"] < 1e-3  # the sparse forward computes the same thing


def test_bad_input_is_one_line_and_exit_2(tmp_path, runs):
    for script, args, message in [("export", ["--run", str(tmp_path)], "not a run directory"),
                                  ("export", ["--run", str(runs["adam"]), "--which", "worst"], "choose best"),
                                  ("bench_sparse", ["--run", str(tmp_path)], "not a run directory")]:
        result = subprocess.run([sys.executable, "-m", f"scripts.{script}", *args], capture_output=True,
                                text=True, cwd=ROOT)
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unfinished_run_is_refused(tmp_path):
    run_dir = prepare(tmp_path, lenet_spec())
    with pytest.raises(BadInput, match="not a finished run"):
        export(run_dir)
    assert not (run_dir / "export").exists()


def test_default_run_is_the_newest_finished_one_of_the_config(tmp_path, runs):
    import shutil

    from lib.export.find_run import newest_finished_run

    cfg = config.from_defconfig("lenet5-sample-bitter7").replace(**FAST, OUTPUT_DIR=str(tmp_path),
                                                                  TEST_MATRIX_RESULTS_DIR=str(tmp_path / "r"))
    with pytest.raises(BadInput, match="no finished run of the current config"):
        newest_finished_run(cfg)
    target = tmp_path / expand(cfg)[0].run_id
    shutil.copytree(runs["adam"], target)
    assert newest_finished_run(cfg) == target


def test_resnet_export_loads_into_the_torchvision_constructor(tmp_path):
    import torchvision
    from safetensors.torch import load_file, save_file
    from torch import nn

    from lib.export.models import build_model, constructor_text

    spec = expand(config.from_defconfig("resnet18-cifar10-bitter7"))[0]
    model = build_model(spec)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert "num_classes=10" in constructor_text(spec) and "CIFAR stem" in constructor_text(spec)
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(net.eval()(x), model.eval()(x))


def test_2_4_detection_and_the_guard_without_cuda():
    from torch import nn

    from lib.export import sparse_bench

    w = torch.tensor([[1.0, 0, 2, 0, 0, 3, 4, 0], [0, 0, 0, 0, 1, 1, 0, 0]])
    assert sparse_bench.is_2_4(w)
    w[0, 1] = 5.0
    assert not sparse_bench.is_2_4(w) and not sparse_bench.is_2_4(torch.ones(2, 6))
    layer = nn.Linear(8, 2)
    result = sparse_bench._semi_structured(layer, torch.randn(3, 8))
    if not torch.cuda.is_available():
        assert result == {"semi_ms": None, "semi_dense16_ms": None, "semi_ratio": None, "semi_bytes": None,
                          "semi_note": "needs CUDA"}
