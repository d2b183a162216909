"""Constraint forms of the correction phase (eq. 10 of PiCor)."""
from __future__ import annotations

import pytest
import torch

from picor_gin.correction.constraints import LagrangePenalty, PerTaskQuadraticPenalty, QuadraticPenalty, weighted_gain


def _one(gain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A single task with weight 1: its gain is the weighted gain G."""
    return torch.tensor([gain]), torch.tensor([1.0])


def _penalty() -> QuadraticPenalty:
    # Threshold c * (1 - gamma) = -1 * 0.1 = -0.1.
    return QuadraticPenalty(lam=2.0, c=-1.0, gamma=0.9)


def test_quadratic_penalty_is_lam_half_c_tilde_squared_when_violated():
    # c_tilde = -0.1 - (-0.3) = 0.2; (lam / 2) * c_tilde^2 = 1 * 0.04.
    penalty = _penalty().penalty(*_one(-0.3))
    assert torch.isclose(penalty, torch.tensor(0.04), atol=1e-6)


def test_quadratic_penalty_is_zero_when_the_gain_clears_the_threshold():
    assert _penalty().penalty(*_one(0.0)) == 0.0


@pytest.mark.parametrize(
    "gain, expected",
    [
        (-0.3, 0.2),  # below the threshold -0.1 by 0.2
        (-1.1, 1.0),
        (-0.1, 0.0),  # exactly at the threshold
        (0.0, 0.0),
        (5.0, 0.0),
    ],
)
def test_violation_is_the_hinge_of_threshold_minus_gain(gain, expected):
    violation = _penalty().violation(*_one(gain))
    assert torch.isclose(violation, torch.tensor(expected), atol=1e-6)


def test_penalty_gradient_pushes_the_gain_up_only_while_violated():
    gain = torch.tensor([-0.3, 0.0], requires_grad=True)
    (_penalty().penalty(gain[:1], torch.ones(1)) + _penalty().penalty(gain[1:], torch.ones(1))).backward()
    # d/dG (lam/2) c_tilde^2 = -lam * c_tilde = -2 * 0.2 when violated, 0 when the hinge is inactive.
    assert torch.allclose(gain.grad, torch.tensor([-0.4, 0.0]), atol=1e-6)


def test_zero_lambda_gives_zero_penalty_even_when_violated():
    constraint = QuadraticPenalty(lam=0.0, c=-1.0, gamma=0.9)
    assert constraint.violation(*_one(-5.0)) > 0
    assert constraint.penalty(*_one(-5.0)) == 0.0


def test_boundary_values_lam_zero_and_c_zero_are_accepted():
    constraint = QuadraticPenalty(lam=0.0, c=0.0, gamma=0.5)
    assert (constraint.lam, constraint.c, constraint.gamma) == (0.0, 0.0, 0.5)


def test_negative_lambda_raises_value_error():
    with pytest.raises(ValueError, match="lam"):
        QuadraticPenalty(lam=-0.1, c=-0.01, gamma=0.99)


def test_positive_c_raises_value_error():
    with pytest.raises(ValueError, match="c must"):
        QuadraticPenalty(lam=1.0, c=0.1, gamma=0.99)


@pytest.mark.parametrize("gamma", [0.0, 1.0, -0.5, 1.5])
def test_gamma_outside_the_open_unit_interval_raises_value_error(gamma):
    with pytest.raises(ValueError, match="gamma"):
        QuadraticPenalty(lam=1.0, c=-0.01, gamma=gamma)


# --- the learned Lagrange multiplier ------------------------------------------------------------


def _lagrange(**kwargs) -> LagrangePenalty:
    # Threshold c * (1 - gamma) = -0.1, as above.
    return LagrangePenalty(lam=2.0, c=-1.0, gamma=0.9, **kwargs)


def test_lagrange_penalty_is_the_multiplier_times_the_shortfall():
    form = _lagrange(initial_multiplier=3.0)
    # shortfall = -0.1 - (-0.3) = 0.2; 3 * 0.2 = 0.6; when the gain clears it, 3 * (-0.1 - 0.5) = -1.8.
    assert torch.isclose(form.penalty(*_one(-0.3)), torch.tensor(0.6), atol=1e-6)
    assert torch.isclose(form.penalty(*_one(0.5)), torch.tensor(-1.8), atol=1e-6)


def test_lagrange_multiplier_rises_while_violated_and_decays_to_zero_once_the_constraint_holds():
    form = _lagrange(multiplier_lr=0.5)
    values = []
    for _ in range(4):  # shortfall 0.2 each step: +0.1
        form.after_step(*_one(-0.3))
        values.append(float(form.multiplier))
    assert values == pytest.approx([0.1, 0.2, 0.3, 0.4])
    for _ in range(4):  # gain 0.0 clears the threshold by 0.1: -0.05 per step, floored at 0
        form.after_step(*_one(0.0))
        values.append(float(form.multiplier))
    assert values[4:] == pytest.approx([0.35, 0.30, 0.25, 0.20])
    for _ in range(10):
        form.after_step(*_one(10.0))
    assert float(form.multiplier) == 0.0
    assert form.diagnostics()["multiplier"] == 0.0


def test_lagrange_multiplier_is_saved_and_restored_with_the_module():
    form = _lagrange(multiplier_lr=1.0)
    form.after_step(*_one(-1.1))  # shortfall 1.0
    restored = _lagrange()
    restored.load_state_dict(form.state_dict())
    assert float(restored.multiplier) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, message", [({"multiplier_lr": 0.0}, "multiplier_lr"), ({"initial_multiplier": -1.0}, "initial_multiplier")])
def test_lagrange_penalty_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _lagrange(**kwargs)


# --- the weighted gain and the per-task form ---------------------------------------------------


def test_weighted_gain_matches_hand_computed_value():
    # 0.5 * 2 + 0.25 * 3 + 0.25 * 0 = 1.75
    assert torch.isclose(weighted_gain(torch.tensor([2.0, 3.0, 0.0]), torch.tensor([0.5, 0.25, 0.25])), torch.tensor(1.75))


def test_per_task_penalty_charges_each_task_below_the_threshold_even_when_the_sum_clears_it():
    # Threshold -0.1. Gains [1.0, -0.3, -0.5], uniform weights: G = 0.0667 clears it (no eq. 10
    # penalty), but tasks 1 and 2 fall short by 0.2 and 0.4:
    # penalty = (lam / 2) * sum_z N w_z c_z^2 = 1 * (0.04 + 0.16) = 0.2;
    # violation = sum_z w_z c_z = (0.2 + 0.4) / 3 = 0.2.
    gains, weights = torch.tensor([1.0, -0.3, -0.5]), torch.full((3,), 1 / 3)
    per_task = PerTaskQuadraticPenalty(lam=2.0, c=-1.0, gamma=0.9)
    assert _penalty().penalty(gains, weights) == 0.0 and not _penalty().active(gains, weights)
    assert torch.isclose(per_task.penalty(gains, weights), torch.tensor(0.2), atol=1e-6)
    assert torch.isclose(per_task.violation(gains, weights), torch.tensor(0.2), atol=1e-6)
    assert per_task.active(gains, weights)


def test_per_task_penalty_weights_each_task_by_n_w_and_is_zero_when_every_task_clears():
    # Only task 1 falls short (by 0.2); w_1 = 0.5 of N = 2: 1 * (2 * 0.5) * 0.04 = 0.04.
    per_task = PerTaskQuadraticPenalty(lam=2.0, c=-1.0, gamma=0.9)
    assert torch.isclose(per_task.penalty(torch.tensor([0.0, -0.3]), torch.tensor([0.5, 0.5])), torch.tensor(0.04), atol=1e-6)
    # With w_1 = 0.9: 1 * (2 * 0.9) * 0.04 = 0.072.
    assert torch.isclose(per_task.penalty(torch.tensor([0.0, -0.3]), torch.tensor([0.1, 0.9])), torch.tensor(0.072), atol=1e-6)
    assert per_task.penalty(torch.tensor([0.0, 0.5]), torch.tensor([0.5, 0.5])) == 0.0
    assert not per_task.active(torch.tensor([0.0, 0.5]), torch.tensor([0.5, 0.5]))


def test_lagrange_form_stays_active_while_its_multiplier_is_positive():
    form = _lagrange(initial_multiplier=0.0)
    assert not form.active(*_one(1.0))
    form.after_step(*_one(-0.3))
    assert form.active(*_one(1.0))  # the constraint holds, but nu > 0 still pulls on the gain
