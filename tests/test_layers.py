"""The package's layering (pyproject.toml, [tool.importlinter]): a module that imports from a
layer above its own fails here, so the algorithm never comes to depend on the run or sweep code."""
from __future__ import annotations

from pathlib import Path

from importlinter import cli

REPO = Path(__file__).resolve().parent.parent


def test_every_import_keeps_the_layers(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cli.lint_imports(no_cache=True) == 0, capsys.readouterr().out


def test_an_import_against_the_layers_is_reported(tmp_path, monkeypatch, capsys):
    # The learner imports its backbones; putting the backbones above it must break the contract.
    config = tmp_path / "reversed.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "picor_gin"\n\n[[tool.importlinter.contracts]]\n'
        'name = "backbones over the learner"\ntype = "layers"\nlayers = ["picor_gin.backbones", "picor_gin.learner"]\n'
    )
    monkeypatch.chdir(REPO)
    assert cli.lint_imports(config_filename=str(config), no_cache=True) == 1
    assert "picor_gin.learner -> picor_gin.backbones" in capsys.readouterr().out
