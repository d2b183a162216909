"""Gradient surgery through TorchJD: the component's step against TorchJD's aggregators applied
directly, PCGrad against Yu et al.'s loop, the per-task path against the plain step, and the
bindings it needs."""
from __future__ import annotations

import copy
import io
import json

import gin
import pytest
import torch
from tensordict import TensorDict
from torchjd.aggregation import MGDA, UPGrad, CAGrad, Mean, NashMTL, PCGrad

from picor_gin.backbones import TD3
from picor_gin.data import Batch, MultiTaskData
from picor_gin.run.experiment import Experiment
from picor_gin.gradient_surgery import TorchJDAggregation, conflict_share
from picor_gin.learner import MultiTaskLearner
from picor_gin.networks import OneHotMLP
from picor_gin.samplers import AllTasks
from picor_gin.tasks import PointGoals
from picor_gin.correction.weighting import UniformWeights
from tests.conftest import TWO_DDP_PROCESSES, run_cli
from tests.test_learner import _fit, _module

# Three tasks' gradients of a 4-parameter "actor": task 0 and task 2 conflict, task 1 agrees with both.
JACOBIAN = torch.tensor([[1.0, 0.5, 0.0, -1.0], [0.2, 1.0, 0.3, 0.0], [-1.0, 0.4, 1.0, 0.5]], dtype=torch.float64)


def _linear_task_losses(jacobian: torch.Tensor):
    """A loss function whose task-z mean "actor" loss is J_z . theta: its Jacobian is exactly J."""

    def losses(batch, critic_batch=None):
        assert critic_batch is None
        theta = losses.theta
        return {"loss_actor": (jacobian[batch["task_id"]] @ theta).mean(), "q": torch.zeros(())}

    losses.theta = torch.zeros(jacobian.shape[1], dtype=jacobian.dtype, requires_grad=True)
    return losses


def _three_task_batch() -> Batch:
    task = TensorDict({"task_id": torch.tensor([2, 0, 1, 1, 0, 2])}, batch_size=[6])
    return Batch(task=task, correction=task, recent_return=torch.zeros(3), env_steps=0, tasks=(0, 1, 2))


def _step(surgery: TorchJDAggregation, jacobian: torch.Tensor = JACOBIAN) -> tuple[torch.Tensor, dict]:
    losses = _linear_task_losses(jacobian)
    metrics = surgery.backward(losses, _three_task_batch(), {"actor": [losses.theta]}, torch.Tensor.backward, 3)
    return losses.theta.grad, metrics


@pytest.mark.parametrize(
    "aggregator", [UPGrad(), CAGrad(c=0.5), NashMTL(n_tasks=3), MGDA(), PCGrad(), Mean()], ids=str
)
def test_the_combined_gradient_is_torchjds_aggregator_on_the_task_jacobian(aggregator):
    torch.manual_seed(0)
    expected = copy.deepcopy(aggregator)(JACOBIAN)
    torch.manual_seed(0)  # PCGrad draws its orders
    grad, _ = _step(TorchJDAggregation(aggregator))
    torch.testing.assert_close(grad, expected)


def test_per_task_weights_and_conflict_share_are_reported_for_every_task():
    _, metrics = _step(TorchJDAggregation(UPGrad()))
    weights = metrics["aggregation_weight_actor"]
    # UPGrad's weights are its preference (1/3 each) plus what the dual-cone projection adds.
    assert weights.shape == (3,) and (weights >= 1 / 3 - 1e-9).all() and weights.sum() > 1
    torch.testing.assert_close(weights @ JACOBIAN, UPGrad()(JACOBIAN))
    # Only tasks 0 and 2 conflict (J_0 . J_2 = -1 + 0.2 - 0.5 < 0): 2 of the 6 ordered pairs.
    assert metrics["gradient_conflict_share_actor"].item() == pytest.approx(2 / 6)


def test_conflict_share_counts_ordered_pairs():
    assert conflict_share(torch.tensor([[1.0, 0.0], [-1.0, 1.0]])).item() == 1.0
    assert conflict_share(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])).item() == 0.0
    assert conflict_share(torch.tensor([[3.0, -1.0]])).item() == 0.0


def test_pcgrad_against_hand_computed_values():
    # g1 . g2 = -1: g1' = g1 - (-1/2) g2 = [0.5, 0.5]; g2' = g2 - (-1/1) g1 = [0, 1]; summed.
    torch.testing.assert_close(PCGrad()(torch.tensor([[1.0, 0.0], [-1.0, 1.0]])), torch.tensor([0.5, 1.5]))
    # Agreeing and orthogonal gradients are only summed.
    torch.testing.assert_close(PCGrad()(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])), torch.tensor([2.0, 3.0]))


def test_pcgrad_is_yu_et_als_sequential_projection_in_the_same_random_order_summed():
    """The loop of Yu et al.'s Algorithm 1, and of picor-gin's former PCGrad, whose step was
    this sum divided by the task count (the same step under Adam, up to its epsilon)."""
    grads = torch.randn(6, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(3)
    combined = PCGrad()(grads)
    torch.manual_seed(3)
    expected = torch.zeros(50, dtype=torch.float64)
    for i in range(6):
        g = grads[i].clone()
        for j in torch.randperm(6).tolist():  # the draws TorchJD makes, task by task
            if j != i and g @ grads[j] < 0:
                g -= (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        expected += g
    torch.testing.assert_close(combined, expected)
    assert (grads @ grads.T < 0).any()  # the case has conflicts to project


def test_a_stateful_aggregator_continues_from_its_checkpointed_state():
    """Nash-MTL reuses its previous solution: a resumed run must step as the uninterrupted one."""
    jacobians = [JACOBIAN + torch.randn(3, 4, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in range(3)]
    uninterrupted = TorchJDAggregation(NashMTL(n_tasks=3, update_weights_every=3))
    steps = [_step(uninterrupted, j)[0] for j in jacobians]
    interrupted = TorchJDAggregation(NashMTL(n_tasks=3, update_weights_every=3))
    for j in jacobians[:2]:
        _step(interrupted, j)
    buffer = io.BytesIO()
    torch.save(interrupted.state_dict(), buffer)
    resumed = TorchJDAggregation(NashMTL(n_tasks=3, update_weights_every=3))
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))  # as Lightning resumes
    torch.testing.assert_close(_step(resumed, jacobians[2])[0], steps[2])
    # Without the state, the third update would solve afresh instead of reusing the first's weights.
    assert not torch.allclose(_step(TorchJDAggregation(NashMTL(n_tasks=3, update_weights_every=3)), jacobians[2])[0], steps[2])
    # A config that binds other settings resumes with its own aggregator, afresh, not the saved one.
    changed = TorchJDAggregation(NashMTL(n_tasks=3, update_weights_every=2))
    changed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert changed._per_group == {}
    torch.testing.assert_close(
        _step(changed, jacobians[2])[0], _step(TorchJDAggregation(NashMTL(n_tasks=3, update_weights_every=2)), jacobians[2])[0]
    )


def _deterministic_losses(module):
    """Losses without sampling noise, so splitting a batch by task draws nothing differently."""
    backbone = module.backbone

    def losses(batch, critic_batch=None):
        assert critic_batch is None  # the critic trains on the task batch here
        q = backbone.critic(batch["observation"], batch["action"])
        loc, _ = backbone.actor(batch["observation"])
        return {
            "loss_critic": (q - batch["next", "reward"]).square().mean(),
            "loss_actor": (loc - batch["action"]).square().mean(),
            "loss_alpha": (backbone.log_alpha[batch["task_id"]] - batch["next", "reward"].squeeze(-1)).square().mean(),
        }

    return losses


def _all_task_batches(module, count: int):
    data = MultiTaskData(task_set=PointGoals(num_tasks=4), policy=module.policy, seed=0, critic_on_every_task=False,
                         total_env_steps=10_000, sampler=AllTasks, batch_size=16,
                         correction_states_per_task=8, warmup_env_steps_per_task=40)
    data.warm_up()
    return [data.sample(list(range(4))) for _ in range(count)]


def test_per_task_gradients_averaged_give_exactly_the_plain_step():
    """Splitting the batch by task, one gradient per task and the surrogate backward reproduce
    the gradient of the batch's mean loss when the aggregator is the mean."""
    modules = []
    for surgery in (None, TorchJDAggregation(Mean())):
        torch.manual_seed(0)
        module = _module(gradient_surgery=surgery)
        module._losses = _deterministic_losses(module)
        modules.append(module)
    batches = _all_task_batches(modules[0], 3)
    initial = [p.detach().clone() for p in modules[0].parameters()]
    for module in modules:
        _fit(module, batches)
    plain, surgery = modules
    for before, a, b in zip(initial, plain.parameters(), surgery.parameters()):
        assert not torch.equal(before, a)  # every parameter took the steps
        torch.testing.assert_close(a, b)


def test_surgery_keeps_td3s_delay_once_per_update_not_once_per_task():
    torch.manual_seed(0)
    module = MultiTaskLearner(
        obs_dim=6, action_dim=2, num_tasks=4, task_names=["a", "b", "c", "d"],
        backbone=TD3, network=OneHotMLP(hidden_sizes=(16, 16)),
        gradient_surgery=TorchJDAggregation(PCGrad()),
    )
    trainer = _fit(module, _all_task_batches(module, 4))
    actor_optimizer, critic_optimizer = trainer.optimizers[:2]
    assert module.backbone.task_updates == [4] * 4
    assert all(s["step"] == 4 for s in critic_optimizer.state.values())
    assert all(s["step"] == 2 for s in actor_optimizer.state.values())  # policy_delay = 2


def test_surgery_with_a_one_task_sampler_is_refused_naming_the_sampler_to_bind(tmp_path):
    gin.parse_config_files_and_bindings(
        ["gin_configs/tiny_picor.gin"],
        ["MultiTaskLearner.gradient_surgery = @TorchJDAggregation()", "TorchJDAggregation.aggregator = @UPGrad()"],
    )
    with pytest.raises(ValueError, match="UniformEveryK puts one task in each batch; bind MultiTaskData.sampler = @AllTasks"):
        Experiment().build(tmp_path)


def test_nash_mtl_sized_for_another_task_count_is_refused_naming_the_binding(tmp_path):
    gin.parse_config_files_and_bindings(["gin_configs/tiny_mtsac_nashmtl.gin"], ["NashMTL.n_tasks = 10"])
    with pytest.raises(ValueError, match="the task set has 4 tasks; bind NashMTL.n_tasks = 4"):
        Experiment().build(tmp_path)


def test_a_non_aggregator_is_refused_naming_the_parameter():
    with pytest.raises(TypeError, match="TorchJDAggregation.aggregator must be a TorchJD aggregator"):
        TorchJDAggregation(UniformWeights())


def test_two_process_ddp_run_with_upgrad_ends_with_identical_parameters(tmp_path):
    """Each process aggregates its own batch's Jacobian; DDP all-reduces the surrogate's gradient."""
    run_dir = tmp_path / "ddp"
    result = run_cli(
        "--gin_file=gin_configs/tiny_mtsac_upgrad.gin",
        "--gin_bindings=MultiTaskData.warmup_env_steps_per_task = 100",
        "--gin_bindings=Experiment.total_env_steps = 1_200",  # warm-up 2 x 4 x 100, then 50 updates of 2 x 4 steps
        "--gin_bindings=Experiment.eval_episodes = 1",
        *TWO_DDP_PROCESSES,
        f"--run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    checksums = summary["process_parameter_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1] and summary["updates"] == 50
