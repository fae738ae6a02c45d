"""make bench-sparse: dense vs sparse (CSR; 2:4 on CUDA) time and memory of an exported run.

    python -m scripts.bench_sparse [--run DIR] [--device auto|cpu|cuda] [--min-time S] [--repeats N]

Without --run: the newest finished run of the current .config (export it first with
'make export'). Writes <run>/export/bench_sparse.jsonl and prints a table.
"""
import argparse
import sys
from pathlib import Path


from lib.export.cli import main


def body(argv=None) -> int:
    from lib.export import bench_run
    from lib.export.find_run import run_from_args

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run directory (default: newest finished run of the config)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per timing loop (default 0.05)")
    parser.add_argument("--repeats", type=int, default=bench_run.sparse_bench.REPEATS,
                        help="timing loops per figure, the best kept (default %(default)s)")
    args = parser.parse_args(argv)
    bench_run.run(run_from_args(args.run), device=args.device, min_time=args.min_time,
                  repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main("bench-sparse", body))
