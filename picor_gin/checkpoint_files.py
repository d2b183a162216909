"""The files of `checkpoints/`: the last two checkpoints, each with one replay file per DDP
process beyond rank 0, and the choice of the one a resumed run starts from.

    last.ckpt, last.rank<r>.ckpt          the newest checkpoint (rank 0's buffers are inside it)
    previous.ckpt, previous.rank<r>.ckpt  the one before, the fallback when the newest cannot be read
    writing.ckpt, writing.rank<r>.ckpt    one being written, renamed to last once complete
    <each of these>.sha256                its SHA-256, written with it and renamed with it

torch.load reads a file whose bytes changed on disk without complaint (a flipped byte in a
replay buffer or a weight loads as a different value), hence the digests: a resume reads only a
file whose SHA-256 one of its process's digest files holds, and falls back to the previous
checkpoint otherwise. Any of them, not only its own, because a crash between renaming a file
and renaming its digest leaves them under different names. A process's files without any
digest file (written by a version of picor-gin before the digests) are read unchecked.

Each process renames its own files, so a crash can leave rank 0's `last` one checkpoint ahead of
(or behind) rank r's; rank r's replay file is therefore found by its env step, not by its name.

Lightning writes one checkpoint file from rank 0 and has no sharded format for DDP's per-process
state (its sharded checkpoints are FSDP's and DeepSpeed's), so the other processes' replay
buffers go to files of their own, written here.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from picor_gin.whole_files import write_whole

LAST, PREVIOUS, WRITING = "last", "previous", "writing"

#: Lightning keeps the data module's state under its class name: one per data path.
DATA_STATE_KEYS = ("MultiTaskData", "RolloutData")


def data_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The data module's state in a checkpoint file, whichever data path wrote it."""
    return next(checkpoint[key] for key in DATA_STATE_KEYS if key in checkpoint)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full); the previous ones are intact."""


class DamagedCheckpoint(ValueError):
    """A checkpoint file's bytes match none of its process's digests."""


class UnreadableCheckpoint(ValueError):
    """No checkpoint of a run folder can be read."""


def checkpoint_path(dirpath: Path, name: str = LAST, rank: int = 0) -> Path:
    """Rank 0's file holds the whole checkpoint; rank r's, that process's replay state."""
    return Path(dirpath) / (f"{name}.ckpt" if rank == 0 else f"{name}.rank{rank}.ckpt")


def digest_path(checkpoint: Path) -> Path:
    """The file holding `checkpoint`'s SHA-256."""
    return checkpoint.with_name(f"{checkpoint.name}.sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def write_digest(checkpoint: Path) -> None:
    """Writes the SHA-256 of the complete file `checkpoint` beside it.

    Raises:
        OSError: it could not be read or the digest could not be written.
    """
    write_whole(digest_path(checkpoint), _sha256(checkpoint) + "\n")


def read_checkpoint(path: Path, rank: int = 0) -> dict[str, Any]:
    """Loads process `rank`'s checkpoint file memory-mapped (tensors stay on disk until
    touched), once its bytes match a digest of that process (module docstring).

    Raises:
        DamagedCheckpoint: the file's SHA-256 is none of its process's digests.
    """
    digests = set()
    for name in (LAST, PREVIOUS, WRITING):
        written = digest_path(checkpoint_path(path.parent, name, rank))
        if written.is_file():
            digests.add(written.read_text().strip())
    if digests and _sha256(path) not in digests:
        raise DamagedCheckpoint("damaged: its SHA-256 matches no digest written with the checkpoints (its bytes changed on disk)")
    # The run's own file, holding optimizer states and replay buffers: not weights only.
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def process_file(checkpoint: Path, rank: int, env_steps: int) -> tuple[Path, dict[str, Any]]:
    """Process `rank`'s replay file of env step `env_steps`, the step of the checkpoint file
    `checkpoint` (rank 0's), and its content as read_checkpoint loads it: the one of the same
    name, or, after a crash between two processes' renames, the one under another name.

    Raises:
        ValueError: saying which step each candidate holds.
    """
    own = checkpoint.name.removesuffix(".ckpt")
    found = []
    for name in dict.fromkeys((own, LAST, PREVIOUS, WRITING)):
        candidate = checkpoint_path(checkpoint.parent, name, rank)
        if not candidate.is_file():
            continue
        try:
            content = read_checkpoint(candidate, rank)
            candidate_steps = data_state(content)["env_steps"]
        except DamagedCheckpoint as problem:
            found.append(f"{candidate.name} is {problem}")
            continue
        except Exception as error:  # noqa: BLE001  (torch reports truncation and corruption in many types)
            found.append(f"{candidate.name} cannot be read ({type(error).__name__})")
            continue
        if candidate_steps == env_steps:
            return candidate, content
        found.append(f"{candidate.name} is of env step {candidate_steps}")
    raise ValueError(f"no rank-{rank} replay file of env step {env_steps} ({'; '.join(found) or 'none found'})")


def promote(written: Path, dirpath: Path, rank: int) -> None:
    """Makes the finished temporary file `written` (and its digest) the last checkpoint of
    process `rank`, the last one becoming the previous one. Each step is an atomic rename: a
    crash in between leaves `previous` and no `last`, and resuming then starts from `previous`."""
    last = checkpoint_path(dirpath, LAST, rank)
    for source, target in ((last, checkpoint_path(dirpath, PREVIOUS, rank)), (written, last)):
        if source.exists():
            os.replace(source, target)
        if digest_path(source).exists():
            os.replace(digest_path(source), digest_path(target))


def _check(path: Path) -> dict[str, Any]:
    """Loads `path` and its processes' replay files; raises ValueError saying what is wrong."""
    if not path.is_file():
        raise ValueError("missing")
    try:
        checkpoint = read_checkpoint(path)
    except DamagedCheckpoint:
        raise
    except Exception as error:  # noqa: BLE001  (torch reports truncation and corruption in many types)
        raise ValueError(f"cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:120]})") from error
    missing = [key for key in ("state_dict", "epoch", "updates") if key not in checkpoint]
    if not any(key in checkpoint for key in DATA_STATE_KEYS):
        missing.append(" or ".join(DATA_STATE_KEYS))
    if missing:
        raise ValueError(f"lacks {', '.join(missing)} (written by another version of picor-gin?)")
    env_steps = data_state(checkpoint)["env_steps"]
    for rank in range(1, data_state(checkpoint).get("world_size", 1)):
        _own_digest(process_file(path, rank, env_steps)[0])
    _own_digest(path)
    return checkpoint


def _own_digest(path: Path) -> None:
    """Gives `path`, a file a resume starts from, a digest file of its own where it has none.
    After a crash between a file's rename and its digest's, the digest stands under another name,
    which the next save overwrites; a file of a version before the digests has none. Either
    would then be called damaged once the next save makes it `previous`."""
    if not digest_path(path).is_file():
        write_digest(path)


def has_checkpoint(dirpath: Path) -> bool:
    """Whether `dirpath` holds a checkpoint that `resumable` would try: the last or, after a crash
    between `promote`'s two renames, only the previous one."""
    return any(checkpoint_path(dirpath, name).is_file() for name in (LAST, PREVIOUS))


def resumable(dirpath: Path) -> tuple[Path, dict[str, Any], str | None]:
    """The newest readable checkpoint of `dirpath`, loaded, and a note if it is not the last.

    Raises:
        UnreadableCheckpoint: naming each file and why it cannot be used.
    """
    problems = []
    for name in (LAST, PREVIOUS):
        path = checkpoint_path(dirpath, name)
        try:
            checkpoint = _check(path)
        except ValueError as problem:
            problems.append(f"{path}: {problem}")
            continue
        note = None
        if problems:
            note = f"{problems[0]}; resuming from {path} (env step {data_state(checkpoint)['env_steps']})"
        return path, checkpoint, note
    raise UnreadableCheckpoint("no checkpoint to resume from: " + "; ".join(problems))
