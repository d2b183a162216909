"""SAC with one temperature per task: the paper's backbone."""
from __future__ import annotations

import copy
import math

import gin
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import Normal, kl_divergence
from torchrl.modules import NormalParamExtractor, ProbabilisticActor, TanhNormal

from picor_gin.backbones.base import (
    Backbone, bootstrapped_target, frozen_q, polyak_update, twin_critic_loss, twin_min_q,
)
from picor_gin.networks import Network, OneHotMLP


def soft_bellman_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    next_target_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """r + gamma * (1 - terminated) * (min_i Q_target_i(s', a') - alpha_z * log pi(a'|s')).

    SAC's target (Haarnoja et al. 2018, eq. 3 with the twin-min of Fujimoto et al.); docs/design.md,
    "The algorithm", step 3. `next_target_q` holds both twins on its last axis.
    """
    soft_value = next_target_q.min(-1).values - alpha * next_log_prob
    return bootstrapped_target(reward, terminated, soft_value, gamma)


def _normal(loc: torch.Tensor, scale: torch.Tensor) -> Normal:
    """A Normal without argument checks: on the correction's small tensors they cost more than
    the arithmetic, and loc and scale come from the actor's NormalParamExtractor (scale > 0)."""
    return Normal(loc, scale, validate_args=False)


def gaussian_kl(loc: torch.Tensor, scale: torch.Tensor, reference: TensorDictBase | dict) -> torch.Tensor:
    """KL(N(loc, scale) || N(reference)) summed over action dims: exact for the tanh-squashed
    policies too, since tanh is a bijection."""
    return kl_divergence(_normal(loc, scale), _normal(reference["loc"], reference["scale"])).sum(-1)


def tanh_normal_sample(
    loc: torch.Tensor, scale: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(loc + scale * noise) and log pi(a), summed over action dims.

    The change of variables in the stable form log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
    (Haarnoja et al. 2018, appendix C); given the noise, so two policies can share a draw.
    """
    pre_tanh = loc + scale * noise
    log_prob = _normal(loc, scale).log_prob(pre_tanh) - 2 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))
    return torch.tanh(pre_tanh), log_prob.sum(-1)


def tanh_gaussian_policy(actor: nn.Module, return_log_prob: bool = False) -> ProbabilisticActor:
    """The acting module of an actor that outputs (loc, scale): a ~ tanh(N(loc, scale)).

    `return_log_prob` records log pi(a|s) beside the action ("action_log_prob"), which an
    on-policy backbone's ratio needs of its rollout.
    """
    return ProbabilisticActor(
        TensorDictModule(actor, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        return_log_prob=return_log_prob,
    )


@torch.no_grad()
def tanh_gaussian_snapshot(actor: nn.Module, observation: torch.Tensor) -> TensorDictBase:
    """A tanh-Gaussian actor's detached outputs on `observation`, with one action drawn and its
    noise ("noise"), so the draw can be repeated by another policy."""
    loc, scale = actor(observation)
    noise = torch.randn_like(loc)
    action, log_prob = tanh_normal_sample(loc, scale, noise)
    return TensorDict(
        {"loc": loc, "scale": scale, "action": action, "log_prob": log_prob, "noise": noise},
        batch_size=observation.shape[:-1],
    )


@gin.configurable(denylist=["obs_dim", "action_dim", "num_tasks", "network"])
class SAC(Backbone):
    """Soft actor-critic with one learnable temperature per task (docs/design.md, "The algorithm", step 3).

    Hand-written rather than TorchRL's SACLoss because that loss has a single temperature and
    PiCor's eq. (9) needs one per task. Defaults are SAC's (Haarnoja et al. 2018, Table 1);
    networks are the PiCor paper's (two hidden layers of 512).

    Args:
        obs_dim, action_dim, num_tasks: supplied by the framework from the task set.
        network: supplied by the learner (`MultiTaskLearner.network`, one for every backbone;
            None builds `OneHotMLP()`): the builder of the actor and twin critic.
        gamma: discount.
        target_update_rate: share of the online critic mixed into the target per update.
        initial_alpha: starting temperature of every task.
        target_entropy: entropy target of the temperature loss; None means -action_dim.
        advantage_entropy_coef: k in the correction's advantage
            A = Q(s,a) - k alpha_z log pi(a|s) - E_{a'~pi_t}[Q(s,a') - k alpha_z log pi_t(a'|s)].
            k = 0 is the paper's raw-Q advantage; k = 1 the soft advantage, consistent with the
            soft objective SAC's actor step optimises (docs/design.md, "The algorithm", "Calibration").
        shared_correction_noise: the correction samples pi_phi's action with the noise pi_t's
            baseline action was drawn with (common random numbers), so the advantage of pi'_t
            measures the update's change instead of two independent draws' difference; False
            draws it afresh, as the paper's estimator does (one draw per correction phase).
        advantage_critic: the critic A^{pi_t} is read from: "online" (the paper's) or "target",
            the Polyak average, which drifts less while the sampler dwells on another task.
    """

    task_stat_names = frozenset({"alpha"})

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        network: Network | None = None,
        gamma: float = 0.99,
        target_update_rate: float = 0.005,
        initial_alpha: float = 1.0,
        target_entropy: float | None = None,
        advantage_entropy_coef: float = 1.0,
        shared_correction_noise: bool = True,
        advantage_critic: str = "online",
    ):
        super().__init__(gamma, target_update_rate)
        if not initial_alpha > 0:
            raise ValueError(f"SAC.initial_alpha must be > 0, got {initial_alpha}")
        network = network or OneHotMLP()
        self.target_entropy = -float(action_dim) if target_entropy is None else target_entropy
        self.advantage_entropy_coef = advantage_entropy_coef
        self.shared_correction_noise = shared_correction_noise
        if advantage_critic not in ("online", "target"):
            raise ValueError(f"SAC.advantage_critic must be 'online' or 'target', got {advantage_critic!r}")
        self.advantage_critic = advantage_critic
        self.actor = nn.Sequential(network.actor(obs_dim, 2 * action_dim, num_tasks), NormalParamExtractor())
        self.critic = network.critic(obs_dim, action_dim, num_tasks)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((num_tasks,), math.log(initial_alpha)))
        self.policy = tanh_gaussian_policy(self.actor)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "actor": list(self.actor.parameters()),
            "critic": list(self.critic.parameters()),
            "alpha": [self.log_alpha],
        }

    def _distribution(self, observation: torch.Tensor) -> tuple[TanhNormal, torch.Tensor, torch.Tensor]:
        loc, scale = self.actor(observation)
        return TanhNormal(loc, scale), loc, scale

    def losses(self, batch: TensorDictBase, critic_batch: TensorDictBase | None = None) -> dict[str, torch.Tensor]:
        q, loss_critic = self._critic_loss(batch if critic_batch is None else critic_batch)
        observation, task_id = batch["observation"], batch["task_id"]
        alpha = self.log_alpha.exp()[task_id]  # per-sample alpha_z, shape [B]
        new_action, log_prob = self._distribution(observation)[0].rsample_and_log_prob()
        # J_pi of eq. (7): alpha_z log pi(a|s;z) - min_i Q_i(s,a;z), critic held fixed.
        loss_actor = (alpha.detach() * log_prob - frozen_q(self.critic, observation, new_action).min(-1).values).mean()
        # J(alpha) of eq. (18), per task: only the sampled tasks' log alpha_z get gradient.
        loss_alpha = -(self.log_alpha[task_id] * (log_prob.detach() + self.target_entropy)).mean()
        return {
            "loss_critic": loss_critic,
            "loss_actor": loss_actor,
            "loss_alpha": loss_alpha,
            "entropy": -log_prob.detach().mean(),
            "q": q.detach().mean(),
        }

    def _critic_loss(self, batch: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Both twins' Q on the batch and J_Q against the soft Bellman target."""
        alpha = self.log_alpha.detach().exp()[batch["task_id"]]
        with torch.no_grad():
            next_action, next_log_prob = self._distribution(batch["next", "observation"])[0].rsample_and_log_prob()
            target = soft_bellman_target(
                batch["next", "reward"].squeeze(-1),
                batch["next", "terminated"].squeeze(-1),
                self.target_critic(batch["next", "observation"], next_action),
                next_log_prob,
                alpha,
                self.gamma,
            )
        q = self.critic(batch["observation"], batch["action"])
        return q, twin_critic_loss(q, target)

    def update_targets(self) -> None:
        polyak_update(self.target_critic, self.critic, self.target_update_rate)

    def task_stats(self) -> dict[str, torch.Tensor]:
        return {"alpha": self.log_alpha.detach().exp()}

    def critic_estimates(self, observation: torch.Tensor, snapshot: TensorDictBase) -> dict[str, torch.Tensor]:
        return {"q": twin_min_q(self.critic, observation, snapshot["action"])}

    def _advantage_critic(self) -> nn.Module:
        return self.target_critic if self.advantage_critic == "target" else self.critic

    def policy_snapshot(self, observation: torch.Tensor) -> TensorDictBase:
        return tanh_gaussian_snapshot(self.actor, observation)

    def pi_t_snapshot(self, states: TensorDictBase) -> TensorDictBase:
        """pi_t, with the draw the correction takes pi_phi's action with ("correction_noise"):
        pi_t's own (common random numbers) or an independent one, fixed for the whole phase so
        that the solver's check of the constraint and its step see one sample."""
        snapshot = super().pi_t_snapshot(states)
        noise = snapshot["noise"]
        snapshot["correction_noise"] = noise if self.shared_correction_noise else torch.randn_like(noise)
        return snapshot

    @torch.no_grad()
    def value_baseline(self, states: TensorDictBase, pi_t: TensorDictBase) -> torch.Tensor:
        alpha = self.log_alpha.exp()[states["task_id"]]
        q = twin_min_q(self._advantage_critic(), states["observation"], pi_t["action"])
        return q - self.advantage_entropy_coef * alpha * pi_t["log_prob"]

    def correction_terms(
        self,
        states: TensorDictBase,
        baseline: torch.Tensor,
        pi_prime: TensorDictBase | None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        observation = states["observation"]
        loc, scale = self.actor(observation)
        if noise is None:
            noise = torch.randn_like(loc)
        action, log_prob = tanh_normal_sample(loc, scale, noise)
        alpha = self.log_alpha.detach().exp()[states["task_id"]]
        gain = frozen_q(self._advantage_critic(), observation, action).min(-1).values - self.advantage_entropy_coef * alpha * log_prob
        reference = {"loc": loc.detach(), "scale": scale.detach()} if pi_prime is None else pi_prime
        return gain - baseline, gaussian_kl(loc, scale, reference)

    def divergence(self, observation: torch.Tensor, pi_prime: TensorDictBase) -> torch.Tensor:
        return gaussian_kl(*self.actor(observation), pi_prime)
