"""Run the sparse benchmark (lib/export/sparse_bench.py) on a run's export/ and report it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lib.lifecycle import rundir
from lib.export import sparse_bench
from lib.export.models import build_model, exporter, tied_weights
from lib.export.write import DENSE, EXPORT
from lib.pruning import prunable_weights
from lib.configuration.runspec import RunSpec
from lib.training.task import BadInput

RESULTS = "bench_sparse.jsonl"


def exported_model(run_dir: Path):
    """(model with the exported weights, spec, hparams, prunable module names)."""
    from safetensors.torch import load_file

    path = run_dir / EXPORT / DENSE
    if not path.is_file():
        raise BadInput(f"{path}: not exported yet; run 'make export RUN={run_dir}' first")
    spec = RunSpec.from_dict(rundir.read_json(run_dir / rundir.SPEC))
    hp = rundir.read_hparams(run_dir) or {}
    model = build_model(spec)
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    tied = tied_weights(spec)
    if unexpected or set(missing) - tied:
        raise BadInput(f"{path} does not fit the run's architecture (missing {missing}, unexpected {unexpected}); "
                       "export the run again")
    include_tied = bool(hp.get("optimizer_args", {}).get("prune_tied"))
    names = [n.removesuffix(".weight") for n, _ in prunable_weights(model, include_tied=include_tied)]
    return model.eval(), spec, hp, names


def batch_for(spec, hp, model, device) -> torch.Tensor:
    x = exporter(spec).example_input(spec, int(hp["batch_size"]), model, torch.Generator().manual_seed(0))
    return x.to(device)


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def table(rows: list) -> str:
    from tabulate import tabulate

    body = [[r["layer"], f"{100 * r['sparsity']:.1f}%", _fmt(r["dense_ms"]), _fmt(r["csr_ms"]),
             _fmt(r["csr_ratio"], ".2f") + "x", "slower" if r["csr_ratio"] > 1 else "faster",
             f"{r['dense_bytes']:,}", f"{r['csr_bytes']:,}", _fmt(r.get("semi_ms")),
             "-" if r.get("semi_bytes") is None else f"{r['semi_bytes']:,}", r.get("semi_note") or ""]
            for r in rows]
    return tabulate(body, headers=["layer", "sparsity", "dense ms", "CSR ms", "CSR/dense", "CSR is",
                                   "dense bytes", "CSR bytes", "2:4 ms", "2:4 bytes", "2:4 note"],
                    disable_numparse=True)


def run(run_dir: Path | str, *, device: str = "auto", min_time: float = 0.05, repeats: int = sparse_bench.REPEATS,
        out=print) -> list:
    run_dir = Path(run_dir)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda but torch sees no GPU; use --device cpu")
    model, spec, hp, names = exported_model(run_dir)
    model = model.to(device)
    batch = batch_for(spec, hp, model, device)
    if repeats < 1 or min_time <= 0:
        raise BadInput(f"--repeats {repeats} and --min-time {min_time} must be positive")
    rows = sparse_bench.bench_layers(model, names, batch, min_time, repeats)
    rows.append(sparse_bench.bench_forward(model, names, batch, min_time, repeats))
    context = {"run_id": spec.run_id, "device": device, "threads": torch.get_num_threads(),
               "loadavg": os.getloadavg()[0], "torch": torch.__version__}
    path = run_dir / EXPORT / RESULTS
    path.write_text("".join(json.dumps({**context, **r}) + "\n" for r in rows))
    out(f"bench-sparse: {spec.run_id} on {device} ({context['threads']} threads, load average "
        f"{context['loadavg']:.1f}), batch {list(batch.shape)}; times are best-of-{repeats}")
    out(table(rows))
    slower = [r["layer"] for r in rows[:-1] if r["csr_ratio"] > 1]
    whole = rows[-1]
    out(f"CSR is slower than dense on {len(slower)} of {len(rows) - 1} layers; the whole forward with CSR "
        f"takes {whole['csr_ratio']:.2f}x the dense time ({'slower' if whole['csr_ratio'] > 1 else 'faster'}).")
    if device == "cpu":
        out("2:4 semi-structured kernels need CUDA: not measured on this machine.")
    out(f"JSON lines: {path}")
    return rows
