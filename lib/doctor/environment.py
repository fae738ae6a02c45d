"""The environment report of `make doctor`: versions, GPUs, free disk, AUTO's choices."""
from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path

from lib.configuration import config as lib_config, model_registry, paths
from lib import hwdetect

GIB = 2 ** 30


def load_config():
    """(Config, where it came from): .config when there is one, else the Kconfig defaults,
    so a machine can be checked before any configuration exists."""
    if lib_config.DOT_CONFIG.is_file():
        return lib_config.load(), str(lib_config.DOT_CONFIG)
    values = lib_config.typed_values(lib_config.new_kconfig())
    return lib_config.Config(values, "Kconfig defaults"), "Kconfig defaults (no .config)"


def configured_amp(cfg) -> str | None:
    """The autocast type the configuration asks for ("bf16", "fp16" or None)."""
    if not cfg.get("MIXED_PRECISION"):
        return None
    return "fp16" if cfg.get("AMP_FP16") else "bf16"


def project_path(value: str) -> Path:
    """A configured directory as training resolves it: relative to the project root."""
    return paths.from_root(value)


def free_disk(path: Path) -> tuple[Path, int]:
    """(the directory measured, free bytes): the path itself, or its nearest existing
    parent when it has not been created yet (that is where it will be made)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def torch_versions() -> dict:
    import torch

    cuda = torch.version.cuda
    hip = getattr(torch.version, "hip", None)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda_build": cuda, "hip_build": hip, "cudnn": cudnn,
            "cuda_available": torch.cuda.is_available()}


def auto_choices(cfg, gpus: list) -> dict:
    """What CONFIG_HYPER_PARAM_AUTO would choose for each model on these GPUs (the line
    hwdetect prints, or the reason it refuses)."""
    compile_on = bool(cfg.get("COMPILE"))
    target = cfg.get("TARGET_EFFECTIVE_BATCH") or None
    out = {}
    for model in model_registry.names():
        try:
            out[model] = hwdetect.auto_hyperparams(model, gpus, compile=compile_on, target=target).line()
        except ValueError as err:
            out[model] = f"refused: {err}"
    return out


def collect(cfg, source: str) -> dict:
    """Everything the report prints, as plain data (also written to --json)."""
    versions = torch_versions()
    gpus = hwdetect.detect_gpus()
    dirs = {}
    for label, symbol in (("runs", "OUTPUT_DIR"), ("results", "TEST_MATRIX_RESULTS_DIR"), ("data", "DATA_DIR")):
        path = project_path(cfg.get(symbol) or label)
        measured, free = free_disk(path)
        dirs[label] = {"symbol": symbol, "path": str(path), "measured": str(measured), "free_bytes": free}
    return {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
            **versions, "gpus": [{"name": g.name, "memory_gib": g.memory_gib, "backend": g.backend} for g in gpus],
            "config": source, "amp": configured_amp(cfg), "compile": bool(cfg.get("COMPILE")),
            "dirs": dirs, "auto": auto_choices(cfg, gpus)}


def lines(env: dict) -> list[str]:
    """The report as the lines `make doctor` prints."""
    build = (f"CUDA {env['cuda_build']}" if env["cuda_build"] else
             f"ROCm/HIP {env['hip_build']}" if env["hip_build"] else "CPU-only build")
    if env["cudnn"]:
        build += f", cuDNN {env['cudnn']}"
    out = [f"Python {env['python']} ({env['executable']})", f"torch {env['torch']} ({build})",
           f"platform {env['platform']}"]
    if env["gpus"]:
        out.append(f"GPUs: {len(env['gpus'])}")
        out += [f"  GPU {i}: {g['name']}, {g['memory_gib']:.1f} GiB [{g['backend']}]"
                for i, g in enumerate(env["gpus"])]
    else:
        why = "torch has no GPU build" if not (env["cuda_build"] or env["hip_build"]) else "torch sees no GPU"
        out.append(f"GPUs: none ({why}); the checks run on the CPU only")
    for label, d in env["dirs"].items():
        where = d["path"]
        if d["measured"] != d["path"]:
            where += f", not created yet; measured at {d['measured']}"
        out.append(f"free disk, {label} ({d['symbol']}): {d['free_bytes'] / GIB:.1f} GiB ({where})")
    amp = env["amp"] or "off"
    out.append(f"configuration: {env['config']}; mixed precision {amp} on GPUs (float32 on the CPU); "
               f"torch.compile {'on' if env['compile'] else 'off'}")
    out.append("HYPER_PARAM_AUTO would choose, per model:")
    out += [f"  {model}: {line}" for model, line in env["auto"].items()]
    return out
