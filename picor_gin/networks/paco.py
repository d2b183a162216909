"""PaCo (Sun et al., "PaCo: Parameter-Compositional Multi-Task Reinforcement Learning", NeurIPS
2022): every task's network is a linear combination of K shared parameter sets.

The defaults are the authors' MT10 setting, read from their code (github.com/TToTMooN/paco-mtrl,
`paco/examples/metaworld_mt10_paco_conf.py`, and its ALF fork, branch PaCo_ALF): K = 5
(`num_of_param_set`), three hidden layers of 400 (`alf/examples/metaworld/metaworld_conf.py`,
`fc_hidden_layers`), every layer compositional, the output layer included
(`share_action_projection = False`), the task id read only to pick w_z (`use_task_input = False`),
the K sets initialised identically (`use_identical_init = True`) and w_z ~ N(0, I_K) (the
`TaskEncodingNetwork`'s bias-free layer, initialised by `torch.nn.init.normal_`). Its stabilisers,
loss maskout and w-reset, are `PaCoLosses` (picor_gin/objectives.py).
"""
from __future__ import annotations

import math
from typing import Sequence

import gin
import torch
from torch import nn

from picor_gin.networks.base import Network, TwinCritic, layer_sizes


class PaCoNet(nn.Module):
    """One network per task from shared parameters: theta_z = Phi w_z (PaCo, eq. 1).

    Phi holds K parameter sets of an MLP (weights [K, in, out] and biases [K, out] per layer) and
    `w` one compositional vector per task ([N, K]). A layer is linear in its parameters, so
    x (sum_k w_zk W_k) + sum_k w_zk b_k is computed as the K layers' outputs mixed by w_z, per
    sample: a batch may hold several tasks. The one-hot id at the observation's end picks w_z
    and is not an input, so task z's loss gives gradient to Phi and w_z and exactly zero to the
    other tasks' w.

    Args:
        in_features: the input without the one-hot id (observation, plus the action for a Q).
        out_features: output size.
        num_tasks: N, the one-hot's length.
        hidden_sizes: the MLP's hidden layers; ReLU between layers, none after the last.
        num_parameter_sets: K.
    """

    def __init__(self, in_features: int, out_features: int, num_tasks: int, hidden_sizes: Sequence[int], num_parameter_sets: int):
        super().__init__()
        self.num_tasks = num_tasks
        self.parameter_set_weights = nn.ParameterList()
        self.parameter_set_biases = nn.ParameterList()
        for fan_in, fan_out in zip([in_features, *hidden_sizes], [*hidden_sizes, out_features]):
            # nn.Linear's default initialisation, one draw copied to all K sets (the authors'
            # use_identical_init): theta_z then starts as (sum_k w_zk) times one network.
            bound = 1 / math.sqrt(fan_in)
            weight = torch.empty(fan_in, fan_out).uniform_(-bound, bound)
            bias = torch.empty(fan_out).uniform_(-bound, bound)
            self.parameter_set_weights.append(nn.Parameter(weight.expand(num_parameter_sets, -1, -1).clone()))
            self.parameter_set_biases.append(nn.Parameter(bias.expand(num_parameter_sets, -1).clone()))
        self.w = nn.Parameter(torch.randn(num_tasks, num_parameter_sets))

    @torch.no_grad()
    def reset_w(self, tasks: torch.Tensor, mix: torch.Tensor) -> None:
        """w_z <- mix_z @ w for each z in `tasks` (PaCo's w-reset; `mix` [len(tasks), N])."""
        self.w[tasks] = mix.to(self.w) @ self.w

    def forward(self, observation: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        w = observation[..., -self.num_tasks:] @ self.w  # [..., K]: w_z of each sample's task
        x = torch.cat([observation[..., :-self.num_tasks], *inputs], -1)
        last = len(self.parameter_set_weights) - 1
        for i, (weight, bias) in enumerate(zip(self.parameter_set_weights, self.parameter_set_biases)):
            every_set = torch.einsum("...i,kio->...ko", x, weight) + bias  # [..., K, out]
            x = torch.einsum("...k,...ko->...o", w, every_set)
            if i < last:
                x = torch.relu(x)
        return x


@gin.configurable
class PaCoNetwork(Network):
    """PaCo's actor torso and twin critic: each a `PaCoNet` with its own w (defaults: the
    authors' MT10 setting, K = 5 parameter sets of three hidden layers of 400).

    The authors share one w between the actor and both critics, trained by an optimizer of its
    own; here each network has its own w, trained with its network's parameters (as in
    rainx0r/metaworld-algorithms' PaCo), so the backbone's optimizer groups stay disjoint.

    Args:
        hidden_sizes: the hidden layers of each network.
        num_parameter_sets: K, the parameter sets Phi composes.
    """

    def __init__(self, hidden_sizes: Sequence[int] = (400, 400, 400), num_parameter_sets: int = 5):
        if num_parameter_sets < 1:
            raise ValueError(f"PaCoNetwork.num_parameter_sets must be >= 1, got {num_parameter_sets}")
        self.hidden_sizes = layer_sizes("PaCoNetwork.hidden_sizes", hidden_sizes)
        self.num_parameter_sets = num_parameter_sets

    def _net(self, in_features: int, out_features: int, num_tasks: int) -> PaCoNet:
        return PaCoNet(in_features, out_features, num_tasks, self.hidden_sizes, self.num_parameter_sets)

    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        return self._net(obs_dim - num_tasks, out_features, num_tasks)

    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        return TwinCritic(*(self._net(obs_dim - num_tasks + action_dim, 1, num_tasks) for _ in range(2)))
