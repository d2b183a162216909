"""The package's layering (pyproject.toml, [tool.importlinter]): a module that imports from a
layer above its own fails here, so the algorithm never comes to depend on the run or sweep code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # import-linter's command, beside this interpreter


def _lint(*args: str) -> subprocess.CompletedProcess:
    # In a process of its own: the command takes over the standard streams it writes to.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_every_import_keeps_the_layers():
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_import_against_the_layers_is_reported(tmp_path):
    # The learner imports its backbones; putting the backbones above it must break the contract.
    config = tmp_path / "reversed.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "picor_gin"\n\n[[tool.importlinter.contracts]]\n'
        'name = "backbones over the learner"\ntype = "layers"\nlayers = ["picor_gin.backbones", "picor_gin.learner"]\n'
    )
    result = _lint(str(config))
    assert result.returncode == 1
    assert "picor_gin.learner -> picor_gin.backbones" in result.stdout
