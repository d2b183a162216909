"""How the correction phase moves the actor: descent on eq. (10)'s penalty, the projection the
paper cites (a KL trust region on the linearised constraint), or its cheapest form (one gradient
step sized by the linearised constraint, capped in KL).

All are projections in the sense of eq. (8): where pi'_t already satisfies the constraint (the
form is inactive at pi'_t), they return pi'_t exactly, without touching the parameters or any
optimizer state.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import gin
import torch
from tensordict import TensorDictBase
from torch import nn

from picor_gin.correction.constraints import ConstraintForm


@dataclasses.dataclass
class CorrectionProblem:
    """Eq. (10) at one update, as a solver sees it.

    Attributes:
        loss: `correction_loss` at the actor's current parameters against a snapshot of pi'_t;
            None while the actor is still pi'_t.
        snapshot: pi'_t's outputs on the correction states (called at pi'_t, before any step).
        kl: the mean divergence of the actor's current policy to a snapshot, without the gains.
        params: the actor's parameters.
        constraint, weights: the constraint form and w.
        optimizer: the correction's optimizer (its state persists across updates).
        backward: Lightning's manual backward (DDP all-reduces the gradients it produces).
        any_process: whether a boolean tensor is set on any process (one all-reduce under DDP),
            so every process takes the same branch.
        mean_over_processes: the mean of a tensor over processes.
    """

    loss: Callable[[TensorDictBase | None], dict[str, torch.Tensor]]
    snapshot: Callable[[], TensorDictBase]
    kl: Callable[[TensorDictBase], torch.Tensor]
    params: list[nn.Parameter]
    constraint: ConstraintForm
    weights: torch.Tensor
    optimizer: torch.optim.Optimizer
    backward: Callable[[torch.Tensor], None]
    any_process: Callable[[torch.Tensor], bool]
    mean_over_processes: Callable[[torch.Tensor], torch.Tensor]


class CorrectionSolver(abc.ABC):
    """Solves the correction phase from phi = pi'_t.

    Attributes:
        max_steps: the most `PolicyCorrection.steps` the solver accepts; None for any number.
        differentiates_twice: whether it backpropagates through a gradient (torch.compile's
            graphs do not support that, so the correction loss stays eager).
        descends_the_penalty: whether it steps on the constraint form's penalty; the others
            size their step from its violation.
    """

    max_steps: int | None = None
    differentiates_twice: bool = False
    descends_the_penalty: bool = False

    @abc.abstractmethod
    def solve(self, problem: CorrectionProblem, steps: int) -> tuple[dict[str, torch.Tensor], bool]:
        """Moves the actor; returns the terms evaluated at pi'_t and whether it moved it."""

    @staticmethod
    def _start(problem: CorrectionProblem) -> tuple[dict[str, torch.Tensor], bool]:
        """The terms at pi'_t and whether the constraint form pulls on the actor there.

        The check runs without autograd, and the terms are evaluated again with it only where
        the phase goes on: most updates stop here (benchmarks/throughput.py).
        """
        with torch.no_grad():
            terms = problem.loss(None)
        active = problem.any_process(problem.constraint.active(terms["task_gains"], problem.weights))
        return (problem.loss(None) if active else terms), active


@gin.configurable
class PenaltyDescent(CorrectionSolver):
    """The paper's correction: `steps` optimizer steps on KL + penalty (eq. 10).

    Skips the phase where pi'_t satisfies the constraint: there the loss has zero gradient, yet
    a stateful optimizer (Adam's momentum) would still move the actor.
    """

    descends_the_penalty = True

    def solve(self, problem: CorrectionProblem, steps: int) -> tuple[dict[str, torch.Tensor], bool]:
        first, active = self._start(problem)
        if not active:
            return first, False
        reference = problem.snapshot() if steps > 1 else None
        terms = first
        for step in range(steps):
            if step:
                terms = problem.loss(reference)
            problem.optimizer.zero_grad()
            problem.backward(terms["loss_correction"])
            problem.optimizer.step()
            problem.constraint.after_step(terms["task_gains"].detach(), problem.weights)
        return first, True


def conjugate_gradient(
    matrix_vector: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int, tolerance: float = 1e-10
) -> torch.Tensor:
    """x with A x ~ b for a symmetric positive definite A given as a product (Hestenes-Stiefel)."""
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_norm = residual @ residual
    for _ in range(iterations):
        if residual_norm <= tolerance:
            break
        product = matrix_vector(direction)
        step = residual_norm / (direction @ product)
        x += step * direction
        residual -= step * product
        new_norm = residual @ residual
        direction = residual + (new_norm / residual_norm) * direction
        residual_norm = new_norm
    return x


def flat_gradient(tensors: tuple[torch.Tensor | None, ...], params: list[nn.Parameter]) -> torch.Tensor:
    """One vector of `params`' gradients, zeros where a parameter got none (autograd's None)."""
    return torch.cat([(torch.zeros_like(p) if t is None else t).flatten() for t, p in zip(tensors, params)])


@gin.configurable
class TrustRegionProjection(CorrectionSolver):
    """The projection the paper cites but does not implement (TRPO / CPO style).

    Linearises the constraint form's violation v(phi) ~ v_0 + g^T d at pi'_t and approximates
    KL(pi_phi || pi'_t) ~ d^T F d / 2, F the Fisher matrix (the KL's Hessian at pi'_t). The
    step of least KL that zeroes the linearised violation is d = -v_0 F^-1 g / (g^T F^-1 g),
    with KL v_0^2 / (2 g^T F^-1 g); beyond `max_kl` it is shortened to KL = max_kl. F^-1 g
    comes from conjugate gradient on Fisher-vector products (double backward through the KL),
    so F is never formed. Under DDP each process projects on its own states and the steps are
    averaged, which keeps the average within the KL bound. One projection per update.

    Args:
        max_kl: the trust region's radius, in nats of mean KL(pi_phi || pi'_t).
        cg_iterations: conjugate gradient iterations.
        damping: added to F's diagonal, for the directions the states do not determine.
    """

    max_steps = 1
    differentiates_twice = True

    def __init__(self, max_kl: float = 0.01, cg_iterations: int = 10, damping: float = 0.01):
        for name, value in [("max_kl", max_kl), ("cg_iterations", cg_iterations)]:
            if not value > 0:
                raise ValueError(f"TrustRegionProjection.{name} must be > 0, got {value}")
        if damping < 0:
            raise ValueError(f"TrustRegionProjection.damping must be >= 0, got {damping}")
        self.max_kl = max_kl
        self.cg_iterations = cg_iterations
        self.damping = damping

    def step(self, violation: torch.Tensor, kl: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
        """The flat parameter step d for a violation and a KL (zero-valued at pi'_t) graph."""
        gradient = flat_gradient(torch.autograd.grad(violation, params, retain_graph=True, allow_unused=True), params)
        kl_gradient = flat_gradient(torch.autograd.grad(kl, params, create_graph=True, allow_unused=True), params)

        def fisher_product(vector: torch.Tensor) -> torch.Tensor:
            product = torch.autograd.grad(kl_gradient @ vector, params, retain_graph=True, allow_unused=True)
            return flat_gradient(product, params) + self.damping * vector

        direction = conjugate_gradient(fisher_product, -gradient, self.cg_iterations)
        curvature = -(gradient @ direction)  # g^T F^-1 g > 0
        if not curvature > 0:
            return torch.zeros_like(direction)
        scale = torch.minimum(violation.detach() / curvature, torch.sqrt(2 * self.max_kl / curvature))
        return scale * direction

    def solve(self, problem: CorrectionProblem, steps: int) -> tuple[dict[str, torch.Tensor], bool]:
        first, active = self._start(problem)
        if not active:
            return first, False
        violation = problem.constraint.violation(first["task_gains"], problem.weights)
        step = problem.mean_over_processes(self.step(violation, first["kl"], problem.params).detach())
        _add(problem.params, step)
        problem.constraint.after_step(first["task_gains"].detach(), problem.weights)
        return first, bool(step.any())  # no step where the curvature was not positive


@gin.configurable
class ConstraintSizedStep(CorrectionSolver):
    """The cheapest projection (docs/correction_study.md's "SGD step sized by the constraint").

    One step along the violation's gradient g, sized so the linearised violation reaches zero,
    d = -v_0 g / |g|^2; where the KL to pi'_t measured after it exceeds `max_kl`, the step is
    shortened by sqrt(max_kl / KL) (the KL grows as the step's square, so to second order it
    then equals max_kl). TrustRegionProjection with one CG iteration takes the same direction but
    models the KL with a Fisher-vector product; this costs one backward and one forward instead
    of its double backwards. Under DDP the steps and the KL are averaged over processes.

    Args:
        max_kl: the most mean KL(pi_phi || pi'_t) a step may take, in nats.
    """

    max_steps = 1

    def __init__(self, max_kl: float = 0.01):
        if not max_kl > 0:
            raise ValueError(f"ConstraintSizedStep.max_kl must be > 0, got {max_kl}")
        self.max_kl = max_kl

    def solve(self, problem: CorrectionProblem, steps: int) -> tuple[dict[str, torch.Tensor], bool]:
        first, active = self._start(problem)
        if not active:
            return first, False
        reference = problem.snapshot()  # pi'_t, taken before the step
        violation = problem.constraint.violation(first["task_gains"], problem.weights)
        gradient = flat_gradient(torch.autograd.grad(violation, problem.params, allow_unused=True), problem.params)
        squared_norm = gradient @ gradient
        step = torch.zeros_like(gradient) if not squared_norm > 0 else -(violation.detach() / squared_norm) * gradient
        step = problem.mean_over_processes(step)
        _add(problem.params, step)
        with torch.no_grad():
            kl = problem.mean_over_processes(problem.kl(reference))
        if kl > self.max_kl:
            _add(problem.params, (torch.sqrt(self.max_kl / kl) - 1) * step)
        problem.constraint.after_step(first["task_gains"].detach(), problem.weights)
        return first, bool(step.any())  # no step where the violation had no gradient


@torch.no_grad()
def _add(params: list[nn.Parameter], flat_step: torch.Tensor) -> None:
    """params += flat_step, the flat vector split back into the parameters' shapes."""
    for param, delta in zip(params, flat_step.split([p.numel() for p in params])):
        param.add_(delta.view_as(param))


def check_solver(solver: CorrectionSolver, constraint: ConstraintForm, steps: int) -> None:
    """Refuses a step count the solver cannot honour, or a constraint form it cannot act on,
    naming the settings."""
    if solver.max_steps is not None and steps > solver.max_steps:
        raise ValueError(
            f"{type(solver).__name__} makes at most {solver.max_steps} correction step(s) per "
            f"update; bind PolicyCorrection.steps = {solver.max_steps} (got {steps})"
        )
    if constraint.acts_through_penalty and not solver.descends_the_penalty:
        raise ValueError(
            f"{type(constraint).__name__} acts through its penalty's gradient, which "
            f"{type(solver).__name__} does not step on (it sizes its step from the violation); "
            "bind PolicyCorrection.solver = @PenaltyDescent()"
        )

