"""Sweeps that test whether overparameterized networks store data as attractors."""

__version__ = "0.1.0"
