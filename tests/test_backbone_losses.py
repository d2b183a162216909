"""The backbones' loss values and the correction's gain sign, each against a value computed by hand
on hand-set networks: a linear tanh-Gaussian actor, a linear deterministic actor and the
parameter-free twin critic `FixedQ` of test_ktm_drl, Q = (c1 a + s1, c2 a - s0)."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn

import picor_gin.backbones.sac as sac_module
from picor_gin.backbones import PPO, SAC, TD3
from picor_gin.networks import OneHotMLP
from tests.test_ktm_drl import FixedQ

OBS_DIM, ACTION_DIM, NUM_TASKS = 2, 1, 2
# Two states, task 0 and task 1. Under FixedQ(1, -2) their min twin differs: Q2 at s = [1, 2]
# (Q1 - Q2 = 3a + 3 > 0 for a > -1), Q1 at s = [-2, -3] (Q1 - Q2 = 3a - 5 < 0).
STATES = torch.tensor([[1.0, 2.0], [-2.0, -3.0]])
NEXT_STATES = torch.tensor([[0.4, -1.0], [2.0, 3.0]])
TASKS = torch.tensor([0, 1])
ACTIONS = torch.tensor([[0.5], [-0.25]])
REWARDS = torch.tensor([1.0, -1.0])
GAMMA = 0.9
# FixedQ(1, -2) at (STATES, ACTIONS): Q1 = a + s1 = [2.5, -3.25]; Q2 = -2a - s0 = [-2, 2.5].
ONLINE_Q = torch.tensor([[2.5, -2.0], [-3.25, 2.5]])


class LinearGaussian(nn.Module):
    """A tanh-Gaussian actor with loc = w . s and a fixed scale: SAC's and PPO's (loc, scale)."""

    def __init__(self, weight: list[float], scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([weight]))
        self.scale = scale

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = observation @ self.weight.T
        return loc, torch.full_like(loc, self.scale)


def tanh_normal_log_prob(action: torch.Tensor, loc: torch.Tensor, scale: float) -> torch.Tensor:
    """log pi(a) of a = tanh(u), u ~ N(loc, scale^2): log N(u) - log(1 - a^2) (Haarnoja et al. 2018, app. C)."""
    u = torch.atanh(action)
    normal = -0.5 * ((u - loc) / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)
    return (normal - torch.log1p(-action**2)).sum(-1)


def _batch(**next_extra: torch.Tensor) -> TensorDict:
    return TensorDict(
        {"observation": STATES, "action": ACTIONS, "task_id": TASKS,
         "next": {"observation": NEXT_STATES, "reward": REWARDS.unsqueeze(-1),
                  "terminated": torch.zeros(2, 1, dtype=torch.bool), **next_extra}},
        batch_size=[2],
    )


@pytest.fixture
def sac(monkeypatch) -> tuple[SAC, dict[str, torch.Tensor]]:
    """SAC with actor loc = 0.2 s0 - 0.1 s1 (STATES: [0, -0.1]; NEXT_STATES: [0.18, 0.1]), scale 0.5,
    alpha = [0.5, 2] per task, critic FixedQ(1, -2), target critic FixedQ(0.5, 3); and the draws
    its TanhNormals make: "actor" (the actor loss's, with grad) and "next" (the target's, no grad)."""
    torch.manual_seed(0)
    sac = SAC(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(4,)),
              gamma=GAMMA)
    sac.actor = LinearGaussian([0.2, -0.1], scale=0.5)
    sac.critic, sac.target_critic = FixedQ(1.0, -2.0), FixedQ(0.5, 3.0)
    with torch.no_grad():
        sac.log_alpha.copy_(torch.tensor([0.5, 2.0]).log())
    draws = {}

    class RecordingTanhNormal(sac_module.TanhNormal):
        def rsample_and_log_prob(self, *args, **kwargs):
            action, log_prob = super().rsample_and_log_prob(*args, **kwargs)
            draws["actor" if torch.is_grad_enabled() else "next"] = action.detach()
            return action, log_prob

    monkeypatch.setattr(sac_module, "TanhNormal", RecordingTanhNormal)
    return sac, draws


def _differs(value: torch.Tensor, *wrong: torch.Tensor) -> bool:
    """The draw keeps each buggy variant's value away from the right one (so the test can fail)."""
    return all((value - w).abs().max() > 1e-2 for w in wrong)


def test_sac_actor_loss_is_mean_of_per_task_alpha_log_pi_minus_min_twin_with_alpha_detached(sac):
    """loss_actor = mean(alpha_z log pi(a|s) - min(Q1, Q2)(s, a)), alpha_z per sample, no grad to alpha."""
    sac, draws = sac
    loss = sac.losses(_batch())["loss_actor"]
    a = draws["actor"]
    log_prob = tanh_normal_log_prob(a, torch.tensor([[0.0], [-0.1]]), 0.5)
    alpha = torch.tensor([0.5, 2.0])  # task 0, task 1
    q1 = a[:, 0] + STATES[:, 1]  # c1 a + s1, c1 = 1
    q2 = -2.0 * a[:, 0] - STATES[:, 0]  # c2 a - s0, c2 = -2
    min_q = torch.minimum(q1, q2)
    expected = (alpha * log_prob - min_q).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)
    assert _differs(
        expected,
        (-alpha * log_prob - min_q).mean(),  # entropy sign flipped
        (alpha * log_prob - q1).mean(),  # first twin instead of the min
        (0.5 * log_prob - min_q).mean(), (2.0 * log_prob - min_q).mean(),  # one alpha for both tasks
    )
    loss.backward()
    assert sac.log_alpha.grad is None or not sac.log_alpha.grad.any()  # alpha detached
    assert sac.actor.weight.grad is not None and sac.actor.weight.grad.abs().sum() > 0


def test_sac_critic_target_bootstraps_from_the_target_critic_and_through_truncation(sac):
    """y = r + gamma (1 - terminated) (min target-Q(s', a') - alpha_z log pi(a'|s')), a' from the
    actor on s'; loss_critic = 0.5 mean sum_twins (Q - y)^2. Row 1 is truncated, not terminated."""
    sac, draws = sac
    flags = torch.tensor([[False], [True]])
    loss = sac.losses(_batch(truncated=flags, done=flags))["loss_critic"]
    a_next = draws["next"]
    log_prob = tanh_normal_log_prob(a_next, torch.tensor([[0.18], [0.1]]), 0.5)  # loc = 0.2 s0' - 0.1 s1'
    alpha = torch.tensor([0.5, 2.0])

    def soft_value(c1: float, c2: float) -> torch.Tensor:  # min(c1 a' + s1', c2 a' - s0') - alpha log pi
        q1, q2 = c1 * a_next[:, 0] + NEXT_STATES[:, 1], c2 * a_next[:, 0] - NEXT_STATES[:, 0]
        return torch.minimum(q1, q2) - alpha * log_prob

    def critic_loss(target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (ONLINE_Q - target.unsqueeze(-1)).square().sum(-1).mean()

    target = REWARDS + GAMMA * soft_value(0.5, 3.0)  # target critic FixedQ(0.5, 3); neither row terminated
    expected = critic_loss(target)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4)
    assert _differs(
        expected,
        critic_loss(REWARDS + GAMMA * soft_value(1.0, -2.0)),  # bootstrapped from the online critic
        critic_loss(torch.stack([target[0], REWARDS[1]])),  # truncation stopped the bootstrap
        critic_loss(REWARDS + GAMMA * (soft_value(0.5, 3.0) + 2 * alpha * log_prob)),  # entropy sign
    )


def _td3() -> TD3:
    """TD3 with actor a = 0.5 s0 - s1, target actor a = 0.25 s0 + 0.5 s1, critic FixedQ(1, -2),
    target critic FixedQ(2, 0.5) and no target smoothing noise."""
    td3 = TD3(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(4,)),
              gamma=GAMMA, policy_noise=0.0, policy_delay=2)
    td3.actor, td3.target_actor = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False).requires_grad_(False)
    with torch.no_grad():
        td3.actor.weight.copy_(torch.tensor([[0.5, -1.0]]))
        td3.target_actor.weight.copy_(torch.tensor([[0.25, 0.5]]))
    td3.critic, td3.target_critic = FixedQ(1.0, -2.0), FixedQ(2.0, 0.5)
    return td3


def test_td3_critic_target_and_delayed_actor_loss_match_hand_values():
    """y = r + gamma (1 - terminated) min target-Q(s', clip(target_actor(s'))); on the delayed
    update loss_actor = -mean Q1(s, actor(s)), the first twin, not the min."""
    td3 = _td3()
    # a' = clip(0.25 s0' + 0.5 s1', -1, 1): [0.1 - 0.5, 0.5 + 1.5 -> 1] = [-0.4, 1].
    # Target Q1 = 2 a' + s1' = [-1.8, 5]; Q2 = 0.5 a' - s0' = [-0.6, -1.5]; min = [-1.8, -1.5].
    # y = [1 + 0.9 (-1.8), -1 + 0.9 (-1.5)] = [-0.62, -2.35].
    # Online Q = [[2.5, -2], [-3.25, 2.5]]: errors [[3.12, -1.38], [-0.9, 4.85]].
    expected_critic = 0.5 * ((3.12**2 + 1.38**2) + (0.9**2 + 4.85**2)) / 2  # = 8.992825
    for _ in range(td3.policy_delay):  # critic-only updates until the delayed actor update
        losses = td3.losses(_batch())
        assert losses["loss_critic"].item() == pytest.approx(expected_critic, abs=1e-5)
        if "loss_actor" in losses:
            break
        td3.update_targets()
    assert "loss_actor" in losses
    # actor(s) = [0.5 - 2, -1 + 3] = [-1.5, 2]; Q1 = a + s1 = [0.5, -1]: loss = -(0.5 - 1) / 2 = 0.25.
    # (The min twin would give min(0.5, 2), min(-1, -2) = [0.5, -2]: loss 0.75.)
    assert losses["loss_actor"].item() == pytest.approx(0.25, abs=1e-6)
    losses["loss_actor"].backward()
    # d/dw of -mean(w . s + s1) = -mean(s) = -([1, 2] + [-2, -3]) / 2 = [0.5, 0.5].
    assert torch.allclose(td3.actor.weight.grad, torch.tensor([[0.5, 0.5]]))


UNIT_STATES = TensorDict({"observation": torch.eye(2), "task_id": TASKS}, batch_size=[2])


def test_td3_correction_gain_is_positive_when_the_actor_moves_to_higher_q():
    """gain = min Q(s, actor_phi(s)) - min Q(s, mu_t(s)) (Q minus baseline), by hand."""
    td3 = _td3()
    td3.critic = FixedQ(1.0, 2.0)  # Q1 = a + s1, Q2 = 2 a - s0: both rise with a
    pi_t = td3.policy_snapshot(UNIT_STATES["observation"])  # mu_t(s) = [0.5, -1] on s = e0, e1
    baseline = td3.value_baseline(UNIT_STATES, pi_t)
    # s = [1, 0], a = 0.5: min(0.5, 0) = 0; s = [0, 1], a = -1: min(0, -2) = -2.
    assert torch.allclose(baseline, torch.tensor([0.0, -2.0]))
    with torch.no_grad():
        td3.actor.weight.copy_(torch.tensor([[0.75, -0.5]]))  # actions up: [0.75, -0.5]
    gain, _ = td3.correction_terms(UNIT_STATES, baseline, pi_t)
    # min(0.75, 0.5) - 0 = 0.5; min(0.5, -1) - (-2) = 1.
    assert torch.allclose(gain, torch.tensor([0.5, 1.0]), atol=1e-6)


def test_ppo_correction_gain_is_positive_when_the_actor_favours_positive_advantage_actions():
    """gain = ratio A - A = (pi_phi(a|s) / pi_t(a|s) - 1) A: positive when pi_phi makes the
    rollout's positive-advantage action likelier and its negative-advantage action rarer."""
    ppo = PPO(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(4,)))
    ppo.actor = LinearGaussian([0.0, 0.0], scale=0.5)  # pi_t: loc 0 on both states
    action = torch.tanh(torch.tensor([[0.5], [0.5]]))  # pre-tanh u = 0.5 on both
    states = UNIT_STATES.clone()
    states["action"] = action
    states["action_log_prob"] = tanh_normal_log_prob(action, torch.zeros(2, 1), 0.5)
    states["advantage"] = torch.tensor([[2.0], [-1.0]])
    baseline = ppo.value_baseline(states, ppo.pi_t_snapshot(states))
    with torch.no_grad():
        ppo.actor.weight.copy_(torch.tensor([[0.5, -0.5]]))  # loc [0.5, -0.5]: toward u on e0, away on e1
    gain, _ = ppo.correction_terms(states, baseline, None)
    # Same scale, so the tanh Jacobian cancels: ratio = exp(((u - loc_t)^2 - (u - loc)^2) / (2 * 0.25)).
    # e0: exp((0.25 - 0) / 0.5) = e^0.5, gain (e^0.5 - 1) * 2;
    # e1: exp((0.25 - 1) / 0.5) = e^-1.5, gain (e^-1.5 - 1) * (-1).
    expected = torch.tensor([2 * (math.exp(0.5) - 1), 1 - math.exp(-1.5)])
    assert torch.allclose(gain, expected, atol=1e-5)
    assert (gain > 0).all()


def test_td3_target_policy_smoothing_clips_the_noise_then_the_action(monkeypatch):
    """a' = clip(target_actor(s') + clip(noise policy_noise, -noise_clip, noise_clip), -1, 1),
    with the noise fixed at 1: policy_noise 10 pushes it to the clip, 0.1."""
    td3 = _td3()
    td3.policy_noise, td3.noise_clip = 10.0, 0.1
    monkeypatch.setattr(torch, "randn_like", torch.ones_like)
    # target_actor(s') = [-0.4, 2]; + clip(10, -0.1, 0.1) = [-0.3, 2.1]; clip to [-1, 1]: [-0.3, 1].
    # Target Q1 = 2 a' + s1' = [-1.6, 5]; Q2 = 0.5 a' - s0' = [-0.55, -1.5]; min = [-1.6, -1.5].
    # y = [1 + 0.9 (-1.6), -1 + 0.9 (-1.5)] = [-0.44, -2.35]; errors [[2.94, -1.56], [-0.9, 4.85]].
    expected = 0.5 * ((2.94**2 + 1.56**2) + (0.9**2 + 4.85**2)) / 2  # = 8.852425
    # No smoothing: a' = [-0.4, 1], the existing 8.992825. No noise clip: a' = clip([9.6, 12]) = [1, 1],
    # y0 = 1 + 0.9 min(2 - 1, 0.5 - 0.4) = 1.09. No final clip: a'_1 = 2.1, y1 = -1 + 0.9 min(7.2, -0.95).
    assert td3.losses(_batch())["loss_critic"].item() == pytest.approx(expected, abs=1e-5)


def test_td3_polyak_moves_both_targets_by_exactly_the_rate_only_on_a_tasks_delayed_update():
    """With policy_delay 2 counted per task: task 0's first update and task 1's first are not due
    (one counter for all would make the second due), task 0's second is; then
    target <- old + rate (live - old) for the target critic and the target actor."""
    torch.manual_seed(0)
    rate = 0.25
    td3 = TD3(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(4,)),
              target_update_rate=rate, policy_delay=2)
    with torch.no_grad():
        for p in [*td3.critic.parameters(), *td3.actor.parameters()]:
            p.add_(torch.randn_like(p))
    pairs = [(td3.target_critic, td3.critic), (td3.target_actor, td3.actor)]
    live = [[p.detach().clone() for p in online.parameters()] for _, online in pairs]
    old = [[p.detach().clone() for p in target.parameters()] for target, _ in pairs]
    assert all(not torch.equal(a[0], b[0]) for a, b in zip(live, old))
    for task in (0, 1):  # not due: both targets unchanged
        td3.start_update([task])
        td3.update_targets()
        for (target, _), before in zip(pairs, old):
            assert all(torch.equal(p, q) for p, q in zip(target.parameters(), before))
    td3.start_update([0])  # task 0's second update: due
    td3.update_targets()
    assert td3.task_updates == [2, 1]
    for (target, online), before, now in zip(pairs, old, live):
        for new, o, v in zip(target.parameters(), before, now):
            assert torch.allclose(new, o + rate * (v - o), atol=1e-7)  # not o + (1 - rate)(v - o)
        assert all(torch.equal(p, q) for p, q in zip(online.parameters(), now))  # online untouched


def _ppo(**kwargs) -> PPO:
    torch.manual_seed(0)  # the same actor and critic weights for every call
    return PPO(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(4,)),
               **kwargs)


def _ppo_batch(ppo: PPO, value_target: list[float]) -> TensorDict:
    """STATES and ACTIONS as a rollout of the current actor (ratio 1), advantage [1, -1]."""
    with torch.no_grad():
        log_prob = sac_module.TanhNormal(*ppo.actor(STATES)).log_prob(ACTIONS)
    return TensorDict(
        {"observation": STATES, "action": ACTIONS, "task_id": TASKS, "action_log_prob": log_prob,
         "advantage": torch.tensor([[1.0], [-1.0]]), "value_target": torch.tensor(value_target).unsqueeze(-1)},
        batch_size=[2],
    )


def test_ppo_critic_loss_is_critic_coef_times_the_mean_squared_error_without_a_half():
    """TorchRL's ClipPPOLoss with loss_critic_type "l2": critic_coeff * mean(F.mse_loss(...)), no 0.5."""
    ppo = _ppo(critic_coef=2.0)
    with torch.no_grad():  # V(s) = 1.5: zero weights, last bias 1.5
        for p in ppo.critic.parameters():
            p.zero_()
        ppo.critic[-1].bias.fill_(1.5)
    loss = ppo.losses(_ppo_batch(ppo, [1.0, -1.0]))["loss_critic"]
    # Errors V - y = [0.5, 2.5]: mean square (0.25 + 6.25) / 2 = 3.25; times critic_coef 2 = 6.5.
    # (Halved: 3.25; coef dropped: 3.25; smooth L1: 2 (0.5 0.25 + (2.5 - 0.5)) / 2 = 2.125.)
    assert loss.item() == pytest.approx(6.5, abs=1e-6)


def test_ppo_entropy_bonus_lowers_the_actor_loss_by_entropy_coef_times_the_entropy():
    """loss_actor(c) - loss_actor(0) = -c H, H TorchRL's one-sample estimate -log pi(a~|s) (the
    tanh-Gaussian has no closed form): the same weights and seed give both calls the same draw."""
    c = 0.3
    results = []
    for coef in (c, 0.0):
        ppo = _ppo(entropy_coef=coef)
        batch = _ppo_batch(ppo, [0.0, 0.0])
        torch.manual_seed(1)
        results.append(ppo.losses(batch))
    with_bonus, without = results
    entropy = without["entropy"]
    assert torch.equal(with_bonus["entropy"], entropy)  # the same draw
    assert entropy.abs() > 0.1  # the check can tell -c H from 0 and from +c H
    # At ratio 1 the clipped surrogate is -mean(A) = -(1 - 1) / 2 = 0, so the actor loss is the bonus alone.
    assert without["loss_actor"].item() == pytest.approx(0.0, abs=1e-6)
    diff = with_bonus["loss_actor"] - without["loss_actor"]
    assert diff.item() == pytest.approx(-c * entropy.item(), abs=1e-6)
