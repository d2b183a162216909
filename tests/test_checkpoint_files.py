"""Which checkpoint a resumed run starts from, on hand-made checkpoint folders of two processes
whose renames a crash cut at every point of the promotion, or whose bytes changed on disk."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from picor_gin import checkpoint_files
from picor_gin.checkpoint_files import (
    LAST, PREVIOUS, WRITING, UnreadableCheckpoint, checkpoint_path, process_file, promote, read_checkpoint, resumable,
    write_digest,
)


def _write(dirpath: Path, name: str, rank: int, env_steps: int, digest: bool = True) -> Path:
    """A checkpoint file of process `rank` at `env_steps`: rank 0's whole, rank r's replay state;
    with its digest as the checkpoint callback writes it, or none as older versions wrote them."""
    data = {"MultiTaskData": {"env_steps": env_steps, "world_size": 2}, "weights": torch.arange(1000.0)}
    if rank == 0:
        data.update(state_dict={}, epoch=0, updates=env_steps)
    path = checkpoint_path(dirpath, name, rank)
    torch.save(data, path)
    if digest:
        write_digest(path)
    return path


def _two_checkpoints_then_a_third_written(dirpath: Path, digests: bool = True) -> None:
    for rank in (0, 1):
        _write(dirpath, PREVIOUS, rank, 100, digests)
        _write(dirpath, LAST, rank, 200, digests)
        _write(dirpath, WRITING, rank, 300, digests)


def _flip_a_byte(path: Path) -> None:
    """A byte of the stored weights changed on disk: torch.load alone would read the file."""
    data = bytearray(path.read_bytes())
    data[data.index(torch.arange(1000.0)[500].numpy().tobytes())] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("digests", [True, False], ids=["with_digests", "without_digests"])
@pytest.mark.parametrize("promoted", [(), (0,), (1,), (0, 1)])
def test_a_crash_between_the_processes_promotions_resumes_from_a_step_both_processes_hold(tmp_path, promoted, digests):
    _two_checkpoints_then_a_third_written(tmp_path, digests)
    for rank in promoted:
        promote(checkpoint_path(tmp_path, WRITING, rank), tmp_path, rank)
    path, checkpoint, _ = resumable(tmp_path)
    env_steps = checkpoint["MultiTaskData"]["env_steps"]
    assert env_steps == (300 if 0 in promoted else 200)
    replay, content = process_file(path, 1, env_steps)
    assert torch.load(replay, weights_only=False)["MultiTaskData"]["env_steps"] == env_steps
    assert content["MultiTaskData"]["env_steps"] == env_steps


def test_a_rank_file_of_no_matching_step_makes_the_checkpoint_unusable_and_says_why(tmp_path):
    _write(tmp_path, LAST, 0, 200)
    _write(tmp_path, LAST, 1, 100)
    with pytest.raises(UnreadableCheckpoint, match=r"no rank-1 replay file of env step 200 \(last.rank1.ckpt is of env step 100\)"):
        resumable(tmp_path)


@pytest.mark.parametrize("renames_done, resumed_step", [(0, 200), (1, 200), (2, 200), (3, 300), (4, 300)])
def test_a_crash_between_a_file_and_its_digest_never_makes_a_complete_file_damaged(tmp_path, monkeypatch, renames_done, resumed_step):
    """promote's four renames: last to previous, its digest, writing to last, its digest."""
    _two_checkpoints_then_a_third_written(tmp_path)
    rename = checkpoint_files.os.replace
    done = []

    def crash_after_some(source, target):
        if len(done) == renames_done:
            raise KeyboardInterrupt  # the process dies here
        done.append(target)
        rename(source, target)

    monkeypatch.setattr(checkpoint_files.os, "replace", crash_after_some)
    with pytest.raises(KeyboardInterrupt) if renames_done < 4 else contextlib.nullcontext():
        promote(checkpoint_path(tmp_path, WRITING), tmp_path, 0)
    monkeypatch.undo()
    path, checkpoint, note = resumable(tmp_path)
    assert checkpoint["MultiTaskData"]["env_steps"] == resumed_step
    assert note is None or "damaged" not in note

    # The resumed run saves again: the file it resumed from, now `previous`, still reads.
    _write(tmp_path, WRITING, 0, 400)
    promote(checkpoint_path(tmp_path, WRITING), tmp_path, 0)
    assert read_checkpoint(checkpoint_path(tmp_path, PREVIOUS))["MultiTaskData"]["env_steps"] == resumed_step


def test_a_changed_byte_in_the_last_checkpoint_resumes_from_the_previous_one_saying_why(tmp_path):
    _two_checkpoints_then_a_third_written(tmp_path)
    for rank in (0, 1):
        promote(checkpoint_path(tmp_path, WRITING, rank), tmp_path, rank)
    _flip_a_byte(checkpoint_path(tmp_path, LAST))
    path, checkpoint, note = resumable(tmp_path)
    assert path.name == "previous.ckpt" and checkpoint["MultiTaskData"]["env_steps"] == 200
    assert note.startswith(f"{tmp_path / 'last.ckpt'}: damaged: its SHA-256 matches no digest")


def test_a_changed_byte_in_a_process_replay_file_makes_its_checkpoint_unusable(tmp_path):
    _two_checkpoints_then_a_third_written(tmp_path)
    for rank in (0, 1):
        promote(checkpoint_path(tmp_path, WRITING, rank), tmp_path, rank)
    _flip_a_byte(checkpoint_path(tmp_path, LAST, 1))
    path, checkpoint, note = resumable(tmp_path)
    assert path.name == "previous.ckpt" and checkpoint["MultiTaskData"]["env_steps"] == 200
    assert "last.rank1.ckpt is damaged" in note
    assert process_file(path, 1, 200)[0].name == "previous.rank1.ckpt"


def test_a_run_of_a_version_before_the_digests_keeps_both_checkpoints_readable_after_its_next_save(tmp_path):
    _two_checkpoints_then_a_third_written(tmp_path, digests=False)
    path, _, _ = resumable(tmp_path)  # the resume
    _write(tmp_path, WRITING, 0, 300)  # and its first save
    promote(checkpoint_path(tmp_path, WRITING), tmp_path, 0)
    assert read_checkpoint(checkpoint_path(tmp_path, LAST))["MultiTaskData"]["env_steps"] == 300
    assert read_checkpoint(checkpoint_path(tmp_path, PREVIOUS))["MultiTaskData"]["env_steps"] == 200


def test_a_changed_byte_goes_unnoticed_without_digests_as_in_older_versions(tmp_path):
    _two_checkpoints_then_a_third_written(tmp_path, digests=False)
    _flip_a_byte(checkpoint_path(tmp_path, LAST))
    path, checkpoint, note = resumable(tmp_path)
    assert path.name == "last.ckpt" and note is None
    assert not torch.equal(checkpoint["weights"], torch.arange(1000.0))  # what the digests are for
