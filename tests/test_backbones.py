"""The SAC backbone: its TD target, loss isolation, temperatures and target networks."""
from __future__ import annotations

import inspect

import pytest
import torch
from tensordict import TensorDict

from picor_gin.backbones import SAC, soft_bellman_target
from picor_gin.networks import OneHotMLP

NUM_TASKS, OBS_DIM, ACTION_DIM = 4, 6, 2


def _sac(**kwargs) -> SAC:
    torch.manual_seed(0)
    return SAC(
        obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS,
        network=OneHotMLP(hidden_sizes=(8, 8)), **kwargs,
    )


def _observation(task_id: torch.Tensor) -> torch.Tensor:
    """Random 2-D positions with the one-hot task id appended (PointGoals' layout)."""
    position = torch.randn(*task_id.shape, 2)
    return torch.cat([position, torch.nn.functional.one_hot(task_id, NUM_TASKS).float()], -1)


def _batch(task: int = 2, size: int = 8, terminated: bool = False) -> TensorDict:
    torch.manual_seed(1)
    task_id = torch.full((size,), task, dtype=torch.long)
    return TensorDict(
        {
            "observation": _observation(task_id),
            "action": torch.rand(size, ACTION_DIM) * 1.8 - 0.9,
            "task_id": task_id,
            "next": {
                "observation": _observation(task_id),
                "reward": torch.randn(size, 1),
                "terminated": torch.full((size, 1), terminated),
            },
        },
        batch_size=[size],
    )


def _grads_are_zero(params) -> bool:
    return all(p.grad is None or not p.grad.any() for p in params)


# --- soft_bellman_target -------------------------------------------------------------------------


def test_soft_bellman_target_is_the_reward_alone_when_terminated():
    target = soft_bellman_target(
        reward=torch.tensor([1.0]),
        terminated=torch.tensor([True]),
        next_target_q=torch.tensor([[2.0, 4.0]]),
        next_log_prob=torch.tensor([-1.0]),
        alpha=torch.tensor([0.1]),
        gamma=0.5,
    )
    assert torch.allclose(target, torch.tensor([1.0]), atol=1e-6)


def test_soft_bellman_target_takes_no_truncation_input():
    # Truncation must not stop the bootstrap, so the target cannot even be told about it.
    parameters = inspect.signature(soft_bellman_target).parameters
    assert not any("trunc" in name or name == "done" for name in parameters), list(parameters)


def test_soft_bellman_target_uses_each_sample_own_temperature():
    target = soft_bellman_target(
        reward=torch.tensor([1.0, 1.0]),
        terminated=torch.tensor([False, False]),
        next_target_q=torch.tensor([[2.0, 4.0], [2.0, 4.0]]),
        next_log_prob=torch.tensor([-1.0, -1.0]),
        alpha=torch.tensor([0.1, 1.0]),
        gamma=0.5,
    )
    # First sample: 1 + 0.5 * (min(2, 4) - 0.1 * (-1)) = 2.05; second: 1 + 0.5 * (2 + 1.0) = 2.5.
    assert torch.allclose(target, torch.tensor([2.05, 2.5]), atol=1e-6)


# --- SAC losses ----------------------------------------------------------------------------------


def test_critic_loss_ignores_truncation_and_done_flags_and_keeps_bootstrapping():
    sac = _sac()
    plain = _batch()
    truncated = _batch()
    truncated["next", "truncated"] = torch.ones(8, 1, dtype=torch.bool)
    truncated["next", "done"] = torch.ones(8, 1, dtype=torch.bool)
    torch.manual_seed(2)
    loss_plain = sac.losses(plain)["loss_critic"]
    torch.manual_seed(2)
    loss_truncated = sac.losses(truncated)["loss_critic"]
    assert torch.equal(loss_plain, loss_truncated)


def test_critic_loss_on_terminated_transitions_regresses_q_on_the_reward():
    sac = _sac()
    batch = _batch(terminated=True)
    q = sac.critic(batch["observation"], batch["action"])  # [B, 2]
    expected = 0.5 * (q - batch["next", "reward"]).square().sum(-1).mean()
    assert torch.allclose(sac.losses(batch)["loss_critic"], expected, atol=1e-6)


def test_temperature_loss_of_a_task_2_batch_moves_only_log_alpha_2():
    sac = _sac(initial_alpha=0.5)  # log alpha != 0, so a leak into the actor would show
    losses = sac.losses(_batch(task=2))
    losses["loss_alpha"].backward()
    grad = sac.log_alpha.grad
    assert grad[2] != 0
    assert torch.equal(grad[[0, 1, 3]], torch.zeros(3))
    # d/dlog_alpha_2 of -(log_alpha_2 (log pi + H_target)).mean() = entropy - H_target.
    assert torch.isclose(grad[2], losses["entropy"] - sac.target_entropy, atol=1e-5)
    assert _grads_are_zero(sac.actor.parameters())
    assert _grads_are_zero(sac.critic.parameters())


def test_critic_loss_gives_no_gradient_to_the_actor_nor_the_temperatures():
    sac = _sac()
    sac.losses(_batch())["loss_critic"].backward()
    assert _grads_are_zero(sac.actor.parameters())
    assert _grads_are_zero([sac.log_alpha])
    assert not _grads_are_zero(sac.critic.parameters())


def test_actor_loss_gives_no_gradient_to_the_critic_nor_the_temperatures():
    sac = _sac()
    sac.losses(_batch())["loss_actor"].backward()
    assert _grads_are_zero(sac.critic.parameters())
    assert _grads_are_zero([sac.log_alpha])
    assert not _grads_are_zero(sac.actor.parameters())


@pytest.mark.parametrize("backbone", ["sac", "td3"])
def test_a_critic_batch_trains_the_critic_and_leaves_the_actor_on_the_task_batch(backbone):
    from picor_gin.backbones import TD3

    model = _sac() if backbone == "sac" else TD3(
        obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(8, 8)), policy_delay=1
    )
    task_batch, critic_batch = _batch(task=2), _batch(task=0, size=8, terminated=True)
    critic_batch["observation"] += 1.0  # not the task batch's states

    def gradients(batch, critic=None):
        torch.manual_seed(5)
        model.zero_grad()
        losses = model.losses(batch, critic)
        (losses["loss_critic"] + losses["loss_actor"]).backward()
        groups = model.parameter_groups()
        return [p.grad.clone() for p in groups["critic"]], [p.grad.clone() for p in groups["actor"]], losses

    critic_grads, actor_grads, losses = gradients(task_batch, critic_batch)
    alone_critic_grads, _, alone = gradients(critic_batch)  # the critic batch as the only batch
    _, task_actor_grads, _ = gradients(task_batch, _batch(task=0, size=8, terminated=True))
    # The critic's loss is the critic batch's alone (the same draws: it is computed first).
    assert torch.equal(losses["loss_critic"], alone["loss_critic"])
    assert all(torch.equal(a, b) for a, b in zip(critic_grads, alone_critic_grads))
    # The actor's gradient comes from the task batch: another critic batch of the same size
    # and draws leaves it as it is.
    assert all(torch.equal(a, b) for a, b in zip(actor_grads, task_actor_grads))


def test_losses_never_reach_the_target_critic():
    sac = _sac()
    losses = sac.losses(_batch())
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    assert all(not p.requires_grad and p.grad is None for p in sac.target_critic.parameters())


def test_default_target_entropy_is_minus_action_dim():
    assert _sac().target_entropy == -float(ACTION_DIM)
    assert _sac(target_entropy=-0.5).target_entropy == -0.5


def test_parameter_groups_are_disjoint_and_cover_actor_critic_and_log_alpha():
    sac = _sac()
    groups = sac.parameter_groups()
    assert set(groups) == {"actor", "critic", "alpha"}
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    assert groups["alpha"] == [sac.log_alpha]
    assert sac.log_alpha.shape == (NUM_TASKS,)


@pytest.mark.parametrize("rate", [0.005, 0.25])
def test_update_targets_moves_the_target_toward_online_by_exactly_the_rate(rate):
    sac = _sac(target_update_rate=rate)
    with torch.no_grad():
        for p in sac.critic.parameters():
            p.add_(torch.randn_like(p))
    online = [p.detach().clone() for p in sac.critic.parameters()]
    old_target = [p.detach().clone() for p in sac.target_critic.parameters()]
    assert not torch.equal(online[0], old_target[0])
    sac.update_targets()
    for new, old, live in zip(sac.target_critic.parameters(), old_target, online):
        assert torch.allclose(new, old + rate * (live - old), atol=1e-7)
    # The online critic itself is untouched.
    assert all(torch.equal(p, q) for p, q in zip(sac.critic.parameters(), online))


@pytest.mark.parametrize(
    "kwargs, name",
    [({"gamma": 1.0}, "gamma"), ({"target_update_rate": 0.0}, "target_update_rate"),
     ({"initial_alpha": 0.0}, "initial_alpha")],
)
def test_out_of_range_hyperparameters_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _sac(**kwargs)


def test_task_stats_alpha_is_the_exp_of_log_alpha_per_task():
    sac = _sac(initial_alpha=0.1)
    alpha = sac.task_stats()["alpha"]
    assert alpha.shape == (NUM_TASKS,)
    assert torch.allclose(alpha, torch.full((NUM_TASKS,), 0.1))


# --- policy snapshots and the correction baseline -------------------------------------------------


def test_policy_snapshot_is_detached_and_batched_like_the_states():
    sac = _sac()
    task_id = torch.arange(NUM_TASKS).unsqueeze(-1).expand(NUM_TASKS, 5)
    snapshot = sac.policy_snapshot(_observation(task_id))
    assert snapshot.batch_size == torch.Size([NUM_TASKS, 5])
    assert snapshot["loc"].shape == snapshot["scale"].shape == (NUM_TASKS, 5, ACTION_DIM)
    assert snapshot["log_prob"].shape == (NUM_TASKS, 5)
    assert (snapshot["action"].abs() < 1).all()
    assert not any(v.requires_grad for v in snapshot.values())


def test_value_baseline_on_all_tasks_at_once_equals_a_loop_over_tasks():
    sac = _sac(initial_alpha=0.3)
    with torch.no_grad():
        sac.log_alpha.copy_(torch.tensor([-2.0, -1.0, 0.0, 0.5]))  # distinct per-task alpha
    task_id = torch.arange(NUM_TASKS).unsqueeze(-1).expand(NUM_TASKS, 5)
    observation = _observation(task_id)
    pi_t = sac.policy_snapshot(observation)
    states = TensorDict({"observation": observation, "task_id": task_id}, batch_size=task_id.shape)
    batched = sac.value_baseline(states, pi_t)
    assert batched.shape == (NUM_TASKS, 5)
    for z in range(NUM_TASKS):
        q = sac.critic(observation[z], pi_t["action"][z]).min(-1).values
        expected = q - sac.log_alpha[z].exp() * pi_t["log_prob"][z]
        assert torch.allclose(batched[z], expected, atol=1e-6)
        assert torch.allclose(sac.value_baseline(states[z], pi_t[z]), expected, atol=1e-6)


def test_critic_estimates_are_the_twin_min_q_at_the_snapshots_action_per_state():
    sac = _sac()
    task_id = torch.arange(NUM_TASKS).unsqueeze(-1).expand(NUM_TASKS, 5)
    observation = _observation(task_id)
    snapshot = sac.policy_snapshot(observation)
    estimates = sac.critic_estimates(observation, snapshot)
    assert estimates.keys() == {"q"} and not estimates["q"].requires_grad
    both = sac.critic(observation, snapshot["action"])  # [tasks, states, 2]
    assert not torch.equal(both[..., 0], both[..., 1])  # the min has a choice to make
    assert torch.equal(estimates["q"], both.min(-1).values)
