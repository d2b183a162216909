"""PiCor's policy correction phase, eq. (10).

Starting from the intermediate policy pi'_t produced by the optimization phase, minimise
    L(phi) = KL(pi_phi || pi'_t) + penalty(G(phi)),
    G(phi) = sum_z w_z E_{s~B_z, a~pi_phi}[A^{pi_t}(s, a; z)],
with states from every task's buffer. Hand-written: TorchRL has no loss for this constraint.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from picor_gin.backbones import Backbone
from picor_gin.constraints import ConstraintForm


def weighted_gain(advantage: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """G = sum_z w_z mean_s A(s, a; z).

    Args:
        advantage: shape [N, M], M correction states per task.
        weights: task weights w, shape [N].
    """
    return (weights * advantage.mean(-1)).sum()


def correction_loss(
    backbone: Backbone,
    constraint: ConstraintForm,
    states: TensorDictBase,
    baseline: torch.Tensor,
    pi_prime: TensorDictBase,
    weights: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The loss of eq. (10) and its diagnostics.

    Args:
        states: "observation" [N, M, D] and "task_id" [N, M], drawn from each task's buffer.
        baseline: E_{a'~pi_t}[Q(s, a')] on those states, computed before any correction step
            (the advantage is of pi_t, the actor before this update, not of pi'_t).
        pi_prime: snapshot of the intermediate policy pi'_t on the same states.
        weights: w, shape [N].
    """
    advantage, divergence = backbone.correction_terms(
        states["observation"], states["task_id"], baseline, pi_prime
    )
    gain = weighted_gain(advantage, weights)
    kl = divergence.mean()
    return {
        "loss_correction": kl + constraint.penalty(gain),
        "kl": kl.detach(),
        "gain": gain.detach(),
        "violation": constraint.violation(gain).detach(),
    }
