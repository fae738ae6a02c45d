"""`make export`: <run>/export/ with the dense, compact and (GPT-2) Hugging Face forms.

  model.safetensors          the weights, every pruned weight +0.0 (tied head stored once)
  model.compact.safetensors  bit masks + surviving values (lib/export/compact.py)
  sparsity.json              per prunable layer: name, shape, pruned count (= the run's ledger)
  model.json                 what the files are and how to rebuild the architecture
  hf/                        GPT-2 only: config.json, model.safetensors, tokenizer files (BPE)
                             (what a model folder's export.py extra_exports adds)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lib.lifecycle import rundir
from lib.export import compact
from lib.export.models import constructor_text, exporter
from lib.export.run_weights import load_run

EXPORT = "export"
DENSE, COMPACT, SPARSITY, MODEL_JSON = ("model.safetensors", "model.compact.safetensors", "sparsity.json",
                                        "model.json")


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shape, dtype and bytes (torch.equal calls -0.0 equal to 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8))


def sparsity_record(rw) -> dict:
    layers, total, pruned_total = [], 0, 0
    for name, mask in rw.pruned.items():
        n, pruned = mask.numel(), int(mask.sum())
        if pruned != rw.accounting[name]:
            raise RuntimeError(f"{name}: {pruned} pruned positions in the masks but the run's ledger says "
                               f"{rw.accounting[name]}; the checkpoint is inconsistent, please report it")
        layers.append({"name": name, "shape": list(mask.shape), "numel": n, "pruned": pruned,
                       "sparsity": pruned / n if n else 0.0})
        total += n
        pruned_total += pruned
    summary = rundir.read_json(rw.run_dir / rundir.SUMMARY) or {}
    achieved = summary.get("achieved_sparsity")
    if layers and achieved is not None and round(achieved * total) != pruned_total:
        raise RuntimeError(f"pruned {pruned_total} of {total} weights, but summary.json says sparsity {achieved}")
    return {"run_id": rw.spec.run_id, "which": rw.which, "step": rw.step, "layers": layers,
            "prunable": total, "pruned": pruned_total, "sparsity": pruned_total / total if total else 0.0}


def export(run_dir: Path | str, which: str = "best", out=print) -> dict:
    """Write <run_dir>/export/ and return what was written (sizes in bytes)."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    rw = load_run(run_dir, which)
    record = sparsity_record(rw)
    final, work = run_dir / EXPORT, run_dir / f".{EXPORT}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    save_file(rw.state, str(work / DENSE), metadata={"format": "pt"})
    compact.save(work / COMPACT, rw.state, rw.pruned)
    back = compact.load(work / COMPACT)
    if back.keys() != rw.state.keys() or not all(same_bits(back[k], rw.state[k]) for k in back):
        raise RuntimeError("the compact file does not load back bit for bit; please report it")
    (work / SPARSITY).write_text(json.dumps(record, indent=2) + "\n")
    files = [DENSE, COMPACT, SPARSITY, MODEL_JSON]
    hf, extra_lines = None, []
    extra = getattr(exporter(rw.spec), "extra_exports", None)
    if extra is not None:
        from lib.configuration.paths import data_dir

        added, hf, extra_lines = extra(work, rw, data_dir(rw.spec))
        files += added
    sizes = {"dense": (work / DENSE).stat().st_size, "compact": (work / COMPACT).stat().st_size}
    info = {"run_id": rw.spec.run_id, "model": rw.spec.model, "which": rw.which, "step": rw.step,
            "constructor": constructor_text(rw.spec), "files": files, "bytes": sizes,
            "compact_ratio": sizes["compact"] / sizes["dense"], "sparsity": record["sparsity"],
            "hf": hf, "nonzero_at_pruned": rw.nonzero_at_pruned}
    (work / MODEL_JSON).write_text(json.dumps(info, indent=2) + "\n")
    if final.exists():  # replace the previous export only once the new one is complete
        old = run_dir / f".{EXPORT}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(final)
    out(f"export: {final} ({rw.which} weights, step {rw.step}, sparsity {100 * record['sparsity']:.1f}% of "
        f"{record['prunable']:,} prunable weights)")
    out(f"  {DENSE}: {sizes['dense']:,} bytes; {COMPACT}: {sizes['compact']:,} bytes "
        f"= {info['compact_ratio']:.3f}x the dense file (loads back bit for bit)")
    if rw.nonzero_at_pruned:
        out(f"  note: {rw.nonzero_at_pruned} weights at pruned positions were not 0 in the checkpoint; exported as 0")
    for line in extra_lines:
        out(line)
    out(f"  architecture: {info['constructor']}")
    return info

