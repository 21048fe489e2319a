"""Diagnostics that drive the same compiler and realizer as training: coordinate checks
(`coord_check`, `coord_cli`), LR-transfer sweeps (`sweep`), tune-small-launch-big (`tune`), plots."""
