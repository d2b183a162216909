"""Files replaced in one rename, so a reader (another process, a resumed run) sees the old
content or the new, never a part: run-folder text files, the Meta-World goal cache, the scaled
HalfCheetah models."""
from __future__ import annotations

import os
from pathlib import Path
from tempfile import NamedTemporaryFile


def write_whole(path: Path, data: bytes | str) -> None:
    """Writes `data` to a file of its own beside `path`, then renames it over `path`.

    The temporary name is unique, so processes writing the same path at once (a sweep, DDP
    ranks) do not write into each other's file. A failed write (a full disk) leaves `path` as it
    was and no temporary file behind.

    Raises:
        OSError: from the folder, the write or the rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    file = NamedTemporaryFile(dir=path.parent, prefix=f"{path.name}.", suffix=".writing", delete=False)
    writing = Path(file.name)
    try:
        with file:
            file.write(data.encode() if isinstance(data, str) else data)
        os.replace(writing, path)
    finally:
        writing.unlink(missing_ok=True)
