"""Soft Modularization (Yang et al., NeurIPS 2020), a baseline of the PiCor paper's Table 1."""
from __future__ import annotations

import math
from typing import Sequence

import gin
import torch
from torch import nn
from torchrl.modules import MLP

from picor_gin.networks.base import Network, TwinCritic, layer_sizes


class SoftModularNet(nn.Module):
    """Soft Modularization (Yang et al., NeurIPS 2020): a base network of `num_layers` layers of
    `num_modules` modules, whose connections a routing network weighs per sample from the task
    and the state.

    The state s (the observation without its one-hot id, and the action for a critic) is
    encoded to f(s); the one-hot id to h(z). The routing network reads f(s) * h(z) and emits,
    layer by layer, softmax weights p^l [num_modules, num_modules] (row j: how module j of
    layer l+1 mixes the outputs of layer l), each conditioned on the earlier ones, and last
    weights [num_modules] that mix the final layer's outputs into the output head.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_tasks: int,
        encoder_sizes: Sequence[int],
        num_layers: int,
        num_modules: int,
        module_features: int,
        routing_layers: int,
        routing_features: int,
    ):
        super().__init__()
        self.num_tasks, self.num_modules = num_tasks, num_modules
        embedding = encoder_sizes[-1]
        self.state_encoder = MLP(in_features=in_features, out_features=embedding, num_cells=encoder_sizes[:-1])
        self.task_encoder = nn.Linear(num_tasks, embedding)
        self.routing_trunk = MLP(
            in_features=embedding, out_features=routing_features,
            num_cells=[routing_features] * (routing_layers - 1),
        )
        squared = num_modules * num_modules
        self.routing_heads = nn.ModuleList(
            nn.Linear(routing_features, squared) for _ in range(num_layers - 1)
        )
        # The l routing matrices emitted so far, flattened, condition the next (or the last mix).
        self.routing_conditions = nn.ModuleList(
            nn.Linear(l * squared, routing_features) for l in range(1, num_layers)
        )
        self.last_head = nn.Linear(routing_features, num_modules)
        self.module_weights = nn.ParameterList()
        self.module_biases = nn.ParameterList()
        features = embedding
        for _ in range(num_layers):
            bound = 1 / math.sqrt(features)  # nn.Linear's default initialisation, per module
            self.module_weights.append(nn.Parameter(torch.empty(num_modules, features, module_features).uniform_(-bound, bound)))
            self.module_biases.append(nn.Parameter(torch.empty(num_modules, module_features).uniform_(-bound, bound)))
            features = module_features
        self.output = nn.Linear(module_features, out_features)

    def routing(self, observation: torch.Tensor, *inputs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(p^1 ... p^{L-1}, last weights, f(s)) for these samples."""
        state = torch.cat([observation[..., :-self.num_tasks], *inputs], -1)
        encoded = self.state_encoder(state)
        context = self.task_encoder(observation[..., -self.num_tasks:]) * encoded
        routing_features = self.routing_trunk(torch.relu(context))
        matrix = (*encoded.shape[:-1], self.num_modules, self.num_modules)
        weights: list[torch.Tensor] = []
        for head in self.routing_heads:
            weights.append(head(self._routing_input(routing_features, weights)).view(matrix).softmax(-1))
        return weights, self.last_head(self._routing_input(routing_features, weights)).softmax(-1), encoded

    def _routing_input(self, routing_features: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """The trunk's features, conditioned on the routing weights emitted so far (if any)."""
        if weights:
            earlier = torch.cat([w.flatten(-2) for w in weights], -1)
            routing_features = self.routing_conditions[len(weights) - 1](earlier) * routing_features
        return torch.relu(routing_features)

    def forward(self, observation: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        weights, last, encoded = self.routing(observation, *inputs)
        # Layer 1: every module reads f(s); outputs [..., num_modules, module_features].
        outputs = torch.einsum("...i,mio->...mo", torch.relu(encoded), self.module_weights[0]) + self.module_biases[0]
        for p, weight, bias in zip(weights, self.module_weights[1:], self.module_biases[1:]):
            mixed = torch.relu(p @ outputs)  # row j: module j's input, a soft mix of layer l
            outputs = torch.einsum("...mi,mio->...mo", mixed, weight) + bias
        return self.output(torch.relu((last.unsqueeze(-1) * outputs).sum(-2)))


@gin.configurable
class SoftModularNetwork(Network):
    """Soft Modularization's networks for the actor torso and each twin Q (defaults: the
    authors' MT10 setting, 2 layers x 2 modules of 256, routing 2 x 256, state encoder 400 x 2).

    Args:
        encoder_sizes: the state encoder's layer sizes; the last is the embedding width.
        num_layers, num_modules, module_features: the base network.
        routing_layers, routing_features: the routing network's trunk.
    """

    def __init__(
        self,
        encoder_sizes: Sequence[int] = (400, 400),
        num_layers: int = 2,
        num_modules: int = 2,
        module_features: int = 256,
        routing_layers: int = 2,
        routing_features: int = 256,
    ):
        counts = dict(num_layers=num_layers, num_modules=num_modules, module_features=module_features,
                      routing_layers=routing_layers, routing_features=routing_features)
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"SoftModularNetwork.{name} must be >= 1, got {value}")
        self.sizes = dict(encoder_sizes=layer_sizes("SoftModularNetwork.encoder_sizes", encoder_sizes), **counts)

    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        return SoftModularNet(obs_dim - num_tasks, out_features, num_tasks, **self.sizes)

    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        return TwinCritic(*(SoftModularNet(obs_dim - num_tasks + action_dim, 1, num_tasks, **self.sizes) for _ in range(2)))
