"""Sweeps of gin files x seeds: the plan, and its backends (local subprocesses, submitit on
SLURM or locally)."""
