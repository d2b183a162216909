"""Plain-torch SAC update loop: the reference that picor-gin's `training_step` is timed against.

    python benchmarks/plain_sac.py [--obs_dim 49 --action_dim 4 --num_tasks 10] [--updates 300]

What a researcher writes by hand with nothing but torch: Linear/ReLU MLPs, a tanh-Gaussian actor,
twin critics with a Polyak target, one temperature per task and three Adam optimizers. It does
the same arithmetic as the framework's MTSAC update (`SAC.losses`, picor_gin/backbones/sac.py):
every loss from the parameters before the step, one backward of their sum, the critic frozen in
the actor's term (only the scale's elementwise map differs: exp of a clamped log-std here). So
the ratio of the two update rates is the framework's overhead, not a difference in algorithm.
No torchrl, lightning or picor_gin import, on purpose.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def mlp(in_features: int, hidden_sizes: Sequence[int], out_features: int) -> nn.Sequential:
    """Linear/ReLU layers of the given widths, a linear output."""
    sizes = [in_features, *hidden_sizes]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], out_features))


class PlainSAC:
    """SAC with a per-task log-temperature vector, its update written out in plain torch."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        num_tasks: int,
        hidden_sizes: Sequence[int],
        lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
    ):
        self.gamma, self.tau, self.target_entropy = gamma, tau, -float(action_dim)
        self.actor = mlp(obs_dim, hidden_sizes, 2 * action_dim)
        self.critics = nn.ModuleList(mlp(obs_dim + action_dim, hidden_sizes, 1) for _ in range(2))
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.log_alpha = torch.zeros(num_tasks, requires_grad=True)
        self.optimizers = [
            torch.optim.Adam(self.actor.parameters(), lr=lr),
            torch.optim.Adam(self.critics.parameters(), lr=lr),
            torch.optim.Adam([self.log_alpha], lr=lr),
        ]

    def sample(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian action and its log-probability (with the tanh correction)."""
        mean, log_std = self.actor(observation).chunk(2, -1)
        std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        u = mean + std * torch.randn_like(mean)
        log_prob = torch.distributions.Normal(mean, std).log_prob(u)
        # log(1 - tanh(u)^2), written stably.
        log_prob = log_prob - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u), log_prob.sum(-1)

    @staticmethod
    def q(critics: nn.ModuleList, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Both twins' values, shape [B, 2]."""
        x = torch.cat([observation, action], -1)
        return torch.cat([critic(x) for critic in critics], -1)

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        """One SAC step on `batch`: critic, actor and temperature losses, then the Polyak update."""
        observation, task_id = batch["observation"], batch["task_id"]
        alpha = self.log_alpha.exp()[task_id]
        with torch.no_grad():
            next_action, next_log_prob = self.sample(batch["next_observation"])
            next_q = self.q(self.target_critics, batch["next_observation"], next_action).min(-1).values
            soft_value = next_q - alpha * next_log_prob
            target = batch["reward"] + self.gamma * (~batch["terminated"]).float() * soft_value
        q = self.q(self.critics, observation, batch["action"])
        loss_critic = 0.5 * (q - target.unsqueeze(-1)).square().sum(-1).mean()

        action, log_prob = self.sample(observation)
        self.critics.requires_grad_(False)  # the actor's term reaches the action, not the critic
        q_new = self.q(self.critics, observation, action).min(-1).values
        self.critics.requires_grad_(True)
        loss_actor = (alpha.detach() * log_prob - q_new).mean()
        loss_alpha = -(self.log_alpha[task_id] * (log_prob.detach() + self.target_entropy)).mean()

        for optimizer in self.optimizers:
            optimizer.zero_grad()
        (loss_critic + loss_actor + loss_alpha).backward()
        for optimizer in self.optimizers:
            optimizer.step()
        with torch.no_grad():
            for target_p, p in zip(self.target_critics.parameters(), self.critics.parameters()):
                target_p.lerp_(p, self.tau)


def random_batch(obs_dim: int, action_dim: int, num_tasks: int, batch_size: int) -> dict[str, torch.Tensor]:
    """A replay batch of the framework's shapes; its values do not change the cost of an update."""
    return {
        "observation": torch.randn(batch_size, obs_dim),
        "action": torch.rand(batch_size, action_dim) * 2 - 1,
        "reward": torch.randn(batch_size),
        "terminated": torch.rand(batch_size) < 0.01,
        "next_observation": torch.randn(batch_size, obs_dim),
        "task_id": torch.randint(num_tasks, (batch_size,)),
    }


def updates_per_second(
    obs_dim: int,
    action_dim: int,
    num_tasks: int,
    hidden_sizes: Sequence[int],
    batch_size: int,
    updates: int,
    warmup: int = 20,
) -> float:
    """Updates per second of `PlainSAC.update` on one batch held in memory, after `warmup` updates.

    The first updates are slower (allocator, Adam's lazily built state), so they are not timed.
    """
    agent = PlainSAC(obs_dim, action_dim, num_tasks, hidden_sizes)
    batch = random_batch(obs_dim, action_dim, num_tasks, batch_size)
    for _ in range(warmup):
        agent.update(batch)
    started = time.perf_counter()
    for _ in range(updates):
        agent.update(batch)
    return updates / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs_dim", type=int, default=49, help="MT10: 39 + one-hot of 10 tasks")
    parser.add_argument("--action_dim", type=int, default=4)
    parser.add_argument("--num_tasks", type=int, default=10)
    parser.add_argument("--hidden_sizes", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    rate = updates_per_second(
        args.obs_dim, args.action_dim, args.num_tasks, args.hidden_sizes, args.batch_size,
        args.updates, args.warmup,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: {rate:.1f} updates/s")


if __name__ == "__main__":
    main()
