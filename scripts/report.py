"""make report [DIR=results/...]: tables (CSV, Markdown) and plots of a results directory.

Without DIR, the results directory of the current .config (TEST_MATRIX_RESULTS_DIR).
"""
import argparse
import sys
from pathlib import Path



from lib.configuration import config as lib_config
from test_matrix import report, sweep


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", help="results directory (default: TEST_MATRIX_RESULTS_DIR of .config)")
    args = parser.parse_args(argv)
    cfg = None
    try:
        cfg = lib_config.load()
    except lib_config.ConfigError as exc:
        if args.dir is None:  # with DIR the directory's own plan is enough
            print(f"report: {exc}", file=sys.stderr)
            return 2
    target = Path(args.dir) if args.dir else sweep.results_dir_of(cfg)
    try:
        report.build(target, current_cfg=cfg)
    except FileNotFoundError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
