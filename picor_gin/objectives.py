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
from picor_gin.gradient_surgery import LossFunction
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
        task under gradient surgery) and must not advance state.
        """

    def summary(self) -> dict[str, Any]:
        """What summary.json adds for this objective (KTM-DRL: the teachers' env steps)."""
        return {}


@gin.configurable
class BackboneLosses(Objective):
    """The backbone's own losses, in the online stage only: every method but KTM-DRL."""

    def losses(self, backbone, backbone_losses, stage, batch, critic_batch=None):
        assert stage == ONLINE, "BackboneLosses has no offline stage"
        return backbone_losses(batch, critic_batch)
