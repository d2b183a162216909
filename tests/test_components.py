"""Every component variant is one gin binding away: each trains 100 updates on the tiny set and
is checked to be the class that was bound, with a quantity it owns moving."""
from __future__ import annotations

from pathlib import Path

import gin
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchjd.aggregation import UPGrad

from picor_gin.backbones import TD3
from picor_gin.correction.constraints import LagrangePenalty
from picor_gin.run.experiment import Experiment
from picor_gin.gradient_surgery import TorchJDAggregation
from picor_gin.networks import SoftModularNet, TaskHeads
from picor_gin.samplers import AllTasks, RoundRobin
from picor_gin.correction.weighting import SoftmaxReturnWeights, UniformWeights

WARMUP = 4 * 250  # tiny_picor.gin: 4 tasks, 250 warm-up steps each
UPDATES = 100


def _train(tmp_path: Path, bindings: list[str], gin_file: str = "gin_configs/tiny_picor.gin", env_steps_per_update: int = 1):
    """Builds the experiment of `gin_file` + `bindings`, trains UPDATES updates; returns (run, logged scalars)."""
    gin.parse_config_files_and_bindings(
        [gin_file],
        [
            *bindings,
            f"Experiment.total_env_steps = {WARMUP + UPDATES * env_steps_per_update}",
            "Experiment.log_every_updates = 10",
            "Experiment.checkpoint_every_env_steps = 100_000",
        ],
    )
    experiment = Experiment()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = experiment.build(run_dir)
    initial = {name: p.detach().clone() for name, p in run.module.named_parameters()}
    experiment.run(run, run_dir)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert run.module.updates == UPDATES
    assert len(set(scalars["train/loss_critic"])) > 1  # the backbone trained
    return run, initial, scalars


def _weights(scalars: dict[str, list[float]]) -> torch.Tensor:
    """Logged task weights, [log points, N]."""
    return torch.tensor([scalars[f"train/weight/goal{z}"] for z in range(4)]).T


def test_td3_backbone_by_its_gin_file(tmp_path):
    run, initial, scalars = _train(tmp_path, [], gin_file="gin_configs/tiny_picor_td3.gin")
    backbone = run.module.backbone
    assert isinstance(backbone, TD3) and isinstance(run.module.correction.weighting, SoftmaxReturnWeights)
    assert sum(backbone.task_updates) == UPDATES  # one task per update
    for name, p in backbone.actor.named_parameters():
        assert not torch.equal(p, initial[f"backbone.actor.{name}"])
    assert "train/loss_actor" in scalars and not any(tag.startswith("train/entropy/") for tag in scalars)
    assert len(set(scalars["train/kl_after"])) > 1  # the correction ran on the deterministic actor


def test_return_weights_by_one_binding(tmp_path):
    run, _, scalars = _train(tmp_path, ["PolicyCorrection.weighting = @SoftmaxReturnWeights()"])
    assert isinstance(run.module.correction.weighting, SoftmaxReturnWeights)
    weights = _weights(scalars)
    assert torch.allclose(weights.sum(-1), torch.ones(len(weights)), atol=1e-5)
    assert (weights - 0.25).abs().max() > 1e-3  # unequal returns give unequal weights


def test_uniform_weights_by_one_binding(tmp_path):
    run, _, scalars = _train(tmp_path, ["PolicyCorrection.weighting = @UniformWeights()"])
    assert isinstance(run.module.correction.weighting, UniformWeights)
    assert torch.equal(_weights(scalars), torch.full_like(_weights(scalars), 0.25))
    assert len(set(scalars["train/gain"])) > 1
    # How far each optimization phase moved the policy from pi_t; not the KL of pi'_t to itself (0).
    assert "train/kl" not in scalars and min(scalars["train/kl_optimization"]) > 0


def test_no_correction_by_one_binding(tmp_path):
    run, initial, scalars = _train(tmp_path, ["MultiTaskLearner.correction = None"])
    assert run.module.correction is None
    assert not any(tag in scalars for tag in ("train/kl_optimization", "train/gain", "train/violation"))
    assert not any(tag.startswith("train/weight/") for tag in scalars)  # the weights are the correction's
    assert len(run.trainer.optimizers) == 3  # actor, critic, temperatures: no correction optimizer


def test_lagrange_penalty_by_its_bindings(tmp_path):
    # Started at 1: a positive multiplier keeps the phase active, and dual descent lowers it
    # while the constraint holds (with common random numbers the tiny set rarely violates it).
    run, _, scalars = _train(tmp_path, ["PolicyCorrection.constraint = @LagrangePenalty", "LagrangePenalty.initial_multiplier = 1.0",
                                        "PolicyCorrection.solver = @PenaltyDescent()"])
    assert isinstance(run.module.correction.constraint, LagrangePenalty)
    multiplier = scalars["train/multiplier"]
    assert min(multiplier) >= 0 and multiplier[-1] < multiplier[0] < 1.0, multiplier
    assert float(run.module.correction.constraint.multiplier) == pytest.approx(multiplier[-1])


def test_round_robin_sampler_by_one_binding(tmp_path):
    run, _, _ = _train(tmp_path, ["MultiTaskData.sampler = @RoundRobin"])
    assert isinstance(run.data.sampler, RoundRobin)
    assert run.data.task_env_steps == [250 + UPDATES // 4] * 4


def test_all_tasks_sampler_by_one_binding(tmp_path):
    run, _, _ = _train(tmp_path, ["MultiTaskData.sampler = @AllTasks"], env_steps_per_update=4)
    assert isinstance(run.data.sampler, AllTasks)
    assert run.data.task_env_steps == [250 + UPDATES] * 4


def test_multi_head_network_by_one_binding(tmp_path):
    run, initial, _ = _train(tmp_path, ["MultiTaskLearner.network = @MultiHeadMLP()"])
    actor_torso = run.module.backbone.actor[0]
    assert isinstance(actor_torso, TaskHeads)
    # Every task trained its own head: each head's slice moved.
    moved = (actor_torso.weight.detach() - initial["backbone.actor.0.weight"]).abs().flatten(1).amax(-1)
    assert (moved > 0).all()


def test_parallel_workers_by_one_binding_on_the_all_tasks_config(tmp_path):
    run, _, _ = _train(
        tmp_path, ["MultiTaskData.parallel_workers = True"], gin_file="gin_configs/tiny_mtsac_alltasks.gin",
        env_steps_per_update=4,
    )
    assert run.data.parallel_workers and run.data.task_env_steps == [250 + UPDATES] * 4
    assert not run.data._collectors  # shut down with their worker processes at the end of fit


def test_upgrad_by_its_gin_file_logs_its_task_weights(tmp_path):
    run, initial, scalars = _train(tmp_path, [], gin_file="gin_configs/tiny_mtsac_upgrad.gin", env_steps_per_update=4)
    surgery = run.module.gradient_surgery
    assert isinstance(surgery, TorchJDAggregation) and isinstance(surgery.aggregator, UPGrad)
    assert isinstance(run.data.sampler, AllTasks)
    for group in ("actor", "critic"):  # the goals pull the shared networks apart
        shares = scalars[f"train/gradient_conflict_share_{group}"]
        assert all(0.0 <= share <= 1.0 for share in shares) and max(shares) > 0
        # UPGrad's weights: its preference 1/4 plus what resolving the conflicts adds.
        weights = torch.tensor([scalars[f"train/aggregation_weight_{group}/goal{z}"] for z in range(4)])
        assert (weights >= 0.25 - 1e-6).all() and (weights > 0.25 + 1e-6).any()
    # Each task's temperature has its own parameter, so their gradients never conflict.
    assert set(scalars["train/gradient_conflict_share_alpha"]) == {0.0}
    for name, p in run.module.backbone.actor.named_parameters():
        assert not torch.equal(p, initial[f"backbone.actor.{name}"])


def test_soft_modular_network_by_its_gin_file(tmp_path):
    run, initial, _ = _train(tmp_path, [], gin_file="gin_configs/tiny_soft_modular.gin")
    actor_torso = run.module.backbone.actor[0]
    assert isinstance(actor_torso, SoftModularNet)
    for part in ("task_encoder", "routing_heads", "last_head", "module_weights"):
        for name, p in getattr(actor_torso, part).named_parameters():
            assert not torch.equal(p, initial[f"backbone.actor.0.{part}.{name}"]), f"{part}.{name}"
