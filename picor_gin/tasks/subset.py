"""`TaskSubset`: some tasks of a task set, with the full set's observations, e.g. the one-task
runs that train KTM-DRL's teachers (docs/ktm_drl.md)."""
from __future__ import annotations

from typing import Sequence

import gin
from torchrl.envs import EnvBase

from picor_gin.tasks.base import TaskSet


@gin.configurable
class TaskSubset(TaskSet):
    """The tasks `tasks` of `task_set`, in that order, each built by the full set.

    Observations keep the full set's one-hot id, so an agent trained on a subset reads exactly
    the inputs of one trained on the whole set: a teacher's critic scores the student's states
    as they are. Networks that read the id from the last `num_tasks` entries (all but
    `OneHotMLP`) need the whole set; the run refuses them on a subset.

    Args:
        task_set: the full task set, e.g. `@PointGoals()` or `@MetaWorldMT10()`.
        tasks: names of its tasks to keep, e.g. ['goal0'] (a teacher sweep binds one per run).
    """

    def __init__(self, task_set: TaskSet = gin.REQUIRED, tasks: Sequence[str] = gin.REQUIRED):
        if isinstance(tasks, str) or not tasks:
            raise ValueError(f"TaskSubset.tasks must be a non-empty list of task names, got {tasks!r}")
        if len(set(tasks)) < len(tasks):
            raise ValueError(f"TaskSubset.tasks repeats a task: {list(tasks)}")
        self.task_set = task_set
        self.full_ids = [task_set.task_id(name) for name in tasks]  # ValueError names the valid ones
        self.names = list(tasks)
        self.max_episode_steps = task_set.max_episode_steps
        self.has_success = task_set.has_success

    @property
    def task_id_entries(self) -> list[int]:
        full = self.task_set.task_id_entries
        return [full[task_id] for task_id in self.full_ids]

    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        return self.task_set.make_env(self.full_ids[task_id], num_envs, seed)

    def normalized_score(self, task_id: int, episode_return: float) -> float | None:
        return self.task_set.normalized_score(self.full_ids[task_id], episode_return)
