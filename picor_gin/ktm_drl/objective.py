"""KTM-DRL (Xu et al., NeurIPS 2020) as an objective: a TD3 student taught by one single-task
teacher per task (docs/ktm_drl.md).

    1. teachers: single-task TD3 runs of this framework (gin_configs/*_ktm_teacher.gin);
    2. offline stage (no env steps): on every task's teacher replay, the student's twin critic
       regresses onto the teacher's Q1/Q2 at (s, a), and its actor ascends the teacher's
       Q1(s, pi(s));
    3. online stage: targets copied from the online networks, then TD3 with the actor's loss
       -(Q1_student(s, pi(s)) + Q1_teacher(s, pi(s))).

Unlike their code, the student sees the one-hot task id like every other method here (theirs
zero-pads states and actions), and the target smoothing noise is TD3's Gaussian (theirs is uniform).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import gin
import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.data import ReplayBuffer

from picor_gin.backbones import TD3, Backbone
from picor_gin.backbones.base import polyak_update
from picor_gin.data import OFFLINE, ONLINE
from picor_gin.networks import Network, OneHotMLP
from picor_gin.objectives import Objective
from picor_gin.tasks import TaskSet
from picor_gin.ktm_drl.teachers import TeacherRun, find_teachers


@gin.configurable
class KTMDRL(Objective):
    """Knowledge transfer from single-task teachers into one multi-task TD3 student.

    Args:
        teachers: run folders of the teachers, or folders holding them (a teacher sweep's root);
            one per task of the student's set, found by the task it trained on (where a task has
            several, the one with the student's `Experiment.seed`).
        offline_updates: updates of the offline stage (500k in the paper), each on
            `MultiTaskData.batch_size` transitions of every task's teacher replay.
        teacher_network: builder of the teachers' critics, as their runs bound it.
        student_q_weight: the factor on the student's own Q1 in the online actor loss (1.0 in
            their code, beside 1.0 on the teacher's); 0 keeps the actor on its teachers' Q alone.
    """

    def __init__(
        self,
        teachers: str | Sequence[str] = gin.REQUIRED,
        offline_updates: int = 10_000,
        teacher_network: Network | None = None,
        student_q_weight: float = 1.0,
    ):
        super().__init__()
        if offline_updates < 0:
            raise ValueError(f"KTMDRL.offline_updates must be >= 0, got {offline_updates}")
        self.teacher_folders = [teachers] if isinstance(teachers, (str, Path)) else list(teachers)
        self.offline_updates = offline_updates
        self.teacher_network = teacher_network or OneHotMLP()
        if self.teacher_network.reads_task_id:
            raise ValueError(
                f"KTMDRL.teacher_network = @{type(self.teacher_network).__name__}() reads the task id from the "
                "observation's last entries, and a teacher is a one-task critic on the full set's id: bind "
                "KTMDRL.teacher_network = @OneHotMLP()"
            )
        self.student_q_weight = student_q_weight
        self.teachers = nn.ModuleList()
        self._runs: list[TeacherRun] = []

    def setup(self, backbone: Backbone, task_set: TaskSet, seed: int, obs_dim: int, action_dim: int) -> None:
        if not isinstance(backbone, TD3):
            raise ValueError(f"KTMDRL trains a TD3 student; bind MultiTaskLearner.backbone = @TD3, not {type(backbone).__name__}")
        self._runs = find_teachers(self.teacher_folders, task_set.names, seed)
        for run in self._runs:
            if run.observation_size != obs_dim:
                raise ValueError(
                    f"teacher of task {run.task!r} in {run.folder} has observations of size "
                    f"{run.observation_size}, this task set {obs_dim}: train it on a TaskSubset of this set"
                )
            critic = self.teacher_network.critic(obs_dim, action_dim, 1)
            try:
                critic.load_state_dict(run.critic_state)
            except RuntimeError as error:
                raise ValueError(
                    f"teacher of task {run.task!r} in {run.folder}: its critic does not fit "
                    f"KTMDRL.teacher_network ({str(error).splitlines()[-1].strip()})"
                ) from None
            self.teachers.append(critic.requires_grad_(False))

    def offline_replay(self, device: str | torch.device) -> list[ReplayBuffer]:
        return [run.replay(device) for run in self._runs]

    def start_stage(self, backbone: TD3, stage: str) -> None:
        if stage == ONLINE:  # the online stage starts from targets equal to what the offline stage learnt
            polyak_update(backbone.target_critic, backbone.critic, 1.0)
            polyak_update(backbone.target_actor, backbone.actor, 1.0)

    def teacher_q(self, observation: torch.Tensor, action: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """Each row's own task's teacher twin Q(s, a), [B, 2]; differentiable in `action` only."""
        q = observation.new_empty(*observation.shape[:-1], 2)
        for z, teacher in enumerate(self.teachers):
            rows = task_id == z
            q[rows] = teacher(observation[rows], action[rows])
        return q

    def losses(self, backbone, backbone_losses, stage, batch, critic_batch=None):
        observation, task_id = batch["observation"], batch["task_id"]
        if stage == OFFLINE:
            with torch.no_grad():
                target = self.teacher_q(observation, batch["action"], task_id)
            q = backbone.critic(observation, batch["action"])
            teacher_gain = self.teacher_q(observation, backbone.actor(observation), task_id)[..., 0]
            return {
                "loss_critic": (q - target).square().mean(0).sum(),  # MSE per twin, summed (their code)
                "loss_actor": -teacher_gain.mean(),
                "q": q.detach().mean(),
                "teacher_q": target.mean(),
            }
        terms = backbone_losses(batch, critic_batch)
        if "loss_actor" in terms:  # TD3's delayed actor update: add the teacher's Q1
            teacher_gain = self.teacher_q(observation, backbone.actor(observation), task_id)[..., 0]
            terms["loss_actor"] = self.student_q_weight * terms["loss_actor"] - teacher_gain.mean()
            terms["teacher_q"] = teacher_gain.detach().mean()
        return terms

    def summary(self) -> dict[str, Any]:
        """The teachers' env steps, which count toward KTM-DRL's budget (docs/ktm_drl.md)."""
        return {"teacher_env_steps": sum(run.env_steps for run in self._runs)}
