"""Runs that survive: SIGTERM checkpoints, incompatible checkpoints refused, NaN stops cleanly,
a full disk keeps the checkpoints, DDP strategies that cannot work are refused."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gin
import pytest
import torch
from lightning.pytorch.strategies import StrategyRegistry

from picor_gin.data import MultiTaskData
from picor_gin.run import externals
from picor_gin.run.callbacks import EnvStepCheckpoint
from picor_gin.run.experiment import Experiment
from tests.conftest import REPO, run_in_process


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


def test_resume_refuses_an_incompatible_config_in_one_line(terminated_run, monkeypatch, capsys):
    run_dir, _, _ = terminated_run
    result = run_in_process(monkeypatch, capsys, "--resume", str(run_dir), "--gin_bindings=HIDDEN_SIZES = (32, 32)")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "incompatible" in lines[0] and "(32,) configured" in lines[0]


def test_resume_refuses_another_replay_capacity_in_one_line(terminated_run, monkeypatch, capsys):
    run_dir, _, _ = terminated_run
    config = (run_dir / "config.gin").read_text()
    result = run_in_process(monkeypatch, capsys, "--resume", str(run_dir), "--gin_bindings=MultiTaskData.replay_capacity = 300")
    assert result.returncode == 2
    capacity = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["MultiTaskData"]["replay_capacity"]
    assert result.stderr.strip().splitlines() == [
        f"error: --resume {run_dir}: MultiTaskData.replay_capacity = 300, but the checkpoint's buffers hold "
        f"{capacity:_} transitions per task; a resumed run keeps its replay capacity"]
    assert (run_dir / "config.gin").read_text() == config


def test_a_resume_refused_inside_fit_leaves_the_run_folder_as_it_was(terminated_run, tmp_path, monkeypatch, capsys):
    """A failure in the first collection, before the attempt's first update, is bad input: the
    folder keeps its config (a later plain --resume must still work), gets no failed.ckpt (the
    state is the checkpoint's own) and no events file of an attempt that logged nothing."""
    run_dir = tmp_path / "run"
    shutil.copytree(terminated_run[0], run_dir)
    before = sorted(path.name for path in run_dir.rglob("*"))
    config = (run_dir / "config.gin").read_text()

    def refuse(self, env, task_ids):
        raise RuntimeError("the replay device went away")

    monkeypatch.setattr(MultiTaskData, "_collector", refuse)
    result = run_in_process(monkeypatch, capsys, "--resume", str(run_dir), "--gin_bindings=Experiment.log_every_updates = 7")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == ["error: the replay device went away"]
    assert (run_dir / "config.gin").read_text() == config
    assert sorted(path.name for path in run_dir.rglob("*")) == before


def _built_in_process(tmp_path, gin_file: str, bindings: list[str]):
    """An Experiment and its built run in `tmp_path`, as launch/run.py makes them, for tests that
    patch the run before `experiment.run(built, tmp_path)`."""
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / gin_file)], bindings, skip_unknown=False)
    experiment = Experiment()
    built = experiment.build(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    return experiment, built


def test_a_nan_loss_stops_the_run_and_last_ckpt_keeps_the_last_finite_state(tmp_path, monkeypatch):
    experiment, built = _built_in_process(
        tmp_path, "gin_configs/tiny_picor.gin",
        ["Experiment.total_env_steps = 1_400", "Experiment.checkpoint_every_env_steps = 1_100"],
    )
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


def test_a_state_that_diverged_between_log_intervals_stops_the_run_at_its_evaluation(tmp_path, monkeypatch):
    # The training metrics are checked every log_every_updates only: a diverged policy must not
    # write a row of nan returns (invalid JSON for the run contract's readers) first.
    experiment, built = _built_in_process(
        tmp_path, "gin_configs/tiny_mtsac.gin",
        ["Experiment.total_env_steps = 1_300", "Experiment.log_every_updates = 100_000"],
    )
    losses = built.module.backbone.losses

    def nan_losses(batch, critic_batch=None):
        return {key: value * float("nan") for key, value in losses(batch, critic_batch).items()}

    monkeypatch.setattr(built.module, "_losses", nan_losses)
    with pytest.raises(FloatingPointError, match=r"non-finite .* at the evaluation of env step 10\d\d$"):
        experiment.run(built, tmp_path)
    eval_file = tmp_path / "eval.jsonl"
    assert not eval_file.exists() or "NaN" not in eval_file.read_text()


def test_a_failure_before_the_first_checkpoint_says_there_is_none_to_resume(tmp_path):
    callback = EnvStepCheckpoint(tmp_path, every_env_steps=1_000)
    assert callback.kept() == "no checkpoint was written before it"
    (tmp_path / "last.ckpt").write_bytes(b"")
    callback.saved_env_steps = 1_000
    assert callback.kept() == "last.ckpt keeps env step 1000"


@pytest.fixture
def one_thread():
    """Tiny updates are overhead-bound: a second thread only contends (4x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_full_disk_during_a_checkpoint_keeps_the_last_two(tmp_path, monkeypatch, one_thread):
    """The writer fills the disk half-way through the third checkpoint (patched: a real small
    file system needs root; benchmarks/soak.py tries one)."""
    import errno

    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from picor_gin.checkpoint_files import CheckpointWriteError

    experiment, built = _built_in_process(
        tmp_path, "gin_configs/tiny_picor.gin",
        ["Experiment.total_env_steps = 260", "Experiment.checkpoint_every_env_steps = 20",
         "MultiTaskData.warmup_env_steps_per_task = 50", "MultiTaskData.batch_size = 32",
         "HIDDEN_SIZES = (32, 32)"],
    )
    write = TorchCheckpointIO.save_checkpoint
    calls = []

    def disk_full_on_the_third(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) < 3:
            return write(self, checkpoint, path, storage_options)
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", disk_full_on_the_third)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device.*last.ckpt keeps env step 221"):
        experiment.run(built, tmp_path)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["last.ckpt", "last.ckpt.sha256", "previous.ckpt", "previous.ckpt.sha256"]  # no partial file, no failed.ckpt
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    previous = torch.load(tmp_path / "checkpoints" / "previous.ckpt", weights_only=False)
    assert (previous["MultiTaskData"]["env_steps"], last["MultiTaskData"]["env_steps"]) == (201, 221)


@pytest.mark.parametrize("name", [n for n in StrategyRegistry.available_strategies() if n.startswith("ddp")])
def test_every_ddp_spelling_either_allows_unused_parameters_or_is_refused(name):
    trainer = externals.Trainer(accelerator="cpu", devices=2, strategy=name, logger=False)
    if name.endswith("_false") or trainer.strategy._start_method != "popen":
        with pytest.raises(ValueError, match="bind 'ddp'"):
            externals.check_strategy(trainer.strategy)
    else:
        externals.check_strategy(trainer.strategy)
        assert trainer.strategy._ddp_kwargs["find_unused_parameters"]


def test_a_wrong_type_behind_a_macro_names_the_binding_and_the_macro():
    import picor_gin.run.binding_types  # noqa: F401  (registers the check gin runs when it finalizes)

    gin.add_config_file_search_path(str(REPO))
    with pytest.raises(TypeError, match=r"OneHotMLP.hidden_sizes = %HIDDEN_SIZES = \(64, 'x'\): expected Sequence\[int\]"):
        gin.parse_config_files_and_bindings(
            [str(REPO / "gin_configs/tiny_picor.gin")], ["HIDDEN_SIZES = (64, 'x')"], skip_unknown=False
        )


def test_a_replay_capacity_below_the_batch_size_is_refused_naming_both():
    from picor_gin.backbones import SAC
    from picor_gin.data import MultiTaskData
    from picor_gin.tasks import PointGoals

    policy = SAC(obs_dim=6, action_dim=2, num_tasks=4).policy
    with pytest.raises(ValueError, match=r"replay_capacity = 100 \(per task\) cannot hold one batch of MultiTaskData.batch_size = 256"):
        MultiTaskData(task_set=PointGoals(num_tasks=4), policy=policy, seed=0, total_env_steps=2_000,
                      replay_capacity=100, batch_size=256)


def test_a_run_folder_file_rewritten_on_a_full_disk_keeps_its_old_content(tmp_path, monkeypatch):
    import io
    import os

    from picor_gin.run.files import replace_text

    config = tmp_path / "config.gin"
    config.write_text("old\n")
    open_descriptor = os.fdopen

    class FullDisk(io.FileIO):
        """The temporary file, on a disk that fills after the first two bytes."""

        def write(self, data):
            super().write(data[:2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda descriptor, mode: FullDisk(descriptor, "wb"))
    with pytest.raises(OSError, match="No space left"):
        replace_text(config, "new\n")
    monkeypatch.setattr(os, "fdopen", open_descriptor)
    assert config.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["config.gin"]


def test_a_file_replaced_whole_is_as_readable_as_one_written_in_place(tmp_path):
    """Other users on a shared node read the scaled HalfCheetah models and teacher runs."""
    import os

    from picor_gin.whole_files import write_whole

    umask = os.umask(0o022)
    try:
        write_whole(tmp_path / "whole.txt", "x")
        (tmp_path / "in_place.txt").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "whole.txt").stat().st_mode & 0o777 == (tmp_path / "in_place.txt").stat().st_mode & 0o777 == 0o644
