"""MOORE: Gram-Schmidt against hand-computed bases, orthonormal expert representations, a task's
output and gradients isolated from the other tasks' weights and heads, and the network inside SAC
and TD3, checkpoints included."""
from __future__ import annotations

import io

import gin
import pytest
import torch
from tensordict import TensorDict

from picor_gin.backbones import SAC, TD3
from picor_gin.learner import MultiTaskLearner
from picor_gin.networks import MooreNet, MooreNetwork, TaskHeads
from picor_gin.networks.moore import gram_schmidt
from tests.conftest import REPO
from tests.test_correction import _phase, _sac

NUM_TASKS, OBS_DIM, ACTION_DIM = 4, 6, 2  # observation: 2 state entries, then the one-hot id


def _observation(task_ids: list[int]) -> torch.Tensor:
    one_hot = torch.nn.functional.one_hot(torch.tensor(task_ids), NUM_TASKS).float()
    return torch.cat([torch.randn(len(task_ids), OBS_DIM - NUM_TASKS), one_hot], -1)


def _actor(num_experts: int = 3, out_features: int = 3) -> TaskHeads:
    torch.manual_seed(0)
    return MooreNetwork(expert_sizes=(16, 8), num_experts=num_experts).actor(OBS_DIM, out_features, NUM_TASKS)


def test_gram_schmidt_of_two_plane_vectors_is_the_hand_computed_basis():
    # u1 = (3, 4) / 5; (1, 0) - 0.6 u1 = (0.64, -0.48), of norm 0.8, so u2 = (0.8, -0.6).
    basis = gram_schmidt(torch.tensor([[[3.0, 4.0], [1.0, 0.0]]]))
    torch.testing.assert_close(basis, torch.tensor([[[0.6, 0.8], [0.8, -0.6]]]))


def test_gram_schmidt_of_a_dependent_vector_is_zero_with_a_finite_gradient():
    vectors = torch.tensor([[1.0, 2.0, 2.0], [2.0, 4.0, 4.0]], requires_grad=True)
    basis = gram_schmidt(vectors)
    torch.testing.assert_close(basis[0], torch.tensor([1.0, 2.0, 2.0]) / 3)
    assert basis[1].norm() < 1e-5
    basis.sum().backward()
    assert torch.isfinite(vectors.grad).all()


def test_each_samples_expert_representations_are_orthonormal_for_the_actor_and_the_critic():
    observation = _observation([0, 1, 2, 3, 1])
    actor = _actor(num_experts=4)
    critic = MooreNetwork(expert_sizes=(16, 8), num_experts=4).critic(OBS_DIM, ACTION_DIM, NUM_TASKS)
    for basis in (actor.trunk.representations(observation), critic.q1.trunk.representations(observation, torch.rand(5, 2))):
        assert basis.shape == (5, 4, 8)
        torch.testing.assert_close(basis @ basis.transpose(-1, -2), torch.eye(4).expand(5, 4, 4))


def test_with_one_expert_the_representation_is_tanh_of_the_task_weight_times_the_unit_expert_output():
    actor = _actor(num_experts=1)
    trunk: MooreNet = actor.trunk
    observation = _observation([2, 2])
    expert = trunk.experts[0](observation[:, :2])  # [2, 8]
    w = trunk.task_weights.weight[0, 2]  # task 2's only weight
    torch.testing.assert_close(trunk(observation), torch.tanh(w * expert / expert.norm(dim=-1, keepdim=True)))


def test_a_tasks_output_is_unchanged_when_another_tasks_mixing_weights_change():
    actor = _actor()
    observation = _observation([1, 1, 1])
    before = actor(observation)
    with torch.no_grad():
        actor.trunk.task_weights.weight[:, [0, 2, 3]] += 1.0  # column z holds task z's weights w_z
    assert torch.equal(actor(observation), before)
    with torch.no_grad():
        actor.trunk.task_weights.weight[:, 1] += 1.0
    assert not torch.allclose(actor(observation), before)


def test_task_z_gradient_reaches_its_head_its_weights_and_the_experts_only():
    actor = _actor()
    actor(_observation([2, 2, 2])).square().sum().backward()
    mixing = actor.trunk.task_weights.weight.grad  # [k, num_tasks]
    assert mixing[:, 2].abs().sum() > 0 and torch.equal(mixing[:, [0, 1, 3]], torch.zeros(3, 3))
    head = actor.weight.grad.flatten(1).abs().sum(-1)
    assert head[2] > 0 and torch.equal(head[[0, 1, 3]], torch.zeros(3))
    assert actor.bias.grad[2].abs().sum() > 0 and torch.equal(actor.bias.grad[[0, 1, 3]], torch.zeros(3, 3))
    assert all(p.grad.abs().sum() > 0 for p in actor.trunk.experts.parameters())


def _batch(size: int = 8) -> TensorDict:
    task_id = torch.arange(size) % NUM_TASKS
    return TensorDict(
        {"observation": _observation(task_id.tolist()), "action": torch.rand(size, ACTION_DIM) * 2 - 1, "task_id": task_id,
         "next": {"observation": _observation(task_id.tolist()), "reward": torch.randn(size, 1),
                  "terminated": torch.zeros(size, 1, dtype=torch.bool)}},
        batch_size=[size],
    )


@pytest.mark.parametrize("backbone_class", [SAC, TD3])
def test_moore_trains_inside_the_backbone_and_a_checkpoint_round_trip_gives_identical_outputs(backbone_class):
    def build(seed: int):
        torch.manual_seed(seed)
        network = MooreNetwork(expert_sizes=(16, 8), num_experts=3)
        return backbone_class(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=network)

    backbone, batch = build(0), _batch()
    assert isinstance(backbone.actor[0].trunk, MooreNet) and isinstance(backbone.critic.q1.trunk, MooreNet)
    for _ in range(2):  # two updates: TD3 steps its actor on every second one
        losses = backbone.losses(batch)
        sum(value for name, value in losses.items() if name.startswith("loss_")).backward()
        backbone.update_targets()
    assert all(p.grad.abs().sum() > 0 for p in [*backbone.actor.parameters(), *backbone.critic.parameters()])
    saved = io.BytesIO()
    torch.save(backbone.state_dict(), saved)
    saved.seek(0)
    restored = build(1)
    restored.load_state_dict(torch.load(saved))
    observation, action = batch["observation"], batch["action"]
    assert torch.equal(restored.actor[0](observation), backbone.actor[0](observation))
    for name in ("critic", "target_critic"):
        assert torch.equal(getattr(restored, name)(observation, action), getattr(backbone, name)(observation, action))


def test_the_actor_loss_and_the_corrections_advantage_through_moore_critics_reach_the_actor_only():
    """Both read the critic through frozen_q's functional call, which must leave it out of the graph."""
    sac = _sac(MooreNetwork(expert_sizes=(16, 8), num_experts=3))
    states, _, pi_prime, baseline = _phase(sac)
    advantage, _ = sac.correction_terms(states, baseline, pi_prime)
    for loss in (sac.losses(_batch())["loss_actor"], -advantage.mean()):
        sac.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        assert all(p.grad is not None and p.grad.any() for p in sac.actor[0].trunk.parameters())
        assert all(p.grad is None for p in [*sac.critic.parameters(), *sac.target_critic.parameters()])


@pytest.mark.parametrize(
    "sizes, message",
    [(dict(num_experts=0), "MooreNetwork.num_experts"), (dict(expert_sizes=(16, 2), num_experts=3), "MooreNetwork.num_experts"),
     (dict(expert_sizes=()), "MooreNetwork.expert_sizes")],
)
def test_moore_sizes_are_checked_naming_the_binding(sizes, message):
    with pytest.raises(ValueError, match=message):
        MooreNetwork(**sizes)


@pytest.mark.parametrize("gin_file", ["gin_configs/smoke/mt10_moore.gin", "gin_configs/smoke/halfcheetah_moore.gin"])
def test_the_smoke_files_bind_moore_at_the_smoke_width(gin_file):
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / gin_file)], [], skip_unknown=False)
    assert gin.query_parameter("MultiTaskLearner.network").selector == "MooreNetwork"
    assert MooreNetwork().expert_sizes == [64, 64]  # base/smoke.gin's HIDDEN_SIZES


def test_swapping_the_backbone_by_one_binding_keeps_moores_network():
    """The network is the learner's: tiny_moore.gin with TD3 bound is TD3 on MOORE, actor and critic."""
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings(
        [str(REPO / "gin_configs/tiny_moore.gin")], ["MultiTaskLearner.backbone = @TD3"], skip_unknown=False,
    )
    module = MultiTaskLearner(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, task_names=list("abcd"))
    assert isinstance(module.backbone, TD3)
    assert isinstance(module.backbone.actor[0].trunk, MooreNet) and isinstance(module.backbone.critic.q1.trunk, MooreNet)
