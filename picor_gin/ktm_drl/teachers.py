"""KTM-DRL's teachers: one finished single-task run of this framework per task, found in run
folders and read from their checkpoints (critic and replay buffer) without rebuilding the runs."""
from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from picor_gin.checkpoint_files import DamagedCheckpoint, checkpoint_path, read_checkpoint

CRITIC_PREFIX = "backbone.critic."
#: Folders a sweep leaves beside its runs: attempts set aside, scratch folders of ranks above 0.
NOT_RUNS = re.compile(r"\.(stale|rank)\d+$")


@dataclasses.dataclass
class TeacherRun:
    """A one-task run folder and what its last checkpoint holds (memory-mapped: read on use)."""

    task: str
    folder: Path
    seed: int | None
    checkpoint: dict[str, Any]

    @property
    def critic_state(self) -> dict[str, torch.Tensor]:
        return {k[len(CRITIC_PREFIX):]: v for k, v in self.checkpoint["state_dict"].items() if k.startswith(CRITIC_PREFIX)}

    @property
    def observation_size(self) -> int:
        return self._stored["observation"].shape[-1]

    @property
    def _stored(self) -> dict[str, torch.Tensor]:
        """The replay storage's tensors, flat keys, capacity rows (the first `_len` filled)."""
        return self.checkpoint["MultiTaskData"]["buffers"][0]["_storage"]["_storage"]

    @property
    def env_steps(self) -> int:
        return self.checkpoint["MultiTaskData"]["env_steps"]

    def replay(self, device: str | torch.device = "cpu") -> TensorDictReplayBuffer:
        """The teacher's replay buffer (observations and actions), copied from the memory-mapped
        checkpoint into memory on `device`."""
        size = self.checkpoint["MultiTaskData"]["buffers"][0]["_storage"]["_len"]
        transitions = TensorDict({key: self._stored[key][:size] for key in ("observation", "action")}, batch_size=[size])
        buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(size, device=device))
        buffer.extend(transitions)
        return buffer


def _seed(folder: Path) -> int | None:
    """The run's `Experiment.seed`, from its operative config."""
    found = re.search(r"^Experiment\.seed = (\d+)$", (folder / "config.gin").read_text(), re.MULTILINE)
    return int(found.group(1)) if found else None


def _read(folder: Path) -> TeacherRun:
    path = checkpoint_path(folder / "checkpoints")
    if not path.is_file():
        raise ValueError(f"teacher run {folder} has no checkpoint ({path.relative_to(folder)}): finish or --resume it")
    if not (folder / "summary.json").is_file():
        raise ValueError(f"teacher run {folder} has not finished (no summary.json): --resume it to the end")
    try:
        checkpoint = read_checkpoint(path)
    except DamagedCheckpoint as problem:
        raise ValueError(f"teacher run {folder}: {path.relative_to(folder)} is {problem}") from None
    tasks = checkpoint.get("task_names")
    if tasks is None or len(tasks) != 1:
        raise ValueError(f"teacher run {folder} is not a one-task run of this framework (its tasks: {tasks})")
    if not any(k.startswith(CRITIC_PREFIX) for k in checkpoint["state_dict"]):
        raise ValueError(f"teacher run {folder} has no critic in its checkpoint")
    return TeacherRun(tasks[0], folder, _seed(folder), checkpoint)


def find_teachers(folders: Sequence[str | Path], task_names: Sequence[str], seed: int) -> list[TeacherRun]:
    """The teacher of each task of `task_names`, in order, from run folders or folders holding them.

    Where a task has several teachers (a sweep over seeds), the one with the student's seed.

    Raises:
        ValueError: in one line naming the task and the folder: a task without a teacher, a
            folder without runs, a run without a checkpoint or unfinished, several teachers
            that the seed does not tell apart.
    """
    folders = [Path(f) for f in ([folders] if isinstance(folders, (str, Path)) else folders)]
    found: dict[str, list[TeacherRun]] = collections.defaultdict(list)
    for root in folders:
        if not root.is_dir():
            raise ValueError(f"KTMDRL.teachers: no folder {root}")
        runs = [root] if (root / "config.gin").is_file() else sorted(
            p.parent for p in root.rglob("config.gin") if not NOT_RUNS.search(p.parent.name)
        )
        if not runs:
            raise ValueError(f"KTMDRL.teachers: no run folder (with a config.gin) in {root}")
        for run in runs:
            teacher = _read(run)
            found[teacher.task].append(teacher)
    where = ", ".join(map(str, folders))
    chosen = []
    for task in task_names:
        runs = found.get(task, [])
        if len(runs) > 1:
            runs = [run for run in runs if run.seed == seed]
        if not runs:
            have = f"teachers of {sorted(found)}" if task not in found else f"none with seed {seed}"
            raise ValueError(f"no teacher of task {task!r} in {where} ({have})")
        if len(runs) > 1:
            raise ValueError(
                f"{len(runs)} teachers of task {task!r} with seed {seed} in {where}: "
                f"{', '.join(str(run.folder) for run in runs)}; keep one"
            )
        chosen.append(runs[0])
    return chosen
