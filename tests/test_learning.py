"""Learning, end to end: PiCor solves the tiny task set on SAC and on TD3, and its correction
does not hurt.

Budgeted in env steps (not seconds), for a fixed seed; each run takes about a minute on 2 CPU
cores. A solved PointGoals run scores >= 0.9 (DESIGN.md section 6); the issue asks >= 0.8.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

BUDGET = [
    "--gin_bindings=Experiment.total_env_steps = 3_000",
    "--gin_bindings=Experiment.eval_every_env_steps = 1_000",
    "--gin_bindings=Experiment.seed = 0",
]


def _final_score(gin_file: str, run_dir) -> float:
    result = run_cli(f"--gin_file={gin_file}", *BUDGET, f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())["mean_score"]


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    return {
        name: _final_score(f"gin_configs/{name}.gin", root / name)
        for name in ("tiny_picor", "tiny_mtsac", "tiny_picor_td3")
    }


def test_picor_solves_the_tiny_task_set(scores):
    assert scores["tiny_picor"] >= 0.8, scores


def test_picor_is_not_worse_than_mtsac_on_the_same_budget(scores):
    assert scores["tiny_picor"] >= scores["tiny_mtsac"] - 0.05, scores


def test_picor_on_td3_solves_the_tiny_task_set(scores):
    assert scores["tiny_picor_td3"] >= 0.8, scores
