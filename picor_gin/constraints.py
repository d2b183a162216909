"""Constraint forms of the policy correction phase (eq. 10 of PiCor).

The correction keeps the weighted performance gain G = sum_z w_z E[A^{pi_t}(s, a; z)] above
c * (1 - gamma). A constraint form turns G into the penalty added to the KL term. Forms are
modules so that a learned multiplier is saved and restored with the checkpoint.
"""
from __future__ import annotations

import abc

import gin
import torch
from torch import nn


class ConstraintForm(nn.Module, abc.ABC):
    """Maps the weighted gain G (a scalar tensor) to a differentiable penalty.

    Attributes:
        corrects: False for the form that skips the correction phase (the ablation "Cor X").
    """

    corrects: bool = True

    def __init__(self, lam: float, c: float, gamma: float):
        super().__init__()
        if lam < 0:
            raise ValueError(f"PiCor.lam must be >= 0, got {lam}")
        if c > 0:
            raise ValueError(f"PiCor.c must be <= 0, got {c}")
        if not 0 < gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
        self.lam, self.c, self.gamma = lam, c, gamma

    def shortfall(self, gain: torch.Tensor) -> torch.Tensor:
        """c * (1 - gamma) - G: positive while the constraint is violated."""
        return self.c * (1 - self.gamma) - gain

    def violation(self, gain: torch.Tensor) -> torch.Tensor:
        """c_tilde of eq. (10): max(0, c * (1 - gamma) - G)."""
        return torch.relu(self.shortfall(gain))

    @abc.abstractmethod
    def penalty(self, gain: torch.Tensor) -> torch.Tensor:
        """The term added to KL(pi_phi || pi'_t) in the correction loss."""

    def after_step(self, gain: torch.Tensor) -> None:
        """Called with the (detached) gain after each correction step; a learned form adapts here."""

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Scalars to log, such as a learned multiplier."""
        return {}


@gin.configurable(denylist=["lam", "c", "gamma"])
class QuadraticPenalty(ConstraintForm):
    """Eq. (10): (lambda / 2) * c_tilde(phi)^2."""

    def penalty(self, gain: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.lam * self.violation(gain).square()


@gin.configurable(denylist=["lam", "c", "gamma"])
class NoCorrection(ConstraintForm):
    """No correction phase at all: the ablation "Cor X" (the same as PiCor.correction_steps = 0)."""

    corrects = False

    def penalty(self, gain: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(gain)


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

    def __init__(self, lam: float, c: float, gamma: float, multiplier_lr: float = 0.01, initial_multiplier: float = 0.0):
        super().__init__(lam, c, gamma)
        if not multiplier_lr > 0:
            raise ValueError(f"LagrangePenalty.multiplier_lr must be > 0, got {multiplier_lr}")
        if initial_multiplier < 0:
            raise ValueError(f"LagrangePenalty.initial_multiplier must be >= 0, got {initial_multiplier}")
        self.multiplier_lr = multiplier_lr
        self.register_buffer("multiplier", torch.tensor(float(initial_multiplier)))

    def penalty(self, gain: torch.Tensor) -> torch.Tensor:
        return self.multiplier * self.shortfall(gain)

    @torch.no_grad()
    def after_step(self, gain: torch.Tensor) -> None:
        self.multiplier.add_(self.multiplier_lr * self.shortfall(gain)).clamp_(min=0)

    def diagnostics(self) -> dict[str, torch.Tensor]:
        return {"multiplier": self.multiplier.detach().clone()}
