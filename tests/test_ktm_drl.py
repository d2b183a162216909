"""KTM-DRL: its offline and online losses against hand-computed values, the teachers' gradient
isolation, and the refusal of missing or mismatched teachers (one line naming task and folder)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torch import nn


from picor_gin.backbones import SAC, TD3
from picor_gin.data import OFFLINE, ONLINE
from picor_gin.ktm_drl.objective import KTMDRL
from picor_gin.networks import MultiHeadMLP, OneHotMLP
from picor_gin.tasks import PointGoals
from picor_gin.ktm_drl.teachers import find_teachers
from tests.conftest import run_in_process

OBS_DIM, ACTION_DIM = 2, 1


class FixedQ(nn.Module):
    """A parameter-free twin Q: (c1 * a + s1, c2 * a - s0), per row of a 2-dim state."""

    def __init__(self, c1: float, c2: float):
        super().__init__()
        self.c1, self.c2 = c1, c2

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        a = action[..., 0]
        return torch.stack([self.c1 * a + observation[..., 1], self.c2 * a - observation[..., 0]], -1)


def _student() -> TD3:
    td3 = TD3(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=2, network=OneHotMLP(hidden_sizes=(4,)))
    td3.actor = nn.Linear(OBS_DIM, ACTION_DIM, bias=False)  # a = w . s, differentiable by hand
    with torch.no_grad():
        td3.actor.weight.copy_(torch.tensor([[0.5, -1.0]]))
    return td3


def _ktm(*teachers: nn.Module) -> KTMDRL:
    ktm = KTMDRL(teachers="unused")
    ktm.teachers.extend(teachers)
    return ktm


# Two states, one per task: s = [1, 2] (task 0), [3, -1] (task 1); actions 0.5 and -1.
STATES = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
ACTIONS = torch.tensor([[0.5], [-1.0]])
TASKS = torch.tensor([0, 1])


def _batch() -> TensorDict:
    return TensorDict(
        {"observation": STATES, "action": ACTIONS, "task_id": TASKS,
         "next": {"observation": STATES, "reward": torch.zeros(2, 1), "terminated": torch.zeros(2, 1, dtype=torch.bool)}},
        batch_size=[2],
    )


def test_offline_critic_regresses_both_twins_onto_each_tasks_teacher():
    student = _student()
    student.critic = FixedQ(1.0, 1.0)  # student Q(s, a): task 0 [2.5, -0.5], task 1 [-2, -4]
    ktm = _ktm(FixedQ(2.0, 0.0), FixedQ(-1.0, 3.0))  # teacher Q: task 0 [3, -1], task 1 [0, -6]
    terms = ktm.losses(student, None, OFFLINE, _batch())
    # Twin 1: ((2.5 - 3)^2 + (-2 - 0)^2) / 2 = 2.125; twin 2: ((-0.5 + 1)^2 + (-4 + 6)^2) / 2 = 2.125.
    assert terms["loss_critic"].item() == pytest.approx(4.25)
    assert terms["teacher_q"].item() == pytest.approx((3 - 1 + 0 - 6) / 4)


def test_offline_actor_ascends_its_tasks_teachers_q1():
    student = _student()
    ktm = _ktm(FixedQ(2.0, 0.0), FixedQ(-1.0, 3.0))
    terms = ktm.losses(student, None, OFFLINE, _batch())
    # pi(s) = 0.5 s0 - s1: task 0 -1.5, task 1 2.5. Teacher Q1: 2 * (-1.5) + 2 = -1, -1 * 2.5 - 1 = -3.5.
    assert terms["loss_actor"].item() == pytest.approx(-(-1 - 3.5) / 2)
    terms["loss_actor"].backward()
    # d/dw of -(2 w.s_0 - w.s_1) / 2 = -(2 [1, 2] - [3, -1]) / 2 = [0.5, -2.5]: Q1's slope per task.
    assert torch.allclose(student.actor.weight.grad, torch.tensor([[0.5, -2.5]]))


def test_online_actor_loss_is_minus_student_q1_plus_teacher_q1():
    student = _student()
    student.critic = student.target_critic = FixedQ(1.0, 5.0)
    student.target_actor = student.actor
    student.task_updates = [1, 1]  # the update closing the policy delay of 2: the actor's turn
    ktm = _ktm(FixedQ(2.0, 0.0), FixedQ(-1.0, 3.0))
    terms = ktm.losses(student, student.losses, ONLINE, _batch())
    # Student Q1(s, pi(s)) = pi + s1: -1.5 + 2 = 0.5, 2.5 - 1 = 1.5; teacher Q1: -1, -3.5.
    assert terms["loss_actor"].item() == pytest.approx(-((0.5 - 1) + (1.5 - 3.5)) / 2)
    ktm.student_q_weight = 0.0  # the actor on its teachers' Q alone
    assert ktm.losses(student, student.losses, ONLINE, _batch())["loss_actor"].item() == pytest.approx(-(-1 - 3.5) / 2)
    student.task_updates = [0, 0]  # a critic-only update: no actor term, no teacher term
    assert "loss_actor" not in ktm.losses(student, student.losses, ONLINE, _batch())


def test_teachers_get_no_gradient_and_are_not_optimized():
    torch.manual_seed(0)
    student = TD3(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=2, network=OneHotMLP(hidden_sizes=(4,)))
    teachers = [OneHotMLP(hidden_sizes=(4,)).critic(OBS_DIM, ACTION_DIM, 1).requires_grad_(False) for _ in range(2)]
    ktm = _ktm(*teachers)
    before = [p.clone() for p in ktm.parameters()]
    optimizer = torch.optim.Adam([p for group in student.parameter_groups().values() for p in group], lr=0.1)
    for stage in (OFFLINE, ONLINE, ONLINE):
        terms = ktm.losses(student, student.losses, stage, _batch())
        sum(v for k, v in terms.items() if k.startswith("loss_")).backward()
        assert all(p.grad is None for p in ktm.parameters())
        optimizer.step()
        student.update_targets()
    assert all(torch.equal(a, b) for a, b in zip(before, ktm.parameters()))
    assert not any(p.requires_grad for p in ktm.parameters())


def test_online_stage_starts_from_targets_equal_to_the_online_networks():
    student = TD3(obs_dim=OBS_DIM, action_dim=ACTION_DIM, num_tasks=2, network=OneHotMLP(hidden_sizes=(4,)))
    with torch.no_grad():
        for p in [*student.critic.parameters(), *student.actor.parameters()]:
            p.add_(1.0)
    KTMDRL(teachers="unused").start_stage(student, ONLINE)
    for online, target in [(student.critic, student.target_critic), (student.actor, student.target_actor)]:
        assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))


def fake_teacher_run(folder: Path, task: str, seed: int = 0, obs_dim: int = 6, action_dim: int = 2,
                     hidden: int | tuple[int, ...] = 8, transitions: int = 5) -> Path:
    """A one-task run folder as a teacher run leaves it (config.gin, checkpoints/last.ckpt),
    holding only what a student reads: the task, the critic, the replay storage, env steps."""
    torch.manual_seed(seed)
    critic = OneHotMLP(hidden_sizes=hidden if isinstance(hidden, tuple) else (hidden,)).critic(obs_dim, action_dim, 1)
    capacity = 2 * transitions
    storage = {"observation": torch.randn(capacity, obs_dim), "action": torch.rand(capacity, action_dim)}
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.gin").write_text(f"Experiment.seed = {seed}\n")
    (folder / "summary.json").write_text("{}")
    torch.save({
        "task_names": [task],
        "state_dict": {f"backbone.critic.{k}": v for k, v in critic.state_dict().items()},
        "MultiTaskData": {"env_steps": 100, "buffers": [{"_storage": {"_storage": storage, "_len": transitions}}]},
    }, folder / "checkpoints" / "last.ckpt")
    return folder


def _setup(folder: Path, seed: int = 0, **kwargs) -> KTMDRL:
    ktm = KTMDRL(teachers=str(folder), teacher_network=OneHotMLP(hidden_sizes=(8,)), **kwargs)
    student = TD3(obs_dim=6, action_dim=2, num_tasks=4, network=OneHotMLP(hidden_sizes=(8,)))
    ktm.setup(student, PointGoals(num_tasks=4), seed, obs_dim=6, action_dim=2)
    return ktm


def test_teachers_are_found_by_task_and_seed_and_loaded_with_their_replay(tmp_path):
    for seed in (0, 1):
        for z in range(4):
            fake_teacher_run(tmp_path / f"goal{z}" / f"seed{seed}", f"goal{z}", seed=seed, transitions=3 + z)
    fake_teacher_run(tmp_path / "goal0" / "seed1.stale1", "goal0", seed=1)  # a sweep's set-aside attempt
    ktm = _setup(tmp_path, seed=1)
    assert [run.folder for run in ktm._runs] == [tmp_path / f"goal{z}" / "seed1" for z in range(4)]
    saved = torch.load(tmp_path / "goal2" / "seed1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert torch.equal(ktm.teachers[2].q1[0].weight, saved["state_dict"]["backbone.critic.q1.0.weight"])
    replay = ktm.offline_replay("cpu")
    assert [len(buffer) for buffer in replay] == [3, 4, 5, 6]  # the filled part of each storage only
    stored = saved["MultiTaskData"]["buffers"][0]["_storage"]["_storage"]
    assert torch.equal(replay[2][:]["observation"], stored["observation"][:5])
    assert ktm.summary() == {"teacher_env_steps": 400}


@pytest.mark.parametrize("problem, message", [
    ("missing", "no teacher of task 'goal3' in {root}"),
    ("wrong task", "no teacher of task 'goal3' in {root}"),
    ("observation size", "teacher of task 'goal3' in {root}/goal3 has observations of size 5, this task set 6"),
    ("no checkpoint", "teacher run {root}/goal3 has no checkpoint"),
    ("unfinished", "teacher run {root}/goal3 has not finished"),
    ("network", "teacher of task 'goal3' in {root}/goal3: its critic does not fit KTMDRL.teacher_network"),
    ("two of a seed", "2 teachers of task 'goal3' with seed 0 in {root}"),
    ("damaged", "teacher run {root}/goal3: checkpoints/last.ckpt is damaged: its SHA-256 matches no digest"),
])
def test_a_missing_or_mismatched_teacher_is_refused_naming_task_and_folder(tmp_path, problem, message):
    for z in range(3):
        fake_teacher_run(tmp_path / f"goal{z}", f"goal{z}")
    if problem == "wrong task":
        fake_teacher_run(tmp_path / "goal3", "goal2", seed=1)
    elif problem == "observation size":
        fake_teacher_run(tmp_path / "goal3", "goal3", obs_dim=5)
    elif problem == "no checkpoint":
        fake_teacher_run(tmp_path / "goal3", "goal3")
        (tmp_path / "goal3" / "checkpoints" / "last.ckpt").unlink()
    elif problem == "unfinished":
        fake_teacher_run(tmp_path / "goal3", "goal3")
        (tmp_path / "goal3" / "summary.json").unlink()
    elif problem == "network":
        fake_teacher_run(tmp_path / "goal3", "goal3", hidden=16)
    elif problem == "two of a seed":
        fake_teacher_run(tmp_path / "goal3" / "a", "goal3")
        fake_teacher_run(tmp_path / "goal3" / "b", "goal3")
    elif problem == "damaged":
        last = fake_teacher_run(tmp_path / "goal3", "goal3") / "checkpoints" / "last.ckpt"
        (last.parent / "last.ckpt.sha256").write_text("0" * 64 + "\n")  # the file's bytes no longer match it
    with pytest.raises(ValueError) as error:
        _setup(tmp_path)
    assert message.format(root=tmp_path) in str(error.value)
    assert "\n" not in str(error.value)


def test_the_student_must_be_td3(tmp_path):
    student = SAC(obs_dim=6, action_dim=2, num_tasks=4, network=OneHotMLP(hidden_sizes=(8,)))
    with pytest.raises(ValueError, match="KTMDRL trains a TD3 student"):
        KTMDRL(teachers=str(tmp_path)).setup(student, PointGoals(num_tasks=4), 0, obs_dim=6, action_dim=2)


def test_find_teachers_refuses_a_folder_without_runs(tmp_path):
    with pytest.raises(ValueError, match=f"no run folder .* in {tmp_path}"):
        find_teachers(tmp_path, ["goal0"], 0)


def test_a_missing_teacher_is_refused_by_launch_run_with_exit_2_and_one_line(tmp_path, monkeypatch, capsys):
    for z in range(3):
        fake_teacher_run(tmp_path / "teachers" / f"goal{z}", f"goal{z}")
    run_dir = tmp_path / "student"
    result = run_in_process(monkeypatch, capsys, "--gin_file=gin_configs/tiny_ktm.gin",
                            f"--gin_bindings=KTMDRL.teachers = '{tmp_path / 'teachers'}'", f"--run_dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: no teacher of task 'goal3' in {tmp_path / 'teachers'} (teachers of ['goal0', 'goal1', 'goal2'])"
    )
    assert not run_dir.exists()


def test_a_teacher_network_that_reads_the_task_id_is_refused_naming_onehotmlp():
    """A teacher is a one-task critic (num_tasks 1) on the full set's observations: a network that
    reads the id from the last entry would read another task's bit."""
    with pytest.raises(ValueError, match=r"bind KTMDRL.teacher_network = @OneHotMLP\(\)"):
        KTMDRL(teachers="runs/teachers", teacher_network=MultiHeadMLP(hidden_sizes=(4,)))
    assert isinstance(KTMDRL(teachers="runs/teachers").teacher_network, OneHotMLP)
