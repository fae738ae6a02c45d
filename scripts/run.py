"""make: train what .config selects: one run in the foreground, or the whole test matrix.

Exit status: 0 success, 1 a run failed, 2 bad input.
"""
import argparse
import sys
from pathlib import Path



from test_matrix import single, sweep
from test_matrix.expand import expand


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="single run: start over, ignoring its checkpoints")
    parser.add_argument("--force", action="store_true", help="single run: run again even if it completed")
    args = parser.parse_args(argv)

    def body(cfg):
        runs = expand(cfg)
        if len(runs) == 1:
            flags = [f for f, on in (("--fresh", args.fresh), ("--force", args.force)) if on]
            return single.run(cfg, runs[0], flags=flags)
        if args.fresh or args.force:
            raise sweep.SweepRefused("FRESH/FORCE apply to single runs; a sweep keeps its finished runs. To start "
                                     "a sweep over, set another TEST_MATRIX_RESULTS_DIR")
        return sweep.run(cfg, runs=runs)
    return sweep.main("make", "'make' again resumes", body)


if __name__ == "__main__":
    sys.exit(main())
