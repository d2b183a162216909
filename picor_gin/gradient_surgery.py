"""Gradient surgery: how the optimization phase's losses become the gradient its optimizers step on.

The LightningModule calls `backward` once per update and knows nothing else, so a multi-task
optimization method (PCGrad, CAGrad, Nash-MTL, UPGrad, MGDA, ...) is a component bound in gin,
never a branch of the module:

    MultiTaskLearner.gradient_surgery = @TorchJDAggregation()
    TorchJDAggregation.aggregator = @UPGrad()      # or @PCGrad(), @CAGrad(), @NashMTL(), ...

The aggregators are TorchJD's (`torchjd.aggregation`, maintained with tests by its authors),
registered with gin under their class names in `picor_gin/run/externals.py`.
"""
from __future__ import annotations

import abc
import copy
import pickle
from typing import Any, Callable

import gin
import torch
from tensordict import TensorDictBase
from torch import nn
from torchjd.aggregation import Aggregator, WeightedAggregator
from torchjd.autojac import jac

from picor_gin.data import Batch

LossFunction = Callable[..., dict[str, torch.Tensor]]

def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of the "loss_*" terms: they touch disjoint parameters, so one backward is exact."""
    return sum(v for k, v in losses.items() if k.startswith("loss_"))


class GradientSurgery(abc.ABC):
    """Turns the optimization phase's losses into gradients on the backbone's parameters."""

    #: Whether it combines per-task gradients, which needs batches with several tasks.
    splits_tasks: bool = False

    def check(self, num_tasks: int) -> None:
        """Raises ValueError where this surgery cannot work with `num_tasks` tasks (at build time)."""

    @abc.abstractmethod
    def backward(
        self,
        losses: LossFunction,
        batch: Batch,
        groups: dict[str, list[nn.Parameter]],
        backward: Callable[[torch.Tensor], None],
        num_tasks: int,
    ) -> dict[str, torch.Tensor]:
        """Sets the groups' `.grad` through `backward` (Lightning's, so DDP all-reduces it).

        Args:
            losses: the backbone's loss function, (task batch, critic batch or None) -> terms.
            batch: the update's batch.
            groups: the backbone's parameter groups (actor, critic, alpha).
            backward: the module's `manual_backward`.
            num_tasks: the task count, for per-task diagnostics.

        Returns:
            The loss terms and diagnostics to log: scalars, or per-task vectors of `num_tasks`.
        """

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run continues where it stopped."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@gin.configurable
class MeanLoss(GradientSurgery):
    """No surgery: the gradient of the batch's mean loss, Algorithm 1's step."""

    def backward(self, losses, batch, groups, backward, num_tasks):
        terms = losses(batch.task, batch.critic)
        backward(total_loss(terms))
        return terms


@gin.configurable
class TorchJDAggregation(GradientSurgery):
    """Combines the tasks' gradients of the optimization phase with a TorchJD aggregator.

    Each task's mean loss over its part of the batch is differentiated separately (TorchJD's
    `jac`), and per parameter group (actor, critic, temperatures: each has its own copy of the
    aggregator, so stateful ones such as Nash-MTL keep one state per group) the aggregator turns
    the [tasks x parameters] Jacobian into one gradient. That gradient is applied by one backward
    of a surrogate whose gradient it is, so DDP all-reduces it like any other.

    The rows are per-task mean losses: `@Mean()` gives exactly the plain step; aggregators that
    sum (`PCGrad`, `Sum`, `GradDrop`) give N times its scale, which Adam's normalisation cancels.

    Args:
        aggregator: a TorchJD aggregator, e.g. `@UPGrad()`, `@PCGrad()`, `@CAGrad()` with
            `CAGrad.c`, `@NashMTL()` with `NashMTL.n_tasks` set to the task count.
    """

    splits_tasks = True

    def __init__(self, aggregator: Aggregator = gin.REQUIRED):
        if not isinstance(aggregator, Aggregator):
            raise TypeError(
                f"TorchJDAggregation.aggregator must be a TorchJD aggregator (e.g. @UPGrad()), "
                f"got {type(aggregator).__name__}"
            )
        self.aggregator = aggregator
        self._per_group: dict[str, Aggregator] = {}

    def check(self, num_tasks: int) -> None:
        expected = getattr(self.aggregator, "n_tasks", num_tasks)
        if expected != num_tasks:
            raise ValueError(
                f"{type(self.aggregator).__name__}.n_tasks = {expected}, but the task set has "
                f"{num_tasks} tasks; bind {type(self.aggregator).__name__}.n_tasks = {num_tasks}"
            )

    def _aggregate(self, group: str, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The group's combined gradient and, for a weighted aggregator, its per-task weights."""
        if group not in self._per_group:
            self._per_group[group] = copy.deepcopy(self.aggregator)
        aggregator = self._per_group[group]
        if isinstance(aggregator, WeightedAggregator):
            weights = aggregator.weighting(matrix)
            return weights @ matrix, weights  # WeightedAggregator.forward, keeping its weights
        return aggregator(matrix), None

    def backward(self, losses, batch, groups, backward, num_tasks):
        task_ids = batch.task["task_id"].unique()
        per_task = [losses(_task_part(batch.task, z)) for z in task_ids.tolist()]
        # A group without its "loss_<group>" term this update (TD3's delayed actor) takes no step.
        stepped = {name: params for name, params in groups.items() if f"loss_{name}" in per_task[0]}
        params = [p for group in stepped.values() for p in group]
        # One Jacobian row per task, each differentiated through its own part of the graph only
        # (a Jacobian of all tasks' losses at once would run every task's backward for each row).
        rows = [jac(total_loss(terms), params) for terms in per_task]
        jacobians = [torch.cat(per_param) for per_param in zip(*rows)]
        metrics: dict[str, torch.Tensor] = {}
        surrogate, start = torch.zeros((), device=params[0].device), 0
        for name, group in stepped.items():
            matrix = torch.cat([j.flatten(1) for j in jacobians[start:start + len(group)]], dim=1)
            start += len(group)
            combined, weights = self._aggregate(name, matrix)
            metrics[f"gradient_conflict_share_{name}"] = conflict_share(matrix)
            if weights is not None:
                every_task = torch.zeros(num_tasks, dtype=weights.dtype, device=weights.device)
                metrics[f"aggregation_weight_{name}"] = every_task.index_copy(0, task_ids.to(weights.device), weights)
            for p, g in zip(group, combined.split([p.numel() for p in group])):
                surrogate = surrogate + (p * g.view_as(p).detach()).sum()
        backward(surrogate)
        return {**{k: torch.stack([terms[k] for terms in per_task]).mean() for k in per_task[0]}, **metrics}

    def state_dict(self) -> dict[str, Any]:
        # Pickled to bytes: the states of Nash-MTL, GradVac, ... are plain attributes (NumPy
        # arrays, cvxpy parameters), which a weights-only checkpoint load would refuse.
        return {"aggregators": pickle.dumps(self._per_group)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A resumed run goes on with the checkpoint's aggregator states, unless the config now
        # binds another aggregator (or other settings of it): then the configured one starts afresh.
        saved = pickle.loads(state["aggregators"]) if "aggregators" in state else {}
        self._per_group = {group: kept for group, kept in saved.items() if repr(kept) == repr(self.aggregator)}


def _task_part(batch: TensorDictBase, task_id: int) -> TensorDictBase:
    return batch[batch["task_id"] == task_id]


def conflict_share(task_grads: torch.Tensor) -> torch.Tensor:
    """The share of ordered task pairs (i, j), i != j, whose gradients conflict (< 0 inner product)."""
    num_tasks = task_grads.shape[0]
    gram = task_grads @ task_grads.T
    off_diagonal = ~torch.eye(num_tasks, dtype=torch.bool, device=task_grads.device)
    return (gram[off_diagonal] < 0).sum() / max(1, num_tasks * (num_tasks - 1))
