"""Task samplers: which task(s) the collector steps and the optimization phase trains on."""
from __future__ import annotations

import abc
from typing import Any

import gin
import torch


class TaskSampler(abc.ABC):
    """Decides the task ids of each iteration; its state is checkpointed with the run."""

    #: How many task ids `tasks` returns per iteration.
    tasks_per_iteration: int = 1

    def __init__(self, num_tasks: int, seed: int = 0):
        self.num_tasks = num_tasks
        self.generator = torch.Generator().manual_seed(seed)

    @abc.abstractmethod
    def tasks(self, iteration: int) -> list[int]:
        """Task ids to collect and train on at `iteration` (0-based)."""

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


@gin.configurable(denylist=["num_tasks", "seed"])
class UniformEveryK(TaskSampler):
    """The paper's sampler: a task drawn uniformly from p(T), kept for K iterations."""

    def __init__(self, num_tasks: int, seed: int = 0, k: int = 1):
        if k < 1:
            raise ValueError(f"UniformEveryK.k must be >= 1, got {k}")
        super().__init__(num_tasks, seed)
        self.k = k
        self.current = 0

    def tasks(self, iteration: int) -> list[int]:
        if iteration % self.k == 0:
            self.current = int(torch.randint(self.num_tasks, (), generator=self.generator))
        return [self.current]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.current = state["current"]


@gin.configurable(denylist=["num_tasks", "seed"])
class RoundRobin(TaskSampler):
    """Tasks in turn, each kept for K iterations: every task gets the same share, no variance."""

    def __init__(self, num_tasks: int, seed: int = 0, k: int = 1):
        if k < 1:
            raise ValueError(f"RoundRobin.k must be >= 1, got {k}")
        super().__init__(num_tasks, seed)
        self.k = k

    def tasks(self, iteration: int) -> list[int]:
        return [(iteration // self.k) % self.num_tasks]


@gin.configurable(denylist=["num_tasks", "seed"])
class AllTasks(TaskSampler):
    """Every task every iteration: each collects, and the update's batch is stratified over tasks
    (the MTSAC batch of other codebases)."""

    def __init__(self, num_tasks: int, seed: int = 0):
        super().__init__(num_tasks, seed)
        self.tasks_per_iteration = num_tasks

    def tasks(self, iteration: int) -> list[int]:
        return list(range(self.num_tasks))
