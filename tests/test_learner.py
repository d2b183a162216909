"""The LightningModule: phases run in order, the correction runs only where one is bound,
and a non-finite value stops the run with a message naming it."""
from __future__ import annotations

import functools

import lightning as L
from lightning.pytorch.loggers import Logger
import pytest
import torch

from picor_gin.backbones import SAC, TD3
from picor_gin.correction.constraints import LagrangePenalty
from picor_gin.correction.solvers import PenaltyDescent
from picor_gin.data import MultiTaskData
from picor_gin.correction.policy_correction import PolicyCorrection
from picor_gin.learner import MultiTaskLearner, mean_over_processes_that_have_it
from picor_gin.networks import OneHotMLP
from picor_gin.samplers import RoundRobin
from picor_gin.tasks import PointGoals


def _module(**kwargs) -> MultiTaskLearner:
    return MultiTaskLearner(obs_dim=6, action_dim=2, num_tasks=4, task_names=["a", "b", "c", "d"],
                            backbone=SAC, network=OneHotMLP(hidden_sizes=(16, 16)), log_every_updates=5, **kwargs)


def _batches(module: MultiTaskLearner, count: int):
    data = MultiTaskData(task_set=PointGoals(num_tasks=4), policy=module.policy, seed=0, critic_on_every_task=False,
                         total_env_steps=10_000, sampler=RoundRobin, batch_size=32,
                         correction_states_per_task=8, warmup_env_steps_per_task=40)
    data.warm_up()
    return [data.sample([i % 4]) for i in range(count)]


class _SeedAtFirstBatch(L.Callback):
    """Seeds right before the first update, after Lightning's own draws (the loader's seed)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            torch.manual_seed(1)


def _fit(module: MultiTaskLearner, batches) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[_SeedAtFirstBatch()],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def test_the_backbone_learns_each_updates_tasks_from_the_batch():
    """Round robin over 4 tasks: TD3 counts its policy delay per task from the tasks the learner
    passes it, so 8 updates are 2 of each task's."""
    module = MultiTaskLearner(obs_dim=6, action_dim=2, num_tasks=4, task_names=["a", "b", "c", "d"],
                              backbone=TD3, network=OneHotMLP(hidden_sizes=(16, 16)))
    _fit(module, _batches(module, 8))
    assert module.backbone.task_updates == [2, 2, 2, 2]


class _RecordingLogger(Logger):
    """Keeps every log_metrics call's metrics."""

    name, version = "recording", 0
    experiment = None

    def __init__(self):
        super().__init__()
        self.logged: list[dict[str, float]] = []

    def log_metrics(self, metrics, step=None):
        self.logged.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_each_tasks_logged_q_is_the_critics_twin_min_at_the_policys_action_on_its_own_states():
    """TD3's deterministic actor: train/q/<task> of the last update is the final critic's
    min-twin Q at mu(s), averaged over that task's correction states only."""
    torch.manual_seed(0)
    module = MultiTaskLearner(obs_dim=6, action_dim=2, num_tasks=4, task_names=["a", "b", "c", "d"], log_every_updates=5,
                              backbone=TD3, network=OneHotMLP(hidden_sizes=(16, 16)))
    batches = _batches(module, 5)
    logger = _RecordingLogger()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=logger, log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b))
    logged = [metrics for metrics in logger.logged if "train/q/a" in metrics]
    assert len(logged) == 1  # update 5 of 5, after which nothing changes the networks
    observation = batches[-1].correction["observation"]  # [4 tasks, 8 states, 6]
    backbone = module.backbone
    with torch.no_grad():
        expected = backbone.critic(observation, backbone.actor(observation)).min(-1).values.mean(-1)
    assert [logged[0][f"train/q/{name}"] for name in "abcd"] == pytest.approx(expected.tolist(), rel=1e-5)
    assert len(set(expected.tolist())) == 4  # each task's own states and one-hot id


class _CountingDescent(PenaltyDescent):
    """PenaltyDescent that counts the updates on which it moved the actor."""

    moved = 0

    def solve(self, problem, steps):
        terms, moved = super().solve(problem, steps)
        self.moved += moved
        return terms, moved


@pytest.mark.parametrize("correction_steps", [None, 2])
def test_each_update_steps_the_backbone_and_the_correction_only_when_one_is_bound(correction_steps):
    torch.manual_seed(0)
    solver = _CountingDescent()
    # A positive multiplier keeps the constraint form active, so the phase runs on every update.
    constraint = functools.partial(LagrangePenalty, initial_multiplier=1.0)
    correction = None if correction_steps is None else functools.partial(
        PolicyCorrection, steps=correction_steps, solver=solver, constraint=constraint)
    module = _module(correction=correction)
    batches = _batches(module, 6)
    critic_before = [p.clone() for p in module.backbone.critic.parameters()]
    trainer = _fit(module, batches)
    assert module.updates == 6
    assert all(not torch.equal(a, b) for a, b in zip(critic_before, module.backbone.critic.parameters()))
    actor_opt, critic_opt, alpha_opt, *correction_opt = trainer.optimizers
    assert all(s["step"] == 6 for s in actor_opt.state.values())
    if correction_steps is None:
        assert correction_opt == [] and solver.moved == 0
        return
    steps = [s["step"] for s in correction_opt[0].state.values()]
    # The correction steps only on updates whose constraint pi'_t violates (a projection).
    assert steps == [2 * solver.moved] * len(steps)
    assert solver.moved == 6


def test_without_a_correction_the_actor_is_the_backbones_alone():
    """No correction is MTSAC: the actor after an update is the backbone's step, nothing more."""
    torch.manual_seed(0)
    picor = _module()
    torch.manual_seed(0)
    reference = SAC(obs_dim=6, action_dim=2, num_tasks=4, network=OneHotMLP(hidden_sizes=(16, 16)))
    reference.load_state_dict(picor.backbone.state_dict())
    batches = _batches(picor, 3)
    optimizers = {n: torch.optim.Adam(p, lr=3e-4) for n, p in reference.parameter_groups().items()}
    _fit(picor, batches)
    torch.manual_seed(1)
    for batch in batches:
        losses = reference.losses(batch.task)
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
        for optimizer in optimizers.values():
            optimizer.step()
        reference.update_targets()
    for a, b in zip(picor.backbone.actor.parameters(), reference.actor.parameters()):
        torch.testing.assert_close(a, b)


def test_a_non_finite_loss_stops_the_run_naming_the_quantity_task_and_step(monkeypatch):
    torch.manual_seed(0)
    module = _module(correction=PolicyCorrection)
    batches = _batches(module, 5)
    original = module.backbone.losses

    def nan_critic(batch, critic_batch=None):
        losses = original(batch, critic_batch)
        losses["loss_critic"] = losses["loss_critic"] * float("nan")
        return losses

    monkeypatch.setattr(module, "_losses", nan_critic)  # what training_step calls
    with pytest.raises(FloatingPointError, match=r"train/loss_critic.*env step 160.*training task"):
        _fit(module, batches)


def test_ddp_processes_pool_each_tasks_recent_return_over_the_processes_that_have_one():
    """Two processes' recent returns, [N] each with NaN for a task without a finished episode:
    the sum over processes is simulated by adding the other process's stacked tensor."""
    mine = torch.tensor([1.0, float("nan"), 3.0, float("nan")])
    other = torch.tensor([3.0, 5.0, float("nan"), float("nan")])
    known = ~other.isnan()
    other_stacked = torch.stack([torch.where(known, other, 0.0), known.float()])
    pooled = mean_over_processes_that_have_it(mine, lambda stacked: stacked + other_stacked)
    assert torch.equal(pooled[:3], torch.tensor([2.0, 5.0, 3.0])) and pooled[3].isnan()
