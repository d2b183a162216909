"""PiCor's policy correction phase, eq. (10): the KL, the weighted gain and the phase itself."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.distributions import Normal, kl_divergence

from picor_gin.backbones import SAC
from picor_gin.correction.constraints import QuadraticPenalty
from picor_gin.correction.loss import correction_diagnostics, correction_loss
from picor_gin.correction.policy_correction import PolicyCorrection, Processes
from picor_gin.correction.solvers import CorrectionSolver
from picor_gin.networks import Network, OneHotMLP, TwinCritic
from picor_gin.correction.weighting import SoftmaxAlphaWeights

NUM_TASKS, OBS_DIM, ACTION_DIM, STATES_PER_TASK = 4, 6, 2, 16

# KL(N([0, 0], diag std [1, 1]) || N([1, 0], diag std [1, 2])), per dimension
#   log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2:
#   dim 0: 0 + (1 + 1) / 2 - 1/2 = 0.5;   dim 1: log 2 + 1/8 - 1/2.
HAND_KL = 0.5 + (math.log(2.0) + 1.0 / 8.0 - 0.5)


class _FixedLocActor(nn.Module):
    """Ignores the observation: outputs loc and a raw scale of 0, which SAC's NormalParamExtractor
    maps to scale 1, broadcast to the batch."""

    def __init__(self, loc: list[float]):
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(loc))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        loc = self.loc.expand(*observation.shape[:-1], -1)
        return torch.cat([loc, torch.zeros_like(loc)], -1)


class _UnitGaussianNetwork(Network):
    """Actor N(loc, I) on every state; an ordinary critic."""

    def __init__(self, loc: list[float]):
        self.loc = loc
        self.mlp = OneHotMLP(hidden_sizes=(8, 8))

    def actor(self, obs_dim: int, out_features: int, num_tasks: int) -> nn.Module:
        return _FixedLocActor(self.loc)

    def critic(self, obs_dim: int, action_dim: int, num_tasks: int) -> TwinCritic:
        return self.mlp.critic(obs_dim, action_dim, num_tasks)


def _sac(network: Network | None = None, **kwargs) -> SAC:
    torch.manual_seed(0)
    return SAC(
        obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS,
        network=network or OneHotMLP(hidden_sizes=(8, 8)), **kwargs,
    )


def _states(seed: int = 3) -> TensorDict:
    """[N, M] correction states: random 2-D positions with the one-hot task id appended."""
    generator = torch.Generator().manual_seed(seed)
    task_id = torch.arange(NUM_TASKS).unsqueeze(-1).expand(NUM_TASKS, STATES_PER_TASK)
    position = torch.randn(NUM_TASKS, STATES_PER_TASK, 2, generator=generator)
    onehot = nn.functional.one_hot(task_id, NUM_TASKS).float()
    return TensorDict(
        {"observation": torch.cat([position, onehot], -1), "task_id": task_id},
        batch_size=[NUM_TASKS, STATES_PER_TASK],
    )


def _actor_batch(states: TensorDict) -> TensorDict:
    """A task-2 batch for one optimization-phase actor step (only "observation" matters to it)."""
    size = STATES_PER_TASK
    observation = states["observation"][2]
    return TensorDict(
        {
            "observation": observation,
            "action": torch.zeros(size, ACTION_DIM),
            "task_id": states["task_id"][2],
            "next": {
                "observation": observation,
                "reward": torch.zeros(size, 1),
                "terminated": torch.zeros(size, 1, dtype=torch.bool),
            },
        },
        batch_size=[size],
    )


def _phase(sac: SAC) -> tuple[TensorDict, TensorDict, TensorDict, torch.Tensor]:
    """pi_t, one Adam step of the actor loss, pi'_t and the baseline of A^{pi_t}."""
    states = _states()
    pi_t = sac.policy_snapshot(states["observation"])
    optimizer = torch.optim.Adam(sac.actor.parameters(), lr=1e-2)
    optimizer.zero_grad()
    sac.losses(_actor_batch(states))["loss_actor"].backward()
    optimizer.step()
    pi_prime = sac.policy_snapshot(states["observation"])
    assert not torch.equal(pi_t["loc"], pi_prime["loc"]), "the actor step did not move the policy"
    baseline = sac.value_baseline(states, pi_t)
    return states, pi_t, pi_prime, baseline


# --- the divergence ------------------------------------------------------------------------------


def _hand_pi_prime() -> TensorDict:
    """pi'_t = N([1, 0], diag[1, 2]^2) on every state: KL from N(0, I) is 0.5 + log 2 + 1/8 - 1/2."""
    return TensorDict(
        {"loc": torch.tensor([1.0, 0.0]).expand(NUM_TASKS, STATES_PER_TASK, 2),
         "scale": torch.tensor([1.0, 2.0]).expand(NUM_TASKS, STATES_PER_TASK, 2)},
        batch_size=[NUM_TASKS, STATES_PER_TASK],
    )


def test_divergence_is_the_hand_computed_kl_between_diagonal_gaussians():
    sac = _sac(_UnitGaussianNetwork(loc=[0.0, 0.0]))
    states = _states()
    pi_prime = _hand_pi_prime()
    baseline = torch.zeros(NUM_TASKS, STATES_PER_TASK)
    _, divergence = sac.correction_terms(states, baseline, pi_prime)
    assert divergence.shape == (NUM_TASKS, STATES_PER_TASK)
    assert torch.allclose(divergence, torch.full_like(divergence, HAND_KL), atol=1e-6)
    # The actor-only divergence (no critic pass), which the sized step measures its KL with.
    assert torch.allclose(sac.divergence(states["observation"], pi_prime), divergence, atol=1e-6)


def test_divergence_is_kl_of_phi_from_pi_prime_not_the_reverse():
    # KL(N(0, 1) || N(0, 2)) = log 2 + 1/8 - 1/2 = 0.3181; the reverse is -log 2 + 2 - 1/2 = 0.8069.
    sac = _sac(_UnitGaussianNetwork(loc=[0.0, 0.0]))
    states = _states()
    pi_prime = TensorDict(
        {"loc": torch.zeros(NUM_TASKS, STATES_PER_TASK, 2),
         "scale": torch.tensor([1.0, 2.0]).expand(NUM_TASKS, STATES_PER_TASK, 2)},
        batch_size=[NUM_TASKS, STATES_PER_TASK],
    )
    _, divergence = sac.correction_terms(states, torch.zeros(NUM_TASKS, STATES_PER_TASK), pi_prime)
    assert torch.allclose(divergence, torch.full_like(divergence, math.log(2.0) + 0.125 - 0.5), atol=1e-6)


def test_divergence_is_zero_at_phi_equal_pi_prime_and_torchs_closed_form_elsewhere():
    sac = _sac()
    states, pi_t, pi_prime, baseline = _phase(sac)
    _, at_pi_prime = sac.correction_terms(states, baseline, pi_prime)
    assert torch.allclose(at_pi_prime, torch.zeros_like(at_pi_prime), atol=1e-6)

    # Against the older snapshot pi_t, the divergence is the summed closed-form KL to it.
    loc, scale = sac.actor(states["observation"])
    expected = kl_divergence(Normal(loc, scale), Normal(pi_t["loc"], pi_t["scale"])).sum(-1)
    _, to_pi_t = sac.correction_terms(states, baseline, pi_t)
    assert (to_pi_t > 0).all()
    assert torch.allclose(to_pi_t, expected, atol=1e-6)


# --- weighted gain and the loss ------------------------------------------------------------------


def test_task_gains_are_the_per_task_mean_advantages_and_gain_their_weighted_sum():
    sac = _sac()
    states, _, pi_prime, baseline = _phase(sac)
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1])
    constraint = QuadraticPenalty(lam=1.0, c=-0.01, gamma=0.99)
    torch.manual_seed(7)
    out = correction_loss(sac, constraint, states, baseline, pi_prime, weights)
    torch.manual_seed(7)
    advantage, _ = sac.correction_terms(states, baseline, pi_prime)
    assert torch.allclose(out["task_gains"], advantage.mean(-1), atol=1e-6)
    looped = sum(weights[z] * advantage[z].mean() for z in range(NUM_TASKS))
    assert torch.isclose(correction_diagnostics(out, constraint, weights)["gain"], looped, atol=1e-6)


def test_correction_loss_with_the_constraint_inactive_is_the_kl_alone():
    sac = _sac(_UnitGaussianNetwork(loc=[0.0, 0.0]))
    states = _states()
    pi_prime = _hand_pi_prime()
    # A baseline far below any Q makes every advantage large and positive: no violation.
    baseline = torch.full((NUM_TASKS, STATES_PER_TASK), -1e3)
    constraint = QuadraticPenalty(lam=100.0, c=-0.01, gamma=0.99)
    weights = torch.full((NUM_TASKS,), 1.0 / NUM_TASKS)
    out = correction_loss(sac, constraint, states, baseline, pi_prime, weights)
    diagnostics = correction_diagnostics(out, constraint, weights)
    assert diagnostics["violation"] == 0
    assert diagnostics["gain"] > 0
    assert torch.isclose(out["loss_correction"], torch.tensor(HAND_KL), atol=1e-6)
    assert torch.isclose(out["loss_correction"], out["kl"], atol=1e-7)


def test_correction_loss_reaches_only_the_actor_and_not_the_references():
    sac = _sac()
    states, pi_t, pi_prime, baseline = _phase(sac)
    sac.zero_grad(set_to_none=True)
    constraint = QuadraticPenalty(lam=100.0, c=0.0, gamma=0.99)
    weights = SoftmaxAlphaWeights()(sac.task_stats(), NUM_TASKS)
    out = correction_loss(sac, constraint, states, baseline + 10.0, pi_prime, weights)
    assert correction_diagnostics(out, constraint, weights)["violation"] > 0
    out["loss_correction"].backward()
    assert any(p.grad is not None and p.grad.any() for p in sac.actor.parameters())
    assert all(p.grad is None for p in sac.critic.parameters())
    assert all(p.grad is None for p in sac.target_critic.parameters())
    assert sac.log_alpha.grad is None
    for reference in (pi_t, pi_prime):
        assert not any(v.requires_grad for v in reference.values())
    assert not baseline.requires_grad and not weights.requires_grad


def test_without_a_snapshot_the_divergence_is_zero_with_the_fisher_as_its_hessian():
    # N(loc, I) against its own detached self: KL = 0, gradient 0, and the Hessian in loc is the
    # Fisher of a unit Gaussian, the identity: d/dloc (grad . v) = v.
    sac = _sac(_UnitGaussianNetwork(loc=[0.3, -0.2]))
    states = _states()
    _, divergence = sac.correction_terms(states, torch.zeros(NUM_TASKS, STATES_PER_TASK), None)
    kl = divergence.mean()
    (gradient,) = torch.autograd.grad(kl, [sac.actor[0].loc], create_graph=True)
    assert kl == 0 and torch.equal(gradient, torch.zeros(2))
    v = torch.tensor([2.0, -1.0])
    (fisher_v,) = torch.autograd.grad(gradient @ v, [sac.actor[0].loc])
    assert torch.allclose(fisher_v, v, atol=1e-6)


# --- the phase on a small network ----------------------------------------------------------------


def test_correction_with_zero_lambda_leaves_the_actor_at_pi_prime():
    sac = _sac()
    states, _, pi_prime, baseline = _phase(sac)
    before = [p.detach().clone() for p in sac.actor.parameters()]
    constraint = QuadraticPenalty(lam=0.0, c=-0.01, gamma=0.99)
    weights = SoftmaxAlphaWeights()(sac.task_stats(), NUM_TASKS)
    optimizer = torch.optim.Adam(sac.actor.parameters(), lr=1e-2)
    for _ in range(3):
        out = correction_loss(sac, constraint, states, baseline, pi_prime, weights)
        optimizer.zero_grad()
        out["loss_correction"].backward()
        optimizer.step()
    # The KL's gradient is zero at phi = pi'_t and the penalty is zero with lam = 0.
    for p, q in zip(sac.actor.parameters(), before):
        assert torch.allclose(p, q, atol=1e-6), (p - q).abs().max()


def test_correction_with_the_constraint_violated_raises_the_weighted_gain():
    sac = _sac()
    states, _, pi_prime, baseline = _phase(sac)
    # Raising the baseline by 10 makes every advantage strongly negative: c_tilde >> 0.
    baseline = baseline + 10.0
    constraint = QuadraticPenalty(lam=100.0, c=0.0, gamma=0.99)
    weights = SoftmaxAlphaWeights()(sac.task_stats(), NUM_TASKS)
    optimizer = torch.optim.Adam(sac.actor.parameters(), lr=1e-2)
    gains, violations, kls = [], [], []
    for step in range(11):
        # The same action noise at every evaluation, so gains are compared on equal terms (the
        # random critic is nearly flat in the action, so fresh noise would swamp the change).
        torch.manual_seed(100)
        out = correction_loss(sac, constraint, states, baseline, pi_prime, weights)
        diagnostics = correction_diagnostics(out, constraint, weights)
        gains.append(float(diagnostics["gain"]))
        violations.append(float(diagnostics["violation"]))
        kls.append(float(diagnostics["kl"]))
        if step < 10:
            optimizer.zero_grad()
            out["loss_correction"].backward()
            optimizer.step()
    assert gains[0] < -5 and violations[0] > 5
    assert all(b > a for a, b in zip(gains, gains[1:])), gains
    assert gains[-1] > gains[0] + 0.02, gains
    assert violations[-1] < violations[0]
    # The policy moved away from pi'_t to buy that gain.
    assert kls[0] < 1e-6 < kls[-1]


# --- the estimator of the gain: common random numbers ----------------------------------------


def test_tanh_normal_sample_matches_torchs_tanh_transformed_gaussian():
    from torch.distributions import TanhTransform, TransformedDistribution

    from picor_gin.backbones.sac import tanh_normal_sample

    loc, scale = torch.tensor([[0.3, -1.2]]), torch.tensor([[0.5, 2.0]])
    noise = torch.tensor([[0.7, -0.4]])
    action, log_prob = tanh_normal_sample(loc, scale, noise)
    assert torch.allclose(action, torch.tanh(loc + scale * noise))
    reference = TransformedDistribution(Normal(loc, scale), [TanhTransform()]).log_prob(action).sum(-1)
    assert torch.allclose(log_prob, reference, atol=1e-4)


@pytest.mark.parametrize("shared", [True, False])
def test_advantage_of_pi_t_itself_is_exactly_zero_only_with_shared_noise(shared):
    # Without an actor step, pi_phi = pi_t: with pi_t's draw reused, every state's advantage is
    # Q(s, a) - k alpha log pi(a) minus the very same number; independent draws differ.
    sac = _sac(shared_correction_noise=shared)
    states = _states()
    pi_t = sac.pi_t_snapshot(states)
    baseline = sac.value_baseline(states, pi_t)
    advantage, _ = sac.correction_terms(states, baseline, None, pi_t["correction_noise"])
    if shared:
        assert torch.allclose(advantage, torch.zeros_like(advantage), atol=1e-6)
    else:
        assert advantage.abs().mean() > 1e-3


class _TwiceEvaluatingSolver(CorrectionSolver):
    """Evaluates the loss at pi'_t twice, as a solver's check of the constraint and its step do."""

    def solve(self, problem, steps):
        self.task_gains = [problem.loss(None)["task_gains"] for _ in range(2)]
        return {}, False


@pytest.mark.parametrize("shared", [True, False])
def test_every_evaluation_of_one_phase_sees_the_same_draw(shared):
    """Independent draws too are drawn once per phase: a check that finds the constraint
    violated and a step that finds it satisfied would step the optimizer on a zero gradient."""
    sac = _sac(shared_correction_noise=shared)
    solver = _TwiceEvaluatingSolver()
    correction = PolicyCorrection(sac, solver=solver)
    states = _states()
    processes = Processes(backward=lambda loss: loss.backward(), any_process=bool, mean_over_processes=lambda t: t)
    correction.correct(sac, states, sac.pi_t_snapshot(states), torch.zeros(NUM_TASKS), None, processes, logging=False)
    first, second = solver.task_gains
    assert torch.equal(first, second)


def test_advantage_is_read_from_the_chosen_critic():
    # Baseline 0 and pi'_t = pi_t: the gain is the chosen critic's soft value at pi_t's actions,
    # and the target critic differs from the online one once the online one has moved.
    sac = _sac(advantage_critic="target")
    with torch.no_grad():
        for p in sac.critic.parameters():
            p.add_(0.5)
    states = _states()
    pi_t = sac.pi_t_snapshot(states)
    zero = torch.zeros(NUM_TASKS, STATES_PER_TASK)
    gain, _ = sac.correction_terms(states, zero, None, pi_t["correction_noise"])
    alpha = sac.log_alpha.exp()[states["task_id"]]
    soft = lambda critic: critic(states["observation"], pi_t["action"]).min(-1).values - alpha * pi_t["log_prob"]
    assert torch.allclose(gain, soft(sac.target_critic), atol=1e-5)
    assert not torch.allclose(gain, soft(sac.critic), atol=1e-2)
    assert torch.allclose(sac.value_baseline(states, pi_t), soft(sac.target_critic), atol=1e-5)
    with pytest.raises(ValueError, match="advantage_critic"):
        _sac(advantage_critic="twin")


# --- the logged share of updates the correction moved the actor -------------------------------


class _ScriptedSolver(CorrectionSolver):
    """Reports 'moved' from a script, one entry per update, and leaves the actor alone."""

    def __init__(self, moved: list[bool]):
        self.moved = iter(moved)

    def solve(self, problem, steps):
        return {}, torch.tensor(float(next(self.moved)))


def test_active_share_is_over_the_updates_since_the_last_log_however_many_they_were():
    sac = _sac()
    correction = PolicyCorrection(sac, solver=_ScriptedSolver([True, False, True, False, True, True]))
    states = _states()
    pi_t = sac.policy_snapshot(states["observation"])
    processes = Processes(backward=lambda loss: loss.backward(), any_process=bool, mean_over_processes=lambda t: t)
    correct = lambda: correction.correct(sac, states, pi_t, torch.zeros(NUM_TASKS), None, processes, logging=False)
    for _ in range(4):
        correct()
    assert correction.active_share() == pytest.approx(2 / 4)
    # A window cut short (the first log after a resume) is still a share of its own updates.
    for _ in range(2):
        correct()
    assert correction.active_share() == pytest.approx(2 / 2)
