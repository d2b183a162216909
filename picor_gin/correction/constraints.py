"""Constraint forms of the policy correction phase (eq. 10 of PiCor).

The correction keeps the gain of the corrected policy over pi_t, measured per task as
g_z = E_{s~B_z, a~pi_phi}[A^{pi_t}(s, a; z)], above the threshold c * (1 - gamma). A constraint
form turns the per-task gains g and the task weights w into the penalty added to the KL term,
and says how far the constraint is violated. Forms are modules so that a learned multiplier is
saved and restored with the checkpoint.
"""
from __future__ import annotations

import abc

import gin
import torch
from torch import nn


def weighted_gain(task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """G = sum_z w_z g_z, the scalar the paper's eq. (10) constrains."""
    return (weights * task_gains).sum(-1)


class ConstraintForm(nn.Module, abc.ABC):
    """Maps the per-task gains g [N] and weights w [N] to a differentiable penalty.

    Attributes:
        acts_through_penalty: whether what sets it apart is in `penalty` alone, so that only a
            solver descending the penalty (`PenaltyDescent`) can act on it.
    """

    acts_through_penalty: bool = False

    def __init__(self, lam: float, c: float, gamma: float):
        super().__init__()
        if lam < 0:
            raise ValueError(f"PolicyCorrection.lam must be >= 0, got {lam}")
        if c > 0:
            raise ValueError(f"PolicyCorrection.c must be <= 0, got {c}")
        if not 0 < gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
        self.lam, self.c, self.gamma = lam, c, gamma

    def shortfall(self, gain: torch.Tensor) -> torch.Tensor:
        """c * (1 - gamma) - gain: positive while the constraint on `gain` is violated."""
        return self.c * (1 - self.gamma) - gain

    def violation(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """c_tilde of eq. (10): max(0, c * (1 - gamma) - G), zero exactly when the constraint holds."""
        return torch.relu(self.shortfall(weighted_gain(task_gains, weights)))

    def active(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Whether the penalty has a gradient at these gains; where it has none at pi'_t, the
        correction (a projection, eq. 8) must return pi'_t unchanged."""
        return self.violation(task_gains, weights) > 0

    @abc.abstractmethod
    def penalty(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The term added to KL(pi_phi || pi'_t) in the correction loss."""

    def after_step(self, task_gains: torch.Tensor, weights: torch.Tensor) -> None:
        """Called with the (detached) gains after each correction step; a learned form adapts here."""

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Scalars to log, such as a learned multiplier."""
        return {}


@gin.configurable(denylist=["lam", "c", "gamma"])
class QuadraticPenalty(ConstraintForm):
    """Eq. (10): (lambda / 2) * c_tilde(phi)^2 on the weighted gain G."""

    def penalty(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.lam * self.violation(task_gains, weights).square()


@gin.configurable(denylist=["lam", "c", "gamma"])
class PerTaskQuadraticPenalty(ConstraintForm):
    """One constraint per task: (lambda / 2) * sum_z N w_z max(0, c * (1 - gamma) - g_z)^2.

    Eq. (10) constrains the weighted sum G, so the gain the optimization phase buys on the
    trained task can pay for a loss on every other task: the sum holds while the others are
    forgotten. Here each task's gain must clear the threshold on its own; w_z scales each
    task's share (N w_z = 1 under uniform weights). The violation is sum_z w_z c_tilde_z.
    """

    def violation(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return (weights * torch.relu(self.shortfall(task_gains))).sum(-1)

    def penalty(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        per_task = torch.relu(self.shortfall(task_gains)).square()
        return 0.5 * self.lam * (weights.shape[-1] * weights * per_task).sum(-1)


@gin.configurable(denylist=["lam", "c", "gamma"])
class LagrangePenalty(ConstraintForm):
    """The Lagrangian nu * (c * (1 - gamma) - G), with nu >= 0 learned by dual ascent.

    After each correction step nu <- max(0, nu + lr * (c * (1 - gamma) - G)): it rises while
    the constraint is violated and decays to 0 once it holds, so the penalty's strength is
    learned instead of fixed by lambda (which this form ignores).

    Args:
        multiplier_lr: dual ascent step size, in 1 / (units of Q).
        initial_multiplier: nu at the start, >= 0.
    """

    acts_through_penalty = True

    def __init__(self, lam: float, c: float, gamma: float, multiplier_lr: float = 0.01, initial_multiplier: float = 0.0):
        super().__init__(lam, c, gamma)
        if not multiplier_lr > 0:
            raise ValueError(f"LagrangePenalty.multiplier_lr must be > 0, got {multiplier_lr}")
        if initial_multiplier < 0:
            raise ValueError(f"LagrangePenalty.initial_multiplier must be >= 0, got {initial_multiplier}")
        self.multiplier_lr = multiplier_lr
        self.register_buffer("multiplier", torch.tensor(float(initial_multiplier)))

    def active(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """A positive multiplier pulls on the gain even where the constraint holds."""
        return (self.multiplier > 0) | super().active(task_gains, weights)

    def penalty(self, task_gains: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.multiplier * self.shortfall(weighted_gain(task_gains, weights))

    @torch.no_grad()
    def after_step(self, task_gains: torch.Tensor, weights: torch.Tensor) -> None:
        shortfall = self.shortfall(weighted_gain(task_gains, weights))
        self.multiplier.add_(self.multiplier_lr * shortfall).clamp_(min=0)

    def diagnostics(self) -> dict[str, torch.Tensor]:
        return {"multiplier": self.multiplier.detach().clone()}
