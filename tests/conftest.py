"""Shared fixtures: gin state is global, so every test starts from a clean slate."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import gin
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One test worker per core (`-n auto`): one torch thread each, in the runs they start too.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# A run on 2 CPU processes under DDP; 'ddp' is the name users type, and it must allow unused parameters.
TWO_DDP_PROCESSES = (
    "--gin_bindings=Trainer.accelerator = 'cpu'",
    "--gin_bindings=Trainer.devices = 2",
    "--gin_bindings=Trainer.strategy = 'ddp'",
)


# The files that take minutes on 2 cores, slowest first: handed out before the rest, so that no
# worker starts one of them while the other has nothing left to do.
SLOW_FILES = ("test_ktm_pipeline.py", "test_learning.py", "test_run.py", "test_benchmark_smoke.py",
              "test_components.py", "test_cluster.py", "test_ppo.py", "test_sweep_report.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [name for name in SLOW_FILES if not (REPO / "tests" / name).is_file()]
    if missing:  # a renamed file would silently lose its place at the front
        raise pytest.UsageError(f"conftest.SLOW_FILES names no file {missing}")
    rank = {name: position for position, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: file order otherwise kept


@pytest.fixture(autouse=True)
def clear_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def cli_command(*args: str) -> list[str]:
    """The command line of launch/run.py with `args`, run from the repository root."""
    return [sys.executable, str(REPO / "launch" / "run.py"), *args]


def run_cli(*args: str, timeout: int = 600):
    """Runs launch/run.py in a subprocess from the repository root."""
    return subprocess.run(
        cli_command(*args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """Runs launch/run.py's main with `args` in this process, from the repository root, and
    returns what run_cli would: for runs whose own interpreter is not under test (no signal, no
    DDP, no kill), which need not pay a new interpreter's imports (seconds of CPU each)."""
    from picor_gin.run import cli

    monkeypatch.chdir(REPO)
    monkeypatch.setenv(cli.RUN_DIR_VARIABLE, "")  # main sets it for DDP workers: undone after the test
    monkeypatch.delenv(cli.RUN_DIR_VARIABLE)
    gin.clear_config()  # as a new interpreter would start: no bindings, unlocked
    capsys.readouterr()
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(cli_command(*args), code, captured.out, captured.err)


def load_launch_script(name: str):
    """launch/<name>.py as a module, for tests that call its main() in-process."""
    spec = importlib.util.spec_from_file_location(f"launch_{name}", REPO / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
