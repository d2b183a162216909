"""KTM-DRL end to end: teachers trained by a launch/sweep.py --each_task sweep, then a student by
launch/run.py. On the tiny set the offline stage alone must bring the student near its teachers;
on MT10 and the HalfCheetah group the pipeline runs at a smoke budget."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO, cli_command, run_cli

TEACHER_STEPS = 2_000
SMALL_NETWORKS = "HIDDEN_SIZES = (64, 64)"


def _sweep_teachers(root: Path, *gin_files: str, bindings: tuple[str, ...] = ()) -> None:
    command = [sys.executable, str(REPO / "launch" / "sweep.py"), "--gin_files", *gin_files, "--each_task",
               "--seeds", "0", "--root", str(root), "--parallel", "2"]
    if bindings:
        command += ["--gin_bindings", *bindings]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def test_tiny_student_nears_its_teachers_after_the_offline_stage_alone_and_resumes_online(tmp_path):
    # Two PointGoals tasks (east, west): two teachers of 2k env steps, then 400 offline updates;
    # all on 64 x 64 networks, which the tiny set's tasks need no more than (cheaper updates).
    two_tasks = ("PointGoals.num_tasks = 2", f"Experiment.total_env_steps = {TEACHER_STEPS}",
                 f"Experiment.checkpoint_every_env_steps = {TEACHER_STEPS}", SMALL_NETWORKS)
    _sweep_teachers(tmp_path / "teachers", "gin_configs/tiny_ktm_teacher.gin", bindings=two_tasks)
    teachers = sorted((tmp_path / "teachers").glob("*/seed0"))
    assert [t.parent.name for t in teachers] == ["tiny_ktm_teacher_goal0", "tiny_ktm_teacher_goal1"]
    teacher_scores = [json.loads((t / "summary.json").read_text())["mean_score"] for t in teachers]
    assert min(teacher_scores) >= 0.8, f"teachers too weak to test the transfer: {teacher_scores}"

    run_dir = tmp_path / "student"
    student = [
        "--gin_file=gin_configs/tiny_ktm.gin",
        f"--gin_bindings=KTMDRL.teachers = '{tmp_path / 'teachers'}'",
        "--gin_bindings=PointGoals.num_tasks = 2",
        "--gin_bindings=KTMDRL.offline_updates = 400",
        "--gin_bindings=Experiment.checkpoint_every_env_steps = 200",
        f"--gin_bindings={SMALL_NETWORKS}",
    ]
    result = run_cli(*student, "--gin_bindings=Experiment.total_env_steps = 600", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    offline = _rows(run_dir)[0]
    assert offline["env_steps"] == 0
    # Never having stepped an env, the student acts about as well as its teachers (an untrained
    # policy scores about 0: it barely moves).
    assert offline["mean_score"] >= 0.8, offline
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["teacher_env_steps"] == 2 * TEACHER_STEPS
    assert summary["updates"] == 400 + (600 - 2 * 250)

    # The teachers' critics in the student's checkpoint are exactly the teachers' own: no update touched them.
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for z, teacher in enumerate(teachers):
        own = torch.load(teacher / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        for name, value in own.items():
            if name.startswith("backbone.critic."):
                assert torch.equal(saved["state_dict"][f"objective.teachers.{z}.{name[len('backbone.critic.'):]}"], value)

    # Resumed with a larger budget, the run goes on online: the offline stage is not run again.
    resumed = run_cli(f"--resume={run_dir}", "--gin_bindings=Experiment.total_env_steps = 800")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _rows(run_dir)
    assert [row["env_steps"] for row in rows].count(0) == 1 and rows[-1]["env_steps"] == 800
    assert json.loads((run_dir / "summary.json").read_text())["updates"] == 400 + (800 - 2 * 250)


def test_mt10_and_halfcheetah_pipelines_run_end_to_end_at_a_smoke_budget(tmp_path):
    _sweep_teachers(tmp_path / "teachers", "gin_configs/smoke/mt10_ktm_teacher.gin",
                    "gin_configs/smoke/halfcheetah_ktm_teacher.gin")
    assert sorted(p.parent.parent.name for p in (tmp_path / "teachers").glob("*/seed0/summary.json")) == [
        "halfcheetah_ktm_teacher_thigh_small", "halfcheetah_ktm_teacher_torso_big",
        "mt10_ktm_teacher_push-v3", "mt10_ktm_teacher_reach-v3",
    ]
    students = {
        bench: subprocess.Popen(
            cli_command(f"--gin_file=gin_configs/smoke/{bench}_ktm.gin",
                        f"--gin_bindings=KTMDRL.teachers = '{tmp_path / 'teachers'}'", f"--run_dir={tmp_path / bench}"),
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for bench in ("mt10", "halfcheetah")  # at once, a core each
    }
    for bench, tasks in [("mt10", ["reach-v3", "push-v3"]), ("halfcheetah", ["torso_big", "thigh_small"])]:
        _, stderr = students[bench].communicate(timeout=600)
        assert students[bench].returncode == 0, stderr[-3000:]
        rows = _rows(tmp_path / bench)
        assert rows[0]["env_steps"] == 0 and list(rows[0]["tasks"]) == tasks
        assert rows[-1]["env_steps"] == 600
        assert json.loads((tmp_path / bench / "summary.json").read_text())["teacher_env_steps"] == 2 * 600
