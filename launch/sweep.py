"""Runs gin files x seeds through launch/run.py, one subprocess per run, N at a time.

    python launch/sweep.py --gin_files gin_configs/tiny_picor.gin gin_configs/tiny_mtsac.gin \\
        --seeds 0 1 2 --root runs/sweep1 [--parallel 2] [--gin_bindings "Experiment.total_env_steps = 2000" ...]

Run S of gin file F goes to <root>/<F's stem>/seed<S> with `--gin_bindings "Experiment.seed = S"`
after the sweep's own bindings; its stdout and stderr are appended to <run folder>.log, never echoed.
Re-launching the same command after a crash skips finished runs (summary.json present) and
resumes started ones with `--resume`, which keeps the config they started with.
Then: python launch/report.py <root>
Exit status: 0 every run done; 1 some run failed (listed with its log); 2 bad input.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
RUN_PY = REPO / "launch" / "run.py"


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of the sweep; `command` is None when the run has already finished."""

    name: str
    run_dir: Path
    command: list[str] | None
    resume: bool

    @property
    def log(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".log")


def run_command(gin_file: str, seed: int, run_dir: Path, bindings: Sequence[str]) -> list[str] | None:
    """launch/run.py's command line for one run: None if finished, --resume if started, else a fresh run."""
    if (run_dir / "summary.json").is_file():
        return None
    if run_dir.exists():
        return [sys.executable, str(RUN_PY), f"--resume={run_dir}"]
    return [
        sys.executable, str(RUN_PY), f"--gin_file={gin_file}",
        *(f"--gin_bindings={binding}" for binding in bindings),
        f"--gin_bindings=Experiment.seed = {seed}",
        f"--run_dir={run_dir}",
    ]


def plan(gin_files: Sequence[str], seeds: Sequence[int], root: Path, bindings: Sequence[str]) -> list[Job]:
    """Every (gin file, seed) pair as a Job, gin file by gin file."""
    jobs = []
    for gin_file in gin_files:
        for seed in seeds:
            name = f"{Path(gin_file).stem}/seed{seed}"
            run_dir = root / name
            command = run_command(gin_file, seed, run_dir, bindings)
            jobs.append(Job(name, run_dir, command, resume=command is not None and run_dir.exists()))
    return jobs


def execute(job: Job, threads: int) -> int:
    """Runs one job with its output appended to its log; prints its start and its end.

    `threads` caps each run's torch threads, so parallel runs share the cores instead of fighting.
    """
    print(f"{'resume' if job.resume else 'start':<7}{job.name}", flush=True)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with job.log.open("a") as log:  # a resumed run's log keeps the attempts before it
        log.write(f"$ {shlex.join(job.command)}\n")
        log.flush()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        code = subprocess.run(job.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode
    print(f"{'done' if code == 0 else 'FAILED':<7}{job.name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
    return code


def bad_input(gin_files: Sequence[str], seeds: Sequence[int], parallel: int) -> str | None:
    """What is wrong with the sweep's arguments, found before any run starts."""
    if parallel < 1:
        return f"--parallel must be >= 1, got {parallel}"
    for gin_file in gin_files:
        if not Path(gin_file).is_file() and not (REPO / gin_file).is_file():
            return f"gin file not found: {gin_file}"
    stems = [Path(gin_file).stem for gin_file in gin_files]
    if len(set(stems)) < len(stems):
        return f"gin files share a name, so their run folders would too: {', '.join(gin_files)}"
    if len(set(seeds)) < len(seeds):
        return f"a seed is repeated: {' '.join(map(str, seeds))}"
    return None


def sweep(jobs: Sequence[Job], parallel: int) -> list[tuple[Job, int]]:
    """Runs the unfinished jobs `parallel` at a time; returns the failed ones with their exit codes."""
    for job in jobs:
        if job.command is None:
            print(f"{'skip':<7}{job.name}: finished (summary.json)", flush=True)
    todo = [job for job in jobs if job.command is not None]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
    try:
        threads = max(1, (os.cpu_count() or 1) // parallel)
        codes = list(pool.map(functools.partial(execute, threads=threads), todo))
    finally:  # on Ctrl-C: start no queued run, wait for the running ones to checkpoint and exit
        pool.shutdown(cancel_futures=True)
    return [(job, code) for job, code in zip(todo, codes) if code != 0]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_files", nargs="+", action="extend", required=True, help="one sweep arm per gin file")
    parser.add_argument("--seeds", nargs="+", action="extend", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True, help="runs go to ROOT/<gin file stem>/seed<S>")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once")
    parser.add_argument("--gin_bindings", nargs="+", action="extend", default=[], help="'X.y = v' for every run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problem = bad_input(args.gin_files, args.seeds, args.parallel)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        failed = sweep(plan(args.gin_files, args.seeds, args.root, args.gin_bindings), args.parallel)
    except KeyboardInterrupt:
        print("error: interrupted; re-launch the same command to resume", file=sys.stderr)
        return 1
    if failed:
        print(f"{len(failed)} run(s) failed:", file=sys.stderr)
        for job, code in failed:
            print(f"  {job.name}: exit {code}, log {job.log}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
