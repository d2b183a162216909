"""The `TaskSet` interface every benchmark family implements (docs/design.md, "The algorithm")."""
from __future__ import annotations

import abc

from torchrl.envs import EnvBase


class TaskSet(abc.ABC):
    """A fixed list of tasks sharing observation and action spaces."""

    names: list[str]
    max_episode_steps: int
    #: Whether episodes report ("next", "success"); Meta-World does, PointGoals does not.
    has_success: bool = False

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    @property
    def task_id_entries(self) -> list[int]:
        """Each task's entry of the one-hot id, indexed from the observation's end: -N..-1 for
        the tasks in order (a subset keeps its full set's id, and its tasks' entries there)."""
        return list(range(-self.num_tasks, 0))

    @abc.abstractmethod
    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        """Builds task `task_id`'s env with `num_envs` parallel copies (batch size [num_envs])."""

    def normalized_score(self, task_id: int, episode_return: float) -> float | None:
        """Maps a return to the task's normalized score; None where the set defines none."""
        return None

    def task_id(self, name: str) -> int:
        """Index of the task called `name`; a clear error lists the valid names."""
        if name not in self.names:
            raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(self.names)}")
        return self.names.index(name)
