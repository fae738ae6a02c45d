"""How long the report of a large sweep takes: synthetic run directories, then report.build.

    python -m scripts.bench_report [--runs 1000] [--seeds 5] [--dir DIR]

Writes --runs synthetic run directories (test_matrix/synthetic.py: the engine's file formats,
no training) into DIR (default: a temporary directory, removed afterwards), builds the
report (report.md, report.html, CSVs, plots) and prints the build time, the load average
(a busy machine slows every number) and the size of report.html.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path


from test_matrix import html_report, report, synthetic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dir", help="write the synthetic results here and keep them")
    args = parser.parse_args(argv)
    if args.runs < args.seeds or args.seeds < 1:
        print("bench_report: --runs must be at least --seeds, and --seeds at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(args.dir) if args.dir else Path(tmp) / "results"
        if target.exists() and any(target.iterdir()):
            print(f"bench_report: {target} is not empty; give an empty or new --dir", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        specs = synthetic.make(target, runs=args.runs, seeds=args.seeds)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        report.build(target, out=io.StringIO())
        built = time.perf_counter() - t0
        size = (target / html_report.REPORT_HTML).stat().st_size
        print(f"{len(specs)} synthetic runs ({len(specs) // args.seeds} configurations x {args.seeds} seeds) written "
              f"in {made:.1f} s; report built in {built:.1f} s; report.html {size / 2**20:.1f} MiB; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        if args.dir:
            print(f"kept: {target}/report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
