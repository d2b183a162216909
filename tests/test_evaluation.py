"""The evaluation protocol on a scripted env: success means the flag was set at any step."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import EnvBase, StepCounter, TransformedEnv

from picor_gin.run.evaluation import evaluate
from picor_gin.tasks import TaskSet


class FlagOnceEnv(EnvBase):
    """Reward 1 per step; ("success") is set at step `flag_step` only (never, if None)."""

    def __init__(self, num_envs: int, flag_step: int | None):
        super().__init__(batch_size=torch.Size([num_envs]))
        self.flag_step = flag_step
        self.observation_spec = Composite(
            observation=Unbounded(shape=(num_envs, 1)), success=Unbounded(shape=(num_envs, 1)), shape=(num_envs,)
        )
        self.action_spec = Bounded(low=-1.0, high=1.0, shape=(num_envs, 1))
        self.reward_spec = Unbounded(shape=(num_envs, 1))

    def _reset(self, tensordict):
        return TensorDict({"observation": torch.zeros(*self.batch_size, 1),
                           "success": torch.zeros(*self.batch_size, 1)}, batch_size=self.batch_size)

    def _step(self, tensordict):
        t = tensordict["observation"] + 1
        flag = (t == self.flag_step).float() if self.flag_step is not None else torch.zeros_like(t)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict({"observation": t, "success": flag, "reward": torch.ones_like(t),
                           "done": done, "terminated": done.clone()}, batch_size=self.batch_size)

    def _set_seed(self, seed):
        pass


class FlagOnceTasks(TaskSet):
    names = ["flag_at_7", "never"]
    max_episode_steps = 10
    has_success = True

    def make_env(self, task_id, num_envs=1, seed=0):
        env = FlagOnceEnv(num_envs, 7 if task_id == 0 else None)
        return TransformedEnv(env, StepCounter(self.max_episode_steps))


def _zero_policy(td):
    return td.set("action", torch.zeros(*td.shape, 1))


def test_an_episode_flagged_at_a_single_step_counts_as_a_success():
    row = evaluate(_zero_policy, FlagOnceTasks(), episodes_per_task=3, seed=0)
    assert row["tasks"]["flag_at_7"]["success"] == 1.0
    assert row["tasks"]["never"]["success"] == 0.0
    assert row["mean_success"] == pytest.approx(0.5)
    assert row["tasks"]["never"]["return"] == pytest.approx(10.0)  # one 10-step episode, reward 1
    assert row["mean_score"] is None and row["tasks"]["never"]["score"] is None


def test_each_evaluation_closes_the_envs_it_built():
    """A long run evaluates many times: its evaluation envs must not pile up."""
    closed = []

    class Recorded(FlagOnceTasks):
        def make_env(self, task_id, num_envs=1, seed=0):
            env = super().make_env(task_id, num_envs, seed)
            close = env.close
            env.close = lambda *args, **kwargs: (closed.append(task_id), close(*args, **kwargs))
            return env

    evaluate(_zero_policy, Recorded(), episodes_per_task=2, seed=0)
    assert closed == [0, 1]
