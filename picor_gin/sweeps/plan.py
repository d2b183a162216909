"""A sweep's plan (gin files x seeds -> run folders and launch/run.py command lines) and its
progress line, shared by every backend: local subprocesses and submitit jobs (local or SLURM)."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from picor_gin.checkpoint_files import has_checkpoint
from picor_gin.run.config_text import parse_bindings

REPO = Path(__file__).resolve().parents[2]  # picor_gin/sweeps/plan.py -> the repository
RUN_PY = REPO / "launch" / "run.py"


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """Seed `seed` of `gin_file`, in `run_dir`; its command line is read from the disk when it
    starts, so a requeued or re-launched run resumes from wherever its checkpoint got to."""

    name: str
    gin_file: str
    seed: int
    run_dir: Path
    bindings: tuple[str, ...] = ()

    @property
    def log(self) -> Path:
        """launch/run.py's stdout and stderr, appended by every attempt."""
        return self.rank_log(0)

    @property
    def finished(self) -> bool:
        return (self.run_dir / "summary.json").is_file()

    @property
    def resumable(self) -> bool:
        return has_checkpoint(self.run_dir / "checkpoints")

    def rank_dir(self, rank: int) -> Path:
        """Where process `rank` of a multi-node run starts: rank 0 owns the run folder; the others
        get a scratch folder beside it, since launch/run.py refuses a folder that already exists."""
        return self.run_dir if rank == 0 else self.run_dir.with_name(f"{self.run_dir.name}.rank{rank}")

    def rank_log(self, rank: int) -> Path:
        """The log of process `rank` (rank 0's is the run's)."""
        folder = self.rank_dir(rank)
        return folder.with_name(folder.name + ".log")

    def command(self, rank: int = 0) -> list[str] | None:
        """launch/run.py's command line now: None if finished, --resume if a checkpoint exists,
        else a fresh run (every rank decides alike: no rank has written a checkpoint yet)."""
        if self.finished:
            return None
        if self.resumable:
            return [sys.executable, str(RUN_PY), f"--resume={self.run_dir}"]
        return [
            sys.executable, str(RUN_PY), f"--gin_file={self.gin_file}",
            *(f"--gin_bindings={binding}" for binding in self.bindings),
            f"--gin_bindings=Experiment.seed = {self.seed}",
            f"--run_dir={self.rank_dir(rank)}",
        ]

    def set_aside_unresumable(self, rank: int = 0) -> Path | None:
        """Renames this rank's folder of an attempt that died before its first checkpoint (nothing
        to resume, and launch/run.py refuses to start afresh in an existing folder) to
        <folder>.stale<N>, kept for post-mortems (failed.ckpt, eval.jsonl); returns the new name."""
        folder = self.rank_dir(rank)
        if self.finished or self.resumable or not folder.exists():
            return None
        attempt = 1
        while folder.with_name(f"{folder.name}.stale{attempt}").exists():
            attempt += 1
        return folder.rename(folder.with_name(f"{folder.name}.stale{attempt}"))


def plan(
    gin_files: Sequence[str], seeds: Sequence[int], root: Path, bindings: Sequence[str], each_task: bool = False
) -> list[PlannedRun]:
    """Every (gin file, seed) pair, gin file by gin file, into <root>/<gin file stem>/seed<S>.

    `each_task`: one arm per task of each gin file's `TaskSubset.task_set` instead (KTM-DRL's
    teachers), binding `TaskSubset.tasks = ['<task>']`, into <root>/<stem>_<task>/seed<S>.
    """
    arms = []
    for gin_file in gin_files:
        stem = Path(gin_file).stem
        if not each_task:
            check_config(gin_file, bindings)
            arms.append((stem, gin_file, tuple(bindings)))
            continue
        for task in subset_source_tasks(gin_file, bindings):
            arms.append((f"{stem}_{task}", gin_file, (*bindings, f"TaskSubset.tasks = [{task!r}]")))
    runs = [
        PlannedRun(f"{arm}/seed{seed}", gin_file, seed, root / arm / f"seed{seed}", arm_bindings)
        for arm, gin_file, arm_bindings in arms for seed in seeds
    ]
    for run in runs:
        if differences := _started_otherwise(run):
            raise ValueError(
                f"{run.run_dir} was started with {'; '.join(differences)}: a finished run would be "
                "skipped and a started one resumed as it began; use another --root"
            )
    return runs


def _started_otherwise(run: PlannedRun) -> list[str]:
    """The bindings of the sweep that the run already in `run.run_dir` was started without, as
    'X.y = started (not asked)'; none where the folder holds no run yet."""
    config = run.run_dir / "config.gin"
    if not config.is_file():
        return []
    started, asked = parse_bindings(config.read_text()), parse_bindings("\n".join(run.bindings))
    return [f"{key} = {started[key]!r} (not {value!r})"
            for key, value in asked.items() if key in started and started[key] != value]


@contextlib.contextmanager
def _parsed(gin_file: str, bindings: Sequence[str]) -> Iterator[None]:
    """Parses a run's gin file and bindings as launch/run.py would (every configurable
    registered), for the block to query; clears gin after it. A config launch/run.py would
    refuse (a misspelt name, a missing include) raises ValueError, in launch/run.py's words."""
    import gin

    from picor_gin.run.cli import gin_problem  # importing it registers every configurable launch/run.py knows

    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    try:
        try:
            gin.parse_config_files_and_bindings([gin_file], list(bindings), skip_unknown=False)
        except Exception as error:  # noqa: BLE001  (gin's parse errors, a missing include's OSError)
            raise ValueError(f"{gin_file}: {gin_problem(error, bindings)}") from error
        yield
    finally:
        gin.clear_config()


def check_config(gin_file: str, bindings: Sequence[str]) -> None:
    """Raises ValueError where launch/run.py would refuse the gin file and bindings before it
    builds anything (gin's parse and type checks, the Experiment's own: its budget, its task
    set's names): the sweep says so once, before any run starts."""
    from picor_gin.run.cli import gin_problem
    from picor_gin.run.experiment import Experiment

    with _parsed(gin_file, bindings):
        try:
            Experiment()
        except Exception as error:  # noqa: BLE001  (any configurable's check of its arguments)
            raise ValueError(f"{gin_file}: {gin_problem(error, bindings)}") from error


def subset_source_tasks(gin_file: str, bindings: Sequence[str]) -> list[str]:
    """The task names of the full set a gin file's `TaskSubset` draws from (built, with gin)."""
    import gin

    with _parsed(gin_file, bindings):
        try:
            source = gin.query_parameter("TaskSubset.task_set")
        except ValueError:
            raise ValueError(f"{gin_file} binds no TaskSubset.task_set, so it has no tasks to sweep one by one") from None
        return list(source.scoped_configurable_fn().names)


def bound_parameters(gin_file: str, bindings: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    """What each of `names` ('Configurable.param') is in a run of `gin_file` with `bindings`: the
    bound value, else the constructor's default; read with gin, which builds nothing. Raises
    ValueError for a config that launch/run.py would refuse."""
    import gin

    values = {}
    with _parsed(gin_file, bindings):
        for name in names:
            try:
                values[name] = gin.query_parameter(name)
            except ValueError:  # not bound
                configurable, parameter = name.rsplit(".", 1)
                constructor = inspect.unwrap(gin.get_configurable(configurable).__init__)
                values[name] = inspect.signature(constructor).parameters[parameter].default
    return values


def bad_input(gin_files: Sequence[str], seeds: Sequence[int]) -> str | None:
    """What is wrong with a sweep's gin files and seeds, found before anything starts."""
    for gin_file in gin_files:
        if not Path(gin_file).is_file() and not (REPO / gin_file).is_file():
            return f"gin file not found: {gin_file}"
    stems = [Path(gin_file).stem for gin_file in gin_files]
    if len(set(stems)) < len(stems):
        return f"gin files share a name, so their run folders would too: {', '.join(gin_files)}"
    if len(set(seeds)) < len(seeds):
        return f"a seed is repeated: {' '.join(map(str, seeds))}"
    return None


STATES = ("done", "running", "failed", "waiting")


def progress_line(states: Iterable[str]) -> str:
    """'progress: 3/12 done, 2 running, 1 failed, 6 waiting' from each run's state."""
    counts = collections.Counter(states)
    unknown = set(counts) - set(STATES)
    if unknown:
        raise ValueError(f"unknown run state(s) {sorted(unknown)}; expected {STATES}")
    total = sum(counts.values())
    return f"progress: {counts['done']}/{total} done, " + ", ".join(f"{counts[s]} {s}" for s in STATES[1:])


_PRINTING = threading.Lock()


def say(line: str) -> None:
    """Prints one whole line: the local backend's threads print at once, and print() writes the
    text and its newline separately, so unguarded lines interleave."""
    with _PRINTING:
        print(line, flush=True)


def print_event(event: str, run: PlannedRun, detail: str = "") -> None:
    """One line per run event: 'start   tiny_mtsac/seed0', 'FAILED  ...: exit 1, log ...'."""
    say(f"{event:<7}{run.name}{': ' + detail if detail else ''}")
