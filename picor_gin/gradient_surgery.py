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
        gram = task_grads @ task_grads.T
        squared_norms = gram.diagonal().clamp_min(torch.finfo(task_grads.dtype).tiny)
        projected = task_grads.clone()
        for i in range(num_tasks):
            for j in torch.randperm(num_tasks).tolist():
                if j == i:
                    continue
                # Remove g_i's component along the original g_j where they conflict; no host sync.
                inner = projected[i] @ task_grads[j]
                projected[i] -= inner.clamp(max=0) / squared_norms[j] * task_grads[j]
        off_diagonal = ~torch.eye(num_tasks, dtype=torch.bool, device=task_grads.device)
        conflict_share = (gram[off_diagonal] < 0).float().mean()
        return projected.mean(0), conflict_share
