"""The TD3 backbone: the correction's scaled squared distance, the deterministic advantage,
delayed actor and target updates, and exploration noise only when exploring."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from picor_gin.backbones import TD3
from picor_gin.networks import OneHotMLP

NUM_TASKS, OBS_DIM, ACTION_DIM = 4, 6, 2


def _td3(**kwargs) -> TD3:
    torch.manual_seed(0)
    return TD3(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(8, 8)), **kwargs)


def _states(count: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    task_id = torch.arange(count) % NUM_TASKS
    observation = torch.cat([torch.randn(count, 2), torch.nn.functional.one_hot(task_id, NUM_TASKS).float()], -1)
    return observation, task_id


def _batch(size: int = 8) -> TensorDict:
    observation, task_id = _states(size)
    return TensorDict(
        {"observation": observation, "action": torch.rand(size, ACTION_DIM) * 2 - 1, "task_id": task_id,
         "next": {"observation": _states(size)[0], "reward": torch.randn(size, 1),
                  "terminated": torch.zeros(size, 1, dtype=torch.bool)}},
        batch_size=[size],
    )


@pytest.mark.parametrize("sigma, expected", [(0.1, 10.0), (0.2, 2.5)])
def test_correction_divergence_is_the_hand_computed_scaled_squared_distance(sigma, expected):
    # Actions apart by [0.2, -0.4]: KL(N(a, s^2 I) || N(a', s^2 I)) = (0.04 + 0.16) / (2 s^2).
    td3 = _td3(exploration_noise=sigma)
    observation, task_id = _states()
    pi_prime = TensorDict({"action": td3.actor(observation).detach() + torch.tensor([0.2, -0.4])}, batch_size=[5])
    states = TensorDict({"observation": observation, "task_id": task_id}, batch_size=[5])
    _, divergence = td3.correction_terms(states, torch.zeros(5), pi_prime)
    assert torch.allclose(divergence, torch.full((5,), expected), atol=1e-5)
    assert torch.allclose(td3.divergence(observation, pi_prime), torch.full((5,), expected), atol=1e-5)


def test_advantage_uses_the_deterministic_actor_and_is_zero_at_pi_t():
    td3 = _td3()
    observation, task_id = _states()
    pi_t = td3.policy_snapshot(observation)
    assert torch.equal(pi_t["action"], td3.actor(observation).detach())
    states = TensorDict({"observation": observation, "task_id": task_id}, batch_size=[5])
    baseline = td3.value_baseline(states, pi_t)
    assert torch.equal(baseline, td3.critic(observation, pi_t["action"]).min(-1).values.detach())
    advantage, divergence = td3.correction_terms(states, baseline, pi_t)
    assert torch.allclose(advantage, torch.zeros(5), atol=1e-6) and torch.allclose(divergence, torch.zeros(5))
    advantage.sum().backward()  # the advantage is differentiable in the actor only
    assert all(p.grad is not None for p in td3.actor.parameters())
    assert all(p.grad is None for p in td3.critic.parameters())


def test_actor_loss_and_target_updates_come_every_policy_delay_critic_updates():
    td3 = _td3(policy_delay=2)
    with torch.no_grad():  # online networks away from their targets, as after optimizer steps
        for p in [*td3.critic.parameters(), *td3.actor.parameters()]:
            p.add_(1.0)
    targets = [p.clone() for p in [*td3.target_critic.parameters(), *td3.target_actor.parameters()]]

    def targets_moved() -> list[bool]:
        now = [*td3.target_critic.parameters(), *td3.target_actor.parameters()]
        return [not torch.equal(a, b) for a, b in zip(targets, now)]

    first = td3.losses(_batch())
    td3.update_targets()
    assert "loss_actor" not in first and "loss_critic" in first
    assert not any(targets_moved())
    second = td3.losses(_batch())
    td3.update_targets()
    assert "loss_actor" in second
    assert all(targets_moved())  # critic and actor targets, on the delayed update only
    assert td3.task_updates == [2] * NUM_TASKS  # a batch of every task advances every task


def test_tasks_trained_in_turn_each_get_the_actors_update_every_policy_delay_of_their_own_updates():
    """Round robin over an even task count with a delay of 2: one counter for all tasks would
    give the actor's update to the odd turns' tasks only."""
    td3 = _td3(policy_delay=2)
    actor_updates = []
    for turn in range(2 * NUM_TASKS):
        task = turn % NUM_TASKS
        batch = _batch()
        batch["task_id"] = torch.full_like(batch["task_id"], task)
        td3.start_update([task])
        if "loss_actor" in td3.losses(batch):
            actor_updates.append(task)
        td3.update_targets()
    assert actor_updates == list(range(NUM_TASKS))  # each task's second update, in the second round
    assert td3.task_updates == [2] * NUM_TASKS


def test_the_update_counters_are_saved_with_the_state_dict():
    td3 = _td3()
    td3.start_update([2])
    td3.losses(_batch())
    td3.update_targets()
    restored = _td3()
    restored.load_state_dict(td3.state_dict())
    assert restored.task_updates == [0, 0, 1, 0]


def test_a_checkpoint_with_one_counter_for_all_tasks_gives_each_task_its_phase():
    state = _td3().state_dict()
    state["_extra_state"] = {"critic_updates": 3}
    restored = _td3()
    restored.load_state_dict(state)
    assert restored.task_updates == [3] * NUM_TASKS


def test_exploration_noise_is_added_only_when_exploring_and_actions_stay_in_bounds():
    td3 = _td3(exploration_noise=0.5)
    observation, _ = _states(64)
    mean_action = td3.actor(observation).detach()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        deterministic = td3.policy(TensorDict({"observation": observation}, batch_size=[64]))["action"]
    with set_exploration_type(ExplorationType.RANDOM):
        noisy = td3.policy(TensorDict({"observation": observation}, batch_size=[64]))["action"]
    assert torch.allclose(deterministic, mean_action)
    assert not torch.allclose(noisy, mean_action) and noisy.abs().max() <= 1.0
