"""The sweep's local backend: launch/run.py as subprocesses of this one, N at a time, each one's
output appended to its log, never echoed."""
from __future__ import annotations

import concurrent.futures
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from picor_gin.sweeps.plan import PlannedRun, print_event, progress_line, say


def run_logged(command: list[str], log_path: Path, env: dict[str, str] | None = None,
               start: Callable[..., subprocess.Popen] = subprocess.Popen) -> int:
    """Runs `command` (started by `start`) with its output appended to `log_path`, which keeps
    the earlier attempts; returns its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        process = start(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        env={**os.environ, **(env or {})})
        return process.wait()


def threads_per_run(concurrent_runs: int) -> int:
    """Torch threads of each of `concurrent_runs` runs on this machine, so they share the cores
    instead of fighting over them (2 concurrent tiny runs at torch's default managed 1 update/s each here)."""
    return max(1, (os.cpu_count() or 1) // concurrent_runs)


class _Children:
    """The runs' processes, so that a SIGTERM to the sweep reaches them: Ctrl-C in a terminal
    signals the whole process group, but `kill`, `timeout` and a scheduler signal the sweep alone,
    which would leave its runs going with nobody to wait for them."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen] = []
        self._lock = threading.RLock()  # the handler may run again while it holds it
        self.stopping = False

    def start(self, command: list[str], **popen) -> subprocess.Popen:
        with self._lock:
            if self.stopping:  # a queued run that got past the pool's cancel: nobody waits for it any more
                raise RuntimeError("the sweep is stopping")
            process = subprocess.Popen(command, **popen)
            self._processes.append(process)
            return process

    def stop(self, signum: int, frame: object) -> None:
        """The SIGTERM handler: each running run checkpoints and exits; the sweep then ends as on Ctrl-C."""
        with self._lock:
            self.stopping = True
            for process in self._processes:
                process.send_signal(signal.SIGTERM)  # a no-op for a process already reaped
        raise KeyboardInterrupt


class _Tally:
    """Each run's state, printed as one progress line whenever a run starts or ends."""

    def __init__(self, runs: Sequence[PlannedRun]):
        self._states = {run.name: "done" if run.finished else "waiting" for run in runs}
        self._lock = threading.Lock()

    def set(self, run: PlannedRun, state: str) -> None:
        with self._lock:
            self._states[run.name] = state
            say(progress_line(self._states.values()))


def run_locally(
    runs: Sequence[PlannedRun], parallel: int, threads: int | None = None
) -> list[tuple[PlannedRun, str]]:
    """Runs the unfinished runs `parallel` at a time, each with `threads` torch threads (None:
    the cores shared among them); returns the failed ones, each with why."""
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    tally = _Tally(runs)
    children = _Children()
    threads = threads or threads_per_run(parallel)

    def execute(run: PlannedRun) -> int:
        stale = run.set_aside_unresumable()
        if stale is not None:
            print_event("afresh", run, f"no checkpoint to resume; the attempt's folder is now {stale.name}")
        command = run.command()
        print_event("resume" if run.resumable else "start", run)
        tally.set(run, "running")
        started = time.perf_counter()
        code = run_logged(command, run.log, {"OMP_NUM_THREADS": str(threads)}, start=children.start)
        elapsed = f"exit {code} in {time.perf_counter() - started:.0f} s"
        if children.stopping and code != 0:
            print_event("stop", run, f"{elapsed}; it resumes when the sweep is re-launched")
        else:
            print_event("done" if code == 0 else "FAILED", run, elapsed if code == 0 else f"{elapsed}, log {run.log}")
            tally.set(run, "done" if code == 0 else "failed")
        return code

    for run in runs:
        if run.finished:
            print_event("skip", run, "finished (summary.json)")
    todo = [run for run in runs if not run.finished]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
    on_sigterm = signal.signal(signal.SIGTERM, children.stop)
    try:
        codes = list(pool.map(execute, todo))
    finally:  # on Ctrl-C or SIGTERM: start no queued run, wait for the running ones to checkpoint and exit
        pool.shutdown(cancel_futures=True)
        signal.signal(signal.SIGTERM, on_sigterm)
    return [(run, f"exit {code}") for run, code in zip(todo, codes) if code != 0]
