"""Correction solvers: both are projections (pi'_t unchanged where it satisfies the constraint);
the trust-region projection against a hand-solved 2-parameter problem."""
from __future__ import annotations

import math

import pytest
import torch

from picor_gin.backbones import SAC
from picor_gin.correction.constraints import LagrangePenalty, QuadraticPenalty
from picor_gin.correction.loss import correction_loss
from picor_gin.correction.solvers import (
    ConstraintSizedStep,
    CorrectionProblem,
    PenaltyDescent,
    TrustRegionProjection,
    check_solver,
    conjugate_gradient,
)
from picor_gin.networks import OneHotMLP
from tests.test_correction import NUM_TASKS, _phase, _sac


def _sac_problem(sac: SAC, baseline_shift: float, constraint=None, optimizer=None) -> CorrectionProblem:
    """Eq. 10 on the small SAC of test_correction, its baseline shifted: +10 violates the
    constraint on every state, -1e3 satisfies it everywhere. Every evaluation draws the same
    action noise, so gains compare on equal terms."""
    torch.manual_seed(11)
    states, _, pi_prime, baseline = _phase(sac)
    constraint = constraint or QuadraticPenalty(lam=100.0, c=0.0, gamma=0.99)
    weights = torch.full((NUM_TASKS,), 1.0 / NUM_TASKS)
    return CorrectionProblem(
        loss=lambda reference: (
            torch.manual_seed(5), correction_loss(sac, constraint, states, baseline + baseline_shift, reference, weights)
        )[1],
        snapshot=lambda: pi_prime,
        kl=lambda reference: sac.divergence(states["observation"], reference).mean(),
        params=list(sac.actor.parameters()),
        constraint=constraint,
        weights=weights,
        optimizer=optimizer or torch.optim.Adam(sac.actor.parameters(), lr=1e-2),
        backward=torch.Tensor.backward,
        any_process=bool,
        mean_over_processes=lambda tensor: tensor,
    )


def _actor_state(sac: SAC) -> list[torch.Tensor]:
    return [p.detach().clone() for p in sac.actor.parameters()]


@pytest.mark.parametrize("steps", [1, 3])
def test_penalty_descent_leaves_pi_prime_exactly_unchanged_when_the_constraint_holds_even_with_adam_momentum(steps):
    sac = _sac()
    optimizer = torch.optim.Adam(sac.actor.parameters(), lr=1e-2)
    # Earlier active updates leave Adam with momentum.
    _, moved = PenaltyDescent().solve(_sac_problem(sac, 10.0, optimizer=optimizer), steps=2)
    assert moved
    momentum = [optimizer.state[p]["exp_avg"].clone() for p in sac.actor.parameters()]
    assert any(m.abs().sum() > 0 for m in momentum)

    problem = _sac_problem(sac, -1e3, optimizer=optimizer)
    pi_prime = _actor_state(sac)
    terms, moved = PenaltyDescent().solve(problem, steps=steps)
    assert not moved
    assert all(torch.equal(p, q) for p, q in zip(sac.actor.parameters(), pi_prime))
    assert all(torch.equal(optimizer.state[p]["exp_avg"], m) for p, m in zip(sac.actor.parameters(), momentum))
    assert terms["kl"] == 0

    # What the skip prevents: the same Adam stepped on the (zero) gradient moves the actor.
    optimizer.zero_grad()
    problem.loss(None)["loss_correction"].backward()
    optimizer.step()
    assert not all(torch.equal(p, q) for p, q in zip(sac.actor.parameters(), pi_prime))


def test_penalty_descent_steps_and_updates_a_learned_multiplier_when_violated():
    sac = _sac()
    form = LagrangePenalty(lam=0.0, c=0.0, gamma=0.99, multiplier_lr=0.1)
    problem = _sac_problem(sac, 10.0, constraint=form)
    pi_prime = _actor_state(sac)
    first, moved = PenaltyDescent().solve(problem, steps=3)
    assert moved and first["task_gains"].mean() < -5
    assert not all(torch.equal(p, q) for p, q in zip(sac.actor.parameters(), pi_prime))
    # Three dual steps of about 0.1 * 10 each.
    assert 2.5 < float(form.multiplier) < 3.5
    assert problem.optimizer.state[problem.params[0]]["step"] == 3


def test_trust_region_projection_leaves_pi_prime_unchanged_when_the_constraint_holds():
    sac = _sac()
    problem = _sac_problem(sac, -1e3)
    pi_prime = _actor_state(sac)
    _, moved = TrustRegionProjection().solve(problem, steps=1)
    assert not moved
    assert all(torch.equal(p, q) for p, q in zip(sac.actor.parameters(), pi_prime))


def _linear_problem(max_kl: float) -> tuple[torch.nn.Parameter, CorrectionProblem]:
    """Two parameters phi (pi'_t at 0), KL = (phi - phi0)^T diag(1, 4) (phi - phi0) / 2 (a Gaussian
    policy's mean under covariance diag(1, 1/4)), gain g(phi) = phi_1 + phi_2 - 0.5 on one task,
    threshold 0 (c = 0): the violation at pi'_t is 0.5."""
    phi = torch.nn.Parameter(torch.zeros(2))
    precision = torch.tensor([1.0, 4.0])
    constraint = QuadraticPenalty(lam=1.0, c=0.0, gamma=0.9)

    def kl(reference):
        return 0.5 * (precision * (phi - reference).square()).sum()

    def loss(reference):
        divergence = kl(phi.detach() if reference is None else reference)
        task_gains = (phi.sum() - 0.5).unsqueeze(0)
        return {"loss_correction": divergence, "kl": divergence, "task_gains": task_gains}

    problem = CorrectionProblem(
        loss=loss, snapshot=lambda: torch.zeros(2), kl=kl, params=[phi], constraint=constraint,
        weights=torch.ones(1), optimizer=None, backward=None, any_process=bool,
        mean_over_processes=lambda tensor: tensor,
    )
    return phi, problem


def test_trust_region_step_is_the_least_kl_step_onto_the_linearised_constraint():
    # F^-1 a = (1, 1/4), a^T F^-1 a = 5/4; d = 0.5 (1, 1/4) / (5/4) = (0.4, 0.1), KL 0.1.
    phi, problem = _linear_problem(max_kl=1.0)
    TrustRegionProjection(max_kl=1.0, cg_iterations=2, damping=0.0).solve(problem, steps=1)
    assert torch.allclose(phi.detach(), torch.tensor([0.4, 0.1]), atol=1e-6)
    assert abs(float(phi.detach().sum()) - 0.5) < 1e-6  # the (linear) constraint holds exactly
    assert torch.isclose(problem.kl(torch.zeros(2)), torch.tensor(0.1), atol=1e-6)  # 0.5 (0.4^2 + 4 0.1^2)


def test_trust_region_step_is_shortened_to_the_kl_bound():
    # KL of the full step would be 0.1 > 0.05: d = sqrt(2 * 0.05 / (5/4)) (1, 1/4) = (0.2828, 0.0707).
    phi, problem = _linear_problem(max_kl=0.05)
    TrustRegionProjection(max_kl=0.05, cg_iterations=2, damping=0.0).solve(problem, steps=1)
    scale = math.sqrt(0.08)
    assert torch.allclose(phi.detach(), torch.tensor([scale, scale / 4]), atol=1e-6)
    step_kl = 0.5 * (phi.detach()[0] ** 2 + 4 * phi.detach()[1] ** 2)
    assert torch.isclose(step_kl, torch.tensor(0.05), atol=1e-6)
    assert float(phi.detach().sum()) < 0.5  # the bound binds: the constraint is only partly restored


def test_sized_step_moves_along_the_gradient_onto_the_linearised_constraint():
    # g = (1, 1), v_0 = 0.5: d = 0.5 (1, 1) / 2 = (0.25, 0.25), KL 0.5 (0.0625 + 4 * 0.0625) = 0.15625.
    phi, problem = _linear_problem(max_kl=1.0)
    _, moved = ConstraintSizedStep(max_kl=1.0).solve(problem, steps=1)
    assert moved
    assert torch.allclose(phi.detach(), torch.tensor([0.25, 0.25]), atol=1e-6)
    assert abs(float(phi.detach().sum()) - 0.5) < 1e-6  # the (linear) constraint holds exactly


def test_sized_step_is_shortened_to_the_measured_kl_bound():
    # 0.15625 > 0.05: the step shrinks by sqrt(0.05 / 0.15625), and the quadratic KL lands on 0.05.
    phi, problem = _linear_problem(max_kl=0.05)
    ConstraintSizedStep(max_kl=0.05).solve(problem, steps=1)
    side = 0.25 * math.sqrt(0.05 / 0.15625)
    assert torch.allclose(phi.detach(), torch.tensor([side, side]), atol=1e-6)
    assert torch.isclose(problem.loss(torch.zeros(2))["kl"], torch.tensor(0.05), atol=1e-6)


def test_sized_step_leaves_pi_prime_unchanged_when_the_constraint_holds():
    sac = _sac()
    problem = _sac_problem(sac, -1e3)
    pi_prime = _actor_state(sac)
    _, moved = ConstraintSizedStep().solve(problem, steps=1)
    assert not moved
    assert all(torch.equal(p, q) for p, q in zip(sac.actor.parameters(), pi_prime))


def test_sized_step_on_sac_cuts_the_violation_within_the_kl_bound():
    sac = _sac()
    problem = _sac_problem(sac, 1.0)
    first, moved = ConstraintSizedStep(max_kl=0.05).solve(problem, steps=1)
    assert moved
    after = problem.loss(problem.snapshot())
    assert after["task_gains"].mean() > first["task_gains"].mean()
    assert 0 < float(after["kl"].detach()) < 1.5 * 0.05  # measured, then rescaled once to second order


def test_trust_region_projection_on_sac_cuts_the_violation_within_the_kl_bound():
    sac = _sac()
    problem = _sac_problem(sac, 1.0)
    solver = TrustRegionProjection(max_kl=0.05)
    first, moved = solver.solve(problem, steps=1)
    assert moved
    with torch.no_grad():
        after = problem.loss(problem.snapshot())
    assert after["task_gains"].mean() > first["task_gains"].mean()
    assert 0 < float(after["kl"]) < 2 * 0.05  # second-order model of the KL, so within a margin


def test_conjugate_gradient_solves_a_symmetric_positive_definite_system():
    generator = torch.Generator().manual_seed(0)
    m = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    a = m @ m.T + 5 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=5)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-8)


def test_a_projection_per_update_refuses_more_correction_steps():
    quadratic = QuadraticPenalty(lam=10.0, c=0.0, gamma=0.99)
    check_solver(TrustRegionProjection(), quadratic, 1)
    check_solver(PenaltyDescent(), quadratic, 5)
    for solver in (TrustRegionProjection(), ConstraintSizedStep()):
        with pytest.raises(ValueError, match="PolicyCorrection.steps = 1"):
            check_solver(solver, quadratic, 2)


def test_a_learned_multiplier_is_refused_by_the_solvers_that_step_on_the_violation():
    lagrange = LagrangePenalty(lam=10.0, c=0.0, gamma=0.99)
    check_solver(PenaltyDescent(), lagrange, 1)
    for solver in (TrustRegionProjection(), ConstraintSizedStep()):
        with pytest.raises(ValueError, match="bind PolicyCorrection.solver = @PenaltyDescent"):
            check_solver(solver, lagrange, 1)


@pytest.mark.parametrize("solver", [ConstraintSizedStep(), TrustRegionProjection()])
def test_an_active_form_whose_violation_has_no_gradient_takes_no_step_and_is_not_counted_as_moved(solver):
    """A positive multiplier makes the form active where the constraint holds; the violation's
    gradient is then zero, so there is no step, and the update does not count as corrected."""
    sac = _sac()
    problem = _sac_problem(sac, -1e3, constraint=LagrangePenalty(lam=10.0, c=0.0, gamma=0.99, initial_multiplier=1.0))
    pi_prime = _actor_state(sac)
    _, moved = solver.solve(problem, steps=1)
    assert not moved
    assert all(torch.equal(p, q) for p, q in zip(sac.actor.parameters(), pi_prime))


@pytest.mark.parametrize(
    "solver, kwargs, name",
    [
        (TrustRegionProjection, {"max_kl": 0.0}, "TrustRegionProjection.max_kl"),
        (TrustRegionProjection, {"cg_iterations": 0}, "cg_iterations"),
        (TrustRegionProjection, {"damping": -1.0}, "damping"),
        (ConstraintSizedStep, {"max_kl": -0.1}, "ConstraintSizedStep.max_kl"),
    ],
)
def test_projections_reject_bad_settings(solver, kwargs, name):
    with pytest.raises(ValueError, match=name):
        solver(**kwargs)
