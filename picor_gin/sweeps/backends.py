"""The backend flags and the dispatch that launch/sweep.py and launch/reproduce.py share: a
planned sweep goes to local subprocesses or to submitit jobs (local or SLURM)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from picor_gin.sweeps import slurm
from picor_gin.sweeps.local import run_locally
from picor_gin.sweeps.plan import PlannedRun, print_event

BACKENDS = ("local", "submitit_local", "slurm")
DEFAULTS = {"time": "72:00:00", "max_timeouts": 3, "poll_s": 30.0}  # filled in after the unused-flag check
UNUSED_FLAGS = {  # what each backend has no use for: given anyway, it is refused rather than ignored
    "local": ("partition", "gpus_per_job", "time", "cpus_per_task", "max_timeouts", "poll_s"),
    "submitit_local": ("partition", "cpus_per_task", "parallel", "threads_per_run"),  # every job starts at once
    "slurm": ("threads_per_run",),
}


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend", "where the runs go (docs/sweeps.md)")
    group.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local: subprocesses here; slurm: a job array through submitit; "
                            "submitit_local: submitit's local executor (the slurm path without SLURM)")
    group.add_argument("--parallel", type=int, default=None,
                       help="runs at once (local: default 1; slurm: the array's limit, default none)")
    group.add_argument("--threads_per_run", type=int, default=None,
                       help="torch threads of each local run (default: this machine's cores / --parallel; "
                            "lower it where other jobs share the cores)")
    group.add_argument("--partition", default=None, help="SLURM partition")
    group.add_argument("--gpus_per_job", type=int, default=None,
                       help="GPUs per run (default Trainer.num_nodes x Trainer.devices; 0: a CPU job)")
    group.add_argument("--time", default=None, help="a job's time limit (SLURM's --time format; default 72:00:00)")
    group.add_argument("--cpus_per_task", type=int, default=None, help="CPUs per process (SLURM)")
    group.add_argument("--max_timeouts", type=int, default=None,
                       help="times a job is requeued after its time limit (default 3; preemptions always are)")
    group.add_argument("--poll_s", type=float, default=None, help="seconds between checks of the jobs' states (default 30)")
    group.add_argument("--dry_run", action="store_true",
                       help="print what would run (the sbatch script on slurm) and run nothing")


def bad_backend_input(args: argparse.Namespace) -> str | None:
    """What is wrong with the backend flags, found before anything starts."""
    unused = [flag for flag in UNUSED_FLAGS[args.backend] if getattr(args, flag) is not None]
    if unused:
        flags = " ".join(f"--{flag}" for flag in unused)
        return f"--backend {args.backend} does not use {flags} (docs/sweeps.md)"
    if args.parallel is not None and args.parallel < 1:
        return f"--parallel must be >= 1, got {args.parallel}"
    if args.threads_per_run is not None and args.threads_per_run < 1:
        return f"--threads_per_run must be >= 1, got {args.threads_per_run}"
    if args.max_timeouts is not None and args.max_timeouts < 0:
        return f"--max_timeouts must be >= 0, got {args.max_timeouts}"
    if args.gpus_per_job is not None and args.gpus_per_job < 0:
        return f"--gpus_per_job must be >= 0, got {args.gpus_per_job}"
    try:
        slurm.minutes(args.time or DEFAULTS["time"])
    except ValueError as error:
        return str(error)
    return None


def launch(runs: Sequence[PlannedRun], root: Path, args: argparse.Namespace) -> int:
    """Runs or submits `runs`, shows their progress, lists the failed ones with their logs.

    Exit status: 0 every run done (or the dry run printed); 1 some run failed; 2 bad input.
    """
    problem = bad_backend_input(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    for flag, default in DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    try:
        failed = _run_local(runs, args) if args.backend == "local" else _run_submitit(runs, root, args)
    except _BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "re-launch the same command to resume" if args.backend == "local" else (
            "the jobs keep running (squeue); re-launch the same command once they ended")
        print(f"error: interrupted; {hint}", file=sys.stderr)
        return 1
    if failed is None:  # a dry run
        return 0
    if failed:
        print(f"{len(failed)} run(s) failed:", file=sys.stderr)
        for run, reason in failed:
            print(f"  {run.name}: {reason}, log {run.log}", file=sys.stderr)
        return 1
    return 0


class _BadInput(Exception):
    """A run's gin config or the requested resources do not fit: one line, exit 2."""


def _run_local(runs: Sequence[PlannedRun], args: argparse.Namespace) -> list[tuple[PlannedRun, str]] | None:
    if args.dry_run:
        for run in runs:
            command = run.command()
            print(f"{run.name}: finished" if command is None else shlex.join(command))
        return None
    return run_locally(runs, args.parallel or 1, args.threads_per_run)


def _run_submitit(runs: Sequence[PlannedRun], root: Path, args: argparse.Namespace) -> list[tuple[PlannedRun, str]] | None:
    for run in runs:
        if run.finished:
            print_event("skip", run, "finished (summary.json)")
    todo = [run for run in runs if not run.finished]
    if not todo:
        return []
    try:
        groups = slurm.group_by_resources(todo, args.backend, args.gpus_per_job)
    except (ValueError, TypeError, SyntaxError, KeyError) as error:
        raise _BadInput(" ".join(str(error).split())) from error
    folder = root / ".submitit" / "%j"  # submitit's own logs and pickles, per job
    options = slurm.JobOptions(slurm.minutes(args.time), args.partition, args.parallel, args.cpus_per_task,
                                 args.max_timeouts)
    if args.dry_run:
        if args.backend != "slurm":
            raise _BadInput("--dry_run prints the sbatch script of --backend slurm (or the commands of local)")
        for script, group in zip(slurm.sbatch_scripts(groups, folder, options), groups.values()):
            print(f"# {len(group)} run(s): {', '.join(run.name for run in group)}")
            print(script)
        return None
    submitted = slurm.submit(groups, args.backend, folder, options)
    return slurm.follow(submitted, args.poll_s)
