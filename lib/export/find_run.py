"""Which run directory `make export` / `make bench-sparse` act on when RUN is not given."""
from __future__ import annotations

from pathlib import Path

from lib.lifecycle import rundir
from lib.training.task import BadInput


def newest_finished_run(cfg) -> Path:
    """The most recently completed run among those the current config asks for (single or sweep)."""
    from test_matrix import plan
    from test_matrix.expand import expand
    from test_matrix.single import run_dir_of
    from test_matrix.sweep import results_dir_of

    specs = expand(cfg)
    places = [run_dir_of(cfg, s) for s in specs] + [plan.run_dir(results_dir_of(cfg), s.run_id) for s in specs]
    done = []
    for place in places:
        status = rundir.read_status(place)
        if status is not None and status.get("state") == rundir.COMPLETED:
            done.append((float(status.get("updated") or 0.0), str(place)))
    if not done:
        raise BadInput(f"no finished run of the current config (looked for {specs[0].run_id}"
                       f"{f' and {len(specs) - 1} more' if len(specs) > 1 else ''} in {places[0].parent}); "
                       "train it with 'make' or pass RUN=<run directory>")
    return Path(max(done)[1])


def run_from_args(run: str | None) -> Path:
    if run:
        path = Path(run).expanduser()
        if not (path / rundir.SPEC).is_file():
            raise BadInput(f"RUN={run}: not a run directory (no {rundir.SPEC}); pass a directory that 'make' trained")
        return path
    from lib.configuration import config

    return newest_finished_run(config.load())
