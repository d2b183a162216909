"""Files replaced in one rename, so a reader (another process, a resumed run) sees the old
content or the new, never a part: run-folder text files, the Meta-World goal cache, the scaled
HalfCheetah models."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_whole(path: Path, data: bytes | str) -> None:
    """Writes `data` to a file of its own beside `path`, then renames it over `path`.

    The temporary name is unique, so processes writing the same path at once (a sweep, DDP
    ranks) do not write into each other's file. A failed write (a full disk) leaves `path` as it
    was and no temporary file behind.

    Raises:
        OSError: from the folder, the write or the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    writing = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.writing")
    # os.open, not tempfile's: its files are the owner's alone, these are as readable as any other file.
    descriptor = os.open(writing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
        os.replace(writing, path)
    finally:
        writing.unlink(missing_ok=True)
