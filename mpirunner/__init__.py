"""mpirunner: a distributed, per-instance runner for CNN inference benchmarks."""

__version__ = "0.1.0"
SCHEMA = "mpirunner/1"
