"""MLP networks: the paper's one-hot MLP (two hidden layers of 512, PiCor, AAAI 2023, section 5)
and MTMHSAC's multi-head variant."""
from __future__ import annotations

import abc
import math
from typing import Sequence

import gin
import torch
from torch import nn
from torchrl.modules import MLP

from picor_gin.networks.base import Network, TwinCritic, layer_sizes


class _MLPNetwork(Network):
    """Shared by the MLP networks: sizes, activation, and the twin critic built from `_q`."""

    def __init__(self, hidden_sizes: Sequence[int] = (512, 512), activation: type[nn.Module] = nn.ReLU):
        self.hidden_sizes = layer_sizes(f"{type(self).__name__}.hidden_sizes", hidden_sizes)
        self.activation = activation

    @abc.abstractmethod
    def _mlp(self, in_features: int, out_features: int, num_tasks: int) -> nn.Module:
        """One network mapping inputs concatenated to in_features onto out_features."""

    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        return self._mlp(obs_dim, out_features, num_tasks)

    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        # torchrl's MLP concatenates its inputs, so a Q net takes (observation, action) directly.
        return TwinCritic(*(self._mlp(obs_dim + action_dim, 1, num_tasks) for _ in range(2)))


@gin.configurable
class OneHotMLP(_MLPNetwork):
    """Plain MLPs on [observation, one-hot task id] (the paper's network, MTSAC's too)."""

    reads_task_id = False

    def _mlp(self, in_features: int, out_features: int, num_tasks: int) -> nn.Module:
        return MLP(
            in_features=in_features,
            out_features=out_features,
            num_cells=self.hidden_sizes,
            activation_class=self.activation,
        )


class TaskHeads(nn.Module):
    """A shared trunk and one linear output head per task (the multi-head network of MTMHSAC).

    The head is picked by the one-hot id at the end of the observation, by masking the output
    of all heads: every head sees only its own task's samples, so task z's loss gives gradient
    to head z and the trunk and exactly zero to the other heads.
    """

    def __init__(self, trunk: nn.Module, features: int, out_features: int, num_tasks: int):
        super().__init__()
        self.trunk = trunk
        self.num_tasks = num_tasks
        bound = 1 / math.sqrt(features)  # nn.Linear's default initialisation, per head
        self.weight = nn.Parameter(torch.empty(num_tasks, features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_tasks, out_features).uniform_(-bound, bound))

    def forward(self, observation: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        one_hot = observation[..., -self.num_tasks:]
        features = self.trunk(observation, *inputs)
        every_head = torch.einsum("...f,nfo->...no", features, self.weight) + self.bias
        return (every_head * one_hot.unsqueeze(-1)).sum(-2)


@gin.configurable
class MultiHeadMLP(_MLPNetwork):
    """MLP trunk on [observation, one-hot id] shared by all tasks, one output head per task."""

    def _mlp(self, in_features: int, out_features: int, num_tasks: int) -> nn.Module:
        trunk = MLP(
            in_features=in_features,
            out_features=self.hidden_sizes[-1],
            num_cells=self.hidden_sizes[:-1],
            activation_class=self.activation,
            activate_last_layer=True,
        )
        return TaskHeads(trunk, self.hidden_sizes[-1], out_features, num_tasks)
