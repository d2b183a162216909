"""Gradient surgery: how the tasks' gradients of the optimization phase combine into one step.

PCGrad (Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020), one of the PiCor
paper's baselines: each task's gradient loses its component along any other task's gradient it
conflicts with (negative inner product), in random order, and the projected gradients are
averaged. Hand-written: neither torch nor TorchRL provides it.
"""
from __future__ import annotations

import gin
import torch


@gin.configurable
class PCGrad:
    """Projecting conflicting gradients, applied per parameter group (actor, critic, alpha).

    The average (not the sum) keeps the step's scale that of the mean loss over tasks, so
    without conflicts PCGrad's step equals the plain one.
    """

    def combine(self, task_grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projects and averages per-task gradients.

        Args:
            task_grads: each task's flattened gradient of one parameter group, shape [N, P].

        Returns:
            The combined gradient [P], and the share of ordered task pairs (i, j), i != j,
            whose original gradients conflict (a diagnostic, logged).
        """
        num_tasks = task_grads.shape[0]
        tasks = torch.arange(num_tasks, device=task_grads.device)
        gram = task_grads @ task_grads.T
        squared_norms = gram.diagonal().clamp_min(torch.finfo(task_grads.dtype).tiny)
        # Every projected gradient is a combination of the original ones, projected = C @ g, so
        # the projections run on the N x N coefficients C and the Gram matrix alone; g is read
        # twice (Gram matrix, final combination) whatever N.
        coefficients = torch.eye(num_tasks, dtype=task_grads.dtype, device=task_grads.device)
        # Each task projects against the others in its own random order; step k handles every
        # task's k-th partner at once.
        order = torch.rand(num_tasks, num_tasks, device=task_grads.device).argsort(dim=1)
        for partner in order.T:
            inner = (coefficients @ gram)[tasks, partner]  # <projected_i, g_partner(i)>
            # Remove the component along the partner's original gradient where they conflict.
            scale = inner.clamp(max=0) / squared_norms[partner] * (partner != tasks)
            coefficients[tasks, partner] -= scale
        off_diagonal = ~torch.eye(num_tasks, dtype=torch.bool, device=task_grads.device)
        conflict_share = (gram[off_diagonal] < 0).sum() / max(1, num_tasks * (num_tasks - 1))
        return coefficients.mean(0) @ task_grads, conflict_share
