"""The figures of one scripts/gpu_check.sh directory, in the few lines a report needs.

    python -m scripts.gpu_check_summary DIR

Reads DIR/steps.txt, DIR/doctor.json and DIR/bench-gpt2.json (whichever exist) and prints
the GPU, each step's exit status and time, the doctor's failures, and per compile setting:
AdamW's tokens/s and MFU, each pruned method's overhead per step against AdamW (mask
updates amortised), its mask-update step over AdamW's fused step, and peak memory.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _steps(path: Path) -> dict:
    steps = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, *fields = line.split()
            steps[name] = dict(f.split("=", 1) for f in fields if "=" in f)
    return steps


def summary(directory: Path) -> list[str]:
    out = []
    steps = _steps(directory / "steps.txt")
    for name in ("doctor", "bench-gpt2"):
        if name in steps:
            out.append(f"{name}: exit {steps[name].get('rc')} in {steps[name].get('seconds')} s")
        else:
            out.append(f"{name}: did not run")
    doctor = _read_json(directory / "doctor.json")
    if doctor is None:
        out.append(f"doctor: no doctor.json (see {directory / 'doctor.txt'})")
    else:
        results = doctor["results"]
        gpus = doctor["environment"]["gpus"]
        out.append("GPUs: " + (", ".join(f"{g['name']} ({g['memory_gib']:.1f} GiB)" for g in gpus) or "none"))
        passed = sum(r["status"] == "pass" for r in results)
        skipped = sum(r["status"] == "skip" for r in results)
        out.append(f"doctor: {passed} passed, {skipped} skipped, {len(results) - passed - skipped} failed "
                   f"in {doctor['seconds']:.0f} s")
        out += [f"  FAIL {r['check']} on {r['device']}: {r['detail']}" for r in results if r["status"] == "FAIL"]
    bench = _read_json(directory / "bench-gpt2.json")
    if bench is None:
        out.append(f"bench-gpt2: no bench-gpt2.json (see {directory / 'bench-gpt2.txt'})")
        return out
    peak = bench.get("peak_tflops")
    every = bench["args"].get("frequency")
    out.append(f"bench-gpt2 on {bench.get('gpu') or bench.get('device')}, bf16 peak "
               f"{f'{peak:g} TFLOPS' if peak else 'unknown'}, mask updates amortised over {every} steps")
    for compiled in (False, True):
        rows = [r for r in bench["results"] if r["compile"] is compiled]
        if not rows:
            continue
        out.append(f"torch.compile {'on' if compiled else 'off'} (batch {rows[0]['batch']}):")
        for r in rows:
            if "error" in r:
                out.append(f"  {r['case']}: FAILED {r['error']}")
                continue
            mfu = f"MFU {100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "MFU unknown"
            parts = [f"{r['tokens_per_s']:,.0f} tokens/s", mfu]
            if r["case"] != "adamw" and r.get("step_vs_adamw") is not None:
                parts.append(f"{100 * r['step_vs_adamw']:+.2f}% per step vs AdamW")
            if r.get("update_step_vs_fused_adamw") is not None:
                parts.append(f"mask-update step {r['update_step_vs_fused_adamw']:.2f}x fused AdamW step")
            if r.get("peak_memory_bytes") is not None:
                parts.append(f"peak {r['peak_memory_bytes'] / 2**30:.1f} GiB")
            out.append(f"  {r['case']}: " + ", ".join(parts))
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m scripts.gpu_check_summary DIR (a directory written by scripts/gpu_check.sh)",
              file=sys.stderr)
        return 2
    for line in summary(Path(argv[0])):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
