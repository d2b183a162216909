"""Which checkpoint a resumed run starts from, on hand-made checkpoint folders of two processes
whose renames a crash cut at every point of the promotion."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from picor_gin.checkpoint_files import (
    LAST, PREVIOUS, WRITING, UnreadableCheckpoint, checkpoint_path, process_file, promote, resumable,
)


def _write(dirpath: Path, name: str, rank: int, env_steps: int) -> Path:
    """A checkpoint file of process `rank` at `env_steps`: rank 0's whole, rank r's replay state."""
    data = {"MultiTaskData": {"env_steps": env_steps, "world_size": 2}}
    if rank == 0:
        data.update(state_dict={}, epoch=0, updates=env_steps)
    path = checkpoint_path(dirpath, name, rank)
    torch.save(data, path)
    return path


def _two_checkpoints_then_a_third_written(dirpath: Path) -> None:
    for rank in (0, 1):
        _write(dirpath, PREVIOUS, rank, 100)
        _write(dirpath, LAST, rank, 200)
        _write(dirpath, WRITING, rank, 300)


@pytest.mark.parametrize("promoted", [(), (0,), (1,), (0, 1)])
def test_a_crash_between_the_processes_promotions_resumes_from_a_step_both_processes_hold(tmp_path, promoted):
    _two_checkpoints_then_a_third_written(tmp_path)
    for rank in promoted:
        promote(checkpoint_path(tmp_path, WRITING, rank), tmp_path, rank)
    path, checkpoint, _ = resumable(tmp_path)
    env_steps = checkpoint["MultiTaskData"]["env_steps"]
    assert env_steps == (300 if 0 in promoted else 200)
    replay = process_file(path, 1, env_steps)
    assert torch.load(replay, weights_only=False)["MultiTaskData"]["env_steps"] == env_steps


def test_a_rank_file_of_no_matching_step_makes_the_checkpoint_unusable_and_says_why(tmp_path):
    _write(tmp_path, LAST, 0, 200)
    _write(tmp_path, LAST, 1, 100)
    with pytest.raises(UnreadableCheckpoint, match=r"no rank-1 replay file of env step 200 \(last.rank1.ckpt is of env step 100\)"):
        resumable(tmp_path)
