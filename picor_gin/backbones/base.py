"""The backbone interface, and the pieces every actor-critic backbone shares.

A backbone owns the actor and critics, returns its losses (it never calls backward, so a
method can combine per-task gradients), and gives the correction phase what it needs: a
snapshot of the policy on some states, the advantage A^{pi_t} and the divergence to pi'_t.
"""
from __future__ import annotations

import abc
from typing import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn


class Backbone(nn.Module, abc.ABC):
    """Single-task RL algorithm with per-task inputs, used by PiCor's two phases.

    Attributes:
        gamma: discount, also used by eq. (10)'s threshold c * (1 - gamma).
        policy: TorchRL module reading "observation", writing "action" (collection and evaluation).
        task_stat_names: the keys of `task_stats()`, so a weighting rule's needs are checked
            when the experiment is built rather than at the first update.
        pi_t_is_a_snapshot: whether `pi_t_snapshot` is a `policy_snapshot`, which `divergence`
            can measure from; not where pi_t is read from the states (an on-policy rollout).
    """

    gamma: float
    policy: TensorDictModuleBase
    task_stat_names: frozenset[str] = frozenset()
    pi_t_is_a_snapshot: bool = True

    def __init__(self, gamma: float, target_update_rate: float | None):
        """`target_update_rate` None: the backbone has no target networks (PPO)."""
        super().__init__()
        name = type(self).__name__
        if not 0 < gamma < 1:
            raise ValueError(f"{name}.gamma must lie in (0, 1), got {gamma}")
        if target_update_rate is not None and not 0 < target_update_rate <= 1:
            raise ValueError(f"{name}.target_update_rate must lie in (0, 1], got {target_update_rate}")
        self.gamma = gamma
        self.target_update_rate = target_update_rate

    @abc.abstractmethod
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimizer: "actor", "critic" and, where the backbone has one, "alpha"."""

    @abc.abstractmethod
    def losses(self, batch: TensorDictBase, critic_batch: TensorDictBase | None = None) -> dict[str, torch.Tensor]:
        """Policy optimization losses ("loss_*") on a batch, plus detached diagnostics.

        `critic_batch`, where given, is what the critic's loss trains on instead of `batch`
        (`MultiTaskData.critic_on_every_task`); the actor's and temperature's stay on `batch`.

        May be called several times per update (once per task under gradient surgery), so it
        must not advance state: a backbone with delayed updates counts updates in
        `update_targets` and leaves out a loss on the updates that skip it (its parameters then
        get no gradient).
        """

    def start_update(self, tasks: Sequence[int]) -> None:
        """Called once per update, before its losses, with the ids of the tasks its batch holds;
        a backbone whose schedule counts each task's updates (TD3's policy delay) reads them."""

    @abc.abstractmethod
    def update_targets(self) -> None:
        """Moves target networks toward the online ones; called once per update, after its
        optimization step."""

    def advantage_estimator(self) -> nn.Module | None:
        """An on-policy backbone's advantage estimator, which the on-policy data path
        (`RolloutData`) runs on each rollout; None for a backbone that learns from replay."""
        return None

    def task_stats(self) -> dict[str, torch.Tensor]:
        """Per-task statistics of shape [N] a weighting rule may use (SAC: "alpha")."""
        return {}

    @abc.abstractmethod
    def policy_snapshot(self, observation: torch.Tensor) -> TensorDictBase:
        """The current policy's outputs on `observation`, detached, for use after later steps.

        Holds at least "action"; a stochastic policy adds "log_prob" (logged as entropy).
        """

    def pi_t_snapshot(self, states: TensorDictBase) -> TensorDictBase:
        """pi_t on the correction states, taken before the update's optimization phase: the
        `pi_t` that `value_baseline` and the correction read. A snapshot of the actor, unless the
        states already record pi_t (an on-policy backbone's rollout)."""
        return self.policy_snapshot(states["observation"])

    def critic_estimates(self, observation: torch.Tensor, snapshot: TensorDictBase) -> dict[str, torch.Tensor]:
        """The critic's own estimates per state of `observation`, for the per-task logs ("q": Q at
        the snapshot's action; "value": V(s)): an overestimating critic shows per task there, where
        a batch mean mixes the tasks. {} for a backbone that logs none."""
        return {}

    @abc.abstractmethod
    def value_baseline(self, states: TensorDictBase, pi_t: TensorDictBase) -> torch.Tensor:
        """The baseline of A^{pi_t} on the correction states, what pi_t's own actions score:
        E_{a'~pi_t}[Q(s, a'; z)] under the current critic for SAC and TD3.

        `states` holds "observation" and "task_id"; on-policy data adds what pi_t's rollout
        recorded there ("action", "action_log_prob", "advantage").
        """

    @abc.abstractmethod
    def correction_terms(
        self,
        states: TensorDictBase,
        baseline: torch.Tensor,
        pi_prime: TensorDictBase | None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A^{pi_t}(s, a; z) with a from pi_phi, differentiable in phi; divergence(pi_phi || pi'_t)).

        `noise`: pi_t's "correction_noise", where its snapshot has one: the draw a stochastic
        backbone takes pi_phi's action with at every evaluation of the phase; None draws afresh.

        `pi_prime` None means phi is pi'_t: the divergence is then taken to the policy's own
        detached outputs (zero, with the Fisher matrix as its Hessian), sparing a snapshot.
        """

    @abc.abstractmethod
    def divergence(self, observation: torch.Tensor, pi_prime: TensorDictBase) -> torch.Tensor:
        """divergence(pi_phi || pi'_t) per state, the one `correction_terms` returns, from the
        actor alone: a solver that measures a step's KL needs no critic pass."""


def frozen_q(critic: nn.Module, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Both twins' Q(s, a), shape [..., 2], with the critic's parameters detached.

    The actor's and the correction's losses differentiate through `action` only; a functional
    call keeps the critic out of their graphs without toggling its requires_grad.
    """
    if not torch.is_grad_enabled():  # nothing to keep out of a graph: skip the functional call's cost
        return critic(observation, action)
    params = {name: p.detach() for name, p in critic.named_parameters()}
    return torch.func.functional_call(critic, params, (observation, action))


@torch.no_grad()
def twin_min_q(critic: nn.Module, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """min_i Q_i(s, a), detached: what a twin critic estimates for the action."""
    return critic(observation, action).min(-1).values


def bootstrapped_target(
    reward: torch.Tensor, terminated: torch.Tensor, next_value: torch.Tensor, gamma: float
) -> torch.Tensor:
    """r + gamma * (1 - terminated) * V(s'): only termination stops the bootstrap, so a
    time-limit truncation still bootstraps."""
    return reward + gamma * (~terminated).to(reward.dtype) * next_value


def twin_critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """J_Q of Haarnoja et al. (2018) eq. (5) / Fujimoto et al. (2018), summed over the twins.

    Args:
        q: both twins' Q(s, a), shape [B, 2]; target: the TD target, shape [B].
    """
    return 0.5 * (q - target.unsqueeze(-1)).square().sum(-1).mean()


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, rate: float) -> None:
    """target <- (1 - rate) * target + rate * online, in one fused op per parameter list."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), rate)
