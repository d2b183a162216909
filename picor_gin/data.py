"""The data path: TorchRL collectors step the sampled tasks into one replay buffer per task
(B_z), and an iterable stream hands Lightning one update's batch at a time.

The LightningModule never builds an environment; everything env-side lives here.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import functools
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gin
import lightning as L
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch.utils.data import DataLoader, IterableDataset
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import EnvBase, ParallelEnv

from picor_gin.checkpoint_files import process_file
from picor_gin.samplers import TaskSampler, UniformEveryK
from picor_gin.tasks import TaskSet

#: The stages of a run: an optimization-only stage on fixed transitions (KTM-DRL's offline
#: transfer from its teachers' replay) and the usual one that collects env steps.
OFFLINE, ONLINE = "offline", "online"

#: What a transition keeps from the env in replay: what the backbone's losses read, nothing
#: more; the buffer adds the transition's "task_id".
TRANSITION_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
)


@dataclasses.dataclass
class Batch:
    """One update's data.

    Attributes:
        task: transitions of the sampled task(s), batch [B] (the optimization phase's batch).
        correction: "observation" and "task_id" of M states from every task's buffer, [N, M]
            (on-policy data: (state, action) pairs of every task's rollout, with what it recorded).
        recent_return: each task's mean return over its last training episodes, [N]; NaN for
            a task with no finished episode yet.
        env_steps: global environment steps collected so far.
        tasks: the ids of the tasks `task` holds, known without reading the device.
        critic: transitions for the critic's loss, stratified over every task's buffer, [B];
            None where the critic trains on `task` (Algorithm 1).
        stage: OFFLINE for a batch of the offline stage (from the objective's replay, at env
            step 0), else ONLINE.
    """

    task: TensorDictBase
    correction: TensorDictBase
    recent_return: torch.Tensor
    env_steps: int
    tasks: tuple[int, ...]
    critic: TensorDictBase | None = None
    stage: str = ONLINE

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.task.to(device),
            self.correction.to(device),
            self.recent_return.to(device),
            self.env_steps,
            self.tasks,
            None if self.critic is None else self.critic.to(device),
            self.stage,
        )


def _keep_as_is(batch: Batch) -> Batch:
    return batch


def _time_major(values: torch.Tensor, tasks: int, time: int) -> torch.Tensor:
    """A collection's [task, env, time, ...] values as [task, time x env]: each task's steps in
    the order they happened (a collector's rollout has time last)."""
    return values.reshape(tasks, -1, time).transpose(1, 2).reshape(tasks, -1)


class ReplayStream(IterableDataset):
    """Each item: collect on the sampled task(s), store in B_z, sample one update's Batch;
    first, the offline stage's batches, if it has any."""

    def __init__(self, data: MultiTaskData):
        super().__init__()
        self.data = data

    def __len__(self) -> int:
        return self.data.total_iterations()

    def __iter__(self) -> Iterator[Batch]:
        data = self.data
        while data.offline_done < data.offline_updates:
            data.offline_done += 1
            yield data.sample_offline()
        data.warm_up()
        while data.env_steps < data.total_env_steps:
            tasks = data.sampler.tasks(data.iterations)
            data.collect(tasks)
            data.iterations += 1
            yield data.sample(tasks)


class TaskEnvData(L.LightningDataModule, abc.ABC):
    """What every data path shares: each task's envs stepped by TorchRL collectors with the
    current policy, the task sampler, the global env-step count under DDP, each task's recent
    training returns, and their checkpoint state. Subclasses say what a collection is
    (`_collector`) and what Lightning reads (`train_dataloader`).

    Under DDP every process owns its envs, seeded with seed + rank, and runs the same iterations;
    `env_steps` and `total_env_steps` are global (summed over processes).
    """

    #: Whether the data is the current policy's own rollout (an on-policy backbone needs it).
    on_policy = False

    def __init__(
        self,
        task_set: TaskSet,
        policy: TensorDictModule,
        seed: int,
        total_env_steps: int,
        sampler: Callable[..., TaskSampler],
        envs_per_task: int,
        parallel_workers: bool,
    ):
        super().__init__()
        name = type(self).__name__
        if envs_per_task < 1:
            raise ValueError(f"{name}.envs_per_task must be >= 1, got {envs_per_task}")
        self.task_set = task_set
        self.policy = policy
        self.seed = seed
        self.total_env_steps = total_env_steps
        self.sampler = sampler(num_tasks=task_set.num_tasks, seed=seed)
        if parallel_workers and self.sampler.tasks_per_iteration != task_set.num_tasks:
            raise ValueError(
                f"{name}.parallel_workers steps every task each iteration: it needs the "
                f"AllTasks sampler, got {type(self.sampler).__name__}"
            )
        self.parallel_workers = parallel_workers
        self.envs_per_task = envs_per_task
        self.local_env_steps = 0
        self.rank, self.world_size = 0, 1
        self.iterations = 0
        self.offline_updates = self.offline_done = 0
        self.task_env_steps = [0] * task_set.num_tasks
        self.recent_returns = [collections.deque(maxlen=10) for _ in task_set.names]
        self._collectors: list[Collector] = []
        self._rollouts: list[Iterator[TensorDictBase]] = []

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

    @property
    def collection_trained(self) -> bool:
        """Whether every update of the last collection is done. Evaluations and periodic
        checkpoints wait for it, so neither lands on env steps the policy has not trained on
        (replay: each update is its own collection, always True)."""
        return True

    def _task_env_factory(self, task_id: int) -> Callable[[], EnvBase]:
        """Builds task `task_id`'s envs; picklable (the task set, not this module) for worker processes."""
        seed = (self.seed + self.rank) * 1_000 + task_id
        return functools.partial(self.task_set.make_env, task_id, self.envs_per_task, seed=seed)

    @abc.abstractmethod
    def _collector(self, env: EnvBase, task_ids: Sequence[int]) -> Collector:
        """The collector of `env`, which steps the envs of the tasks `task_ids` at once."""

    def _build_collectors(self) -> None:
        """Built on first use, once Lightning has moved the policy to its device."""
        num_tasks = self.task_set.num_tasks
        if self.parallel_workers:
            env = ParallelEnv(
                num_tasks,
                [self._task_env_factory(task_id) for task_id in range(num_tasks)],
                num_threads=torch.get_num_threads(),  # ParallelEnv would otherwise reset ours
            )
            self._collectors = [self._collector(env, range(num_tasks))]
        else:
            self._collectors = [self._collector(self._task_env_factory(z)(), [z]) for z in range(num_tasks)]
        self._rollouts = [iter(collector) for collector in self._collectors]

    def _collect_rollouts(self, tasks: Sequence[int]) -> list[tuple[list[int], TensorDictBase]]:
        """One collection of `tasks` with the current policy: (task ids, rollout) pairs, the
        rollout's leading dims [task, env] (one task each, or every task with parallel workers)."""
        if not self._collectors:
            self._build_collectors()
        if self.parallel_workers:
            all_tasks = list(range(self.task_set.num_tasks))
            return [(all_tasks, next(self._rollouts[0]))]  # [task, env, time]: every task at once
        return [([task_id], next(self._rollouts[task_id]).unsqueeze(0)) for task_id in tasks]

    def _count(self, task_ids: list[int], rollout: TensorDictBase) -> None:
        """Counts a collection's env steps and records the returns of the episodes it ended, in
        the order they ended, so a task's last 10 are its latest (a PPO rollout ends many)."""
        steps = rollout.numel() // len(task_ids)
        done = rollout["next", "done"]
        if done.any():
            done = _time_major(done, len(task_ids), rollout.shape[-1])
            returns = _time_major(rollout["next", "episode_reward"], len(task_ids), rollout.shape[-1])
            for row, task_id in enumerate(task_ids):
                self.recent_returns[task_id].extend(returns[row][done[row]].tolist())
        for task_id in task_ids:
            self.task_env_steps[task_id] += steps
        self.local_env_steps += len(task_ids) * steps

    def teardown(self, stage: str) -> None:
        """Stops the collectors (and with them any worker processes)."""
        for collector in self._collectors:
            collector.shutdown()
        self._collectors, self._rollouts = [], []

    def mean_recent_return(self) -> float | None:
        returns = [r for task in self.recent_returns for r in task]
        return sum(returns) / len(returns) if returns else None

    def recent_return(self, device: torch.device | str) -> torch.Tensor:
        """Each task's mean recent training return, [N] (a Batch's `recent_return`); NaN for a
        task with no finished episode yet."""
        return torch.tensor([sum(r) / len(r) if r else math.nan for r in self.recent_returns], device=device)

    def state_dict(self) -> dict[str, Any]:
        """Counters, sampler, recent returns and this process's random state; env_steps is global,
        so any process count can resume."""
        return {
            "env_steps": self.env_steps,
            "world_size": self.world_size,
            "iterations": self.iterations,
            "offline_done": self.offline_done,
            "task_env_steps": list(self.task_env_steps),
            "sampler": self.sampler.state_dict(),
            "recent_returns": [list(returns) for returns in self.recent_returns],  # a return weighting reads them
            # Exploration noise and sampling continue where they stopped, each process its own.
            "torch_rng_state": torch.get_rng_state(),
            "cuda_rng_state": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def resume_problem(self, state: dict[str, Any]) -> str | None:
        """Why this data module, as configured, cannot continue from the saved `state`; None if it can."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores this process's own state: `state` is rank 0's (Lightning's checkpoint file);
        process r reads saved process r's file beside it. On another process count, process r
        continues from saved process r mod (saved count), with its own fresh random state."""
        saved_world_size = state.get("world_size", 1)
        source = self.rank % saved_world_size
        if saved_world_size != self.world_size and self.rank == 0:
            print(
                f"note: resuming on {self.world_size} process(es) a run checkpointed on {saved_world_size}: "
                f"process r continues from the data (replay buffers, counters) of saved process r mod {saved_world_size}"
                + ("" if self.world_size >= saved_world_size else
                   f"; those of saved processes {self.world_size}..{saved_world_size - 1} are not used"),
                file=sys.stderr,
            )
        if source > 0:
            _, own = process_file(Path(self.trainer.ckpt_path), source, state["env_steps"])
            state = own[type(self).__qualname__]
        self._restore(state)
        if saved_world_size == self.world_size and "torch_rng_state" in state:
            torch.set_rng_state(state["torch_rng_state"])
            if torch.cuda.is_available() and len(state["cuda_rng_state"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(state["cuda_rng_state"])

    def _restore(self, state: dict[str, Any]) -> None:
        """Restores what `state_dict` saved of one process, its random state aside."""
        self.local_env_steps = state["env_steps"] // self.world_size
        self.iterations = state["iterations"]
        self.offline_done = state.get("offline_done", 0)
        self.task_env_steps = list(state["task_env_steps"])
        self.sampler.load_state_dict(state["sampler"])
        for returns, saved in zip(self.recent_returns, state["recent_returns"]):
            returns.clear()
            returns.extend(saved)


def _device_problem(device: str) -> str | None:
    """Why this machine cannot hold tensors on `device`, found when the data module is built
    rather than at the first collection, whose error names no binding."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        return str(error)
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            return "this machine has no CUDA device (bind 'cpu', or leave it unbound)"
        if parsed.index is not None and parsed.index >= count:
            return f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None


@gin.configurable(denylist=["task_set", "policy", "seed", "total_env_steps", "offline_updates", "offline_replay"])
class MultiTaskData(TaskEnvData):
    """The replay data path: the per-task replay buffers B_z, filled by the collectors of
    TaskEnvData (under DDP, each process's own), and one update's batch sampled from them.

    Args:
        task_set, policy, seed, total_env_steps: supplied by the Experiment.
        offline_updates, offline_replay: supplied by the Experiment from the module's objective:
            the offline stage's update count and its per-task buffers (loaded on first use, on
            the device of B_z).
            After an offline stage the warm-up acts with the policy, not at random: the
            policy already knows something (KTM-DRL's online stage acts from its first step).
        sampler: factory of the task sampler, called with (num_tasks=, seed=).
        envs_per_task: parallel copies of each task's env stepped per collection.
        batch_size: transitions per sampled task in the optimization phase's batch.
        correction_states_per_task: M, states drawn from each B_z for the correction phase.
        replay_capacity: transitions kept per task.
        warmup_env_steps_per_task: random-action steps collected on every task before updates.
        replay_device: where B_z lives; None keeps it on the CPU.
        parallel_workers: step every task's envs at once, one worker process per task (TorchRL's
            ParallelEnv), so with a core per task an iteration costs about one env step of wall
            time, not N (benchmarks/collection_scaling.py); needs a sampler that picks every task
            each iteration (AllTasks).
        critic_on_every_task: the critic's batch is drawn from every B_z (as many transitions
            as the optimization phase's batch, split evenly) instead of the sampled task's, so the
            critic the correction reads A^{pi_t} from keeps fitting the tasks the sampler is away
            from (docs/correction_study.md, the critic); the actor still trains on the sampled
            task's batch. False is the paper's Algorithm 1 (its MTSAC).
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
        parallel_workers: bool = False,
        critic_on_every_task: bool = True,
        offline_updates: int = 0,
        offline_replay: Callable[[str | torch.device], list[TensorDictReplayBuffer]] | None = None,
    ):
        super().__init__(task_set, policy, seed, total_env_steps, sampler, envs_per_task, parallel_workers)
        for name, value in [
            ("batch_size", batch_size),
            ("correction_states_per_task", correction_states_per_task),
            ("replay_capacity", replay_capacity),
            ("warmup_env_steps_per_task", warmup_env_steps_per_task),  # every B_z is sampled
        ]:
            if value < 1:
                raise ValueError(f"MultiTaskData.{name} must be >= 1, got {value}")
        self.critic_on_every_task = critic_on_every_task
        if critic_on_every_task and batch_size < task_set.num_tasks:
            raise ValueError(
                f"MultiTaskData.critic_on_every_task splits batch_size = {batch_size} over "
                f"{task_set.num_tasks} tasks: it needs batch_size >= {task_set.num_tasks}"
            )
        if replay_capacity < batch_size:
            raise ValueError(
                f"MultiTaskData.replay_capacity = {replay_capacity} (per task) cannot hold one batch "
                f"of MultiTaskData.batch_size = {batch_size}: every batch would repeat transitions"
            )
        self.batch_size = batch_size
        self.correction_states_per_task = correction_states_per_task
        self.warmup_env_steps_per_task = warmup_env_steps_per_task
        self.replay_capacity = replay_capacity
        self.replay_device = replay_device or "cpu"
        problem = _device_problem(self.replay_device)
        if problem:
            raise ValueError(f"MultiTaskData.replay_device = {self.replay_device!r}: {problem}")
        self.buffers = self._new_buffers(self.replay_device)
        self.offline_updates = offline_updates
        self._offline_replay = offline_replay
        self._offline_buffers: list[TensorDictReplayBuffer] = []

    def _new_buffers(self, device: str | torch.device) -> list[TensorDictReplayBuffer]:
        return [TensorDictReplayBuffer(storage=LazyTensorStorage(self.replay_capacity, device=device))
                for _ in self.task_set.names]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # A device without an index ('cuda') means this process's own, which Lightning has just
        # set: the buffers, empty until the warm-up, are built again there. Built before, every
        # DDP process's B_z would sit on the GPU current at build time, cuda:0.
        requested = torch.device(self.replay_device)
        if requested.type != "cpu" and requested.index is None:
            own = self.trainer.strategy.root_device
            if own.type == requested.type:
                self.buffers = self._new_buffers(own)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(ReplayStream(self), batch_size=None, collate_fn=_keep_as_is)

    def _collector(self, env: EnvBase, task_ids: Sequence[int]) -> Collector:
        return Collector(
            env,
            self.policy,
            frames_per_batch=len(task_ids) * self.envs_per_task,
            total_frames=-1,
            init_random_frames=0 if self.offline_updates else self._warmup_steps_left(task_ids),
            policy_device=next(self.policy.parameters()).device,
            env_device="cpu",
            storing_device=self.buffers[0].storage.device,
            auto_register_policy_transforms=False,  # the actor needs no env transform
        )

    def _warmup_steps_left(self, task_ids: Sequence[int]) -> int:
        """The random-action steps still due on these tasks: the whole warm-up on a fresh run,
        none on a run resumed after it (a collector counts its random frames from its creation)."""
        return sum(max(0, self.warmup_env_steps_per_task - self.task_env_steps[z]) for z in task_ids)

    def collect(self, tasks: Sequence[int]) -> None:
        """Steps the envs of `tasks` once with the current policy and stores the transitions."""
        for task_ids, rollout in self._collect_rollouts(tasks):
            self._store(task_ids, rollout)

    def _store(self, task_ids: list[int], rollout: TensorDictBase) -> None:
        """Adds one collection's transitions to the B_z of `task_ids`, in the order of the
        rollout's leading dims, and counts them. Selection and reshaping happen once for all
        tasks: with parallel workers the main process stores every task each iteration."""
        transitions = rollout.select(*TRANSITION_KEYS).reshape(len(task_ids), -1)
        steps = transitions.shape[1]
        transitions["task_id"] = torch.tensor(task_ids, device=rollout.device).unsqueeze(1).expand(-1, steps)
        for row, task_id in enumerate(task_ids):
            self.buffers[task_id].extend(transitions[row])
        self._count(task_ids, rollout)

    def warm_up(self) -> None:
        """Fills every B_z with random-action steps so every buffer can be sampled."""
        for task_id in range(self.task_set.num_tasks):
            while self.task_env_steps[task_id] < self.warmup_env_steps_per_task:
                self.collect([task_id])  # with parallel workers, every task steps

    def sample(self, tasks: list[int]) -> Batch:
        task_batch = torch.cat([self.buffers[z].sample(self.batch_size) for z in tasks])
        correction = self._from_every_task(self.correction_states_per_task, ["observation"])
        critic = None
        if self.critic_on_every_task:
            per_task = len(tasks) * self.batch_size // self.task_set.num_tasks  # the task batch's size
            critic = self._from_every_task(per_task, TRANSITION_KEYS).reshape(-1)
        return Batch(task_batch, correction, self.recent_return(correction.device), self.env_steps, tuple(tasks), critic)

    def sample_offline(self) -> Batch:
        """An offline-stage batch: `batch_size` transitions of every task's offline buffer, and
        correction states from them too; at env step 0, with no training return yet."""
        if not self._offline_buffers:
            self._offline_buffers = self._offline_replay(self.buffers[0].storage.device)
        buffers = self._offline_buffers
        task_batch = self._from_every_task(self.batch_size, ("observation", "action"), buffers).reshape(-1)
        correction = self._from_every_task(self.correction_states_per_task, ["observation"], buffers)
        recent_return = torch.full((self.task_set.num_tasks,), math.nan, device=correction.device)
        every_task = tuple(range(self.task_set.num_tasks))
        return Batch(task_batch, correction, recent_return, self.env_steps, every_task, stage=OFFLINE)

    def _from_every_task(
        self,
        per_task: int,
        keys: Sequence[str | tuple[str, ...]],
        buffers: Sequence[TensorDictReplayBuffer] | None = None,
    ) -> TensorDictBase:
        """`keys` of `per_task` entries drawn uniformly from each B_z (or each of `buffers`),
        with their task ids: [N, per_task].

        One index draw for every task, then a read of each storage's tensors: TorchRL's sample
        path costs about 1 ms of TensorDict overhead per buffer (12 ms an update on MT10, a
        third of the update itself), this under 1 ms for all ten.
        """
        buffers = self.buffers if buffers is None else buffers
        num_tasks = self.task_set.num_tasks
        device = self.buffers[0].storage.device
        filled = torch.tensor([len(b) for b in buffers], device=device)
        index = (torch.rand(num_tasks, per_task, device=device) * filled.unsqueeze(1)).long()
        drawn = TensorDict(batch_size=[num_tasks, per_task], device=device)
        for key in keys:
            drawn.set(key, torch.stack([b.storage._storage.get(key)[i] for b, i in zip(buffers, index)]))
        drawn["task_id"] = torch.arange(num_tasks, device=device).unsqueeze(1).expand(num_tasks, per_task)
        return drawn

    def total_iterations(self) -> int:
        """Iterations of the whole run (the offline stage's, then those after warm-up): those
        done, then those left at this process count, which a resume may have changed (Lightning
        ends the run once it has counted this many, a resumed run's done ones included)."""
        warmup_left = self._warmup_steps_left(range(self.task_set.num_tasks)) * self.world_size
        per_iteration = self.envs_per_task * self.sampler.tasks_per_iteration * self.world_size
        left = max(0, math.ceil((self.total_env_steps - self.env_steps - warmup_left) / per_iteration))
        return self.offline_updates + self.iterations + left

    def state_dict(self) -> dict[str, Any]:
        """This process's buffers and counters; env_steps is global, so any process count can resume."""
        return {**super().state_dict(), "buffers": [b.state_dict() for b in self.buffers],
                "replay_capacity": self.replay_capacity}

    def resume_problem(self, state: dict[str, Any]) -> str | None:
        """A resumed buffer keeps the saved storage, whose rows are the saved capacity: another
        capacity would drop the newest transitions (smaller) or write past the storage (larger)."""
        saved = state.get("replay_capacity", self.replay_capacity)  # older checkpoints did not record it
        if saved == self.replay_capacity:
            return None
        return (f"MultiTaskData.replay_capacity = {self.replay_capacity:_}, but the checkpoint's buffers hold "
                f"{saved:_} transitions per task; a resumed run keeps its replay capacity")

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        for buffer, buffer_state in zip(self.buffers, state["buffers"]):
            buffer.load_state_dict(buffer_state)
