"""Diagnostics that drive the same compiler and realizer as training: coordinate checks
(`coord_check`) and LR-transfer sweeps."""
