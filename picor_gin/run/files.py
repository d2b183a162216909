"""Run-folder text files rewritten whole (config.gin, eval.jsonl on a resume): written beside
the old file, then renamed over it, so a full disk or a crash mid-write leaves the old file."""
from __future__ import annotations

import os
from pathlib import Path


def replace_text(path: Path, text: str) -> None:
    """Makes `text` the content of `path` in one rename; does nothing where it already is."""
    if path.exists() and path.read_text() == text:
        return
    writing = path.with_name(f"{path.name}.writing")
    try:
        writing.write_text(text)
        os.replace(writing, path)
    finally:
        writing.unlink(missing_ok=True)
