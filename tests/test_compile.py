"""The compiled update (MultiTaskLearner.compile_mode) computes what the eager update computes."""
from __future__ import annotations

import functools
import shutil

import pytest
import torch

from picor_gin.backbones import PPO, SAC, TD3
from picor_gin.data import MultiTaskData
from picor_gin.correction.policy_correction import PolicyCorrection
from picor_gin.correction.weighting import SoftmaxReturnWeights
from picor_gin.learner import MultiTaskLearner
from picor_gin.networks import OneHotMLP
from picor_gin.rollouts import RolloutData
from picor_gin.samplers import AllTasks, RoundRobin
from picor_gin.tasks import PointGoals

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("clang++") is None,
    reason="torch.compile on CPU generates C++ and needs a C++ compiler",
)


def _module(backbone_class, **kwargs) -> MultiTaskLearner:
    torch.manual_seed(0)
    weighting = None if backbone_class is SAC else SoftmaxReturnWeights()  # eq. 9 needs SAC's temperatures
    correction = functools.partial(PolicyCorrection, weighting=weighting)
    return MultiTaskLearner(obs_dim=6, action_dim=2, num_tasks=4, task_names=list("abcd"), backbone=backbone_class,
                            network=OneHotMLP(hidden_sizes=(32, 32)),
                            correction=correction, **kwargs)


def _batch(module: MultiTaskLearner):
    """A fixed batch from the backbone's own data path: replay for SAC and TD3, a rollout for PPO."""
    task_set = PointGoals(num_tasks=4)
    if isinstance(module.backbone, PPO):
        data = RolloutData(task_set=task_set, policy=module.policy, seed=0, total_env_steps=1_000,
                           advantage_module=module.backbone.advantage_estimator(), envs_per_task=2,
                           rollout_env_steps=16, epochs=1, minibatches=1, correction_states_per_task=16, sampler=AllTasks)
        return next(iter(data.train_dataloader()))
    data = MultiTaskData(task_set=task_set, policy=module.policy, seed=0, critic_on_every_task=False,
                         total_env_steps=1_000,
                         sampler=RoundRobin, batch_size=64, correction_states_per_task=16, warmup_env_steps_per_task=50)
    data.warm_up()
    return data.sample([1])


@pytest.mark.parametrize("backbone_class", [SAC, TD3, PPO], ids=lambda c: c.__name__)
def test_compiled_losses_and_gradients_equal_the_eager_ones_on_a_fixed_batch(backbone_class):
    eager = _module(backbone_class)
    compiled = _module(backbone_class, compile_mode="default")
    compiled.load_state_dict(eager.state_dict())
    batch = _batch(eager)
    results = []
    # Inductor draws its own random numbers unless told to fall back to eager's generator.
    with torch._inductor.config.patch(fallback_random=True):
        for module in (eager, compiled):
            torch.manual_seed(1)
            losses = module._losses(batch.task)
            sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
            grads = [p.grad.clone() for p in module.backbone.parameters() if p.grad is not None]
            pi = module.backbone.policy_snapshot(batch.correction["observation"])
            baseline = module.backbone.value_baseline(batch.correction, pi)
            weights = torch.full((4,), 0.25)
            correction = module.correction._loss(module.backbone, module.correction.constraint, batch.correction, baseline, pi,
                                                 weights)
            results.append((losses, grads, correction))
    (eager_losses, eager_grads, eager_correction), (losses, grads, correction) = results
    assert eager_losses.keys() == losses.keys()
    for key in losses:
        torch.testing.assert_close(losses[key], eager_losses[key], rtol=1e-4, atol=1e-5)
    assert len(grads) == len(eager_grads) > 0
    for grad, eager_grad in zip(grads, eager_grads):
        torch.testing.assert_close(grad, eager_grad, rtol=1e-4, atol=1e-5)
    for key in correction:
        torch.testing.assert_close(correction[key], eager_correction[key], rtol=1e-4, atol=1e-5)


def test_an_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile_mode"):
        _module(SAC, compile_mode="fastest")
