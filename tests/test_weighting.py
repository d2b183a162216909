"""Weighting rules (eq. 9 of PiCor and the uniform ablation "Ada: X")."""
from __future__ import annotations

import inspect

import pytest
import torch

from picor_gin import weighting
from picor_gin.weighting import SoftmaxAlphaWeights, UniformWeights, WeightingRule

# Every concrete rule of the family, found in the module so that a new rule is covered too.
RULES = [
    cls
    for cls in vars(weighting).values()
    if isinstance(cls, type) and issubclass(cls, WeightingRule) and not inspect.isabstract(cls)
]


def _stats(alpha: list[float]) -> dict[str, torch.Tensor]:
    return {"alpha": torch.tensor(alpha)}


def test_the_family_list_holds_both_known_rules():
    assert {SoftmaxAlphaWeights, UniformWeights} <= set(RULES)


@pytest.mark.parametrize(
    "tau, expected",
    [
        (1.0, [0.7311, 0.2689]),  # e / (e + 1), 1 / (e + 1)
        (0.5, [0.8808, 0.1192]),  # e^2 / (e^2 + 1), 1 / (e^2 + 1)
    ],
)
def test_softmax_alpha_weights_match_hand_computed_eq9(tau, expected):
    w = SoftmaxAlphaWeights(tau=tau)(_stats([1.0, 0.0]), 2)
    assert torch.allclose(w, torch.tensor(expected), atol=1e-4)


def test_softmax_alpha_weights_favour_the_task_with_the_higher_temperature():
    w = SoftmaxAlphaWeights(tau=1.0)(_stats([0.1, 2.0, 0.5]), 3)
    assert int(w.argmax()) == 1
    assert w[1] > w[2] > w[0]


def test_softmax_alpha_weights_use_alpha_itself_not_its_log():
    # alpha = [e, 1]: softmax(alpha) = [0.8479, 0.1521] (logit gap e - 1);
    # softmax(log alpha) would give [0.7311, 0.2689].
    w = SoftmaxAlphaWeights(tau=1.0)(_stats([torch.e, 1.0]), 2)
    assert torch.allclose(w, torch.tensor([0.8479, 0.1521]), atol=1e-4)


def test_softmax_alpha_weights_carry_no_gradient_to_the_temperatures():
    log_alpha = torch.zeros(3, requires_grad=True)
    w = SoftmaxAlphaWeights(tau=1.0)({"alpha": log_alpha.exp()}, 3)
    assert not w.requires_grad


@pytest.mark.parametrize("tau", [0.0, -1.0])
def test_softmax_alpha_weights_reject_a_non_positive_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        SoftmaxAlphaWeights(tau=tau)


def test_softmax_alpha_weights_without_temperatures_raise_value_error():
    with pytest.raises(ValueError, match="temperature"):
        SoftmaxAlphaWeights()({"other": torch.ones(3)}, 3)


def test_uniform_weights_are_one_over_n_whatever_the_temperatures():
    w = UniformWeights()(_stats([5.0, 0.1, 0.2, 3.0]), 4)
    assert torch.equal(w, torch.full((4,), 0.25))


@pytest.mark.parametrize("rule_class", RULES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("num_tasks", [1, 4, 10])
def test_every_rule_returns_shape_n_summing_to_one(rule_class, num_tasks):
    alpha = torch.linspace(0.05, 3.0, num_tasks)
    w = rule_class()({"alpha": alpha}, num_tasks)
    assert w.shape == (num_tasks,)
    assert (w >= 0).all()
    assert torch.isclose(w.sum(), torch.tensor(1.0), atol=1e-6)
