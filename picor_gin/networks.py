"""Networks: builders of the actor and twin-critic torso for a multi-task agent.

The default is the paper's: an MLP on the observation with the one-hot task id appended (the
task set already appends it), two hidden layers of 512 (PiCor, AAAI 2023, section 5).
"""
from __future__ import annotations

import abc
from typing import Sequence

import gin
import torch
from torch import nn
from torchrl.modules import MLP, NormalParamExtractor


class TwinCritic(nn.Module):
    """Two independent Q networks; forward returns both values stacked, shape [..., 2]."""

    def __init__(self, q1: nn.Module, q2: nn.Module):
        super().__init__()
        self.q1, self.q2 = q1, q2

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q1(observation, action), self.q2(observation, action)], -1)


class Network(abc.ABC):
    """Builds the actor torso (observation -> loc, scale) and the twin critic."""

    @abc.abstractmethod
    def actor(self, obs_dim: int, action_dim: int, num_tasks: int) -> nn.Module:
        """Module mapping observation [..., obs_dim] to (loc, scale), each [..., action_dim]."""

    @abc.abstractmethod
    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        """Twin Q mapping (observation, action) to [..., 2]."""


@gin.configurable
class OneHotMLP(Network):
    """Plain MLPs on [observation, one-hot task id] (the paper's network, MTSAC's too)."""

    def __init__(self, hidden_sizes: Sequence[int] = (512, 512), activation: type[nn.Module] = nn.ReLU):
        self.hidden_sizes = list(hidden_sizes)
        self.activation = activation

    def _mlp(self, in_features: int, out_features: int) -> MLP:
        return MLP(
            in_features=in_features,
            out_features=out_features,
            num_cells=self.hidden_sizes,
            activation_class=self.activation,
        )

    def actor(self, obs_dim: int, action_dim: int, num_tasks: int) -> nn.Module:
        return nn.Sequential(self._mlp(obs_dim, 2 * action_dim), NormalParamExtractor())

    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        # torchrl's MLP concatenates its inputs, so it takes (observation, action) directly.
        return TwinCritic(
            self._mlp(obs_dim + action_dim, 1), self._mlp(obs_dim + action_dim, 1)
        )
