"""The on-policy data path: every iteration, TorchRL collectors step each task's envs for
`rollout_env_steps` steps with the current policy, TorchRL's GAE (the backbone's
`advantage_estimator()`) estimates the advantage on each task's rollout, and the stream hands
Lightning `epochs` x `minibatches` minibatches of it, each one update's `Batch`.

Chosen in gin beside the replay path (`MultiTaskData`): `Experiment.data = @RolloutData`.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Iterator, Sequence

import gin
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

from picor_gin.data import Batch, TaskEnvData
from picor_gin.samplers import AllTasks, TaskSampler
from picor_gin.tasks import TaskSet

#: What an update reads of a rollout: the loss's inputs, GAE's outputs, and the log-probability
#: TorchRL's ProbabilisticActor recorded while acting (PPO's ratio divides by it).
ROLLOUT_KEYS = ("observation", "action", "action_log_prob", "advantage", "value_target", "task_id")


def _keep_as_is(batch: Batch) -> Batch:
    return batch


class RolloutStream(IterableDataset):
    """Each rollout: collect it, then one item per minibatch of each epoch over it."""

    def __init__(self, data: RolloutData):
        super().__init__()
        self.data = data

    def __len__(self) -> int:
        return self.data.total_updates()

    def __iter__(self) -> Iterator[Batch]:
        data = self.data
        while True:
            if data.rollout_updates in (0, data.updates_per_rollout):  # a fresh rollout is due
                if data.env_steps >= data.total_env_steps:
                    return
                data.collect()
            yield from data.batches()


@gin.configurable(
    denylist=["task_set", "policy", "seed", "total_env_steps", "advantage_module", "offline_updates", "offline_replay"]
)
class RolloutData(TaskEnvData):
    """The on-policy data path: a rollout of the current policy on every task per iteration.

    Every task collects each iteration, whichever tasks the sampler picks: the correction reads
    every task's rollout of pi_t. The sampler picks the tasks whose rollouts the optimization
    phase trains on (`AllTasks`: MTPPO; `RoundRobin`: one task's rollout per iteration, PiCor's
    Algorithm 1). Each epoch yields every transition of the trained tasks once, in
    `minibatches` minibatches holding an equal share of each trained task.

    Under DDP every process collects and trains on its own rollout (seeded with seed + rank);
    the gradients are all-reduced. A checkpoint taken mid-rollout holds no rollout: a run
    resumed from it collects a fresh one (and says so), its interrupted updates are not made.

    Args:
        task_set, policy, seed, total_env_steps: supplied by the Experiment; the run ends with
            the rollout that reaches `total_env_steps`.
        advantage_module: supplied by the Experiment, the backbone's advantage estimator (PPO's
            GAE), run once on each rollout: it writes "advantage" and "value_target".
        offline_updates, offline_replay: supplied by the Experiment; an on-policy path has no
            offline stage.
        sampler: factory of the task sampler, called with (num_tasks=, seed=).
        envs_per_task: copies of each task's env stepped at once.
        rollout_env_steps: T, steps of each env copy per rollout (each task collects
            envs_per_task x T transitions per iteration).
        epochs: passes over each rollout.
        minibatches: updates per epoch; each task's rollout splits evenly into them.
        correction_states_per_task: M, (state, action) pairs drawn from each task's rollout for
            the correction phase.
        parallel_workers: step every task's envs at once, one worker process per task (TorchRL's
            ParallelEnv), as `MultiTaskData.parallel_workers`; needs the AllTasks sampler.
    """

    on_policy = True
    #: The critic trains on each update's own minibatch (no separate critic batch).
    critic_on_every_task = False
    #: No warm-up: the first rollout is the initial policy's.
    warmup_env_steps_per_task = 0

    def __init__(
        self,
        task_set: TaskSet,
        policy: TensorDictModule,
        seed: int,
        total_env_steps: int,
        advantage_module: nn.Module,
        sampler: Callable[..., TaskSampler] = AllTasks,
        envs_per_task: int = 8,
        rollout_env_steps: int = 128,
        epochs: int = 16,
        minibatches: int = 32,
        correction_states_per_task: int = 64,
        parallel_workers: bool = False,
        offline_updates: int = 0,
        offline_replay: Callable[..., Any] | None = None,
    ):
        super().__init__(task_set, policy, seed, total_env_steps, sampler, envs_per_task, parallel_workers)
        for name, value in [
            ("rollout_env_steps", rollout_env_steps),
            ("epochs", epochs),
            ("minibatches", minibatches),
            ("correction_states_per_task", correction_states_per_task),
        ]:
            if value < 1:
                raise ValueError(f"RolloutData.{name} must be >= 1, got {value}")
        if offline_updates:
            raise ValueError("RolloutData has no offline stage: an offline objective (KTM-DRL) needs MultiTaskData")
        per_task = envs_per_task * rollout_env_steps
        if per_task % minibatches:
            raise ValueError(
                f"RolloutData.minibatches = {minibatches} must divide each task's rollout of "
                f"envs_per_task x rollout_env_steps = {per_task} transitions"
            )
        self.advantage_module = advantage_module
        self.rollout_env_steps = rollout_env_steps
        self.epochs = epochs
        self.minibatches = minibatches
        self.correction_states_per_task = correction_states_per_task
        self.updates_per_rollout = epochs * minibatches
        self.rollout_updates = 0  # updates made on the current rollout
        self.rollout: TensorDictBase | None = None  # [N, envs_per_task x T]
        self.trained_tasks: list[int] = []

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RolloutStream(self), batch_size=None, collate_fn=_keep_as_is)

    def _collector(self, env: EnvBase, task_ids: Sequence[int]) -> Collector:
        device = next(self.policy.parameters()).device
        return Collector(
            env,
            self.policy,
            frames_per_batch=len(task_ids) * self.envs_per_task * self.rollout_env_steps,
            total_frames=-1,
            policy_device=device,
            env_device="cpu",
            storing_device=device,  # GAE's value network runs where the policy does
            auto_register_policy_transforms=False,  # the actor needs no env transform
        )

    @torch.no_grad()
    def collect(self) -> None:
        """Collects a rollout of every task with the current policy and estimates its advantage
        (per task: each row of the [task, env, time] rollout is one task's)."""
        rollouts = []
        for task_ids, rollout in self._collect_rollouts(range(self.task_set.num_tasks)):
            self._count(task_ids, rollout)
            rollouts.append(rollout)
        rollout = torch.cat(rollouts)  # [N, envs_per_task, T], time last as GAE expects
        ids = torch.arange(self.task_set.num_tasks, device=rollout.device)
        rollout["task_id"] = ids.view(-1, 1, 1).expand(rollout.shape)
        # A truncation (time limit) bootstraps from V(s'), a termination does not: TorchRL's GAE
        # cuts the trace at "done" and bootstraps unless "terminated".
        self.advantage_module(rollout)
        self.rollout = rollout.select(*ROLLOUT_KEYS).reshape(self.task_set.num_tasks, -1)
        self.trained_tasks = list(self.sampler.tasks(self.iterations))
        self.iterations += 1
        self.rollout_updates = 0

    def batches(self) -> Iterator[Batch]:
        """The rollout's remaining updates: `epochs` passes, each a fresh split of every trained
        task's transitions into `minibatches` equal shares."""
        tasks = torch.tensor(self.trained_tasks, device=self.rollout.device).unsqueeze(1)
        per_task = self.rollout.shape[1]
        while self.rollout_updates < self.updates_per_rollout:
            order = torch.rand(len(self.trained_tasks), per_task, device=self.rollout.device).argsort(1)
            for index in order.chunk(self.minibatches, dim=1):
                self.rollout_updates += 1
                yield self._batch(self.rollout[tasks, index].reshape(-1))

    def _batch(self, minibatch: TensorDictBase) -> Batch:
        """One update's Batch: the minibatch and M (state, action) pairs of every task's rollout."""
        num_tasks, per_task = self.rollout.shape
        index = torch.randint(per_task, (num_tasks, self.correction_states_per_task), device=self.rollout.device)
        correction = self.rollout[torch.arange(num_tasks, device=index.device).unsqueeze(1), index]
        return Batch(minibatch, correction, self.recent_return(index.device), self.env_steps, tuple(self.trained_tasks))

    @property
    def collection_trained(self) -> bool:
        """True at the rollout's last update, before the next rollout is collected."""
        return self.rollout_updates == self.updates_per_rollout

    def total_updates(self) -> int:
        """Updates of the whole run: the collected rollouts', then those of the rollouts left at
        this process count, which a resume may have changed (Lightning counts a resumed run's
        done ones; a rollout cut short by the checkpoint makes this an upper bound, and the
        stream ends by itself)."""
        per_rollout = self.task_set.num_tasks * self.envs_per_task * self.rollout_env_steps * self.world_size
        left = max(0, math.ceil((self.total_env_steps - self.env_steps) / per_rollout))
        return (self.iterations + left) * self.updates_per_rollout

    def state_dict(self) -> dict[str, Any]:
        """Counters, sampler and recent returns; the rollout itself is not kept."""
        return {**super().state_dict(), "rollout_updates": self.rollout_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint taken mid-rollout resumes with a fresh rollout, said on stderr."""
        super().load_state_dict(state)
        done = state["rollout_updates"]
        if 0 < done < self.updates_per_rollout and self.rank == 0:
            print(
                f"note: the checkpoint was taken after update {done} of {self.updates_per_rollout} on its "
                "rollout, which checkpoints do not keep: the run goes on with a fresh rollout",
                file=sys.stderr,
            )
        self.rollout_updates = 0
