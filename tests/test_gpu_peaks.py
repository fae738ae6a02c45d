"""Peak bf16 table by GPU name and MFU = 6 N tokens/s / peak."""
import pytest

from lib.training.gpu_peaks import bf16_peak_tflops, mfu, model_flops_per_s

# Names as torch.cuda.get_device_name reports them; peaks from the vendors' datasheets
# (dense: half the "with sparsity" figure), written out here by hand.
KNOWN = [
    ("NVIDIA H100 80GB HBM3", 989.4),
    ("NVIDIA H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4),
    ("NVIDIA H200 NVL", 835.5),
    ("NVIDIA GH200 480GB", 989.4),
    ("NVIDIA B200", 2250.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA A10", 125.0),
    ("AMD Instinct MI300X", 1307.4),
]


@pytest.mark.parametrize("name, peak", KNOWN)
def test_known_gpus(name, peak):
    assert bf16_peak_tflops(name) == peak


@pytest.mark.parametrize("name", ["NVIDIA A10G", "Tesla V100-SXM2-16GB", "AMD Radeon PRO W7900", "Some Future GPU",
                                  "NVIDIA GeForce RTX 4090"])
def test_unknown_gpus_have_no_peak(name):
    assert bf16_peak_tflops(name) is None
    assert mfu(124_000_000, 1e5, bf16_peak_tflops(name)) is None


def test_mfu_against_a_hand_computation():
    # 124.4M parameters at 400,000 tokens/s: 6 x 124.4e6 x 4e5 = 2.9856e14 FLOP/s; over 989.4 TFLOPS = 0.30176
    assert model_flops_per_s(124_400_000, 400_000) == pytest.approx(2.9856e14)
    assert mfu(124_400_000, 400_000, 989.4) == pytest.approx(0.301759, rel=1e-5)
    assert mfu(124_400_000, 0.0, 989.4) == 0.0


@pytest.mark.parametrize("peak", [0.0, -1.0])
def test_bad_peak(peak):
    with pytest.raises(ValueError, match="peak TFLOPS"):
        mfu(1, 1.0, peak)
