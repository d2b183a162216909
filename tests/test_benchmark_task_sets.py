"""The real benchmarks (docs/design.md, "Benchmarks and evaluation"): Meta-World MT10, the HalfCheetah group, GymTasks.

Each test steps a few env steps only; MT10's goals (~6 s to draw) are drawn once per machine
(picor_gin.tasks.metaworld.goal_cache_file), except where a test redraws them on purpose.
"""
from __future__ import annotations

import math
import types
from pathlib import Path

import gin
import gymnasium.envs.mujoco
import metaworld
import metaworld.policies
import mujoco
import numpy as np
import pytest
import torch
from tensordict import TensorDictBase

from picor_gin.tasks import metaworld as metaworld_tasks
from tests.conftest import REPO
from picor_gin.run.evaluation import evaluate
from picor_gin.tasks import (
    HALF_CHEETAH_PARTS,
    GymTasks,
    HalfCheetahGroup,
    MetaWorldMT10,
    TaskSet,
)

#: Meta-World's observation: hand (3), gripper (1), objects (14), the previous frame of those
#: 18, then the goal position (3).
GOAL = slice(36, 39)


@pytest.fixture(scope="module")
def mt10() -> MetaWorldMT10:
    return MetaWorldMT10()


@pytest.fixture(scope="module")
def half_cheetah() -> HalfCheetahGroup:
    return HalfCheetahGroup()


def _zeros(action_dim: int):
    def policy(td: TensorDictBase) -> TensorDictBase:
        return td.set("action", torch.zeros(*td.shape, action_dim))

    return policy


# --- Shapes, dtypes, one-hot ids -------------------------------------------------------------


def test_mt10_lists_exactly_the_ten_tasks_of_the_installed_metaworld(mt10):
    assert mt10.names == list(metaworld.env_dict.MT10_V3)
    assert mt10.num_tasks == 10
    assert mt10.max_episode_steps == 500
    assert mt10.has_success
    assert mt10.normalized_score(0, 123.0) is None


def test_half_cheetah_group_has_eight_named_variants_and_no_success_or_score(half_cheetah):
    assert half_cheetah.names == [
        "torso_big", "torso_small", "thigh_big", "thigh_small",
        "leg_big", "leg_small", "foot_big", "foot_small",
    ]
    assert half_cheetah.max_episode_steps == 1000
    assert not half_cheetah.has_success
    assert half_cheetah.normalized_score(0, 123.0) is None


@pytest.mark.parametrize(
    "which, obs_dim, action_dim", [("mt10", 39 + 10, 4), ("half_cheetah", 17 + 8, 6)]
)
@pytest.mark.parametrize("num_envs", [1, 3])
def test_env_resets_and_steps_with_float32_observation_and_unit_actions(
    request, which, obs_dim, action_dim, num_envs
):
    task_set: TaskSet = request.getfixturevalue(which)
    env = task_set.make_env(task_set.num_tasks - 1, num_envs=num_envs, seed=0)
    assert env.batch_size == (num_envs,)
    assert env.observation_spec["observation"].shape == (num_envs, obs_dim)
    assert env.action_spec.shape == (num_envs, action_dim)
    assert torch.equal(env.action_spec.space.low, -torch.ones(num_envs, action_dim))
    assert torch.equal(env.action_spec.space.high, torch.ones(num_envs, action_dim))
    rollout = env.rollout(3)  # random actions from the spec
    assert rollout.shape == (num_envs, 3)
    assert rollout["observation"].dtype == torch.float32
    assert rollout["next", "observation"].shape == (num_envs, 3, obs_dim)
    assert rollout["next", "reward"].dtype == torch.float32
    assert rollout["next", "reward"].shape == (num_envs, 3, 1)
    for key in ["done", "terminated", "truncated", "episode_reward"]:
        assert ("next", key) in rollout.keys(include_nested=True)
    assert (("next", "success") in rollout.keys(include_nested=True)) == task_set.has_success
    assert torch.isfinite(rollout["next", "observation"]).all()


@pytest.mark.parametrize("which", ["mt10", "half_cheetah"])
def test_task_ids_are_appended_one_hot_and_distinct(request, which):
    task_set: TaskSet = request.getfixturevalue(which)
    n = task_set.num_tasks
    for task_id in range(n):
        obs = task_set.make_env(task_id, num_envs=2).reset()["observation"]
        assert torch.equal(obs[:, -n:], torch.eye(n)[task_id].expand(2, n))


# --- Meta-World: fixed goals, truncation, success ---------------------------------------------


def test_metaworld_goal_is_fixed_across_resets_steps_and_copies(mt10):
    env = mt10.make_env(mt10.task_id("push-v3"), num_envs=2, seed=3)
    first = env.reset()["observation"]
    assert torch.equal(first[0], first[1])  # every copy faces the same goal and start
    env.rollout(5)
    again = env.reset()["observation"]
    assert torch.equal(first, again)
    assert first[0, GOAL].abs().sum() > 0  # MT benchmarks observe the goal


def test_one_evaluation_episode_per_task_suffices_on_metaworld_but_not_on_half_cheetah(mt10, half_cheetah):
    """base/mt10.gin evaluates one episode per task, base/halfcheetah.gin five: under a
    deterministic policy, Meta-World's copies seeded apart step through one episode, while
    HalfCheetah's resets add noise."""
    weights = torch.randn(39 + 10, 4, generator=torch.Generator().manual_seed(0))  # observation -> action

    def deterministic(td: TensorDictBase) -> TensorDictBase:
        return td.set("action", torch.tanh(td["observation"] @ weights))

    push = mt10.task_id("push-v3")
    two = mt10.make_env(push, num_envs=2, seed=3).rollout(40, deterministic)["next", "observation"]
    other_seed = mt10.make_env(push, num_envs=1, seed=11).rollout(40, deterministic)["next", "observation"]
    assert not torch.equal(two[0, 0], two[0, -1])  # the policy moves the arm
    assert torch.equal(two[0], two[1]) and torch.equal(two[0], other_seed[0])
    cheetah = half_cheetah.make_env(0, num_envs=2, seed=3).reset()["observation"]
    assert not torch.equal(cheetah[0], cheetah[1])
    gin.add_config_file_search_path(str(REPO))
    episodes = {}
    for base in ("mt10", "halfcheetah"):
        gin.clear_config()
        gin.parse_config_files_and_bindings([str(REPO / "gin_configs" / "base" / f"{base}.gin")], [], skip_unknown=False)
        episodes[base] = gin.query_parameter("Experiment.eval_episodes")
    assert episodes["mt10"] == 1 and episodes["halfcheetah"] > 1


def test_metaworld_goals_are_the_same_after_rebuilding_with_the_same_goal_seed(mt10, tmp_path, monkeypatch):
    before = [mt10.make_env(z).reset()["observation"] for z in range(mt10.num_tasks)]
    monkeypatch.setenv("PICOR_GIN_CACHE", str(tmp_path))  # redraw metaworld's goals from scratch
    metaworld_tasks._metaworld_fixed_tasks.cache_clear()
    rebuilt = MetaWorldMT10(goal_seed=0)
    after = [rebuilt.make_env(z).reset()["observation"] for z in range(rebuilt.num_tasks)]
    for z, (a, b) in enumerate(zip(before, after)):
        assert torch.equal(a, b), mt10.names[z]
    # The goals differ between tasks of the same family (reach vs push use other goal spaces).
    assert not torch.equal(before[0][0, GOAL], before[1][0, GOAL])


def test_metaworld_goals_are_drawn_once_per_machine_and_a_damaged_cache_file_is_drawn_again(mt10, tmp_path, monkeypatch):
    monkeypatch.setenv("PICOR_GIN_CACHE", str(tmp_path))
    draw = metaworld_tasks._metaworld_fixed_tasks.__wrapped__  # without the per-process cache
    drawn = draw("MT10", 0)
    assert [p.name for p in tmp_path.iterdir()] == [metaworld_tasks.goal_cache_file("MT10", 0).name]

    def no_draw(seed):
        raise AssertionError("drew the goals again")

    monkeypatch.setattr(metaworld, "MT10", no_draw)
    assert draw("MT10", 0) == drawn  # another process reads them: env names, classes, goals
    assert draw("MT10", 0)[0][2].env_name == "reach-v3"

    # A damaged file is drawn again (here by a stand-in suite of one env) and rewritten.
    name, env_class, task = drawn[0]
    monkeypatch.setattr(metaworld, "MT10", lambda seed: types.SimpleNamespace(
        train_classes={name: env_class}, train_tasks=[task]))
    metaworld_tasks.goal_cache_file("MT10", 0).write_bytes(b"\x80\x04 half a pickle")
    assert draw("MT10", 0) == ((name, env_class, task),)
    monkeypatch.setattr(metaworld, "MT10", no_draw)
    assert draw("MT10", 0) == ((name, env_class, task),)
    assert len(list(tmp_path.iterdir())) == 1  # no file of a write left behind


def test_a_cache_folder_that_cannot_be_written_costs_only_the_draw(mt10, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("PICOR_GIN_CACHE", str(tmp_path / "a_file" / "cache"))  # not a folder
    name, env_class, task = metaworld_tasks._metaworld_fixed_tasks("MT10", 0)[0]
    monkeypatch.setattr(metaworld, "MT10", lambda seed: types.SimpleNamespace(
        train_classes={name: env_class}, train_tasks=[task]))
    assert metaworld_tasks._metaworld_fixed_tasks.__wrapped__("MT10", 0) == ((name, env_class, task),)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_metaworld_time_limit_truncates_and_resets_instead_of_terminating(mt10):
    short = MetaWorldMT10(max_episode_steps=4)  # goals come from the per-process cache
    env = short.make_env(0, num_envs=2)
    # 10 steps: Meta-World itself refuses to step past max_path_length, so this also checks
    # that the truncation resets the env.
    rollout = env.rollout(10, break_when_any_done=False)
    truncated = rollout["next", "truncated"].squeeze(-1)
    assert truncated[:, [3, 7]].all()
    assert truncated.sum() == 4
    assert not rollout["next", "terminated"].any()
    assert torch.equal(rollout["observation"][:, 4], rollout["observation"][:, 0])
    steps = rollout["next", "step_count"][0, :, 0]
    assert torch.equal(steps, torch.tensor([1, 2, 3, 4, 1, 2, 3, 4, 1, 2]))


@pytest.mark.filterwarnings("ignore:Constant")  # metaworld's scripted policies warn on import use
def test_evaluate_on_mt10_reports_success_in_0_1_and_the_scripted_reach_succeeds():
    task_set = MetaWorldMT10(max_episode_steps=60)
    scripted = metaworld.policies.SawyerReachV3Policy()
    reach = task_set.task_id("reach-v3")

    def policy(td: TensorDictBase) -> TensorDictBase:
        obs = td["observation"]
        action = torch.zeros(*obs.shape[:-1], 4)
        if obs[..., 39 + reach].bool().all():  # the scripted expert on reach, zeros elsewhere
            for i, o in enumerate(obs):
                action[i] = torch.as_tensor(scripted.get_action(o[:39].double().numpy()))
        return td.set("action", action.clamp(-1.0, 1.0))

    row = evaluate(policy, task_set, episodes_per_task=2, seed=0)
    assert list(row["tasks"]) == task_set.names
    for name, task in row["tasks"].items():
        assert 0.0 <= task["success"] <= 1.0, name
        assert math.isfinite(task["return"]) and task["score"] is None
    assert row["tasks"]["reach-v3"]["success"] == 1.0
    assert row["mean_success"] == pytest.approx(
        sum(t["success"] for t in row["tasks"].values()) / 10
    )
    assert row["mean_score"] is None


# --- HalfCheetah: one body part scaled per variant ---------------------------------------------


def _geom_names(model: mujoco.MjModel) -> list[str]:
    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) for i in range(model.ngeom)]


def test_each_half_cheetah_variant_scales_its_part_by_its_factor_and_nothing_else(half_cheetah):
    default_xml = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "half_cheetah.xml"
    default = mujoco.MjModel.from_xml_path(str(default_xml))
    names = _geom_names(default)
    factors = {"big": 1.25, "small": 0.75}
    for task_id, (name, xml) in enumerate(zip(half_cheetah.names, half_cheetah.xml_files)):
        part, label = name.split("_")
        variant = mujoco.MjModel.from_xml_path(xml)
        assert _geom_names(variant) == names
        expected = default.geom_size.copy()
        for g, geom in enumerate(names):
            if geom in HALF_CHEETAH_PARTS[part]:
                expected[g] *= factors[label]
        np.testing.assert_allclose(variant.geom_size, expected, rtol=1e-12, err_msg=name)
        assert not np.allclose(variant.geom_size, default.geom_size)
        for field in ["geom_pos", "geom_quat", "body_pos", "body_quat", "jnt_range"]:
            np.testing.assert_array_equal(getattr(variant, field), getattr(default, field))
        # The env the task set builds runs on that model.
        env = half_cheetah.make_env(task_id)
        built = env.base_env.envs[0].unwrapped.model  # GymWrapper -> gymnasium vector env
        np.testing.assert_array_equal(built.geom_size, variant.geom_size)


def test_half_cheetah_scale_factors_are_bound_in_gin():
    gin.parse_config(
        "HalfCheetahGroup.scale_factors = {'huge': 2.0}\nHalfCheetahGroup.max_episode_steps = 5"
    )
    group = HalfCheetahGroup()
    assert group.names == ["torso_huge", "thigh_huge", "leg_huge", "foot_huge"]
    assert group.max_episode_steps == 5
    model = mujoco.MjModel.from_xml_path(group.xml_files[group.task_id("leg_huge")])
    shin = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "bshin")
    np.testing.assert_allclose(model.geom_size[shin, :2], [0.092, 0.30])
    with pytest.raises(ValueError, match=r"scale_factors\['small'\] must be > 0, got -1"):
        HalfCheetahGroup(scale_factors={"small": -1.0})


def test_evaluate_on_half_cheetah_returns_one_row_per_variant_without_success():
    task_set = HalfCheetahGroup(max_episode_steps=20)
    row = evaluate(_zeros(6), task_set, episodes_per_task=2, seed=0)
    assert list(row["tasks"]) == task_set.names
    assert all(t["success"] is None and t["score"] is None for t in row["tasks"].values())
    assert row["mean_success"] is None and math.isfinite(row["mean_return"])


# --- GymTasks ----------------------------------------------------------------------------------


def test_gym_tasks_with_mismatched_observation_shapes_raise_naming_both_shapes():
    with pytest.raises(
        ValueError,
        match=r"task 1 'MountainCarContinuous-v0' has observation shape \(2,\) but task 0 "
        r"'Pendulum-v1' has \(3,\)",
    ):
        GymTasks(["Pendulum-v1", "MountainCarContinuous-v0"])


def test_gym_tasks_rescale_actions_to_unit_bounds_and_use_registered_time_limits():
    tasks = GymTasks(
        ["Pendulum-v1", "Pendulum-v1"], make_kwargs=[{}, {"g": 3.7}], names=["earth", "mars"]
    )
    assert tasks.max_episode_steps == 200  # Pendulum-v1's registered limit
    env = tasks.make_env(tasks.task_id("mars"))
    assert env.base_env.envs[0].unwrapped.g == 3.7
    assert torch.equal(env.action_spec.space.high, torch.ones(1, 1))
    td = env.reset().set("action", torch.ones(1, 1))
    env.step(td)
    assert env.base_env.envs[0].unwrapped.last_u == pytest.approx(2.0)  # Pendulum's max torque
    assert torch.equal(td["observation"][0, 3:], torch.tensor([0.0, 1.0]))


def test_gym_tasks_reject_duplicate_names_and_missing_kwargs():
    with pytest.raises(ValueError, match="names must be distinct"):
        GymTasks(["Pendulum-v1", "Pendulum-v1"])
    with pytest.raises(ValueError, match="make_kwargs has 1 entries for 2 env_ids"):
        GymTasks(["Pendulum-v1", "MountainCarContinuous-v0"], make_kwargs=[{}])


def test_metaworld_task_subset_keeps_the_given_order_and_names_unknown_tasks():
    from picor_gin.tasks import MetaWorldMT10

    subset = MetaWorldMT10(tasks=["push-v3", "reach-v3"])
    assert subset.names == ["push-v3", "reach-v3"]
    assert subset.make_env(0).reset()["observation"].shape[-1] == 39 + 2
    with pytest.raises(ValueError, match=r"unknown task 'pusj-v3'; valid tasks: reach-v3, push-v3"):
        MetaWorldMT10(tasks=["reach-v3", "pusj-v3"])


def test_gym_tasks_turns_an_unknown_id_into_a_value_error_naming_the_task():
    from picor_gin.tasks import GymTasks

    with pytest.raises(ValueError, match=r"task 'Pendulm-v1'"):
        GymTasks(env_ids=["Pendulum-v1", "Pendulm-v1"])
