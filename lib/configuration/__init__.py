"""Configuration: reading Kconfig/.config, the run specification, resolved hyperparameters."""
