"""Constraint forms of the policy correction phase (eq. 10 of PiCor).

The correction keeps the weighted performance gain G = sum_z w_z E[A^{pi_t}(s, a; z)] above
c * (1 - gamma). A constraint form turns G into the penalty added to the KL term.
"""
from __future__ import annotations

import abc

import gin
import torch


class ConstraintForm(abc.ABC):
    """Maps the weighted gain G (a scalar tensor) to a differentiable penalty."""

    def __init__(self, lam: float, c: float, gamma: float):
        if lam < 0:
            raise ValueError(f"PiCor.lam must be >= 0, got {lam}")
        if c > 0:
            raise ValueError(f"PiCor.c must be <= 0, got {c}")
        if not 0 < gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
        self.lam, self.c, self.gamma = lam, c, gamma

    def violation(self, gain: torch.Tensor) -> torch.Tensor:
        """c_tilde of eq. (10): max(0, c * (1 - gamma) - G)."""
        return torch.relu(self.c * (1 - self.gamma) - gain)

    @abc.abstractmethod
    def penalty(self, gain: torch.Tensor) -> torch.Tensor:
        """The term added to KL(pi_phi || pi'_t) in the correction loss."""


@gin.configurable(denylist=["lam", "c", "gamma"])
class QuadraticPenalty(ConstraintForm):
    """Eq. (10): (lambda / 2) * c_tilde(phi)^2."""

    def penalty(self, gain: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.lam * self.violation(gain).square()
