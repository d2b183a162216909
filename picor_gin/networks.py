"""Networks: builders of the actor torso and the twin critic of a multi-task agent.

The task set appends the one-hot task id to every observation, so a network reads the task
from the observation's last `num_tasks` entries. The default is the paper's: an MLP on the
observation with the one-hot id, two hidden layers of 512 (PiCor, AAAI 2023, section 5).
"""
from __future__ import annotations

import abc
import math
from typing import Sequence

import gin
import torch
from torch import nn
from torchrl.modules import MLP


class TwinCritic(nn.Module):
    """Two independent Q networks; forward returns both values stacked, shape [..., 2]."""

    def __init__(self, q1: nn.Module, q2: nn.Module):
        super().__init__()
        self.q1, self.q2 = q1, q2

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q1(observation, action), self.q2(observation, action)], -1)


class Network(abc.ABC):
    """Builds the actor torso and the twin critic; the backbone adds its own output head."""

    @abc.abstractmethod
    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        """Module mapping observation [..., obs_dim] to [..., out_features] (SAC: loc and raw scale)."""

    @abc.abstractmethod
    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        """Twin Q mapping (observation, action) to [..., 2]."""


class _MLPNetwork(Network):
    """Shared by the MLP networks: sizes, activation, and the twin critic built from `_q`."""

    def __init__(self, hidden_sizes: Sequence[int] = (512, 512), activation: type[nn.Module] = nn.ReLU):
        if not hidden_sizes:
            raise ValueError(f"{type(self).__name__}.hidden_sizes needs at least one layer")
        self.hidden_sizes = list(hidden_sizes)
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
        for name, value in [("num_layers", num_layers), ("num_modules", num_modules), ("routing_layers", routing_layers)]:
            if value < 1:
                raise ValueError(f"SoftModularNetwork.{name} must be >= 1, got {value}")
        if not encoder_sizes:
            raise ValueError("SoftModularNetwork.encoder_sizes needs at least one layer")
        self.sizes = dict(
            encoder_sizes=list(encoder_sizes), num_layers=num_layers, num_modules=num_modules,
            module_features=module_features, routing_layers=routing_layers, routing_features=routing_features,
        )

    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        return SoftModularNet(obs_dim - num_tasks, out_features, num_tasks, **self.sizes)

    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        return TwinCritic(*(SoftModularNet(obs_dim - num_tasks + action_dim, 1, num_tasks, **self.sizes) for _ in range(2)))
