"""make test-matrix [DRY_RUN=1] [RERUN=failed]: run (or plan) the sweep .config asks for.

Exit status: 0 every run completed, 1 some run failed or was left unfinished, 2 bad input.
"""
import argparse
import sys
from pathlib import Path


from test_matrix import sweep


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and estimated time; run nothing")
    parser.add_argument("--rerun", metavar="WHICH", help="'failed': rerun the failed runs too (with any unfinished ones)")
    args = parser.parse_args(argv)
    return sweep.main("test-matrix", "'make test-matrix' resumes the rest",
                      lambda cfg: sweep.run(cfg, rerun=args.rerun, dry_run=args.dry_run))


if __name__ == "__main__":
    sys.exit(main())
