from __future__ import annotations

import pytest
import torch

from picor_gin.run.evaluation import evaluate
from picor_gin.tasks import PointGoals, UnevenPointGoals


def _scripted(task_set: PointGoals, oracle: bool):
    def policy(td):
        task_id = td["observation"][..., 2:].argmax(-1)
        offset = task_set.goals[task_id] - td["observation"][..., :2]
        distance = offset.norm(dim=-1, keepdim=True).clamp_min(task_set.step_size)
        return td.set("action", offset / distance if oracle else torch.zeros_like(offset))

    return policy


def test_observation_is_position_then_distinct_one_hot_task_id():
    task_set = PointGoals(num_tasks=4)
    ids = []
    for task_id in range(4):
        obs = task_set.make_env(task_id, num_envs=3).reset()["observation"]
        assert obs.shape == (3, 6)
        assert torch.equal(obs[:, :2], torch.zeros(3, 2))
        assert torch.equal(obs[:, 2:].sum(-1), torch.ones(3))
        ids.append(int(obs[0, 2:].argmax()))
    assert ids == [0, 1, 2, 3]


def test_goals_are_east_north_west_south_on_the_unit_circle():
    goals = PointGoals(num_tasks=4).goals
    assert torch.allclose(goals, torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), atol=1e-6)


def test_step_moves_by_a_tenth_of_the_action_clips_at_two_and_rewards_minus_distance():
    env = PointGoals(num_tasks=4).make_env(0)
    td = env.reset()
    td["action"] = torch.tensor([[1.0, 1.0]])
    out = env.step(td)["next"]
    assert torch.allclose(out["observation"][0, :2], torch.tensor([0.1, 0.1]))
    assert out["reward"].item() == pytest.approx(-((0.9**2 + 0.1**2) ** 0.5), abs=1e-6)
    td = out.clone()
    td["observation"][0, :2] = torch.tensor([1.95, -1.95])
    td["action"] = torch.tensor([[1.0, -1.0]])
    assert torch.allclose(env.step(td)["next", "observation"][0, :2], torch.tensor([2.0, -2.0]))


def test_time_limit_truncates_at_30_steps_without_terminating():
    env = PointGoals(num_tasks=4).make_env(1, num_envs=2)
    rollout = env.rollout(30)
    assert rollout.shape == (2, 30)
    assert not rollout["next", "done"][:, :29].any()
    assert rollout["next", "truncated"][:, 29].all()
    assert not rollout["next", "terminated"].any()


def test_normalized_score_is_one_for_the_oracle_and_zero_for_standing_still():
    task_set = PointGoals(num_tasks=4)
    oracle = evaluate(_scripted(task_set, oracle=True), task_set, episodes_per_task=2, seed=0)
    stay = evaluate(_scripted(task_set, oracle=False), task_set, episodes_per_task=2, seed=0)
    assert oracle["mean_score"] == pytest.approx(1.0, abs=1e-5)
    assert stay["mean_score"] == pytest.approx(0.0, abs=1e-5)
    # Standing still one unit from the goal for 30 steps; the oracle's distances 0.9 .. 0.
    assert stay["tasks"]["goal2"]["return"] == pytest.approx(-30.0, abs=1e-4)
    assert oracle["tasks"]["goal2"]["return"] == pytest.approx(-4.5, abs=1e-4)
    assert oracle["mean_success"] is None


def test_walking_the_wrong_way_scores_below_zero():
    task_set = PointGoals(num_tasks=4)

    def east(td):
        return td.set("action", torch.tensor([1.0, 0.0]).expand(*td.shape, 2))

    row = evaluate(east, task_set, episodes_per_task=1, seed=0)
    # East overshoots goal0: distances 0.9..0, then 0.1..1.0, then 1.0 at the wall for 10 steps.
    assert row["tasks"]["goal0"]["return"] == pytest.approx(-20.0, abs=1e-4)
    assert row["tasks"]["goal0"]["score"] == pytest.approx(10 / 25.5, abs=1e-5)
    assert row["tasks"]["goal2"]["score"] < 0


def test_unknown_task_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="goal0, goal1"):
        PointGoals(num_tasks=2).task_id("goal7")


def test_uneven_normalized_score_is_one_for_the_oracle_and_zero_for_standing_still_on_every_task():
    task_set = UnevenPointGoals()
    oracle = evaluate(_scripted(task_set, oracle=True), task_set, episodes_per_task=1, seed=0)
    stay = evaluate(_scripted(task_set, oracle=False), task_set, episodes_per_task=1, seed=0)
    for name in task_set.names:
        assert oracle["tasks"][name]["score"] == pytest.approx(1.0, abs=1e-5), name
        assert stay["tasks"][name]["score"] == pytest.approx(0.0, abs=1e-5), name
    # The returns themselves are scaled: standing still one unit from the goal for 30 steps.
    assert stay["tasks"]["goal3_x0.03"]["return"] == pytest.approx(-30.0 * 0.03, abs=1e-5)


def test_uneven_reward_is_minus_scale_times_distance():
    task_set = UnevenPointGoals(reward_scales=(1.0, 0.3, 0.1, 0.03))
    rewards = []
    for task_id in (0, 3):
        env = task_set.make_env(task_id)
        td = env.reset()
        td["action"] = torch.tensor([[1.0, 1.0]])
        rewards.append(env.step(td)["next", "reward"].item())
    # From the origin to (0.1, 0.1): goal0 (1, 0) is sqrt(0.82) away, goal3 (0, -1) sqrt(1.22).
    assert rewards[0] == pytest.approx(-0.9055385, abs=1e-6)
    assert rewards[1] == pytest.approx(-0.03 * 1.1045361, abs=1e-6)


@pytest.mark.parametrize("reward_scales", [(), (1.0, 0.0), (1.0, -0.5)])
def test_uneven_rejects_no_scales_and_non_positive_scales(reward_scales):
    with pytest.raises(ValueError, match=r"UnevenPointGoals\.reward_scales"):
        UnevenPointGoals(reward_scales=reward_scales)


def test_uneven_task_names_are_distinct_and_carry_the_scale():
    task_set = UnevenPointGoals(reward_scales=(1.0, 0.3, 0.1, 0.03))
    assert task_set.names == ["goal0_x1.0", "goal1_x0.3", "goal2_x0.1", "goal3_x0.03"]
    assert task_set.num_tasks == 4
