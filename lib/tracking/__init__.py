"""Experiment tracking (trackio, W&B) fed from the run directories' own files.

Training never talks to a tracker. A follower process (lib.tracking.follower) reads each
run's metrics.jsonl, hparams.json, status.json and summary.json, forwards what is new and
records in the run's .tracker.json what has landed, so a resumed run continues its tracker
run without repeating steps and `make track DIR=...` can send finished runs afterwards.
The sweep driver and the single-run path start one follower each (lib.tracking.child);
every tracker problem is one warning line, and the runs go on.
"""
