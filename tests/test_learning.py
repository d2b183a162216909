"""Learning, end to end: PiCor solves the tiny task set on SAC and on TD3, and its correction
does not hurt.

Budgeted in env steps (not seconds), for a fixed seed. The three runs go at once, one torch
thread each: on 2 CPU cores small networks gain more from a core per run than from two threads
per run. A solved PointGoals run scores >= 0.9 (docs/design.md, "The tiny task set"); the tests ask >= 0.8.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

from tests.conftest import REPO, cli_command

BUDGET = [
    "--gin_bindings=Experiment.total_env_steps = 3_000",
    "--gin_bindings=Experiment.eval_every_env_steps = 1_000",
    "--gin_bindings=Experiment.seed = 0",
]


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    names = ("tiny_picor", "tiny_mtsac", "tiny_picor_td3")
    with contextlib.ExitStack() as stack:
        logs = {name: stack.enter_context((root / f"{name}.err").open("w")) for name in names}
        runs = {
            name: subprocess.Popen(
                cli_command(f"--gin_file=gin_configs/{name}.gin", *BUDGET, f"--run_dir={root / name}"),
                cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=logs[name],
            )
            for name in names
        }
        codes = {name: run.wait(timeout=900) for name, run in runs.items()}
    for name, code in codes.items():
        assert code == 0, (root / f"{name}.err").read_text()[-3000:]
    return {name: json.loads((root / name / "summary.json").read_text())["mean_score"] for name in names}


def test_picor_solves_the_tiny_task_set(scores):
    assert scores["tiny_picor"] >= 0.8, scores


def test_picor_is_not_worse_than_mtsac_on_the_same_budget(scores):
    assert scores["tiny_picor"] >= scores["tiny_mtsac"] - 0.05, scores


def test_picor_on_td3_solves_the_tiny_task_set(scores):
    assert scores["tiny_picor_td3"] >= 0.8, scores
