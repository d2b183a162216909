"""Weighting rules: the task weights w_z of PiCor's correction phase.

A rule maps per-task statistics (the backbone's, such as SAC's temperatures alpha_z, plus
"recent_return", each task's mean return over its last training episodes) to a weight vector
of shape [N] that sums to 1.
"""
from __future__ import annotations

import abc
from typing import Mapping

import gin
import torch


class WeightingRule(abc.ABC):
    """Maps per-task statistics to task weights w, shape [N], summing to 1.

    Attributes:
        requires: the task statistics the rule reads; checked against what the backbone
            provides when the experiment is built.
    """

    requires: frozenset[str] = frozenset()

    @abc.abstractmethod
    def __call__(self, task_stats: Mapping[str, torch.Tensor], num_tasks: int) -> torch.Tensor:
        """Args: task_stats: per-task tensors of shape [N] (e.g. "alpha"); num_tasks: N."""


class TemperedSoftmax(WeightingRule):
    """w = softmax(logits / tau): tau > 0 sets how sharp the preference among tasks is."""

    def __init__(self, tau: float = 1.0):
        if not tau > 0:
            raise ValueError(f"{type(self).__name__}.tau must be > 0, got {tau}")
        self.tau = tau

    @abc.abstractmethod
    def logits(self, task_stats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-task preferences, shape [N], before the temperature."""

    def __call__(self, task_stats: Mapping[str, torch.Tensor], num_tasks: int) -> torch.Tensor:
        return torch.softmax(self.logits(task_stats) / self.tau, dim=-1)


@gin.configurable
class SoftmaxAlphaWeights(TemperedSoftmax):
    """Eq. (9): w = softmax(alpha / tau), alpha the per-task temperatures (alpha, not log alpha).

    A task with a high temperature is one whose policy is still uncertain, so it gets more say
    in the correction.
    """

    requires = frozenset({"alpha"})

    def logits(self, task_stats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return task_stats["alpha"].detach()  # eq. (9)


@gin.configurable
class SoftmaxReturnWeights(TemperedSoftmax):
    """w = softmax(-standardised recent return / tau): the tasks doing worst weigh most.

    Needs no temperature, so it serves deterministic backbones (TD3). Returns are standardised
    across tasks (mean 0, std 1) so the rule is free of each benchmark's reward scale; a task
    with no finished episode yet counts as average, and equal returns give uniform weights.
    """

    requires = frozenset({"recent_return"})

    def logits(self, task_stats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        returns = task_stats["recent_return"]
        # No Python branch on the values: the rule runs every update without a host sync.
        mean = torch.nan_to_num(torch.nanmean(returns), nan=0.0)
        returns = torch.where(returns.isnan(), mean, returns)
        standardised = (returns - mean) / (returns.std(correction=0) + 1e-8)
        return -standardised


@gin.configurable
class UniformWeights(WeightingRule):
    """w_z = 1/N: the ablation "Ada: X" of the paper's Table 2."""

    requires = frozenset({"recent_return"})  # read for its device only

    def __call__(self, task_stats: Mapping[str, torch.Tensor], num_tasks: int) -> torch.Tensor:
        device = task_stats["recent_return"].device
        return torch.full((num_tasks,), 1.0 / num_tasks, device=device)
