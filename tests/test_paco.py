"""PaCo: task z's network is the MLP of Phi w_z, its loss reaches Phi and w_z only; the loss
maskout drops a task over the threshold and the w-reset re-draws that task's w alone."""
from __future__ import annotations

import copy

import gin
import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchjd.aggregation import UPGrad

from picor_gin.backbones import SAC, TD3
from picor_gin.gradient_surgery import TorchJDAggregation
from picor_gin.learner import MultiTaskLearner
from picor_gin.networks import OneHotMLP, PaCoNet, PaCoNetwork
from picor_gin.objectives import PaCoLosses
from picor_gin.run.experiment import Experiment
from picor_gin.tasks import PointGoals
from tests.conftest import REPO, run_in_process
from tests.test_gradient_surgery import _all_task_batches
from tests.test_learner import _batches, _fit

NUM_TASKS, STATE_DIM, ACTION_DIM = 4, 2, 2
SMALL = PaCoNetwork(hidden_sizes=(8, 8), num_parameter_sets=3)


def _observation(task: int, count: int = 5) -> torch.Tensor:
    one_hot = nn.functional.one_hot(torch.full((count,), task), NUM_TASKS).float()
    return torch.cat([torch.randn(count, STATE_DIM), one_hot], -1)


def _randomised(net: PaCoNet) -> PaCoNet:
    """Distinct parameter sets: they start identical, which would hide a wrong mix over K."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return net


def test_one_layer_against_hand_computed_values():
    """W = 0.5 * 2 + 2 * (-1) = -1 and b = 0.5 * 1 + 2 * 3 = 6.5, so x = 2 gives 4.5."""
    net = PaCoNet(1, 1, num_tasks=2, hidden_sizes=(), num_parameter_sets=2)
    with torch.no_grad():
        net.parameter_set_weights[0].copy_(torch.tensor([[[2.0]], [[-1.0]]]))
        net.parameter_set_biases[0].copy_(torch.tensor([[1.0], [3.0]]))
        net.w.copy_(torch.tensor([[0.0, 0.0], [0.5, 2.0]]))
    assert net(torch.tensor([[2.0, 0.0, 1.0]])).item() == pytest.approx(4.5)


def test_task_network_equals_a_plain_mlp_with_the_composed_parameters_phi_w_z():
    torch.manual_seed(0)
    actor = _randomised(SMALL.actor(STATE_DIM + NUM_TASKS, 3, NUM_TASKS))
    for z in range(NUM_TASKS):
        w = actor.w[z]
        layers = [nn.Linear(8, 8) for _ in range(3)]
        layers[0], layers[-1] = nn.Linear(STATE_DIM, 8), nn.Linear(8, 3)
        with torch.no_grad():
            for linear, weight, bias in zip(layers, actor.parameter_set_weights, actor.parameter_set_biases):
                linear.weight.copy_((w[:, None, None] * weight).sum(0).T)
                linear.bias.copy_(w @ bias)
        mlp = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
        observation = _observation(z)
        torch.testing.assert_close(actor(observation), mlp(observation[:, :STATE_DIM]), rtol=1e-4, atol=1e-4)


def test_a_mixed_batch_gives_each_sample_its_own_tasks_network():
    torch.manual_seed(0)
    critic = _randomised(SMALL.critic(STATE_DIM + NUM_TASKS, ACTION_DIM, NUM_TASKS).q1)
    observation, action = torch.cat([_observation(1), _observation(3)]), torch.randn(10, ACTION_DIM)
    one_by_one = torch.cat([critic(observation[i:i + 1], action[i:i + 1]) for i in range(10)])
    torch.testing.assert_close(critic(observation, action), one_by_one)


def test_task_z_loss_reaches_phi_and_w_z_and_no_other_tasks_w():
    torch.manual_seed(0)
    actor = _randomised(SMALL.actor(STATE_DIM + NUM_TASKS, 3, NUM_TASKS))
    actor(_observation(task=2)).square().sum().backward()
    assert actor.w.grad[2].abs().sum() > 0
    assert torch.equal(actor.w.grad[[0, 1, 3]], torch.zeros(3, 3))
    for p in [*actor.parameter_set_weights, *actor.parameter_set_biases]:
        assert p.grad.abs().sum() > 0


def test_the_parameter_sets_start_identical_and_w_standard_normal():
    """The authors' use_identical_init, and their task encoder's normal_ initialisation."""
    torch.manual_seed(0)
    net = PaCoNetwork(hidden_sizes=(64,), num_parameter_sets=5).actor(STATE_DIM + 100, 2, 100)
    for weight in net.parameter_set_weights:
        assert torch.equal(weight, weight[:1].expand_as(weight))
    assert net.w.mean().abs() < 0.15 and (net.w.std() - 1).abs() < 0.1


def test_a_state_dict_in_a_fresh_network_gives_identical_outputs():
    torch.manual_seed(0)
    actor = _randomised(SMALL.actor(STATE_DIM + NUM_TASKS, 3, NUM_TASKS))
    fresh = SMALL.actor(STATE_DIM + NUM_TASKS, 3, NUM_TASKS)
    fresh.load_state_dict(actor.state_dict())
    observation = torch.cat([_observation(z) for z in range(NUM_TASKS)])
    assert torch.equal(fresh(observation), actor(observation))


def _fake_batch(task_id: list[int], value: list[float]) -> TensorDict:
    return TensorDict({"task_id": torch.tensor(task_id), "value": torch.tensor(value)}, batch_size=[len(task_id)])


def _value_losses(batch, critic_batch=None):
    """Each term the mean of its batch's "value": the task losses are then known by hand."""
    critic_batch = batch if critic_batch is None else critic_batch
    return {"loss_critic": critic_batch["value"].mean(), "loss_actor": batch["value"].mean(), "q": batch["value"].mean()}


def _objective(backbone: SAC, **kwargs) -> PaCoLosses:
    objective = PaCoLosses(**kwargs)
    objective.setup(backbone, PointGoals(num_tasks=NUM_TASKS), seed=0, obs_dim=STATE_DIM + NUM_TASKS, action_dim=ACTION_DIM)
    return objective


def _sac(network=SMALL) -> SAC:
    return SAC(obs_dim=STATE_DIM + NUM_TASKS, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=network)


def _terms(objective: PaCoLosses, backbone: SAC, batch, critic_batch=None) -> dict[str, float]:
    terms = objective.losses(backbone, _value_losses, "online", batch, critic_batch)
    return {k: float(v) for k, v in terms.items()}


def test_a_task_over_the_threshold_is_masked_out_and_one_under_it_is_not():
    """Task 0's loss is 2 (critic) + 2 (actor) = 4; task 1's 6000 + 6000 = 12000."""
    backbone = _sac()
    batch = _fake_batch([0, 0, 1, 1], [1.0, 3.0, 5000.0, 7000.0])
    masked = _terms(_objective(backbone, loss_threshold=3e3), backbone, batch)
    # Task 1's samples count as zeros in the means: (1 + 3 + 0 + 0) / 4.
    assert masked["loss_critic"] == masked["loss_actor"] == pytest.approx(1.0)
    assert masked["maskout_share"] == 0.5
    assert masked["q"] == pytest.approx(3001.0)  # diagnostics are not masked
    kept = _terms(_objective(backbone, loss_threshold=2e4), backbone, batch)
    assert kept["loss_critic"] == kept["loss_actor"] == pytest.approx(3001.0) and kept["maskout_share"] == 0.0


def test_with_a_critic_batch_each_task_is_judged_on_its_own_critic_samples():
    """Task 0 trains the actor (value 1) and has critic samples of value 2: loss 3. Task 1 is
    only in the critic's batch, at 9000: masked, its critic samples count as zeros."""
    backbone = _sac()
    batch, critic_batch = _fake_batch([0, 0], [1.0, 1.0]), _fake_batch([0, 1], [2.0, 9000.0])
    unmasked = _terms(_objective(backbone, loss_threshold=1e4), backbone, batch, critic_batch)
    assert unmasked == pytest.approx({k: float(v) for k, v in _value_losses(batch, critic_batch).items()} | {"maskout_share": 0.0})
    masked = _terms(_objective(backbone), backbone, batch, critic_batch)
    assert masked["loss_critic"] == pytest.approx(1.0) and masked["loss_actor"] == pytest.approx(1.0)


def _paco_ws(backbone) -> list[torch.Tensor]:
    return [m.w.detach().clone() for m in backbone.modules() if isinstance(m, PaCoNet)]


def test_the_w_reset_redraws_only_the_masked_tasks_w_in_every_network_targets_included():
    torch.manual_seed(0)
    backbone = _sac()
    objective = _objective(backbone)
    before = _paco_ws(backbone)
    assert len(before) == 5  # actor, twin critics, twin target critics
    objective.losses(backbone, _value_losses, "online", _fake_batch([2, 0], [5000.0, 1.0]))
    objective.after_step(backbone)
    # The authors' interpolation: uniform(0, 1) weights over the unmasked tasks, L1-normalised.
    mix = torch.rand(1, NUM_TASKS, generator=torch.Generator().manual_seed(0))
    mix[0, 2] = 0.0
    mix = mix / mix.sum()
    for old, new in zip(before, _paco_ws(backbone)):
        torch.testing.assert_close(new[2], (mix @ old)[0])
        assert torch.equal(new[[0, 1, 3]], old[[0, 1, 3]])
    assert objective.w_resets.tolist() == [0, 0, 1, 0]
    assert objective.summary() == {"w_resets": {"goal0": 0, "goal1": 0, "goal2": 1, "goal3": 0}}
    reset = _paco_ws(backbone)
    objective.after_step(backbone)  # nothing masked since: nothing moves
    assert all(torch.equal(a, b) for a, b in zip(reset, _paco_ws(backbone)))
    assert objective.w_resets.tolist() == [0, 0, 1, 0]


def test_a_resumed_objective_draws_the_reset_the_uninterrupted_one_would():
    backbone = _sac()
    objective = _objective(backbone)
    objective.losses(backbone, _value_losses, "online", _fake_batch([2], [5000.0]))
    objective.after_step(backbone)  # one draw taken
    resumed = _objective(backbone)
    resumed.load_state_dict(objective.state_dict())
    assert torch.equal(torch.rand(3, generator=objective._generator), torch.rand(3, generator=resumed._generator))


def test_paco_losses_on_a_network_without_paco_is_refused_naming_the_binding():
    with pytest.raises(ValueError, match=r"bind MultiTaskLearner.network = @PaCoNetwork\(\)"):
        _objective(_sac(OneHotMLP(hidden_sizes=(8,))))


@pytest.mark.parametrize("backbone_class", [SAC, TD3])
def test_in_a_learner_on_sac_and_td3_a_masked_update_steps_nothing_and_resets_its_tasks_w(backbone_class):
    """The backbone's own losses run on PaCo's networks; then, with every task over the
    threshold (1e-9 on a squared loss), each update's gradient is zero and the w-reset after
    its step redraws the batch's task's w."""
    torch.manual_seed(0)
    module = MultiTaskLearner(
        obs_dim=STATE_DIM + NUM_TASKS, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, task_names=list("abcd"),
        backbone=backbone_class, network=SMALL, objective=PaCoLosses(loss_threshold=1e-9),
    )
    module.objective.setup(module.backbone, PointGoals(num_tasks=NUM_TASKS), 0, STATE_DIM + NUM_TASKS, ACTION_DIM)
    batches = _batches(module, 4)  # tasks 0, 1, 2, 3 in turn
    assert all(torch.isfinite(v) for v in module.backbone.losses(batches[0].task).values())
    module._losses = lambda batch, critic_batch=None: {"loss_critic": module.backbone.critic(batch["observation"], batch["action"]).square().mean()}
    phi = [p.detach().clone() for n, p in module.backbone.critic.named_parameters() if "parameter_set" in n]
    before = _paco_ws(module.backbone)
    _fit(module, batches)
    assert module.objective.w_resets.tolist() == [1, 1, 1, 1]
    assert all(torch.equal(a, b) for a, b in zip(phi, [p for n, p in module.backbone.critic.named_parameters() if "parameter_set" in n]))
    assert all(not torch.equal(a, b) for a, b in zip(before, _paco_ws(module.backbone)))


def test_with_a_torchjd_aggregator_a_masked_task_adds_a_zero_row():
    """UPGrad on all-task batches: with nothing masked the networks learn; with every task
    masked the Jacobian is zero, nothing but w moves, and each w becomes the empty mix, 0."""
    for threshold, learns in ((3e3, True), (1e-9, False)):
        torch.manual_seed(0)
        module = MultiTaskLearner(
            obs_dim=STATE_DIM + NUM_TASKS, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, task_names=list("abcd"),
            backbone=SAC, network=SMALL, objective=PaCoLosses(loss_threshold=threshold),
            gradient_surgery=TorchJDAggregation(UPGrad()),
        )
        module.objective.setup(module.backbone, PointGoals(num_tasks=NUM_TASKS), 0, STATE_DIM + NUM_TASKS, ACTION_DIM)
        module._losses = lambda batch, critic_batch=None: {"loss_critic": module.backbone.critic(batch["observation"], batch["action"]).square().mean()}
        critic = copy.deepcopy(module.backbone.critic.q1.parameter_set_weights[0])
        _fit(module, _all_task_batches(module, 2))
        assert learns != torch.equal(critic, module.backbone.critic.q1.parameter_set_weights[0])
        assert learns != torch.equal(module.backbone.critic.q1.w, torch.zeros(NUM_TASKS, 3))


def _build(tmp_path, *bindings: str):
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / "gin_configs/tiny_paco.gin")], list(bindings), skip_unknown=False)
    return Experiment().build(tmp_path)


def test_tiny_paco_composes_with_picors_correction_and_with_a_torchjd_aggregator(tmp_path):
    picor = _build(tmp_path, "import picor_gin.correction", "MultiTaskLearner.correction = @PolicyCorrection")
    assert picor.module.correction is not None and isinstance(picor.module.objective, PaCoLosses)
    gin.clear_config()
    upgrad = _build(
        tmp_path, "MultiTaskLearner.gradient_surgery = @TorchJDAggregation()", "TorchJDAggregation.aggregator = @UPGrad()",
        "MultiTaskData.sampler = @AllTasks", "MultiTaskData.batch_size = 64",
    )
    assert isinstance(upgrad.module.gradient_surgery, TorchJDAggregation)


def test_a_run_binding_paco_losses_without_a_paco_network_exits_2_with_one_line(monkeypatch, capsys):
    result = run_in_process(monkeypatch, capsys, "--gin_file=gin_configs/tiny_paco.gin", "--gin_bindings=MultiTaskLearner.network = @OneHotMLP()")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "bind MultiTaskLearner.network = @PaCoNetwork()" in result.stderr
