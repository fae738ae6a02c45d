"""Run life cycle: a run directory's files, launching, status, checkpoints, atomic writes."""
