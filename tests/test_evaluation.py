"""The evaluation protocol on a scripted env: success means the flag was set at any step."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import EnvBase, StepCounter, TransformedEnv

from picor_gin.backbones import TD3
from picor_gin.networks import OneHotMLP
from picor_gin.run.evaluation import evaluate
from picor_gin.tasks import PointGoals, TaskSet


class FlagOnceEnv(EnvBase):
    """Reward 1 per step; ("success") is set at step `flag_step` only (never, if None). With
    `ends_early`, copy i terminates at step 2 + i (and is reset)."""

    def __init__(self, num_envs: int, flag_step: int | None, ends_early: bool = False):
        super().__init__(batch_size=torch.Size([num_envs]))
        self.flag_step = flag_step
        self.ends_early = ends_early
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
        if self.ends_early:
            done = t == 2 + torch.arange(self.batch_size[0]).unsqueeze(-1)
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


class EndsEarlyTasks(FlagOnceTasks):
    names = ["ends_early"]

    def make_env(self, task_id, num_envs=1, seed=0):
        return TransformedEnv(FlagOnceEnv(num_envs, None, ends_early=True), StepCounter(self.max_episode_steps))


def _zero_policy(td):
    return td.set("action", torch.zeros(*td.shape, 1))


def test_only_each_copys_first_episode_counts():
    """Copies ending at steps 2, 3 and 4 score 2, 3 and 4: the steps of the episodes that start
    after a copy's first one ends (while the others run on) are not counted."""
    row = evaluate(_zero_policy, EndsEarlyTasks(), episodes_per_task=3, seed=0)
    assert row["tasks"]["ends_early"]["return"] == pytest.approx((2 + 3 + 4) / 3)


def test_a_policy_that_explores_acts_with_its_mean_action():
    """TD3's policy adds Gaussian noise unless acting deterministically: two evaluations under
    different torch seeds must score the same."""
    task_set = PointGoals(num_tasks=2)
    td3 = TD3(obs_dim=2 + 2, action_dim=2, num_tasks=2, network=OneHotMLP(hidden_sizes=(8,)), exploration_noise=0.5)
    returns = []
    for torch_seed in (1, 2):
        torch.manual_seed(torch_seed)
        returns.append([task["return"] for task in evaluate(td3.policy, task_set, episodes_per_task=2, seed=0)["tasks"].values()])
    assert returns[0] == returns[1]


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
