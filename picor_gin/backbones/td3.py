"""TD3 (Fujimoto et al., 2018): a deterministic backbone for PiCor.

With a deterministic actor mu, the correction's divergence is the KL between the Gaussians
N(mu_phi(s), sigma^2) and N(mu'_t(s), sigma^2) that the exploration noise sigma makes of the two
actors: ||mu_phi(s) - mu'_t(s)||^2 / (2 sigma^2), a scaled squared distance. The advantage
A^{pi_t}(s, a) = min_i Q_i(s, a) - min_i Q_i(s, mu_t(s)) uses the deterministic actor.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import gin
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torch import nn
from torchrl.envs.utils import ExplorationType, exploration_type

from picor_gin.backbones.base import (
    Backbone, bootstrapped_target, frozen_q, polyak_update, twin_critic_loss, twin_min_q,
)
from picor_gin.networks import Network, OneHotMLP


class GaussianExploration(TensorDictModuleBase):
    """Adds N(0, sigma^2) noise to "action" and clips to [-1, 1], unless acting deterministically.

    Hand-written rather than torchrl's AdditiveGaussianModule, whose action spec stays on the
    device it was built on when Lightning moves the policy to a GPU.
    """

    def __init__(self, sigma: float):
        super().__init__()
        self.in_keys = self.out_keys = ["action"]
        self.sigma = sigma

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if exploration_type() is not ExplorationType.DETERMINISTIC:
            action = tensordict["action"]
            tensordict["action"] = (action + self.sigma * torch.randn_like(action)).clamp(-1, 1)
        return tensordict


@gin.configurable(denylist=["obs_dim", "action_dim", "num_tasks", "network"])
class TD3(Backbone):
    """Twin delayed DDPG: twin critics, target policy smoothing, delayed actor and target updates.

    Defaults are Fujimoto et al. (2018); actions lie in [-1, 1] (every task set here).

    Args:
        obs_dim, action_dim, num_tasks: supplied by the framework from the task set.
        network: supplied by the learner (`MultiTaskLearner.network`, one for every backbone;
            None builds `OneHotMLP()`): the builder of the actor torso and twin critic.
        gamma: discount.
        target_update_rate: share of the online networks mixed into the targets per delayed update.
        exploration_noise: sigma of the Gaussian noise when collecting; also the shared standard
            deviation of the correction's divergence.
        policy_noise, noise_clip: target policy smoothing noise and its clip.
        policy_delay: critic updates of a task per actor and target update on it (counted per task).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        network: Network | None = None,
        gamma: float = 0.99,
        target_update_rate: float = 0.005,
        exploration_noise: float = 0.1,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_delay: int = 2,
    ):
        super().__init__(gamma, target_update_rate)
        if not exploration_noise > 0:
            raise ValueError(f"TD3.exploration_noise must be > 0, got {exploration_noise}")
        if policy_noise < 0 or noise_clip < 0:
            raise ValueError(f"TD3.policy_noise and noise_clip must be >= 0, got {policy_noise}, {noise_clip}")
        if policy_delay < 1:
            raise ValueError(f"TD3.policy_delay must be >= 1, got {policy_delay}")
        network = network or OneHotMLP()
        self.exploration_noise = exploration_noise
        self.policy_noise = policy_noise
        self.noise_clip = noise_clip
        self.policy_delay = policy_delay
        self.task_updates = [0] * num_tasks  # each task's updates, for the delay
        self._update_tasks = range(num_tasks)  # the tasks of the update under way
        self.actor = nn.Sequential(network.actor(obs_dim, action_dim, num_tasks), nn.Tanh())
        self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = network.critic(obs_dim, action_dim, num_tasks)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.policy = TensorDictSequential(
            TensorDictModule(self.actor, in_keys=["observation"], out_keys=["action"]),
            GaussianExploration(exploration_noise),
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"actor": list(self.actor.parameters()), "critic": list(self.critic.parameters())}

    def start_update(self, tasks: Sequence[int]) -> None:
        self._update_tasks = tasks

    def _actor_update_due(self) -> bool:
        """Whether this update (the one `update_targets` will close) is a delayed actor update.

        The delay counts each task's own updates, as KTM-DRL's code does: with one counter for
        all, tasks trained in turn would get the actor's update only when their turn fell on a
        multiple of the delay (with 2 and an even task count, half the tasks never would).
        Tasks trained together advance together.
        """
        return (max(self.task_updates[z] for z in self._update_tasks) + 1) % self.policy_delay == 0

    def losses(self, batch: TensorDictBase, critic_batch: TensorDictBase | None = None) -> dict[str, torch.Tensor]:
        losses = self._critic_loss(batch if critic_batch is None else critic_batch)
        if self._actor_update_due():
            # Fujimoto et al.: the actor ascends the first twin, with the critic held fixed.
            observation = batch["observation"]
            losses["loss_actor"] = -frozen_q(self.critic, observation, self.actor(observation))[..., 0].mean()
        return losses

    def _critic_loss(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """J_Q against the target-smoothed TD target, and the mean Q."""
        observation, next_observation = batch["observation"], batch["next", "observation"]
        with torch.no_grad():
            next_action = self.target_actor(next_observation)
            smoothing = (torch.randn_like(next_action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            next_action = (next_action + smoothing).clamp(-1, 1)
            target = bootstrapped_target(
                batch["next", "reward"].squeeze(-1),
                batch["next", "terminated"].squeeze(-1),
                self.target_critic(next_observation, next_action).min(-1).values,
                self.gamma,
            )
        q = self.critic(observation, batch["action"])
        return {"loss_critic": twin_critic_loss(q, target), "q": q.detach().mean()}

    def update_targets(self) -> None:
        """Ends an update, so `losses` may run several times per update (once per task under
        gradient surgery) without advancing the delay."""
        if self._actor_update_due():
            polyak_update(self.target_critic, self.critic, self.target_update_rate)
            polyak_update(self.target_actor, self.actor, self.target_update_rate)
        for z in self._update_tasks:
            self.task_updates[z] += 1
        self._update_tasks = range(len(self.task_updates))

    @torch.no_grad()
    def policy_snapshot(self, observation: torch.Tensor) -> TensorDictBase:
        return TensorDict({"action": self.actor(observation)}, batch_size=observation.shape[:-1])

    def critic_estimates(self, observation: torch.Tensor, snapshot: TensorDictBase) -> dict[str, torch.Tensor]:
        return {"q": twin_min_q(self.critic, observation, snapshot["action"])}

    def value_baseline(self, states: TensorDictBase, pi_t: TensorDictBase) -> torch.Tensor:
        return twin_min_q(self.critic, states["observation"], pi_t["action"])

    def correction_terms(
        self,
        states: TensorDictBase,
        baseline: torch.Tensor,
        pi_prime: TensorDictBase | None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic actor draws no noise; `noise` is unused."""
        observation = states["observation"]
        action = self.actor(observation)
        gain = frozen_q(self.critic, observation, action).min(-1).values
        reference = action.detach() if pi_prime is None else pi_prime["action"]
        return gain - baseline, self._action_divergence(action, reference)

    def divergence(self, observation: torch.Tensor, pi_prime: TensorDictBase) -> torch.Tensor:
        return self._action_divergence(self.actor(observation), pi_prime["action"])

    def _action_divergence(self, action: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The KL between the Gaussian exploration policies around the two actions."""
        return (action - reference).square().sum(-1) / (2 * self.exploration_noise**2)

    def get_extra_state(self) -> dict[str, Any]:
        """The update counters, so a resumed run keeps each task's delay phase."""
        return {"task_updates": list(self.task_updates)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # A checkpoint with one counter for all tasks gives every task its phase.
        self.task_updates = list(state.get("task_updates") or [state["critic_updates"]] * len(self.task_updates))
