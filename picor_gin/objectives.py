"""Objectives: the loss terms of the optimization phase, and the stages a method runs in.

The LightningModule asks its objective for the terms of each update and knows nothing else,
so a method that changes what is minimised (KTM-DRL's teachers) or adds a stage before the
first env step (its offline transfer) is one class bound in gin, never a branch of the module:

    MultiTaskLearner.objective = @KTMDRL()
"""
from __future__ import annotations

import abc
from typing import Any

import gin
import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.data import ReplayBuffer

from picor_gin.backbones import Backbone
from picor_gin.data import ONLINE
from picor_gin.gradient_surgery import LossFunction, total_loss
from picor_gin.networks import PaCoNet
from picor_gin.tasks import TaskSet


class Objective(nn.Module, abc.ABC):
    """What the optimization phase minimises, stage by stage.

    An nn.Module, so that networks a method adds (KTM-DRL's teachers) move with the module to
    its device and are kept in its checkpoints. The backbone is passed to each call rather than
    held, so that its parameters are not registered twice.

    Attributes:
        offline_updates: updates of the offline stage, on `offline_replay()`'s transitions,
            before the first env step; 0: no offline stage.
    """

    offline_updates: int = 0

    def setup(self, backbone: Backbone, task_set: TaskSet, seed: int, obs_dim: int, action_dim: int) -> None:
        """Checks and loads what the objective needs; raises ValueError on bad input (at build)."""

    def offline_replay(self, device: str | torch.device) -> list[ReplayBuffer]:
        """One replay buffer per task on `device` for the offline stage (read only when it has
        updates left)."""
        raise NotImplementedError(f"{type(self).__name__} has no offline stage")

    def start_stage(self, backbone: Backbone, stage: str) -> None:
        """Called before the first update of each stage a run enters (not on resume)."""

    @abc.abstractmethod
    def losses(
        self,
        backbone: Backbone,
        backbone_losses: LossFunction,
        stage: str,
        batch: TensorDictBase,
        critic_batch: TensorDictBase | None = None,
    ) -> dict[str, torch.Tensor]:
        """The "loss_*" terms (and detached diagnostics) of one update of `stage` on `batch`.

        `backbone_losses` is the backbone's own loss function (compiled where
        `MultiTaskLearner.compile_mode` asks). Like it, this may run several times per update (once per
        task under gradient surgery) and must not advance state, except to note what `after_step`
        acts on.
        """

    def after_step(self, backbone: Backbone) -> None:
        """Called once per update, after its optimizer step and target update: where an objective
        edits parameters between updates (PaCo's w-reset)."""

    def summary(self) -> dict[str, Any]:
        """What summary.json adds for this objective (KTM-DRL: the teachers' env steps)."""
        return {}


@gin.configurable
class BackboneLosses(Objective):
    """The backbone's own losses, in the online stage only: every method but KTM-DRL."""

    def losses(self, backbone, backbone_losses, stage, batch, critic_batch=None):
        assert stage == ONLINE, "BackboneLosses has no offline stage"
        return backbone_losses(batch, critic_batch)


@gin.configurable
class PaCoLosses(Objective):
    """The backbone's losses with PaCo's two stabilisers, loss maskout and w-reset (Sun et al.,
    "PaCo: Parameter-Compositional Multi-Task Reinforcement Learning", NeurIPS 2022), for a
    backbone on `PaCoNetwork`.

    Task z's loss is the sum of its "loss_*" terms (critic, actor and temperature) on its own
    samples: the authors threshold that sum, per task (`_convert_loss_into_task_loss` in
    github.com/TToTMooN/paco-mtrl, `paco/algorithms/paco_mtsac.py`). A task whose loss exceeds
    `loss_threshold` is masked out of the update: its samples count as zeros in the batch's means,
    as the authors zero them. After the update's step, each masked task's w_z is re-initialised
    in every `PaCoNet` of the backbone, its target networks included, as a random convex
    combination of the unmasked tasks' w: uniform(0, 1) weights over them, L1-normalised (their
    `reset_task_method = "interpolate"`), one draw for all networks. The authors' targets share
    the online w, so the reset reaches them too. With every task masked the mix is empty and
    w_z becomes 0, as in their code.

    Under DDP the tasks' losses are averaged over the processes first, so all mask and reset
    the same tasks, with the same draw (a generator seeded by `Experiment.seed`).

    Args:
        loss_threshold: the authors' `task_loss_threshold` (3e3 in their MT10 setting).
        reset_w: re-initialise masked tasks' w (their `reset_task_while_extreme`, True there);
            False keeps the maskout alone.
    """

    def __init__(self, loss_threshold: float = 3e3, reset_w: bool = True):
        super().__init__()
        if not loss_threshold > 0:
            raise ValueError(f"PaCoLosses.loss_threshold must be > 0, got {loss_threshold}")
        self.loss_threshold = loss_threshold
        self.reset_w = reset_w
        self._generator = torch.Generator()
        self.task_names: list[str] = []

    def setup(self, backbone: Backbone, task_set: TaskSet, seed: int, obs_dim: int, action_dim: int) -> None:
        if not _paco_nets(backbone):
            raise ValueError(
                "PaCoLosses resets PaCo's w, but the backbone's network has none: bind MultiTaskLearner.network = @PaCoNetwork()"
            )
        self._generator.manual_seed(seed)
        self.task_names = list(task_set.names)
        # The tasks masked in this update, which after_step resets; and each task's resets so far.
        self.register_buffer("_masked", torch.zeros(task_set.num_tasks, dtype=torch.bool), persistent=False)
        self.register_buffer("w_resets", torch.zeros(task_set.num_tasks, dtype=torch.long))

    def losses(self, backbone, backbone_losses, stage, batch, critic_batch=None):
        assert stage == ONLINE, "PaCoLosses has no offline stage"
        task_ids = batch["task_id"] if critic_batch is None else torch.cat([batch["task_id"], critic_batch["task_id"]])
        tasks = task_ids.unique()
        per_task, batch_shares, critic_shares = [], [], []
        for z in tasks.tolist():
            part = batch[batch["task_id"] == z]
            critic_part = None if critic_batch is None else critic_batch[critic_batch["task_id"] == z]
            if len(part):
                per_task.append(backbone_losses(part, critic_part))
            else:  # z is only in the critic's batch: its critic loss is its whole loss
                per_task.append({"loss_critic": backbone_losses(critic_part)["loss_critic"]})
            batch_shares.append(len(part) / len(batch))
            critic_shares.append(batch_shares[-1] if critic_part is None else len(critic_part) / len(critic_batch))
        task_loss = torch.stack([total_loss(terms).detach() for terms in per_task])
        over_threshold = self._over_threshold(tasks, task_loss)
        self._masked |= over_threshold
        masked = over_threshold[tasks]
        combined: dict[str, torch.Tensor] = {}
        for terms, keep, batch_share, critic_share in zip(per_task, (~masked).float(), batch_shares, critic_shares):
            for key, value in terms.items():
                weight = critic_share if key == "loss_critic" else batch_share
                if key.startswith("loss_"):
                    weight = weight * keep
                combined[key] = combined.get(key, 0) + weight * value
        return {**combined, "maskout_share": masked.float().mean()}

    def _over_threshold(self, tasks: torch.Tensor, task_loss: torch.Tensor) -> torch.Tensor:
        """Which tasks exceed the threshold, [N]: `tasks`' losses, averaged over the DDP
        processes that hold each, so every process masks the same tasks."""
        sums = torch.zeros(2, self._masked.numel(), device=task_loss.device)
        sums[0, tasks], sums[1, tasks] = task_loss, 1.0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        return sums[0] / sums[1].clamp(min=1) > self.loss_threshold

    def after_step(self, backbone: Backbone) -> None:
        if self.reset_w and self._masked.any():
            masked = self._masked.nonzero().squeeze(-1)
            mix = torch.rand(len(masked), self._masked.numel(), generator=self._generator)
            mix[:, self._masked.cpu()] = 0.0
            mix = torch.nn.functional.normalize(mix, p=1, dim=-1)
            for net in _paco_nets(backbone):
                net.reset_w(masked, mix)
            self.w_resets[masked] += 1
        self._masked.zero_()

    def get_extra_state(self) -> dict[str, Any]:
        """The reset draws' generator, so a resumed run draws what the uninterrupted one would."""
        return {"generator": self._generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"])

    def summary(self) -> dict[str, Any]:
        return {"w_resets": dict(zip(self.task_names, self.w_resets.tolist()))}


def _paco_nets(backbone: Backbone) -> list[PaCoNet]:
    return [m for m in backbone.modules() if isinstance(m, PaCoNet)]
