"""make doctor: check this machine before a long sweep.

Prints the environment (Python, torch, CUDA, GPUs, free disk in the runs, results and
data directories, what HYPER_PARAM_AUTO would choose for each model), then runs short
functional checks on every device found and prints a pass/fail table with timings.
Exit status: 0 every check passed (or was skipped, with the reason), 1 a check failed
(one line each on stderr, with the reason), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


from lib.configuration.config import ConfigError
from lib.doctor import environment, runner


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", choices=("all", "cpu", "cuda"), default="all",
                        help="check the CPU and every GPU (all), or one kind only")
    parser.add_argument("--json", type=Path, help="also write the environment and the results here")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    try:
        cfg, source = environment.load_config()
    except ConfigError as err:
        print(f"doctor: {err}", file=sys.stderr)
        return 2
    env = environment.collect(cfg, source)
    for line in environment.lines(env):
        print(line)
    targets = runner.devices(args.devices)
    if not targets:
        print(f"doctor: --devices {args.devices} but torch sees no such device; use --devices all or cpu",
              file=sys.stderr)
        return 2
    print(f"\nchecks on {', '.join(str(d) for d in targets)}:", flush=True)
    results = runner.run(runner.plan(targets, environment.configured_amp(cfg)),
                         printer=lambda line: print(line, flush=True))
    print()
    for line in runner.table(results):
        print(line)
    failed = runner.failures(results)
    total = time.perf_counter() - began
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed or skipped in {total:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "results": results, "seconds": total}, indent=2) + "\n")
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
