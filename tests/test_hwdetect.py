import math

import pytest

from lib.hwdetect import GPU, auto_hyperparams, detect_gpus, gpu_row, resolve

B200 = GPU("NVIDIA B200", 192.0)
W7900 = GPU("AMD Radeon PRO W7900", 48.0, "rocm")
A10G = GPU("NVIDIA A10G", 24.0)

# Written out by hand from the issue, not read from the module.
ROW = {"B200": 128, "W7900": 32, "A10G": 8}
SCALE = {"gpt2": 1.0, "resnet50": 1.5, "resnet18": 2.0, "lenet5": 4.0}
TARGET = {"gpt2": 1024, "resnet50": 512, "resnet18": 512, "lenet5": 512}
EAGER = {"gpt2": 0.5, "resnet50": 0.5, "resnet18": 0.5, "lenet5": 1.0}


def expected(row, model, world, target=None, compile=True, cpu=False):
    """Brute-force reference: every (batch, grad_acc) with batch * grad_acc equal to the
    per-process share and batch within the memory limit; the largest batch wins."""
    target = target or TARGET[model]
    share = target // world
    limit = math.floor(row * SCALE[model] * (1.0 if compile or cpu else EAGER[model]))
    pairs = [(b, share // b) for b in range(1, share + 1) if share % b == 0 and b <= max(limit, 1)]
    return max(pairs)


@pytest.mark.parametrize("gpu, batch, acc", [(W7900, 32, 32), (A10G, 8, 128), (B200, 128, 8)])
def test_seed_single_gpu(gpu, batch, acc):
    r = auto_hyperparams("gpt2", [gpu], compile=True)
    assert (r.batch_size, r.grad_acc, r.world_size, r.effective_batch) == (batch, acc, 1, 1024)


def test_seed_four_b200():
    r = auto_hyperparams("gpt2", [B200] * 4)
    assert (r.batch_size, r.grad_acc, r.world_size, r.effective_batch) == (128, 2, 4, 1024)
    # The seed reports this as grad_acc 8 summed over the four GPUs.
    assert r.grad_acc * r.world_size == 8


@pytest.mark.parametrize("model", sorted(SCALE))
@pytest.mark.parametrize("gpu, key", [(B200, "B200"), (W7900, "W7900"), (A10G, "A10G")])
@pytest.mark.parametrize("count", [1, 2, 4, 8])
@pytest.mark.parametrize("compile", [True, False])
def test_rows_models_counts(model, gpu, key, count, compile):
    r = auto_hyperparams(model, [gpu] * count, compile=compile)
    assert (r.batch_size, r.grad_acc) == expected(ROW[key], model, count, compile=compile)
    assert r.world_size == count
    assert r.effective_batch == r.batch_size * r.grad_acc * count == TARGET[model]
    assert r.grad_acc >= 1 and r.batch_size <= TARGET[model] // count


def test_effective_constant_across_counts_and_hardware():
    for model in SCALE:
        seen = {auto_hyperparams(model, [g] * n, compile=c).effective_batch
                for g in (B200, W7900, A10G) for n in (1, 2, 4, 8) for c in (True, False)}
        seen.add(auto_hyperparams(model, []).effective_batch)
        assert seen == {TARGET[model]}


def test_model_scale_multiplies_batch():
    # A large target leaves room above every scaled batch, so only the scale shows.
    got = {m: auto_hyperparams(m, [B200], target=4096).batch_size for m in SCALE}
    assert got == {"gpt2": 128, "resnet50": 128, "resnet18": 256, "lenet5": 512}
    # 1.5 x 128 = 192 divides 3 x 4096.
    assert auto_hyperparams("resnet50", [B200], target=3 * 4096).batch_size == 192


def test_scale_capped_by_target_share():
    r = auto_hyperparams("lenet5", [B200] * 8)  # 4 x 128 = 512 > 512 / 8
    assert (r.batch_size, r.grad_acc) == (64, 1)
    assert "capped" in r.reason


def test_compile_off_halves_gpt2():
    on = auto_hyperparams("gpt2", [W7900], compile=True)
    off = auto_hyperparams("gpt2", [W7900], compile=False)
    assert (off.batch_size, off.grad_acc) == (16, 64)
    assert off.batch_size * 2 == on.batch_size
    assert "torch.compile" in off.reason


def _pow2_floor(x):
    return 1 if x < 1 else 2 ** math.floor(math.log2(x))


@pytest.mark.parametrize("mem, ref_mem, ref_batch", [
    (80.0, 48.0, 32),     # H100: between W7900 and B200 -> W7900's memory per sample
    (141.0, 48.0, 32),    # H200
    (256.0, 192.0, 128),  # larger than every row -> B200's
    (16.0, 24.0, 8),      # smaller than every row -> A10G's
    (2.0, 24.0, 8),       # tiny: at least 1
])
def test_generic_row_by_memory(mem, ref_mem, ref_batch):
    gpu = GPU("Some Future GPU", mem)
    want = _pow2_floor(ref_batch * mem / ref_mem)
    assert gpu_row(gpu)[0] == want
    r = auto_hyperparams("gpt2", [gpu])
    assert (r.batch_size, r.grad_acc) == expected(want, "gpt2", 1)
    assert "generic" in r.reason


def test_generic_row_monotone_in_memory():
    batches = [gpu_row(GPU("X", m))[0] for m in range(1, 400)]
    assert batches == sorted(batches) and batches[0] == 1
    assert all(b & (b - 1) == 0 for b in batches)


@pytest.mark.parametrize("model", sorted(SCALE))
def test_cpu_row(model):
    r = auto_hyperparams(model, [], compile=False)
    assert r.world_size == 1
    assert (r.batch_size, r.grad_acc) == expected(8, model, 1, cpu=True)
    assert "CPU" in r.reason
    assert auto_hyperparams("gpt2", []).batch_size == 8


def test_mixed_gpus_use_smallest():
    r = auto_hyperparams("gpt2", [B200, A10G])
    assert (r.batch_size, r.grad_acc, r.world_size) == (8, 64, 2)
    assert "mixed" in r.reason


def test_non_divisible_target():
    r = auto_hyperparams("gpt2", [W7900], target=1000)
    # Largest divisor of 1000 not above 32 is 25.
    assert (r.batch_size, r.grad_acc, r.effective_batch) == (25, 40, 1000)
    assert "does not divide" in r.reason
    r = auto_hyperparams("gpt2", [W7900], target=997)  # prime
    assert (r.batch_size, r.grad_acc) == (1, 997)


def test_target_not_divisible_by_world_size():
    r = auto_hyperparams("gpt2", [B200] * 3)
    assert r.effective_batch == 1023 == r.batch_size * r.grad_acc * 3
    assert "effective 1023" in r.reason


@pytest.mark.parametrize("target", [None, 0])
def test_default_target(target):
    assert auto_hyperparams("resnet18", [A10G], target=target).effective_batch == 512


def test_explicit_world_size():
    r = auto_hyperparams("gpt2", [B200] * 8, world_size=2)
    assert (r.batch_size, r.grad_acc, r.world_size) == (128, 4, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="bert", gpus=[B200]), "unknown model"),
    (dict(model="gpt2", gpus=[B200], target=-8), "target"),
    (dict(model="gpt2", gpus=[B200], target=2.5), "target"),
    (dict(model="gpt2", gpus=[B200] * 4, target=2), "smaller than world_size"),
    (dict(model="gpt2", gpus=[B200], world_size=0), "world_size"),
    (dict(model="gpt2", gpus=["B200"]), "list of GPU"),
])
def test_bad_input(kwargs, match):
    model = kwargs.pop("model")
    gpus = kwargs.pop("gpus")
    with pytest.raises(ValueError, match=match) as e:
        auto_hyperparams(model, gpus, **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, mem", [("", 24.0), ("  ", 24.0), ("A10G", 0), ("A10G", -1.0)])
def test_bad_gpu(name, mem):
    with pytest.raises(ValueError):
        GPU(name, mem)


def test_resolve_prints_one_line_with_injected_gpus():
    lines = []
    r = resolve("gpt2", compile=True, gpus=[B200] * 4, printer=lines.append)
    assert (r.batch_size, r.grad_acc) == (128, 2)
    assert len(lines) == 1 and "\n" not in lines[0]
    for part in ("4 x NVIDIA B200", "batch 128", "grad_acc 2", "effective 1024", "B200 row"):
        assert part in lines[0]


def test_resolve_detects_when_no_gpus_given(monkeypatch):
    import lib.hwdetect as hw
    monkeypatch.setattr(hw, "detect_gpus", lambda: [W7900])
    lines = []
    r = resolve("gpt2", compile=True, printer=lines.append)
    assert (r.batch_size, r.grad_acc) == (32, 32)
    assert "rocm" in lines[0]


def test_detect_gpus_real():
    torch = pytest.importorskip("torch")
    gpus = detect_gpus()
    assert len(gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert all(isinstance(g, GPU) and g.memory_gib > 0 for g in gpus)


def test_detect_gpus_fake_rocm(monkeypatch):
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace
    props = [SimpleNamespace(name="AMD Radeon PRO W7900", total_memory=48 * 2**30)] * 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(torch.version, "hip", "6.2.0", raising=False)
    assert detect_gpus() == [GPU("AMD Radeon PRO W7900", 48.0, "rocm")] * 2


# Names and total_memory as torch reports them on these cards (80 GB and 141 GB of HBM,
# less what the driver reserves), injected through torch.cuda; none matches a seed row.
HOPPER = [("NVIDIA H100 80GB HBM3", 79.19), ("NVIDIA H200", 139.8)]
# By hand: W7900's 32 per 48 GiB (the largest row that fits), scaled and rounded down to a
# power of two: 32 x 79.19 / 48 = 52.8 -> 32; 32 x 139.8 / 48 = 93.2 -> 64.
HOPPER_BATCH = {"NVIDIA H100 80GB HBM3": 32, "NVIDIA H200": 64}


def _fake_cuda(monkeypatch, name, gib, count):
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace
    props = SimpleNamespace(name=name, total_memory=int(gib * 2**30))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)


@pytest.mark.parametrize("name, gib", HOPPER)
@pytest.mark.parametrize("count", [1, 8])
def test_hopper_gpus_get_the_generic_memory_row_and_say_so(monkeypatch, name, gib, count):
    _fake_cuda(monkeypatch, name, gib, count)
    lines = []
    r = resolve("gpt2", compile=True, printer=lines.append)
    batch = HOPPER_BATCH[name]
    assert (r.batch_size, r.grad_acc, r.world_size) == (batch, 1024 // count // batch, count)
    assert r.effective_batch == 1024
    assert len(lines) == 1
    assert f"{count} x {name}" in lines[0] and f"generic memory row {batch}" in lines[0]
    assert f"no seed row for {name}" in lines[0] and "W7900 32 per 48 GiB" in lines[0]
    # Without torch.compile GPT-2's batch halves, the effective batch stays.
    eager = resolve("gpt2", compile=False, printer=lambda _line: None)
    assert (eager.batch_size, eager.effective_batch) == (batch // 2, 1024)


def test_hopper_batch_is_between_the_neighbouring_seed_rows():
    for name, gib in HOPPER:
        batch = gpu_row(GPU(name, gib))[0]
        assert gpu_row(W7900)[0] <= batch <= gpu_row(B200)[0]
        assert batch * 1.5 <= gib  # about 1.5 GiB per sample at block 1024, as in the seed's rows


def test_one_function_counts_the_gpus(monkeypatch):
    """Launch, hwdetect, the device check and the sweep all ask lib.gpus, so one count rules."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from lib import gpus as lib_gpus
    from lib.training.device import resolve_device
    from lib.training.task import BadInput
    from test_matrix import sweep

    monkeypatch.setattr(lib_gpus, "count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 99)  # nobody may ask torch directly
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(name="X", total_memory=2**34))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert len(detect_gpus()) == 3
    assert sweep.detect_gpus([SimpleNamespace(runtime={"device": "auto"})]) == ["0", "1", "2"]
    with pytest.raises(BadInput, match="3 visible"):
        resolve_device("cuda", local_rank=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # a sweep given a subset hands out its ids
    assert lib_gpus.ids() == ["4", "6"]


def test_gpu_count_is_zero_without_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    from lib import gpus as lib_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert lib_gpus.count() == 0 and detect_gpus() == []
