"""The sweep's submitit backends (docs/sweeps.md): one job per run, submitted as a job array
to SLURM (`slurm`) or started by submitit's local executor (`submitit_local`, the same code path
without SLURM, which is how the tests run it).

Retry rule: a job that SLURM preempts or times out gets submitit's signal; the job stops its run
(SIGTERM: Lightning checkpoints every rank) and resubmits itself, and the new attempt continues
with --resume. Preemptions requeue every time; timeouts at most `max_timeouts` times (submitit's
`max_num_timeout`). A run that fails by itself (launch/run.py exits 1 or 2) is never requeued:
the job fails, naming its log; re-launching the sweep retries it once, from its checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import submitit
from submitit.slurm.slurm import SlurmExecutor

from picor_gin.sweeps.local import run_logged, threads_per_run
from picor_gin.sweeps.plan import PlannedRun, bound_parameters, print_event, progress_line, say


def minutes(slurm_time: str) -> int:
    """SLURM's --time formats as whole minutes (rounded up): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
    D-HH:MM:SS; submitit takes minutes."""
    if not re.fullmatch(r"\d+(-\d+)?(:\d+){0,2}", slurm_time):
        raise ValueError(f"--time must look like 72:00:00, 3-00:00:00 or 90 (minutes), got {slurm_time!r}")
    days, _, clock = slurm_time.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:
        hours, mins, secs = (parts + [0, 0])[:3]
    else:
        hours, mins, secs = {1: (0, *parts, 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    total = int(days or 0) * 24 * 60 + hours * 60 + mins + (secs > 0)
    if total < 1:
        raise ValueError(f"--time must be at least a minute, got {slurm_time!r}")
    return total


def trainer_shape(gin_file: str, bindings: Sequence[str]) -> tuple[int, Any]:
    """(Trainer.num_nodes, Trainer.devices) as the run's gin files and bindings set them."""
    shape = bound_parameters(gin_file, bindings, ["Trainer.num_nodes", "Trainer.devices"])
    return shape["Trainer.num_nodes"], shape["Trainer.devices"]


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one job asks for: SLURM launches one task per device, Lightning joins them (its
    SLURMEnvironment reads the ranks from SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID)."""

    nodes: int
    tasks_per_node: int
    gpus_per_node: int


def resources(backend: str, num_nodes: int, devices: Any, gpus_per_job: int | None) -> Resources:
    """The job that fits `Trainer.num_nodes` x `Trainer.devices`; ValueError when it cannot."""
    if backend == "submitit_local":  # one process: Lightning starts its own device processes
        if num_nodes != 1:
            raise ValueError(f"Trainer.num_nodes = {num_nodes} needs --backend slurm; submitit_local is one node")
        default = devices if isinstance(devices, int) and not isinstance(devices, bool) else 0
        return Resources(1, 1, default if gpus_per_job is None else gpus_per_job)  # it hides the GPUs not asked for
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ValueError(f"on SLURM bind Trainer.devices to a number of devices per node, got {devices!r}")
    gpus = num_nodes * devices if gpus_per_job is None else gpus_per_job
    if gpus not in (0, num_nodes * devices):
        raise ValueError(
            f"--gpus_per_job {gpus} does not fit Trainer.num_nodes = {num_nodes} x Trainer.devices = {devices} "
            f"(one GPU per process: pass {num_nodes * devices}, or 0 for a CPU job)"
        )
    return Resources(num_nodes, devices, gpus // num_nodes)


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: launch/run.py in a subprocess per task (rank), whose command line
    is read from the disk at every (re)start, so a requeued job continues with --resume."""

    def __init__(self, run: PlannedRun, threads: int | None = None):
        self.run = run
        self.threads = threads  # torch threads; None: torch's default (SLURM's CPUs of the task)
        self._process: subprocess.Popen | None = None

    def __call__(self) -> str:
        rank = submitit.JobEnvironment().global_rank
        self.run.set_aside_unresumable(rank)
        command = self.run.command(rank)
        if command is None:
            return "finished"
        log = self.run.rank_log(rank)
        env = None if self.threads is None else {"OMP_NUM_THREADS": str(self.threads)}
        code = run_logged(command, log, env, start=self._start)
        if code != 0:  # the run's own failure: raised, so submitit does not requeue it
            raise RuntimeError(f"launch/run.py exited {code}; log {log}")
        return "done"

    def _start(self, command: list[str], **popen: Any) -> subprocess.Popen:
        preemption = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        # SLURM signals every process of the job; only this one answers: the run must not die of it.
        self._process = subprocess.Popen(command, preexec_fn=lambda: signal.signal(preemption, signal.SIG_IGN), **popen)
        return self._process

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """submitit's hook on preemption or timeout (rank 0): the run checkpoints and exits, and
        a fresh RunJob of the same run is resubmitted (the live process handle cannot be pickled)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)  # Lightning broadcasts it to every rank
            with contextlib.suppress(ChildProcessError):  # not Popen.wait: the Popen.wait that this
                os.waitpid(self._process.pid, 0)  # signal interrupted holds its lock
        return submitit.helpers.DelayedSubmission(RunJob(self.run, self.threads))


class _DryRunSlurmExecutor(SlurmExecutor):
    """SlurmExecutor where SLURM is absent: submitit renders the sbatch script only inside its
    SlurmExecutor, which otherwise refuses to exist without `srun`."""

    @classmethod
    def affinity(cls) -> int:
        return 1


@dataclasses.dataclass(frozen=True)
class JobOptions:
    """What every job of a sweep shares (its flags): time limit in minutes, partition, how many
    jobs of an array run at once, CPUs per task, and how many time-outs requeue."""

    time_min: int
    partition: str | None = None
    parallel: int | None = None
    cpus_per_task: int | None = None
    max_timeouts: int = 3

    def executor(self, backend: str, folder: Path, res: Resources, dry_run: bool = False) -> submitit.Executor:
        """submitit's executor for jobs of `res` on `backend`, its parameters set."""
        if backend == "submitit_local":
            executor = submitit.LocalExecutor(folder, max_num_timeout=self.max_timeouts)
            executor.update_parameters(timeout_min=self.time_min, gpus_per_node=res.gpus_per_node, tasks_per_node=1)
            return executor
        executor = (_DryRunSlurmExecutor if dry_run else SlurmExecutor)(folder, max_num_timeout=self.max_timeouts)
        parameters = {"nodes": res.nodes, "ntasks_per_node": res.tasks_per_node, "time": self.time_min,
                      "gpus_per_node": res.gpus_per_node or None, "partition": self.partition,
                      "cpus_per_task": self.cpus_per_task, "array_parallelism": self.parallel, "job_name": "picor-gin"}
        executor.update_parameters(**{key: value for key, value in parameters.items() if value is not None})
        return executor


def group_by_resources(runs: Sequence[PlannedRun], backend: str, gpus_per_job: int | None) -> dict[Resources, list[PlannedRun]]:
    """Runs grouped by the job they need: one job array per group."""
    groups: dict[Resources, list[PlannedRun]] = {}
    for run in runs:
        res = resources(backend, *trainer_shape(run.gin_file, run.bindings), gpus_per_job)
        groups.setdefault(res, []).append(run)
    return groups


def sbatch_scripts(groups: dict[Resources, list[PlannedRun]], folder: Path, options: JobOptions) -> list[str]:
    """The sbatch script of each job array, as submitting it would write it."""
    scripts = []
    for res, group in groups.items():
        executor = options.executor("slurm", folder, res, dry_run=True)
        if len(group) > 1:
            executor.parameters["map_count"] = len(group)  # what submitit sets for an array
        scripts.append(executor._make_submission_file_text(executor._submitit_command_str, "dry-run"))
    return scripts


def submit(groups: dict[Resources, list[PlannedRun]], backend: str, folder: Path,
           options: JobOptions) -> list[tuple[PlannedRun, submitit.Job]]:
    """Submits one job array per resource group; returns each run with its job."""
    submitted = []
    # submitit's local executor starts every job at once: they share this machine's cores.
    threads = threads_per_run(sum(map(len, groups.values()))) if backend == "submitit_local" else None
    for res, group in groups.items():
        jobs = options.executor(backend, folder, res).submit_array([RunJob(run, threads) for run in group])
        for run, job in zip(group, jobs):
            print_event("submit", run, f"job {job.job_id}, log {run.log}, job log {job.paths.stderr}")
            submitted.append((run, job))
    return submitted


def job_state(job: submitit.Job) -> str:
    """done, running, failed or waiting (queued, or between a requeue and its restart)."""
    if job.done():
        return "done" if job.exception() is None else "failed"
    return "running" if job.state.upper().startswith("RUNNING") else "waiting"


def follow(submitted: Sequence[tuple[PlannedRun, submitit.Job]], poll_s: float) -> list[tuple[PlannedRun, str]]:
    """Prints a progress line whenever a job changes state until every job ended; returns the
    failed runs, each with its error."""
    states: dict[str, str] = {}
    while True:
        changed = False
        for run, job in submitted:
            state = job_state(job)
            if states.get(run.name) != state:
                changed = True
                if state == "failed":
                    print_event("FAILED", run, f"job {job.job_id}, log {run.log}, job log {job.paths.stderr}")
                elif state == "done":
                    print_event("done", run, f"job {job.job_id}")
            states[run.name] = state
        if changed:
            say(progress_line(states.values()))
        if all(state in ("done", "failed") for state in states.values()):
            break
        time.sleep(poll_s)
    return [(run, _last_line(job.exception())) for run, job in submitted if states[run.name] == "failed"]


def _last_line(error: BaseException | None) -> str:
    """The raised exception's own line ('RuntimeError: launch/run.py exited 1; log ...') out of
    the traceback and log excerpts that submitit wraps around it."""
    lines = re.findall(r"^\w+(?:Error|Exception|Exit): .*$", str(error), re.M)
    return lines[-1].strip() if lines else type(error).__name__
