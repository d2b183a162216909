"""Runs that survive: SIGTERM checkpoints, incompatible checkpoints refused, NaN stops cleanly."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import gin
import pytest
import torch

from picor_gin.experiment import Experiment
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def terminated_run(tmp_path_factory):
    """A run stopped by SIGTERM after its first evaluation, with no periodic checkpoint."""
    run_dir = tmp_path_factory.mktemp("sigterm") / "run"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "run.py"), "--gin_file=gin_configs/tiny_picor.gin",
         "--gin_bindings=Experiment.checkpoint_every_env_steps = 1_000_000",
         "--gin_bindings=Experiment.eval_every_env_steps = 1_000", f"--run_dir={run_dir}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "eval.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    return run_dir, process.returncode, stderr


def test_sigterm_checkpoints_and_exits_1_with_a_resume_hint(terminated_run):
    run_dir, returncode, stderr = terminated_run
    assert returncode == 1
    assert f"--resume {run_dir}" in stderr
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert 1_000 < saved["MultiTaskData"]["env_steps"] < 5_000


def test_resume_refuses_an_incompatible_config_in_one_line(terminated_run):
    run_dir, _, _ = terminated_run
    result = run_cli("--resume", str(run_dir), "--gin_bindings=HIDDEN_SIZES = (32, 32)")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "incompatible" in lines[0] and "(32,) configured" in lines[0]


def test_a_nan_loss_stops_the_run_and_last_ckpt_keeps_the_last_finite_state(tmp_path, monkeypatch):
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings(
        [str(REPO / "gin_configs/tiny_picor.gin")],
        ["Experiment.total_env_steps = 1_400", "Experiment.checkpoint_every_env_steps = 1_100",
         "Trainer.enable_progress_bar = False"],
        skip_unknown=False,
    )
    experiment = Experiment()
    built = experiment.build(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    losses = built.module.backbone.losses

    def nan_after_150_updates(batch, critic_batch=None):
        out = losses(batch, critic_batch)
        if built.module.updates >= 150:
            out["loss_critic"] = out["loss_critic"] * float("nan")
        return out

    monkeypatch.setattr(built.module, "_losses", nan_after_150_updates)  # what training_step calls
    with pytest.raises(FloatingPointError, match=r"non-finite .*env step 1200"):
        experiment.run(built, tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["MultiTaskData"]["env_steps"] == 1_100
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert (tmp_path / "checkpoints" / "failed.ckpt").exists()
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert rows and all(row["env_steps"] <= 1_200 for row in rows)
