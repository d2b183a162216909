"""The on-policy path: PPO's GAE and clipped loss against hand-computed numbers, the rollout
stream, PiCor's surrogate on on-policy data, refusals, resume mid-rollout and MTPPO learning."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules import TanhNormal

from picor_gin.backbones import PPO
from picor_gin.networks import OneHotMLP
from picor_gin.rollouts import RolloutData
from picor_gin.samplers import AllTasks, RoundRobin
from picor_gin.tasks import PointGoals
from tests.conftest import REPO, TWO_DDP_PROCESSES, cli_command, run_cli, run_in_process

OBS_DIM, ACTION_DIM, NUM_TASKS = 6, 2, 4


def _ppo(**kwargs) -> PPO:
    return PPO(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=NUM_TASKS, network=OneHotMLP(hidden_sizes=(8, 8)), **kwargs)


def _three_steps(done_at_1: bool, terminated_at_1: bool) -> TensorDict:
    """One env's 3-step rollout, rewards 1, 2, 3; step 1 ends an episode or not; the last step
    ends the rollout mid-episode."""
    flag = lambda value: torch.tensor([[False], [value], [False]])  # noqa: E731
    return TensorDict(
        {
            "observation": torch.zeros(3, OBS_DIM), "task_id": torch.zeros(3, dtype=torch.long),
            "next": {
                "observation": torch.zeros(3, OBS_DIM), "reward": torch.tensor([[1.0], [2.0], [3.0]]),
                "done": flag(done_at_1), "terminated": flag(terminated_at_1),
            },
        },
        batch_size=[3],
    )


@pytest.mark.parametrize(
    "done_at_1, terminated_at_1, expected",
    [
        # V = 1 everywhere, gamma = lambda = 0.5: delta_t = r_t + 0.5 (1 - terminated_t) - 1,
        # A_t = delta_t + 0.25 (1 - done_t) A_{t+1}, A_2 = delta_2 = 2.5 (bootstraps: not done).
        (False, False, [0.5 + 0.25 * (1.5 + 0.25 * 2.5), 1.5 + 0.25 * 2.5, 2.5]),
        # Truncated at step 1: the trace stops there, but delta_1 still bootstraps from V(s'_1).
        (True, False, [0.5 + 0.25 * 1.5, 1.5, 2.5]),
        # Terminated at step 1: no bootstrap, delta_1 = 2 - 1 = 1.
        (True, True, [0.5 + 0.25 * 1.0, 1.0, 2.5]),
    ],
    ids=["running", "truncated", "terminated"],
)
def test_gae_matches_the_hand_computed_three_step_example(done_at_1, terminated_at_1, expected):
    ppo = _ppo(gamma=0.5, gae_lambda=0.5, normalize_advantage_per_task=False)
    with torch.no_grad():  # V(s) = 1: zero weights, last bias 1
        for p in ppo.critic.parameters():
            p.zero_()
        ppo.critic[-1].bias.fill_(1.0)
        rollout = ppo.advantage_estimator()(_three_steps(done_at_1, terminated_at_1))
    assert torch.allclose(rollout["advantage"].squeeze(-1), torch.tensor(expected))
    assert torch.allclose(rollout["value_target"].squeeze(-1), torch.tensor(expected) + 1.0)


def test_gae_standardises_the_advantage_within_each_task():
    ppo = _ppo()
    rollout = TensorDict(
        {
            "observation": torch.randn(2, 5, OBS_DIM), "task_id": torch.tensor([0, 1]).unsqueeze(1).expand(2, 5),
            "next": {"observation": torch.randn(2, 5, OBS_DIM), "reward": torch.randn(2, 5, 1) * torch.tensor([1.0, 100.0]).view(2, 1, 1),
                     "done": torch.zeros(2, 5, 1, dtype=torch.bool), "terminated": torch.zeros(2, 5, 1, dtype=torch.bool)},
        },
        batch_size=[2, 5],
    )
    with torch.no_grad():
        advantage = ppo.advantage_estimator()(rollout)["advantage"].squeeze(-1)
    assert torch.allclose(advantage.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(advantage.std(1), torch.ones(2), atol=1e-4)  # TorchRL divides by n - 1


def _batch_at_ratio(ppo: PPO, ratio: float, advantage: float) -> TensorDict:
    """Two transitions whose recorded log-probability makes pi_phi / pi_old exactly `ratio`."""
    observation = torch.randn(2, OBS_DIM)
    action = torch.tensor([[0.3, -0.2], [-0.5, 0.1]])
    with torch.no_grad():
        log_prob = TanhNormal(*ppo.actor(observation)).log_prob(action)
    return TensorDict(
        {"observation": observation, "action": action, "action_log_prob": log_prob - torch.log(torch.tensor(ratio)),
         "advantage": torch.full((2, 1), advantage), "value_target": torch.zeros(2, 1)},
        batch_size=[2],
    )


@pytest.mark.parametrize(
    "ratio, advantage, expected, moves_actor",
    [
        (1.2, 1.0, -1.2, None),  # at 1 + eps: min(1.2, 1.2) A (which branch's gradient: a tie)
        (1.3, 1.0, -1.2, False),  # beyond 1 + eps with A > 0: clipped, no gradient
        (1.3, -1.0, 1.3, True),  # A < 0: the unclipped ratio is the minimum, min(-1.3, -1.2)
        (0.8, -1.0, 0.8, None),  # at 1 - eps
        (0.7, -1.0, 0.8, False),  # below 1 - eps with A < 0: clipped
        (0.7, 1.0, -0.7, True),
    ],
)
def test_clipped_loss_at_and_beyond_one_plus_minus_eps_matches_hand_values(ratio, advantage, expected, moves_actor):
    # loss = -min(r A, clip(r, 1 - eps, 1 + eps) A), eps = 0.2 (Schulman et al. 2017, eq. 7).
    ppo = _ppo(clip_epsilon=0.2, entropy_coef=0.0)
    losses = ppo.losses(_batch_at_ratio(ppo, ratio, advantage))
    assert losses["loss_actor"].item() == pytest.approx(expected, abs=1e-5)
    losses["loss_actor"].backward()
    moved = any(p.grad is not None and p.grad.abs().sum() > 0 for p in ppo.actor.parameters())
    assert moves_actor is None or moved == moves_actor
    assert all(p.grad is None for p in ppo.critic.parameters())  # the value loss is its own term


def _rollout_data(ppo: PPO, **kwargs) -> RolloutData:
    defaults = dict(
        task_set=PointGoals(num_tasks=NUM_TASKS), policy=ppo.policy, seed=0, total_env_steps=10_000,
        advantage_module=ppo.advantage_estimator(), envs_per_task=2, rollout_env_steps=6, epochs=2,
        minibatches=3, correction_states_per_task=5, sampler=AllTasks,
    )
    return RolloutData(**{**defaults, **kwargs})


def _rows(transitions: TensorDict) -> list[tuple[float, ...]]:
    """Each transition as one row, sorted, so two sets of transitions compare as multisets."""
    rows = torch.cat([transitions["observation"], transitions["action"], transitions["task_id"].unsqueeze(-1)], -1)
    return sorted(map(tuple, rows.tolist()))


@pytest.mark.parametrize("sampler, trained", [(AllTasks, [0, 1, 2, 3]), (RoundRobin, [0])])
def test_the_stream_yields_each_rollout_transition_of_the_trained_tasks_once_per_epoch(sampler, trained):
    ppo = _ppo()
    data = _rollout_data(ppo, sampler=sampler)
    batches = iter(data.train_dataloader())
    updates = [next(batches) for _ in range(data.updates_per_rollout)]  # one rollout: 2 epochs x 3
    assert data.env_steps == NUM_TASKS * 2 * 6 and data.iterations == 1
    expected = _rows(data.rollout[torch.tensor(trained)].reshape(-1))
    for epoch in (updates[:3], updates[3:]):
        sizes = {len(batch.task) for batch in epoch}
        assert sizes == {len(trained) * 12 // 3}  # an equal share of each trained task
        assert _rows(torch.cat([batch.task for batch in epoch])) == expected
    assert updates[0].correction.shape == (NUM_TASKS, 5)  # the correction reads every task
    next(batches)
    assert data.iterations == 2 and data.env_steps == 2 * NUM_TASKS * 2 * 6  # the next rollout


def test_the_correction_surrogate_on_on_policy_data_is_zero_at_pi_t_and_moves_with_the_actor():
    ppo = _ppo()
    data = _rollout_data(ppo)
    batch = next(iter(data.train_dataloader()))
    states = batch.correction
    pi_t = ppo.pi_t_snapshot(states)  # the rollout's policy: read from the states, no forward pass
    assert torch.equal(pi_t["action_log_prob"], states["action_log_prob"])
    baseline = ppo.value_baseline(states, pi_t)
    assert torch.equal(baseline, states["advantage"].squeeze(-1))
    gain, divergence = ppo.correction_terms(states, baseline, None)
    assert torch.allclose(gain, torch.zeros_like(gain), atol=1e-4)  # ratio 1: rollout policy = pi_t
    assert torch.allclose(divergence, torch.zeros_like(divergence))
    with torch.no_grad():  # any other phi: (ratio - 1) A, away from 0
        ppo.actor[0][-1].bias.add_(0.5)
    gain, _ = ppo.correction_terms(states, baseline, None)
    assert gain.abs().max() > 1e-2
    gain.sum().backward()
    assert all(p.grad is not None for p in ppo.actor.parameters())
    assert all(p.grad is None for p in ppo.critic.parameters())


def test_ppos_critic_estimate_is_its_state_value_per_state():
    ppo = _ppo()
    observation = torch.randn(4, 5, 6)  # [tasks, states, obs]
    estimates = ppo.critic_estimates(observation, ppo.policy_snapshot(observation))
    assert estimates.keys() == {"value"} and estimates["value"].shape == (4, 5)
    assert torch.equal(estimates["value"], ppo.critic(observation)[..., 0].detach())


@pytest.mark.parametrize(
    "bindings, message",
    [
        (["Experiment.data = @MultiTaskData"], "PPO learns from its own policy's rollouts: bind Experiment.data = @RolloutData"),
        (["MultiTaskLearner.backbone = @SAC"], "SAC learns from replay: bind Experiment.data = @MultiTaskData"),
        (["MultiTaskLearner.correction = @PolicyCorrection"], "SoftmaxAlphaWeights needs per-task ['alpha'], which PPO does not provide"),
        (["RolloutData.minibatches = 7"], "RolloutData.minibatches = 7 must divide each task's rollout"),
    ],
)
def test_what_ppo_or_the_rollout_path_cannot_do_is_refused_in_one_line(tmp_path, monkeypatch, capsys, bindings, message):
    run_dir = tmp_path / "run"
    result = run_in_process(
        monkeypatch, capsys, "--gin_file=gin_configs/tiny_mtppo.gin", "--gin_bindings=import picor_gin.correction",
        *(f"--gin_bindings={b}" for b in bindings), f"--run_dir={run_dir}",
    )
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not run_dir.exists()


def test_a_rollout_counts_as_trained_only_after_its_last_update():
    """Evaluations and periodic checkpoints wait for `collection_trained`."""
    data = _rollout_data(_ppo())  # 2 epochs x 3 minibatches
    batches = iter(data.train_dataloader())
    trained = []
    for _ in range(2 * data.updates_per_rollout):
        next(batches)
        trained.append(data.collection_trained)
    assert trained == [False] * 5 + [True] + [False] * 5 + [True]


def test_a_state_taken_mid_rollout_resumes_with_a_fresh_rollout_and_says_so(capsys):
    data = _rollout_data(_ppo())
    batches = iter(data.train_dataloader())
    for _ in range(2):
        next(batches)
    state = data.state_dict()
    assert state["rollout_updates"] == 2

    resumed = _rollout_data(_ppo())
    resumed.load_state_dict(state)
    assert "after update 2 of 6 on its rollout" in capsys.readouterr().err
    next(iter(resumed.train_dataloader()))
    assert resumed.iterations == 2 and resumed.env_steps == 2 * NUM_TASKS * 2 * 6  # a fresh rollout, not the old one's rest
    assert resumed.rollout_updates == 1


def test_a_periodic_checkpoint_waits_for_the_rollout_end_so_a_resume_loses_no_update(tmp_path):
    """Checkpoints fall due every 1_000 env steps, inside rollouts of 960 env steps x 80 updates."""
    run_dir = tmp_path / "run"
    args = ["--gin_file=gin_configs/tiny_mtppo.gin", "--gin_bindings=Experiment.checkpoint_every_env_steps = 1_000",
            "--gin_bindings=Experiment.eval_every_env_steps = 960"]
    process = subprocess.Popen(cli_command(*args, f"--run_dir={run_dir}"), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.kill()
    process.wait()
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["RolloutData"]["rollout_updates"] == 80  # the rollout's last update (10 epochs x 8)
    assert saved["updates"] % 80 == 0 and saved["RolloutData"]["env_steps"] == 960 * saved["updates"] // 80

    total = saved["RolloutData"]["env_steps"] + 960  # one more rollout
    result = run_cli("--resume", str(run_dir), f"--gin_bindings=Experiment.total_env_steps = {total}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fresh rollout" not in result.stderr
    final = torch.load(checkpoint, weights_only=False)
    assert final["RolloutData"]["env_steps"] == total and final["updates"] == saved["updates"] + 80
    steps = [json.loads(line)["env_steps"] for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == total


def test_mtppo_learns_the_tiny_set_from_its_gin_file(tmp_path, monkeypatch, capsys):
    """20k env steps, seed 0: 0.93 when measured (docs/components.md, "PPO"); about 25 s."""
    result = run_in_process(
        monkeypatch, capsys, "--gin_file=gin_configs/tiny_mtppo.gin",
        "--gin_bindings=Experiment.total_env_steps = 20_000", f"--run_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["mean_score"] >= 0.8


def test_two_process_ddp_picor_ppo_run_stays_in_sync_and_counts_each_process_rollout(tmp_path):
    """Each process collects its own rollout (4 tasks x 8 envs x 30 steps = 960 env steps) and
    trains 10 epochs x 8 minibatches on it; DDP all-reduces every update, the correction's too,
    and the correction acts (its share of updates is logged every 100 updates)."""
    run_dir = tmp_path / "ddp"
    result = run_cli(
        "--gin_file=gin_configs/tiny_picor_ppo.gin",
        "--gin_bindings=Experiment.total_env_steps = 3_840",  # 2 iterations x 2 processes x 960
        "--gin_bindings=Experiment.eval_episodes = 1",
        *TWO_DDP_PROCESSES,
        f"--run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    checksums = summary["process_parameter_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert summary["total_env_steps"] == 3_840 and summary["updates"] == 2 * 80
    steps = [json.loads(line)["env_steps"] for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert steps[-1] == 3_840
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    shares = [e.value for e in events.Scalars("train/constraint_active_share")]
    assert shares and max(shares) > 0  # the correction moved the actor on some updates
    # pi_t read from the rollout is actions and log-probs, no distribution: PPO's train/kl_approx says how far it moved.
    assert "train/kl_optimization" not in events.Tags()["scalars"] and "train/kl_approx" in events.Tags()["scalars"]
