"""The network interface: a builder of the actor torso and the twin critic of a multi-task agent.

The task set appends the one-hot task id to every observation, so a network reads the task from
the observation's last `num_tasks` entries.
"""
from __future__ import annotations

import abc
from typing import Sequence

import torch
from torch import nn


def layer_sizes(binding: str, sizes: Sequence[int]) -> list[int]:
    """`sizes` as a list, refused unless there is at least one layer and every layer has a unit:
    torch builds a zero-width layer with a warning, and the run then learns nothing."""
    if not sizes or min(sizes) < 1:
        raise ValueError(f"{binding} needs at least one layer, each >= 1, got {tuple(sizes)}")
    return list(sizes)


class TwinCritic(nn.Module):
    """Two independent Q networks; forward returns both values stacked, shape [..., 2]."""

    def __init__(self, q1: nn.Module, q2: nn.Module):
        super().__init__()
        self.q1, self.q2 = q1, q2

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q1(observation, action), self.q2(observation, action)], -1)


class Network(abc.ABC):
    """Builds the actor torso and the twin critic; the backbone adds its own output head."""

    #: Whether its modules read the task from the observation's last `num_tasks` entries (per-task
    #: heads, routing, mixing weights). Such a network is refused on a TaskSubset, whose
    #: observations keep the full set's id; a network of plain MLPs on the whole observation
    #: (`OneHotMLP`) sets it False and takes any subset.
    reads_task_id: bool = True

    @abc.abstractmethod
    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        """Module mapping observation [..., obs_dim] to [..., out_features] (SAC: loc and raw scale)."""

    @abc.abstractmethod
    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        """Twin Q mapping (observation, action) to [..., 2]."""
