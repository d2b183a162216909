"""Weighting rules: the task weights w_z of PiCor's correction phase.

A rule maps per-task statistics of the backbone (for SAC: the temperatures alpha_z) to a
weight vector of shape [N] that sums to 1.
"""
from __future__ import annotations

import abc
from typing import Mapping

import gin
import torch


class WeightingRule(abc.ABC):
    """Maps per-task statistics to task weights w, shape [N], summing to 1."""

    @abc.abstractmethod
    def __call__(self, task_stats: Mapping[str, torch.Tensor], num_tasks: int) -> torch.Tensor:
        """Args: task_stats: per-task tensors of shape [N] (e.g. "alpha"); num_tasks: N."""


@gin.configurable
class SoftmaxAlphaWeights(WeightingRule):
    """Eq. (9): w = softmax(alpha / tau), alpha the per-task temperatures (alpha, not log alpha).

    A task with a high temperature is one whose policy is still uncertain, so it gets more say
    in the correction; tau > 0 sets how sharp that preference is.
    """

    def __init__(self, tau: float = 1.0):
        if not tau > 0:
            raise ValueError(f"SoftmaxAlphaWeights.tau must be > 0, got {tau}")
        self.tau = tau

    def __call__(self, task_stats: Mapping[str, torch.Tensor], num_tasks: int) -> torch.Tensor:
        if "alpha" not in task_stats:
            raise ValueError(
                "SoftmaxAlphaWeights needs per-task temperatures; the backbone provides "
                f"{sorted(task_stats)}: bind a weighting rule that needs no temperature"
            )
        return torch.softmax(task_stats["alpha"].detach() / self.tau, dim=-1)  # eq. (9)


@gin.configurable
class UniformWeights(WeightingRule):
    """w_z = 1/N: the ablation "Ada: X" of the paper's Table 2."""

    def __call__(self, task_stats: Mapping[str, torch.Tensor], num_tasks: int) -> torch.Tensor:
        device = next(iter(task_stats.values())).device if task_stats else None
        return torch.full((num_tasks,), 1.0 / num_tasks, device=device)
