"""The data path: TorchRL collectors step the sampled tasks into one replay buffer per task
(B_z), and an iterable stream hands Lightning one update's batch at a time.

The LightningModule never builds an environment; everything env-side lives here.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Callable, Iterator

import gin
import lightning as L
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch.utils.data import DataLoader, IterableDataset
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from picor_gin.samplers import TaskSampler, UniformEveryK
from picor_gin.task_sets import TaskSet

#: What a transition keeps in replay: what the backbone's losses read, nothing more.
TRANSITION_KEYS = (
    "observation",
    "action",
    "task_id",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
)


@dataclasses.dataclass
class Batch:
    """One update's data.

    Attributes:
        task: transitions of the sampled task(s), batch [B] (the optimization phase's batch).
        correction: "observation" and "task_id" of M states from every task's buffer, [N, M].
        recent_return: each task's mean return over its last training episodes, [N]; NaN for
            a task with no finished episode yet.
        env_steps: global environment steps collected so far.
    """

    task: TensorDictBase
    correction: TensorDictBase
    recent_return: torch.Tensor
    env_steps: int

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.task.to(device), self.correction.to(device), self.recent_return.to(device), self.env_steps)


def _keep_as_is(batch: Batch) -> Batch:
    return batch


class ReplayStream(IterableDataset):
    """Each item: collect on the sampled task(s), store in B_z, sample one update's Batch."""

    def __init__(self, data: MultiTaskData):
        super().__init__()
        self.data = data

    def __len__(self) -> int:
        return self.data.total_iterations()

    def __iter__(self) -> Iterator[Batch]:
        data = self.data
        data.warm_up()
        while data.env_steps < data.total_env_steps:
            tasks = data.sampler.tasks(data.iterations)
            for task_id in tasks:
                data.collect(task_id)
            data.iterations += 1
            yield data.sample(tasks)


@gin.configurable(denylist=["task_set", "policy", "seed", "total_env_steps"])
class MultiTaskData(L.LightningDataModule):
    """Owns the envs' collectors, the per-task replay buffers B_z and the task sampler.

    Under DDP every process owns its envs and buffers, seeded with seed + rank, and runs the same
    iterations; `env_steps` and `total_env_steps` are global (summed over processes).

    Args:
        task_set, policy, seed, total_env_steps: supplied by the Experiment.
        sampler: factory of the task sampler, called with (num_tasks=, seed=).
        envs_per_task: parallel copies of each task's env stepped per collection.
        batch_size: transitions per sampled task in the optimization phase's batch.
        correction_states_per_task: M, states drawn from each B_z for the correction phase.
        replay_capacity: transitions kept per task.
        warmup_env_steps_per_task: random-action steps collected on every task before updates.
        replay_device: where B_z lives; None keeps it on the CPU.
    """

    def __init__(
        self,
        task_set: TaskSet,
        policy: TensorDictModule,
        seed: int,
        total_env_steps: int,
        sampler: Callable[..., TaskSampler] = UniformEveryK,
        envs_per_task: int = 1,
        batch_size: int = 256,
        correction_states_per_task: int = 64,
        replay_capacity: int = 1_000_000,
        warmup_env_steps_per_task: int = 1_000,
        replay_device: str | None = None,
    ):
        super().__init__()
        for name, value in [
            ("envs_per_task", envs_per_task),
            ("batch_size", batch_size),
            ("correction_states_per_task", correction_states_per_task),
            ("replay_capacity", replay_capacity),
            ("warmup_env_steps_per_task", warmup_env_steps_per_task),  # every B_z is sampled
        ]:
            if value < 1:
                raise ValueError(f"MultiTaskData.{name} must be >= 1, got {value}")
        self.task_set = task_set
        self.policy = policy
        self.seed = seed
        self.total_env_steps = total_env_steps
        self.sampler = sampler(num_tasks=task_set.num_tasks, seed=seed)
        self.envs_per_task = envs_per_task
        self.batch_size = batch_size
        self.correction_states_per_task = correction_states_per_task
        self.warmup_env_steps_per_task = warmup_env_steps_per_task
        self.buffers = [
            TensorDictReplayBuffer(
                storage=LazyTensorStorage(replay_capacity, device=replay_device or "cpu")
            )
            for _ in task_set.names
        ]
        self.local_env_steps = 0
        self.rank, self.world_size = 0, 1
        self.iterations = 0
        self.task_env_steps = [0] * task_set.num_tasks
        self.recent_returns = [collections.deque(maxlen=10) for _ in task_set.names]
        self._collectors: list[Iterator[TensorDictBase]] | None = None

    def setup(self, stage: str) -> None:
        """Learns this process's rank once Lightning has started the processes."""
        self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        # Exploration noise and replay sampling differ per process; the actor itself is
        # broadcast from rank 0 by DDP.
        torch.manual_seed(self.seed + self.rank)

    @property
    def env_steps(self) -> int:
        """Global env steps: every process steps the same number of envs per iteration."""
        return self.local_env_steps * self.world_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(ReplayStream(self), batch_size=None, collate_fn=_keep_as_is)

    def _build_collectors(self) -> list[Iterator[TensorDictBase]]:
        """Built on first use, once Lightning has moved the policy to its device."""
        policy_device = next(self.policy.parameters()).device
        collectors = []
        for task_id in range(self.task_set.num_tasks):
            env = self.task_set.make_env(
                task_id, self.envs_per_task, seed=(self.seed + self.rank) * 1_000 + task_id
            )
            collector = Collector(
                env,
                self.policy,
                frames_per_batch=self.envs_per_task,
                total_frames=-1,
                init_random_frames=self.warmup_env_steps_per_task,
                policy_device=policy_device,
                env_device="cpu",
                storing_device=self.buffers[task_id].storage.device,
                auto_register_policy_transforms=False,  # the actor needs no env transform
            )
            collectors.append(iter(collector))
        return collectors

    def collect(self, task_id: int) -> None:
        """Steps task `task_id`'s envs once with the current policy and stores the transitions."""
        if self._collectors is None:
            self._collectors = self._build_collectors()
        rollout = next(self._collectors[task_id]).reshape(-1)
        rollout["task_id"] = torch.full(rollout.shape, task_id, device=rollout.device)
        self.buffers[task_id].extend(rollout.select(*TRANSITION_KEYS))
        done = rollout["next", "done"].squeeze(-1)
        if done.any():
            self.recent_returns[task_id].extend(
                rollout["next", "episode_reward"][done].flatten().tolist()
            )
        self.local_env_steps += rollout.numel()
        self.task_env_steps[task_id] += rollout.numel()

    def warm_up(self) -> None:
        """Fills every B_z with random-action steps so every buffer can be sampled."""
        for task_id in range(self.task_set.num_tasks):
            while self.task_env_steps[task_id] < self.warmup_env_steps_per_task:
                self.collect(task_id)

    def sample(self, tasks: list[int]) -> Batch:
        task_batch = torch.cat([self.buffers[z].sample(self.batch_size) for z in tasks])
        correction = torch.stack(
            [
                b.sample(self.correction_states_per_task).select("observation", "task_id")
                for b in self.buffers
            ]
        )
        recent_return = torch.tensor(
            [sum(r) / len(r) if r else math.nan for r in self.recent_returns], device=correction.device
        )
        return Batch(task_batch, correction, recent_return, self.env_steps)

    def total_iterations(self) -> int:
        """Iterations of the whole run after warm-up; Lightning counts a resumed run's done ones."""
        warmup = self.warmup_env_steps_per_task * self.task_set.num_tasks * self.world_size
        per_iteration = self.envs_per_task * self.sampler.tasks_per_iteration * self.world_size
        return max(0, math.ceil((self.total_env_steps - warmup) / per_iteration))

    def mean_recent_return(self) -> float | None:
        returns = [r for task in self.recent_returns for r in task]
        return sum(returns) / len(returns) if returns else None

    def state_dict(self) -> dict[str, Any]:
        """Rank 0's buffers and counters; env_steps is global, so any process count can resume."""
        return {
            "env_steps": self.env_steps,
            "iterations": self.iterations,
            "task_env_steps": list(self.task_env_steps),
            "sampler": self.sampler.state_dict(),
            "buffers": [b.state_dict() for b in self.buffers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.local_env_steps = state["env_steps"] // self.world_size
        self.iterations = state["iterations"]
        self.task_env_steps = list(state["task_env_steps"])
        self.sampler.load_state_dict(state["sampler"])
        for buffer, buffer_state in zip(self.buffers, state["buffers"]):
            buffer.load_state_dict(buffer_state)
