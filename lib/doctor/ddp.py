"""The DDP check of `make doctor`: one gradient step of LeNet-5 across processes.

NCCL with one process per GPU, or gloo with two processes on the CPU. Each rank trains
on its own batch; DDP must leave every rank with the gradient of the mean loss over all
ranks' samples (each rank recomputes that on one process, without DDP, to compare) and
with identical weights after the step. Float32, so the reference is exact to rounding.
"""
from __future__ import annotations

import datetime
import json
import socket
import tempfile
import time
import traceback
from pathlib import Path

import torch

from lib.doctor.checks import CheckFailed, lenet5, lenet5_batch, lenet5_loss

TIMEOUT_S = 120
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, backend: str, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    result = {"rank": rank}
    try:
        torch.set_num_threads(1)
        device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
            # TF32 convolutions would round the DDP and the one-process gradients differently.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=TIMEOUT_S))
        model = lenet5().to(device)
        reference = lenet5().to(device)
        ddp = DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None)
        lenet5_loss(ddp, lenet5_batch(device, step=rank)).backward()
        # Every rank's batch on one process: equal batch sizes, so the mean loss over all of
        # them is the mean of the ranks' mean losses that DDP averages gradients for.
        batches = [lenet5_batch(device, step=r) for r in range(world)]
        whole = tuple(torch.cat(parts) for parts in zip(*batches))
        lenet5_loss(reference, whole).backward()
        worst = 0.0
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            if not torch.allclose(p.grad, q.grad, rtol=GRAD_RTOL, atol=GRAD_ATOL):
                raise CheckFailed(f"rank {rank}: DDP gradient of {name} is not the all-rank mean "
                                  f"(off by {float((p.grad - q.grad).abs().max()):.3g})")
            worst = max(worst, float((p.grad - q.grad).abs().max()))
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(g, gathered[0]) for g in gathered):
            raise CheckFailed(f"rank {rank}: weights differ between ranks after one step")
        # Every rank leaves the last collective before any tears its sockets down: a rank that
        # destroys the group while its peer still reads from it aborts the peer (SIGABRT in gloo).
        dist.barrier()
        result.update(ok=True, worst=worst)
    except Exception as err:
        text = str(err).strip()
        result.update(ok=False, reason=f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": "),
                      traceback=traceback.format_exc())
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def ddp_step(backend: str, world: int) -> str:
    """Spawn `world` processes, wait at most TIMEOUT_S, and turn their reports into one line."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out:
        began = time.monotonic()
        ctx = mp.start_processes(_worker, args=(world, backend, free_port(), out), nprocs=world, join=False,
                                 start_method="spawn")
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() - began > TIMEOUT_S:
                    raise CheckFailed(f"{backend} with {world} processes did not finish in {TIMEOUT_S} s "
                                      "(a hung collective: check the network interface and NCCL_* settings)")
        except mp.ProcessRaisedException as err:
            raise CheckFailed(f"a {backend} process crashed: {str(err).strip().splitlines()[-1]}") from None
        except mp.ProcessExitedException as err:
            raise CheckFailed(f"a {backend} process died: {err}") from None
        finally:
            for process in ctx.processes:
                if process.is_alive():
                    process.kill()
        reports = []
        for rank in range(world):
            path = Path(out, f"rank{rank}.json")
            if not path.exists():
                raise CheckFailed(f"{backend} rank {rank} exited without a report")
            reports.append(json.loads(path.read_text()))
    failed = [r for r in reports if not r.get("ok")]
    if failed:
        raise CheckFailed(failed[0]["reason"])
    worst = max(r["worst"] for r in reports)
    return f"{world} processes: gradients = all-rank mean (within {worst:.1e}), weights equal on every rank"
