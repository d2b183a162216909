"""MOORE, a mixture of orthogonal experts (Hendawy, Peters and D'Eramo, "Multi-Task Reinforcement
Learning with Mixture of Orthogonal Experts", ICLR 2024, https://arxiv.org/abs/2311.11385).

k expert MLPs encode the state; a Gram-Schmidt process turns their k outputs into an orthonormal
basis per sample; a task's weights mix the basis into one representation, and a per-task linear
head reads it. Sizes and activations follow the authors' MT10 run
(github.com/AhmedMagdyHendawy/MOORE, `run/metaworld/run_metaworld_mt10_mhsac_mt_moore.sh` with
the README's 4 experts; the networks are `moore/utils/networks_sac.py`).
"""
from __future__ import annotations

from typing import Sequence

import gin
import torch
from torch import nn
from torchrl.modules import MLP

from picor_gin.networks.base import Network, TwinCritic, layer_sizes
from picor_gin.networks.mlp import TaskHeads


def gram_schmidt(vectors: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Orthonormalises the k vectors of each sample, in order: u_1 = v_1 / |v_1|, and u_i is v_i
    minus its projections on u_1 ... u_{i-1}, normalised.

    The projections are removed one at a time (modified Gram-Schmidt): in exact arithmetic this is
    the authors' classical form, in float32 it loses less orthogonality when experts nearly agree.
    A norm below `eps` divides by `eps` instead, so a vector inside the span of the earlier ones
    gives a near-zero vector and a finite gradient rather than NaN.

    Args:
        vectors: [..., k, d], k <= d.
        eps: the smallest norm divided by.

    Returns:
        [..., k, d]; per sample, rows with a norm above `eps` are orthonormal.
    """
    basis: list[torch.Tensor] = []
    for v in vectors.unbind(-2):
        for u in basis:
            v = v - (v * u).sum(-1, keepdim=True) * u
        basis.append(v / v.norm(dim=-1, keepdim=True).clamp_min(eps))
    return torch.stack(basis, -2)


class MooreNet(nn.Module):
    """MOORE's shared representation: the state s (the observation without its one-hot id, plus
    the action for a critic) goes through k independent expert MLPs; their outputs, made
    orthonormal per sample by `gram_schmidt`, are mixed by the task's weights w_z = W one_hot(z)
    (a linear map, no bias) and squashed by tanh: tanh(sum_j w_z,j u_j(s)).

    The output head is not part of it: `MooreNetwork` puts `TaskHeads` on top, one linear head
    per task as the authors' multi-head SAC does.

    Args:
        in_features: the state's size (observation without the id, plus the action for a critic).
        num_tasks: length of the one-hot id that ends every observation.
        expert_sizes: each expert's layer sizes; the last is the representation width d. The
            last layer is linear, the others ReLU (the authors' `--activation Linear`).
        num_experts: k, at most d.
    """

    def __init__(self, in_features: int, num_tasks: int, expert_sizes: Sequence[int], num_experts: int):
        super().__init__()
        self.num_tasks, self.num_experts = num_tasks, num_experts
        # Each expert a torchrl MLP initialised as nn.Linear is, as the authors' (their ParallelLayer
        # resets each copy). Not torchrl's MultiAgentMLP: frozen_q cannot call its TensorDictParams.
        self.experts = nn.ModuleList(
            MLP(in_features=in_features, out_features=expert_sizes[-1], num_cells=list(expert_sizes[:-1]),
                activation_class=nn.ReLU)
            for _ in range(num_experts)
        )
        self.task_weights = nn.Linear(num_tasks, num_experts, bias=False)
        nn.init.xavier_uniform_(self.task_weights.weight)  # the authors' task encoder initialisation

    def representations(self, observation: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        """The experts' outputs after Gram-Schmidt: [..., k, d], orthonormal per sample."""
        state = torch.cat([observation[..., :-self.num_tasks], *inputs], -1)
        return gram_schmidt(torch.stack([expert(state) for expert in self.experts], -2))

    def forward(self, observation: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        weights = self.task_weights(observation[..., -self.num_tasks:])  # w_z, [..., k]
        basis = self.representations(observation, *inputs)
        # The authors' `--agg_activation Linear Tanh`: nothing before the mix, tanh after it.
        return torch.tanh(torch.einsum("...k,...kd->...d", weights, basis))


@gin.configurable
class MooreNetwork(Network):
    """MOORE's networks for the actor torso and each twin Q: `MooreNet` under one linear head per
    task (`TaskHeads`).

    Defaults are the authors' MT10 setting: 4 experts (their README: "4, in case of MT10", 6 for
    MT50), each of three layers of 400 (`--actor_n_features 400 400 400`, the same for the
    critic), the last one linear, tanh after the mix (`--agg_activation Linear Tanh`), no hidden
    layer in the heads. The actor's head emits both the mean and the scale, as their
    `--shared_mu_sigma` does.

    Args:
        expert_sizes: each expert's layer sizes; the last is the representation width d.
        num_experts: k, the number of experts and of orthonormal representations, at most d.
    """

    def __init__(self, expert_sizes: Sequence[int] = (400, 400, 400), num_experts: int = 4):
        expert_sizes = layer_sizes("MooreNetwork.expert_sizes", expert_sizes)
        if not 1 <= num_experts <= expert_sizes[-1]:
            raise ValueError(
                f"MooreNetwork.num_experts must be in [1, expert_sizes[-1] = {expert_sizes[-1]}] "
                f"(no more orthonormal vectors exist), got {num_experts}"
            )
        self.expert_sizes = expert_sizes
        self.num_experts = num_experts

    def _net(self, state_features: int, out_features: int, num_tasks: int) -> TaskHeads:
        trunk = MooreNet(state_features, num_tasks, self.expert_sizes, self.num_experts)
        return TaskHeads(trunk, self.expert_sizes[-1], out_features, num_tasks)

    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        return self._net(obs_dim - num_tasks, out_features, num_tasks)

    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        return TwinCritic(*(self._net(obs_dim - num_tasks + action_dim, 1, num_tasks) for _ in range(2)))
