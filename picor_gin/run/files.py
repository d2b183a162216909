"""Run-folder text files rewritten whole (config.gin, eval.jsonl on a resume): written beside
the old file, then renamed over it, so a full disk or a crash mid-write leaves the old file.
And the lock that keeps a run folder to one run at a time."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from picor_gin.whole_files import write_whole


def replace_text(path: Path, text: str) -> None:
    """Makes `text` the content of `path` in one rename; does nothing where it already is."""
    if path.exists() and path.read_text() == text:
        return
    write_whole(path, text)


@contextlib.contextmanager
def run_folder_lock(folder: Path, take: bool = True) -> Iterator[bool]:
    """Holds an exclusive lock on `folder` for the block (the OS lets go if the process dies,
    kill -9 included); yields False where another process holds it, True without locking where
    `take` is False (a DDP worker, which writes under rank 0's lock). Two processes in one run
    folder (a sweep and a manual --resume of the same run) would both append to eval.jsonl and
    overwrite each other's checkpoints."""
    if not take:
        yield True
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        yield False
        return
    except OSError:  # a file system without folder locks (NFS can refuse one): run unguarded
        os.close(descriptor)
        yield True
        return
    try:
        yield True
    finally:
        os.close(descriptor)
