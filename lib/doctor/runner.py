"""Run the doctor's checks, time them, and print the pass/fail table."""
from __future__ import annotations

import time

import torch

from lib import gpus as lib_gpus
from lib.doctor import checks as device_checks_module
from lib.doctor.checks import Check, CheckFailed, Skipped
from lib.doctor.ddp import ddp_step

PASS, FAIL, SKIP = "pass", "FAIL", "skip"


def devices(wanted: str = "all") -> list[torch.device]:
    """The devices to check: the CPU and every visible GPU ("all"), or one kind."""
    found = [torch.device("cpu")]
    found += [torch.device("cuda", i) for i in range(lib_gpus.count())]
    if wanted == "all":
        return found
    return [d for d in found if d.type == wanted]


def plan(targets: list[torch.device], amp_requested: str | None) -> list[Check]:
    """Per-device checks, then one DDP check per kind of device (all GPUs together)."""
    out = []
    for device in targets:
        out += device_checks_module.device_checks(device, amp_requested)
    if any(d.type == "cpu" for d in targets):
        out.append(Check("DDP gloo", "cpu x 2 processes", lambda: ddp_step("gloo", 2)))
    gpus = [d for d in targets if d.type == "cuda"]
    if gpus:
        out.append(Check("DDP nccl", f"cuda x {len(gpus)} GPU(s)", lambda: ddp_step("nccl", len(gpus))))
    return out


def first_line(err: BaseException) -> str:
    text = " ".join(str(err).strip().splitlines()[:1])
    if isinstance(err, (CheckFailed, Skipped)):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run(checks: list[Check], printer=print) -> list[dict]:
    """Run every check (a failure never stops the others); one result dict per check,
    each printed as a progress line when it finishes."""
    results = []
    for check in checks:
        began = time.perf_counter()
        try:
            detail, status = check.run(), PASS
        except Skipped as err:
            detail, status = first_line(err), SKIP
        except Exception as err:  # any error is this check's failure, with its first line as the reason
            detail, status = first_line(err), FAIL
        seconds = time.perf_counter() - began
        result = {"check": check.name, "device": check.device, "status": status, "seconds": seconds,
                  "detail": detail}
        results.append(result)
        printer(f"  {status:<4} {check.name} on {check.device} ({seconds:.1f} s)")
    return results


def table(results: list[dict]) -> list[str]:
    width = max([len(r["check"]) for r in results] + [5])
    dev = max([len(r["device"]) for r in results] + [6])
    lines = [f"{'check':<{width}}  {'device':<{dev}}  result  seconds  detail"]
    for r in results:
        lines.append(f"{r['check']:<{width}}  {r['device']:<{dev}}  {r['status']:<6}  {r['seconds']:>7.1f}  "
                     f"{r['detail']}")
    return lines


def failures(results: list[dict]) -> list[str]:
    """One line per failed check: what failed where, and why."""
    return [f"doctor: {r['check']} failed on {r['device']}: {r['detail']}" for r in results if r["status"] == FAIL]
