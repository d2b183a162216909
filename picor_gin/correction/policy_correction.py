"""PiCor's correction (Bai et al., "PiCor: Multi-Task Deep Reinforcement Learning with Policy
Correction", AAAI 2023, Algorithm 1): after each optimization phase, the adaptive task weights
of eq. (9) and the correction of the actor by eq. (10), as one component of the learner:

    MultiTaskLearner.correction = @PolicyCorrection

Its defaults are the form the correction study chose (docs/correction_study.md); the paper's own
form is gin_configs/ablation/paper_picor.gin.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import gin
import torch
from tensordict import TensorDictBase
from torch import nn

from picor_gin.backbones import Backbone
from picor_gin.correction.constraints import ConstraintForm, QuadraticPenalty
from picor_gin.correction.loss import correction_diagnostics, correction_loss
from picor_gin.correction.solvers import ConstraintSizedStep, CorrectionProblem, CorrectionSolver, check_solver
from picor_gin.correction.weighting import SoftmaxAlphaWeights, WeightingRule
from picor_gin.optimizers import OptimizerFactory, default_adam


@dataclasses.dataclass(frozen=True)
class Processes:
    """What the correction needs of the training loop: Lightning's manual backward (DDP
    all-reduces the gradients it produces), whether a flag is set on any process, and a
    tensor's mean over processes."""

    backward: Callable[[torch.Tensor], None]
    any_process: Callable[[torch.Tensor], bool]
    mean_over_processes: Callable[[torch.Tensor], torch.Tensor]


@gin.configurable(denylist=["backbone"])
class PolicyCorrection(nn.Module):
    """Eq. (9) weights and the eq. (10) correction, from phi = pi'_t.

    A module, so that a learned constraint form (a Lagrange multiplier) is kept in checkpoints.
    The backbone is passed to each call rather than held, so its parameters are registered once.

    Args:
        backbone: supplied by the learner; its gamma enters eq. (10)'s c * (1 - gamma) and its
            task statistics must hold what the weighting rule reads.
        weighting: the rule of eq. (9) (default `SoftmaxAlphaWeights(tau=1.0)`), or
            `UniformWeights()` (the ablation "Ada X").
        constraint: factory of the constraint form, called with (lam=, c=, gamma=).
        solver: how the actor moves (default `ConstraintSizedStep(max_kl=0.01)`; the paper's
            optimizer steps are `PenaltyDescent()`); each returns pi'_t unchanged where it
            satisfies the constraint.
        lam: lambda >= 0 of eq. (10).
        c: c <= 0 of eq. (10); the constraint asks for a weighted gain >= c * (1 - gamma).
        steps: correction steps per update, >= 1.
        optimizer: factory of the optimizer the correction steps the actor with (its own state).
    """

    def __init__(
        self,
        backbone: Backbone,
        weighting: WeightingRule | None = None,
        constraint: Callable[..., ConstraintForm] = QuadraticPenalty,
        solver: CorrectionSolver | None = None,
        lam: float = 10.0,
        c: float = -0.01,
        steps: int = 1,
        optimizer: OptimizerFactory = default_adam,
    ):
        super().__init__()
        if steps < 1:
            raise ValueError(
                f"PolicyCorrection.steps must be >= 1, got {steps}; for no correction bind "
                "MultiTaskLearner.correction = None"
            )
        self.weighting = weighting or SoftmaxAlphaWeights()
        missing = self.weighting.requires - backbone.task_stat_names - {"recent_return"}
        if missing:
            raise ValueError(
                f"{type(self.weighting).__name__} needs per-task {sorted(missing)}, which "
                f"{type(backbone).__name__} does not provide; bind a rule that needs no "
                "temperature, e.g. PolicyCorrection.weighting = @SoftmaxReturnWeights()"
            )
        self.constraint = constraint(lam=lam, c=c, gamma=backbone.gamma)
        self.solver = solver or ConstraintSizedStep()
        check_solver(self.solver, self.constraint, steps)
        self.steps = steps
        self.optimizer_factory = optimizer
        self._loss = correction_loss
        # Updates whose correction moved the actor (accumulated on the device), and all corrected
        # updates, since the last log: counted here, so a window cut by a resume is still a share.
        self.register_buffer("_active_updates", torch.zeros(()), persistent=False)
        self._corrected_updates = 0

    def compile_loss(self, mode: str) -> None:
        """Compiles eq. (10)'s loss with torch.compile, unless the solver differentiates through
        a gradient (compiled graphs do not support double backward)."""
        if not self.solver.differentiates_twice:
            self._loss = torch.compile(correction_loss, mode=mode)

    def weights(self, backbone: Backbone, recent_return: torch.Tensor) -> torch.Tensor:
        """w of eq. (9), shape [N], from the backbone's task statistics after the optimization phase."""
        task_stats = {**backbone.task_stats(), "recent_return": recent_return}
        return self.weighting(task_stats, recent_return.shape[-1])

    def correct(
        self,
        backbone: Backbone,
        states: TensorDictBase,
        pi_t: TensorDictBase,
        recent_return: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        processes: Processes,
        logging: bool,
    ) -> dict[str, torch.Tensor]:
        """Moves the actor from pi'_t by eq. (10) on `states` (every task's, [N, M]).

        Args:
            pi_t: the actor's outputs on `states` before this update's optimization phase: the
                advantage is pi_t's, not pi'_t's.
            recent_return: each task's mean recent training return, [N], for rules that read it.
            logging: whether to return diagnostics (they cost forward passes).

        Returns:
            Detached diagnostics when `logging` (the divergence of pi'_t from pi_t, the gain and
            violation at pi'_t, the KL, gain and violation after the phase, the constraint form's,
            and "weight" of shape [N]); else nothing.
        """
        weights = self.weights(backbone, recent_return)
        baseline = backbone.value_baseline(states, pi_t)
        problem = self._problem(backbone, states, baseline, weights, optimizer, pi_t.get("correction_noise", None), processes)
        # How far the optimization phase moved the policy from pi_t, where pi_t is a snapshot
        # (PPO's is the rollout's actions and log-probs: its move is PPO's own train/kl_approx).
        kl_optimization = {}
        if logging:
            problem.snapshot()  # pi'_t, kept for the "after" diagnostics below
            if backbone.pi_t_is_a_snapshot:
                with torch.no_grad():
                    kl_optimization["kl_optimization"] = problem.kl(pi_t)
        terms, moved = self.solver.solve(problem, self.steps)
        self._active_updates += moved
        self._corrected_updates += 1
        if not logging:
            return {}
        diagnostics = correction_diagnostics(terms, self.constraint, weights)
        del diagnostics["kl"]  # the divergence of pi'_t from itself: 0 by construction
        diagnostics.update(kl_optimization)
        with torch.no_grad():  # where the phase left the policy (before it, the KL to pi'_t is 0)
            after = problem.loss(problem.snapshot())
        diagnostics.update({f"{k}_after": v for k, v in correction_diagnostics(after, self.constraint, weights).items()})
        diagnostics.update(self.constraint.diagnostics())
        return {**diagnostics, "weight": weights}

    def active_share(self) -> float:
        """The share of the updates since the last call whose correction moved the actor; restarts the count."""
        share = self._active_updates.item() / max(self._corrected_updates, 1)
        self._active_updates.zero_()
        self._corrected_updates = 0
        return share

    def _problem(
        self,
        backbone: Backbone,
        states: TensorDictBase,
        baseline: torch.Tensor,
        weights: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        noise: torch.Tensor | None,
        processes: Processes,
    ) -> CorrectionProblem:
        """Eq. (10) on this update's correction states, for the solver."""
        # Taken on first use, which is at pi'_t: only multi-step solvers and logging need it.
        snapshot = functools.cache(lambda: backbone.policy_snapshot(states["observation"]))
        return CorrectionProblem(
            loss=lambda reference: self._loss(backbone, self.constraint, states, baseline, reference, weights, noise),
            snapshot=snapshot,
            kl=lambda reference: backbone.divergence(states["observation"], reference).mean(),
            params=backbone.parameter_groups()["actor"],
            constraint=self.constraint,
            weights=weights,
            optimizer=optimizer,
            backward=processes.backward,
            any_process=processes.any_process,
            mean_over_processes=processes.mean_over_processes,
        )
