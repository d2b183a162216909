"""The smoke configs of the paper's benchmarks run end to end through launch/run.py."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    "gin_file, tasks, has_success",
    [("gin_configs/smoke/mt10_picor.gin", 10, True), ("gin_configs/smoke/halfcheetah_picor.gin", 8, False)],
)
def test_smoke_config_runs_and_writes_one_entry_per_task(tmp_path, gin_file, tasks, has_success):
    result = run_cli(f"--gin_file={gin_file}", f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == 600
    for row in rows:
        assert len(row["tasks"]) == tasks
        if has_success:
            assert 0.0 <= row["mean_success"] <= 1.0
            assert all(0.0 <= t["success"] <= 1.0 for t in row["tasks"].values())
        else:
            assert row["mean_success"] is None and all(t["success"] is None for t in row["tasks"].values())
        assert row["mean_score"] is None
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
