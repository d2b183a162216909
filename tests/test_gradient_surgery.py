"""PCGrad: the projection against hand-computed values, the module's per-task gradient path
against the plain step, and the bindings it needs."""
from __future__ import annotations

import gin
import pytest
import torch

from picor_gin.backbones import TD3
from picor_gin.data import MultiTaskData
from picor_gin.experiment import Experiment
from picor_gin.gradient_surgery import PCGrad
from picor_gin.module import PiCor
from picor_gin.networks import OneHotMLP
from picor_gin.samplers import AllTasks
from picor_gin.tasks import PointGoals
from picor_gin.weighting import UniformWeights
from tests.test_module import _fit, _module


def test_conflicting_gradients_lose_their_component_along_each_other():
    # g1 . g2 = -1: g1' = g1 - (-1/2) g2 = [0.5, 0.5]; g2' = g2 - (-1/1) g1 = [0, 1].
    combined, conflict = PCGrad().combine(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    torch.testing.assert_close(combined, torch.tensor([0.25, 0.75]))
    assert conflict.item() == 1.0


def test_agreeing_and_orthogonal_gradients_are_only_averaged():
    combined, conflict = PCGrad().combine(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
    torch.testing.assert_close(combined, torch.tensor([2.0, 3.0]) / 3)
    assert conflict.item() == 0.0


def test_a_single_task_keeps_its_gradient_and_counts_no_conflict():
    combined, conflict = PCGrad().combine(torch.tensor([[3.0, -1.0]]))
    torch.testing.assert_close(combined, torch.tensor([3.0, -1.0]))
    assert conflict.item() == 0.0


def test_a_task_without_gradient_projects_nothing_and_stays_finite():
    combined, conflict = PCGrad().combine(torch.tensor([[1.0, -2.0], [0.0, 0.0]]))
    torch.testing.assert_close(combined, torch.tensor([0.5, -1.0]))
    assert conflict.item() == 0.0


def test_one_of_three_conflicting_pairs_in_both_orders():
    # Only g1 and g3 conflict (g1 . g3 = -1): 2 of the 6 ordered pairs.
    grads = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    combined, conflict = PCGrad().combine(grads)
    # g1' = g1 + (1/2) g3 = [0.5, 0, 0.5]; g2' = g2; g3' = g3 + g1 = [0, 0, 1].
    torch.testing.assert_close(combined, torch.tensor([0.5, 1.0, 1.5]) / 3)
    assert conflict.item() == pytest.approx(2 / 6)


def test_many_tasks_match_the_papers_sequential_projection_in_the_same_random_order():
    """Yu et al.'s loop: for each task, for each other task in a random order, project."""
    grads = torch.randn(6, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.manual_seed(3)
    combined, _ = PCGrad().combine(grads)
    torch.manual_seed(3)
    order = torch.rand(6, 6).argsort(dim=1)  # the draw combine makes
    expected = []
    for i in range(6):
        g = grads[i].clone()
        for j in order[i].tolist():
            if j != i and g @ grads[j] < 0:
                g -= (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        expected.append(g)
    torch.testing.assert_close(combined, torch.stack(expected).mean(0))
    assert (grads @ grads.T < 0).any()  # the case has conflicts to project


class _AverageOnly(PCGrad):
    """Surgery that only averages: the module's per-task path must then give the plain step."""

    def combine(self, task_grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return task_grads.mean(0), torch.zeros(())


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
    data = MultiTaskData(task_set=PointGoals(num_tasks=4), policy=module.policy, seed=0,
                         total_env_steps=10_000, sampler=AllTasks, batch_size=16,
                         correction_states_per_task=8, warmup_env_steps_per_task=40)
    data.warm_up()
    return [data.sample(list(range(4))) for _ in range(count)]


def test_per_task_gradients_averaged_give_exactly_the_plain_step():
    """Splitting the batch by task, one gradient per task and the surrogate backward reproduce
    the gradient of the batch's mean loss when the surgery changes nothing."""
    modules = []
    for surgery in (None, _AverageOnly()):
        torch.manual_seed(0)
        module = _module(correction_steps=0, weighting=UniformWeights(), gradient_surgery=surgery)
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


def test_pcgrad_keeps_td3s_delay_once_per_update_not_once_per_task():
    torch.manual_seed(0)
    module = PiCor(
        obs_dim=6, action_dim=2, num_tasks=4, task_names=["a", "b", "c", "d"],
        backbone=lambda **kw: TD3(**kw, network=OneHotMLP(hidden_sizes=(16, 16))),
        correction_steps=0, weighting=UniformWeights(), gradient_surgery=PCGrad(),
    )
    trainer = _fit(module, _all_task_batches(module, 4))
    actor_optimizer, critic_optimizer = trainer.optimizers[:2]
    assert module.backbone.critic_updates == 4
    assert all(s["step"] == 4 for s in critic_optimizer.state.values())
    assert all(s["step"] == 2 for s in actor_optimizer.state.values())  # policy_delay = 2


def test_pcgrad_with_a_one_task_sampler_is_refused_naming_the_sampler_to_bind(tmp_path):
    gin.parse_config_files_and_bindings(
        ["gin_configs/tiny_picor.gin"], ["import picor_gin.gradient_surgery", "PiCor.gradient_surgery = @PCGrad()"]
    )
    with pytest.raises(ValueError, match="UniformEveryK puts one task in each batch; bind MultiTaskData.sampler = @AllTasks"):
        Experiment().build(tmp_path)
