"""Networks: the multi-head network gives each task its own output head."""
from __future__ import annotations

import torch

from picor_gin.networks import MultiHeadMLP, OneHotMLP, TaskHeads

NUM_TASKS, OBS_DIM = 4, 6


def _observation(task: int, count: int = 3) -> torch.Tensor:
    one_hot = torch.nn.functional.one_hot(torch.full((count,), task), NUM_TASKS).float()
    return torch.cat([torch.randn(count, OBS_DIM - NUM_TASKS), one_hot], -1)


def test_task_z_loss_reaches_head_z_and_the_trunk_and_no_other_head():
    torch.manual_seed(0)
    actor = MultiHeadMLP(hidden_sizes=(16, 16)).actor(OBS_DIM, 3, NUM_TASKS)
    assert isinstance(actor, TaskHeads)
    actor(_observation(task=2)).square().sum().backward()
    head_grads = actor.weight.grad.flatten(1).abs().sum(-1)
    assert head_grads[2] > 0 and torch.equal(head_grads[[0, 1, 3]], torch.zeros(3))
    assert actor.bias.grad[2].abs().sum() > 0 and torch.equal(actor.bias.grad[[0, 1, 3]], torch.zeros(3, 3))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.trunk.parameters())


def test_each_sample_is_answered_by_its_own_tasks_head():
    torch.manual_seed(0)
    actor = MultiHeadMLP(hidden_sizes=(16,)).actor(OBS_DIM, 2, NUM_TASKS)
    observation = torch.cat([_observation(0, 1), _observation(3, 1)])
    features = actor.trunk(observation)
    expected = torch.stack([features[0] @ actor.weight[0] + actor.bias[0], features[1] @ actor.weight[3] + actor.bias[3]])
    assert torch.allclose(actor(observation), expected, atol=1e-6)


def test_critics_of_both_networks_return_both_twins():
    for network in (OneHotMLP(hidden_sizes=(8,)), MultiHeadMLP(hidden_sizes=(8,))):
        critic = network.critic(OBS_DIM, 2, NUM_TASKS)
        assert critic(_observation(1, 5), torch.zeros(5, 2)).shape == (5, 2)
