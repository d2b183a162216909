"""Weighting rules: eq. 9 of PiCor, the uniform ablation "Ada: X", and the temperature-free rule."""
from __future__ import annotations

import inspect

import pytest
import torch

from picor_gin.correction import weighting
from picor_gin.correction.weighting import SoftmaxAlphaWeights, SoftmaxReturnWeights, UniformWeights, WeightingRule

# Every concrete rule of the family, found in the module so that a new rule is covered too.
RULES = [
    cls
    for cls in vars(weighting).values()
    if isinstance(cls, type) and issubclass(cls, WeightingRule) and not inspect.isabstract(cls)
]


def _stats(alpha: list[float], recent_return: list[float] | None = None) -> dict[str, torch.Tensor]:
    recent_return = recent_return or [0.0] * len(alpha)
    return {"alpha": torch.tensor(alpha), "recent_return": torch.tensor(recent_return)}


def test_the_family_list_holds_the_known_rules():
    assert {SoftmaxAlphaWeights, SoftmaxReturnWeights, UniformWeights} <= set(RULES)


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


def test_return_weights_match_hand_computed_values():
    # returns [0, 1, 2]: mean 1, population std sqrt(2/3), standardised [-1.2247, 0, 1.2247];
    # softmax([1.2247, 0, -1.2247]) = [3.4034, 1, 0.2938] / 4.6972 = [0.7246, 0.2129, 0.0626].
    w = SoftmaxReturnWeights(tau=1.0)(_stats([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]), 3)
    assert torch.allclose(w, torch.tensor([0.7246, 0.2129, 0.0626]), atol=1e-4)
    # tau = 2 halves the logits: [1.8448, 1, 0.5421] / 3.3869 = [0.5447, 0.2953, 0.1601].
    w2 = SoftmaxReturnWeights(tau=2.0)(_stats([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]), 3)
    assert torch.allclose(w2, torch.tensor([0.5447, 0.2953, 0.1601]), atol=1e-4)


def test_return_weights_ignore_the_reward_scale_and_the_temperatures():
    small = SoftmaxReturnWeights()(_stats([0.1, 5.0, 1.0], [0.0, 1.0, 2.0]), 3)
    large = SoftmaxReturnWeights()(_stats([1.0, 1.0, 1.0], [-500.0, 0.0, 500.0]), 3)
    assert torch.allclose(small, large, atol=1e-6)


def test_return_weights_count_a_task_without_episodes_as_average_and_equal_returns_as_uniform():
    # [0, nan, 2] -> nan becomes the mean 1: the same as [0, 1, 2].
    w = SoftmaxReturnWeights()(_stats([1.0] * 3, [0.0, float("nan"), 2.0]), 3)
    assert torch.allclose(w, torch.tensor([0.7246, 0.2129, 0.0626]), atol=1e-4)
    for returns in ([float("nan")] * 3, [4.0] * 3):
        w = SoftmaxReturnWeights()(_stats([1.0] * 3, returns), 3)
        assert torch.allclose(w, torch.full((3,), 1 / 3), atol=1e-6)


def test_uniform_weights_are_one_over_n_whatever_the_temperatures():
    w = UniformWeights()(_stats([5.0, 0.1, 0.2, 3.0]), 4)
    assert torch.equal(w, torch.full((4,), 0.25))


@pytest.mark.parametrize("rule_class", RULES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("num_tasks", [1, 4, 10])
def test_every_rule_returns_shape_n_summing_to_one(rule_class, num_tasks):
    alpha = torch.linspace(0.05, 3.0, num_tasks)
    w = rule_class()({"alpha": alpha, "recent_return": -alpha}, num_tasks)
    assert w.shape == (num_tasks,)
    assert (w >= 0).all()
    assert torch.isclose(w.sum(), torch.tensor(1.0), atol=1e-6)
