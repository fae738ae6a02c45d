"""Training: the engine every model shares, the task contract, devices, seeds, schedules."""
