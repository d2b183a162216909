"""PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347): the
on-policy backbone; with no correction it is MTPPO, PPO on every task's rollout.

It learns from the rollouts `RolloutData` (picor_gin/rollouts.py) collects with the current
policy, with the advantage estimated there by `advantage_estimator()` (TorchRL's GAE). For PiCor's
correction, pi_t is the policy that collected the rollout (the policy PPO's ratio divides by),
its advantage A^{pi_t} is the rollout's GAE, and pi_phi's gain is importance-sampled on the
rollout's actions: g_z(phi) = E_{(s,a) ~ rollout of pi_t}[(ratio_phi(s, a) - 1) A^GAE_z(s, a)],
the surrogate ratio_phi A less its value at pi_t (docs/components.md, "PPO").
"""
from __future__ import annotations

import gin
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import NormalParamExtractor, TanhNormal
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from picor_gin.backbones.base import Backbone
from picor_gin.backbones.sac import gaussian_kl, tanh_gaussian_policy, tanh_gaussian_snapshot
from picor_gin.networks import Network, OneHotMLP


@gin.configurable(denylist=["obs_dim", "action_dim", "num_tasks", "network"])
class PPO(Backbone):
    """Clipped PPO with a tanh-Gaussian actor and a state-value critic, both on the one-hot network.

    The loss is TorchRL's `ClipPPOLoss` on advantages TorchRL's `GAE` computed on the rollout.
    Defaults are the MT10 MTPPO of rainx0r/metaworld-algorithms (examples/multi_task/ppo_mt10.py
    and its PPOConfig): gamma 0.99, GAE lambda 0.97, clip 0.2, entropy coefficient 5e-3, advantages
    standardised per task over the rollout, a tanh-squashed Gaussian with state-dependent scale.
    Their value coefficient of 1e-3 scales a loss stepped by its own Adam, which ignores the scale;
    here too the critic has its own optimizer, so `critic_coef` is 1.

    Args:
        obs_dim, action_dim, num_tasks: supplied by the framework from the task set.
        network: supplied by the learner (`MultiTaskLearner.network`, one for every backbone;
            None builds `OneHotMLP()`): the builder of the actor (its `actor`, with 2 x action_dim
            outputs) and of the state-value critic (its `actor` again, with one output: V(s)
            reads the one-hot too).
        gamma: discount (GAE's, and eq. 10's c (1 - gamma)).
        gae_lambda: lambda of GAE (Schulman et al. 2016).
        clip_epsilon: the ratio's clip range [1 - eps, 1 + eps] (eq. 7 of Schulman et al. 2017).
        critic_coef, entropy_coef: weights of the value loss (squared error to GAE's value target)
            and of the entropy bonus (a one-sample estimate: the tanh-Gaussian has no closed form).
        normalize_advantage_per_task: standardise the advantage within each task's rollout, so
            tasks of different reward scales weigh alike in a multi-task batch; False leaves
            the advantage as GAE gives it.
    """

    pi_t_is_a_snapshot = False

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        network: Network | None = None,
        gamma: float = 0.99,
        gae_lambda: float = 0.97,
        clip_epsilon: float = 0.2,
        critic_coef: float = 1.0,
        entropy_coef: float = 5e-3,
        normalize_advantage_per_task: bool = True,
    ):
        super().__init__(gamma, target_update_rate=None)
        if not 0 <= gae_lambda <= 1:
            raise ValueError(f"PPO.gae_lambda must lie in [0, 1], got {gae_lambda}")
        if not 0 < clip_epsilon < 1:
            raise ValueError(f"PPO.clip_epsilon must lie in (0, 1), got {clip_epsilon}")
        if critic_coef <= 0 or entropy_coef < 0:
            raise ValueError(f"PPO.critic_coef must be > 0 and entropy_coef >= 0, got {critic_coef}, {entropy_coef}")
        network = network or OneHotMLP()
        self.actor = nn.Sequential(network.actor(obs_dim, 2 * action_dim, num_tasks), NormalParamExtractor())
        self.critic = network.actor(obs_dim, 1, num_tasks)
        self.policy = tanh_gaussian_policy(self.actor, return_log_prob=True)
        value = TensorDictModule(self.critic, in_keys=["observation"], out_keys=["state_value"])
        # functional=False: TorchRL's functional copies of the parameters do not work under DDP.
        self.loss_module = ClipPPOLoss(
            self.policy, value, clip_epsilon=clip_epsilon, entropy_coeff=entropy_coef,
            critic_coeff=critic_coef, loss_critic_type="l2", functional=False,
        )
        self.gae = GAE(
            gamma=gamma, lmbda=gae_lambda, value_network=value,
            average_gae=normalize_advantage_per_task, group_key="task_id" if normalize_advantage_per_task else None,
        )

    def advantage_estimator(self) -> GAE:
        return self.gae

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"actor": list(self.actor.parameters()), "critic": list(self.critic.parameters())}

    def losses(self, batch: TensorDictBase, critic_batch: TensorDictBase | None = None) -> dict[str, torch.Tensor]:
        """ClipPPOLoss on a minibatch of rollouts: "loss_actor" is the clipped surrogate plus the
        entropy bonus, "loss_critic" the value loss; the rest is its diagnostics."""
        if critic_batch is not None:
            raise ValueError("PPO's critic trains on its own rollout's minibatch: it takes no separate critic batch")
        terms = self.loss_module(batch)
        return {
            "loss_actor": terms["loss_objective"] + terms["loss_entropy"],
            "loss_critic": terms["loss_critic"],
            "entropy": terms["entropy"].detach(),
            "clip_fraction": terms["clip_fraction"].detach(),
            "kl_approx": terms["kl_approx"].detach(),
        }

    def update_targets(self) -> None:
        """PPO has no target networks."""

    def policy_snapshot(self, observation: torch.Tensor) -> TensorDictBase:
        return tanh_gaussian_snapshot(self.actor, observation)

    def pi_t_snapshot(self, states: TensorDictBase) -> TensorDictBase:
        """pi_t is the rollout's policy: its actions and log-probabilities are in the states."""
        return states.select("action", "action_log_prob")

    @torch.no_grad()
    def critic_estimates(self, observation: torch.Tensor, snapshot: TensorDictBase) -> dict[str, torch.Tensor]:
        return {"value": self.critic(observation).squeeze(-1)}

    @torch.no_grad()
    def value_baseline(self, states: TensorDictBase, pi_t: TensorDictBase) -> torch.Tensor:
        """A^GAE at the rollout's own actions: the surrogate ratio_phi A at phi = pi_t (ratio 1)."""
        return states["advantage"].squeeze(-1)

    def correction_terms(
        self,
        states: TensorDictBase,
        baseline: torch.Tensor,
        pi_prime: TensorDictBase | None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ratio_phi A^GAE - baseline per state, exactly 0 at phi = pi_t; the pre-tanh Gaussian KL.

        The action is the rollout's, not a draw: `noise` is unused.
        """
        loc, scale = self.actor(states["observation"])
        log_prob = TanhNormal(loc, scale).log_prob(states["action"])
        ratio = (log_prob - states["action_log_prob"]).exp()
        reference = {"loc": loc.detach(), "scale": scale.detach()} if pi_prime is None else pi_prime
        return ratio * states["advantage"].squeeze(-1) - baseline, gaussian_kl(loc, scale, reference)

    def divergence(self, observation: torch.Tensor, pi_prime: TensorDictBase) -> torch.Tensor:
        return gaussian_kl(*self.actor(observation), pi_prime)
