"""Networks: the multi-head network gives each task its own output head; soft modularization
routes each sample through its modules by task and state."""
from __future__ import annotations

import pytest
import torch

from picor_gin.networks import MooreNetwork, MultiHeadMLP, OneHotMLP, PaCoNetwork, SoftModularNetwork, TaskHeads

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


@pytest.mark.parametrize("network", [
    OneHotMLP(hidden_sizes=(8,)), MultiHeadMLP(hidden_sizes=(8,)),
    SoftModularNetwork(encoder_sizes=(8,), module_features=8, routing_features=8),
    MooreNetwork(expert_sizes=(8,), num_experts=2), PaCoNetwork(hidden_sizes=(8,), num_parameter_sets=2),
], ids=lambda network: type(network).__name__)
def test_every_networks_critic_is_two_independent_q_networks(network):
    """Twins that shared parameters would make the min of eq. 2's target a no-op."""
    torch.manual_seed(0)
    critic = network.critic(OBS_DIM, 2, NUM_TASKS)
    q = critic(_observation(1, 5), torch.rand(5, 2))
    assert q.shape == (5, 2) and not torch.allclose(q[:, 0], q[:, 1])
    assert {id(p) for p in critic.q1.parameters()}.isdisjoint(id(p) for p in critic.q2.parameters())


def _soft_modular(**sizes):
    sizes = {"encoder_sizes": (16, 16), "module_features": 8, "routing_features": 8, **sizes}
    return SoftModularNetwork(**sizes).actor(OBS_DIM, 3, NUM_TASKS)


def test_routing_weights_are_distributions_that_depend_on_the_task():
    torch.manual_seed(0)
    actor = _soft_modular(num_layers=3, num_modules=4)
    state = torch.randn(1, OBS_DIM - NUM_TASKS)
    one_hots = torch.eye(NUM_TASKS)
    weights, last, _ = actor.routing(torch.cat([state.expand(NUM_TASKS, -1), one_hots], -1))
    assert [w.shape for w in weights] == [(NUM_TASKS, 4, 4)] * 2 and last.shape == (NUM_TASKS, 4)
    for p in (*weights, last):  # each module's input mix, and the output mix, sum to one
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        assert not torch.allclose(p[0], p[1])  # same state, another task: another routing


def test_with_one_module_per_layer_the_network_is_the_plain_chain_of_its_layers():
    """All routing weights are then 1: out = W_o relu(M_2 relu(M_1 relu(f(s))))."""
    torch.manual_seed(0)
    actor = _soft_modular(num_layers=2, num_modules=1)
    observation = _observation(task=1)
    hidden = torch.relu(actor.state_encoder(observation[:, :-NUM_TASKS]))
    for weight, bias in zip(actor.module_weights, actor.module_biases):
        hidden = torch.relu(hidden @ weight[0] + bias[0])
    torch.testing.assert_close(actor(observation), actor.output(hidden))


def test_every_part_of_the_soft_modular_network_gets_gradient():
    torch.manual_seed(0)
    actor = _soft_modular(num_layers=3, num_modules=2)
    actor(torch.cat([_observation(0), _observation(3)])).square().sum().backward()
    for name, p in actor.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_soft_modular_sizes_are_checked():
    with pytest.raises(ValueError, match="num_modules must be >= 1"):
        SoftModularNetwork(num_modules=0)
