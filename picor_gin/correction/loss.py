"""PiCor's policy correction phase, eq. (10): its loss.

Starting from the intermediate policy pi'_t produced by the optimization phase, minimise
    L(phi) = KL(pi_phi || pi'_t) + penalty(g(phi), w),
    g_z(phi) = E_{s~B_z, a~pi_phi}[A^{pi_t}(s, a; z)],
with states from every task's buffer; the constraint form turns the per-task gains g and the
weights w into the penalty. Hand-written: TorchRL has no loss for this constraint.
"""
from __future__ import annotations

import torch
from tensordict import TensorDictBase

from picor_gin.backbones import Backbone
from picor_gin.correction.constraints import ConstraintForm, weighted_gain


def correction_loss(
    backbone: Backbone,
    constraint: ConstraintForm,
    states: TensorDictBase,
    baseline: torch.Tensor,
    pi_prime: TensorDictBase | None,
    weights: torch.Tensor,
    noise: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The loss of eq. (10) and its parts, differentiable in the actor.

    Args:
        states: "observation" [N, M, D] and "task_id" [N, M], drawn from each task's buffer
            (on-policy data: from each task's rollout, with what the rollout recorded).
        baseline: E_{a'~pi_t}[Q(s, a')] on those states, computed before any correction step
            (the advantage is of pi_t, the actor before this update, not of pi'_t).
        pi_prime: snapshot of pi'_t on the same states; None while the actor still is pi'_t
            (the first evaluation), which spares a forward pass.
        weights: w, shape [N].
        noise: the draw pi_phi's action takes on the states (SAC's pi_t "correction_noise"),
            the same at every evaluation of the phase; None for a backbone that draws none.

    Returns:
        "loss_correction"; "kl", the mean divergence to pi'_t; "task_gains", g of shape [N].
    """
    advantage, divergence = backbone.correction_terms(states, baseline, pi_prime, noise)
    task_gains = advantage.mean(-1)
    kl = divergence.mean()
    return {
        "loss_correction": kl + constraint.penalty(task_gains, weights),
        "kl": kl,
        "task_gains": task_gains,
    }


def correction_diagnostics(
    terms: dict[str, torch.Tensor], constraint: ConstraintForm, weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Detached scalars to log: the KL, the weighted gain G and the form's violation."""
    task_gains = terms["task_gains"].detach()
    return {
        "kl": terms["kl"].detach(),
        "gain": weighted_gain(task_gains, weights),
        "violation": constraint.violation(task_gains, weights),
    }
