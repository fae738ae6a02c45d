"""make track DIR=...: send finished (or running) runs' files to the tracker .config selects.

DIR is a results directory (every run directory in it) or one run directory. What a run's
.tracker.json says has already landed is not sent again, so it is safe to repeat, and it
fills in runs made offline, with tracking off, or whose live follower gave up.
Exit status: 0 everything landed, 1 some runs could not be sent (said why), 2 bad input.
"""
import argparse
import sys
from pathlib import Path


from lib.lifecycle import rundir
from lib.tracking import child, follower, settings as tracking_settings
from test_matrix.sweep import SweepRefused, main as entry_point, resolve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", help="results directory or run directory")
    args = parser.parse_args(argv)

    def body(cfg):
        if not args.dir:
            raise SweepRefused("name the runs to send: make track DIR=results (or DIR=runs/RUN_ID)")
        target = resolve(args.dir)
        single = (target / rundir.SPEC).is_file()
        runs = [target] if single else follower.run_dirs_under(target)
        if not runs:
            raise SweepRefused(f"{target} holds no run directories (folders with {rundir.SPEC}); "
                               "give a results directory or one run's directory")
        root = target.parent if single else target
        models = [(rundir.read_json(r / rundir.SPEC) or {}).get("model") for r in runs]
        chosen = tracking_settings.from_config(cfg, root, models)
        if chosen is None:
            raise SweepRefused("no tracker is selected; choose trackio or W&B under 'Experiment tracking' "
                               "in 'make menuconfig' (CONFIG_TRACKER_TRACKIO / CONFIG_TRACKER_WANDB)")
        # A results directory goes whole (its sweep summary too); a run directory alone.
        return child.backfill(chosen, root, runs if single else [], hint=f"try again with: make track DIR={args.dir}")
    return entry_point("make track", "'make track' again sends the rest", body)


if __name__ == "__main__":
    sys.exit(main())
