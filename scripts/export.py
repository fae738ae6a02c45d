"""make export: write <run>/export/ (safetensors, compact sparse form, Hugging Face GPT-2 folder).

    python -m scripts.export [--run DIR] [--which best|last]

Without --run: the newest finished run of the current .config. See docs/export.md.
"""
import argparse
import sys
from pathlib import Path


from lib.export.cli import main


def body(argv=None) -> int:
    from lib.export.find_run import run_from_args
    from lib.export.write import export

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run directory (default: newest finished run of the config)")
    parser.add_argument("--which", default="best", help="best (default) or last checkpoint")
    args = parser.parse_args(argv)
    export(run_from_args(args.run), args.which)
    return 0


if __name__ == "__main__":
    sys.exit(main("export", body))
