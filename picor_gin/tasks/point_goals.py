"""The tiny task sets: a 2-D point walking to goals on the unit circle (docs/design.md, "The tiny task set")."""
from __future__ import annotations

import math
from typing import Sequence

import gin
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import Compose, EnvBase, RewardSum, StepCounter, TransformedEnv

from picor_gin.tasks.base import TaskSet


class PointGoalsEnv(EnvBase):
    """A 2-D point walking to one goal (docs/design.md, "The tiny task set"), batched and stateless.

    The position is read back from the first two entries of the incoming observation, so the
    env keeps no state of its own and partial resets of a batch are trivial. The reward is
    -reward_scale * distance to the goal.
    """

    def __init__(
        self,
        goal: torch.Tensor,
        task_id: int,
        num_tasks: int,
        num_envs: int = 1,
        step_size: float = 0.1,
        bound: float = 2.0,
        reward_scale: float = 1.0,
    ):
        super().__init__(batch_size=torch.Size([num_envs]))
        self.goal = goal.to(torch.float32)
        self.step_size = step_size
        self.bound = bound
        self.reward_scale = reward_scale
        self.task_onehot = torch.nn.functional.one_hot(
            torch.tensor(task_id), num_tasks
        ).to(torch.float32)
        self.observation_spec = Composite(
            observation=Unbounded(shape=(num_envs, 2 + num_tasks)), shape=(num_envs,)
        )
        self.action_spec = Bounded(low=-1.0, high=1.0, shape=(num_envs, 2))
        self.reward_spec = Unbounded(shape=(num_envs, 1))

    def _observation(self, position: torch.Tensor) -> torch.Tensor:
        return torch.cat([position, self.task_onehot.expand(*position.shape[:-1], -1)], -1)

    def _reset(self, tensordict: TensorDictBase | None) -> TensorDictBase:
        position = torch.zeros(*self.batch_size, 2)
        reset = None if tensordict is None else tensordict.get("_reset", None)
        if reset is not None and tensordict.get("observation", None) is not None:
            # Envs not being reset keep their position (partial reset of a batch).
            kept = tensordict.get("observation")[..., :2]
            position = torch.where(reset, position, kept)
        return TensorDict(
            {"observation": self._observation(position)}, batch_size=self.batch_size
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        position = tensordict.get("observation")[..., :2]
        action = tensordict.get("action").clamp(-1.0, 1.0)
        position = (position + self.step_size * action).clamp(-self.bound, self.bound)
        reward = -self.reward_scale * (position - self.goal).norm(dim=-1, keepdim=True)
        never_done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict(
            {
                "observation": self._observation(position),
                "reward": reward,
                "done": never_done,
                "terminated": never_done.clone(),
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed: int | None) -> None:
        """Dynamics and start state are deterministic: nothing to seed."""


@gin.configurable
class PointGoals(TaskSet):
    """The tiny task set: goals evenly spaced on the unit circle (east, north, west, south, ...).

    From the same state the tasks ask for opposite actions and only the one-hot id tells them
    apart, so a shared policy must genuinely separate them. Score (docs/design.md, "The tiny task set"):
    (R - R_stay) / (R_oracle - R_stay), 1 optimal, 0 standing still.
    """

    def __init__(self, num_tasks: int = 4, episode_steps: int = 30, step_size: float = 0.1):
        if num_tasks < 1:
            raise ValueError(f"PointGoals.num_tasks must be >= 1, got {num_tasks}")
        if episode_steps < 1:
            raise ValueError(f"PointGoals.episode_steps must be >= 1, got {episode_steps}")
        if not step_size > 0:  # the oracle would score what standing still does: no score to scale by
            raise ValueError(f"PointGoals.step_size must be > 0, got {step_size}")
        self.names = [f"goal{z}" for z in range(num_tasks)]
        self.max_episode_steps = episode_steps
        self.step_size = step_size
        angles = torch.arange(num_tasks, dtype=torch.float64) * (2 * math.pi / num_tasks)
        self.goals = torch.stack([angles.cos(), angles.sin()], -1).to(torch.float32)
        self._reference_returns = [
            (self._scripted_return(z, oracle=False), self._scripted_return(z, oracle=True))
            for z in range(num_tasks)
        ]

    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        base = PointGoalsEnv(
            self.goals[task_id], task_id, self.num_tasks, num_envs, self.step_size,
            reward_scale=self._reward_scale(task_id),
        )
        env = TransformedEnv(base, Compose(StepCounter(self.max_episode_steps), RewardSum()))
        env.set_seed(seed)
        return env

    def _reward_scale(self, task_id: int) -> float:
        """Factor on task `task_id`'s reward; 1 here, the hook `UnevenPointGoals` overrides."""
        return 1.0

    def normalized_score(self, task_id: int, episode_return: float) -> float:
        stay, oracle = self._reference_returns[task_id]
        return (episode_return - stay) / (oracle - stay)

    def _scripted_return(self, task_id: int, oracle: bool) -> float:
        """Return of standing still, or of walking straight to the goal at full speed."""
        goal = self.goals[task_id]

        def policy(td: TensorDictBase) -> TensorDictBase:
            offset = goal - td["observation"][..., :2]
            distance = offset.norm(dim=-1, keepdim=True).clamp_min(self.step_size)
            return td.set("action", offset / distance if oracle else torch.zeros_like(offset))

        rollout = self.make_env(task_id).rollout(self.max_episode_steps, policy)
        return rollout["next", "reward"].sum().item()


@gin.configurable
class UnevenPointGoals(PointGoals):
    """PointGoals with task z's reward times reward_scales[z], so tasks learn at different speeds.

    PiCor's task weights (eq. 9, a softmax of the per-task SAC temperatures) only matter when
    tasks progress unevenly (the PiCor paper's "varying learning speeds"). Against SAC's
    entropy bonus a small reward is a weak signal, so a task with a small scale learns slower;
    dynamics, goals and one-hot ids are PointGoals'. The normalized score stays comparable
    across tasks: its reference returns come from the scaled env, so the scale cancels out.

    Args:
        reward_scales: one factor > 0 per task; their count is the number of tasks.
        episode_steps, step_size: as in PointGoals.
    """

    def __init__(
        self,
        reward_scales: Sequence[float] = (1.0, 0.3, 0.1, 0.03),
        episode_steps: int = 30,
        step_size: float = 0.1,
    ):
        scales = [float(scale) for scale in reward_scales]
        if not scales:
            raise ValueError("UnevenPointGoals.reward_scales must hold at least one scale")
        for z, scale in enumerate(scales):
            if not scale > 0:
                raise ValueError(f"UnevenPointGoals.reward_scales[{z}] must be > 0, got {scale}")
        self.reward_scales = scales  # set first: PointGoals' init rolls out the scaled envs
        super().__init__(num_tasks=len(scales), episode_steps=episode_steps, step_size=step_size)
        self.names = [f"goal{z}_x{scale}" for z, scale in enumerate(scales)]

    def _reward_scale(self, task_id: int) -> float:
        return self.reward_scales[task_id]
