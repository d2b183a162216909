"""The smoke configs of the paper's benchmarks run end to end through launch/run.py, and the
benchmarks print their tables: throughput (framework and plain-torch reference side by side),
collection scaling and evaluation cost."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from benchmarks import evaluation_cost, plain_sac, throughput
from tests.conftest import REPO, run_in_process


@pytest.mark.parametrize(
    "gin_file, tasks, has_success",
    [
        ("gin_configs/smoke/mt10_picor.gin", 10, True), ("gin_configs/smoke/halfcheetah_picor.gin", 8, False),
        # Each representation network on one benchmark: test_gin_configs builds both on each.
        ("gin_configs/smoke/mt10_moore.gin", 10, True), ("gin_configs/smoke/halfcheetah_paco.gin", 8, False),
        ("gin_configs/smoke/mt10_picor_ppo.gin", 10, True),  # the on-policy path and its correction
    ],
)
def test_smoke_config_runs_and_writes_one_entry_per_task(tmp_path, gin_file, tasks, has_success, monkeypatch, capsys):
    result = run_in_process(monkeypatch, capsys, f"--gin_file={gin_file}", f"--run_dir={tmp_path / 'run'}")
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


def test_plain_sac_loop_reports_a_positive_finite_rate():
    rate = plain_sac.updates_per_second(
        obs_dim=5, action_dim=2, num_tasks=3, hidden_sizes=[8, 8], batch_size=16, updates=3, warmup=1
    )
    assert math.isfinite(rate) and rate > 0


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def _table_of(benchmark, args: list[str], monkeypatch, capsys) -> list[list[str]]:
    """The markdown table rows that `benchmark`'s main prints for `args`, run in this process
    (no new interpreter's imports to pay). A main may set torch's thread count and flush-denormal
    mode; both go back to what this worker had (flush-denormal: torch's default, off)."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", [benchmark.__name__, *args])
    try:
        benchmark.main()
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    return [_cells(line) for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]


def test_throughput_prints_the_ratio_to_plain_sac_the_correction_cost_and_marks_picor_as_not_like_for_like(
    monkeypatch, capsys
):
    header, *body = _table_of(throughput, [
        "--configs", "tiny_mtsac", "tiny_picor", "--updates", "3", "--warmup", "1", "--rounds", "1",
        "--gin_bindings", "HIDDEN_SIZES = (8, 8)", "MultiTaskData.batch_size = 8",
        "MultiTaskData.warmup_env_steps_per_task = 8",
    ], monkeypatch, capsys)
    assert {"updates/s (training_step)", "updates/s (plain SAC)", "training_step / plain"} <= set(header)
    rows = {cells[0]: dict(zip(header, cells)) for cells in body}
    assert float(rows["tiny_mtsac"]["updates/s (plain SAC)"]) > 0
    assert float(rows["tiny_mtsac"]["training_step / plain"]) > 0
    picor = rows["tiny_picor"]["training_step / plain"]
    assert picor.endswith("*") and float(picor[:-1]) > 0
    # The correction's cost: PiCor against itself with the phase off; MTSAC has no such phase.
    assert float(rows["tiny_picor"]["with / without correction"]) > 0
    assert 0 <= float(rows["tiny_picor"]["correction active share"]) <= 1
    assert rows["tiny_mtsac"]["with / without correction"] == "-"


def test_collection_scaling_prints_serial_and_parallel_cost_per_task_count():
    result = subprocess.run(
        [
            sys.executable, str(REPO / "benchmarks" / "collection_scaling.py"),
            "--task_counts", "2", "--iterations", "2", "--rounds", "1",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    header, *body = [_cells(line) for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = [dict(zip(header, cells)) for cells in body if cells[0].isdigit()]
    assert [row["tasks"] for row in rows] == ["2"]
    serial, parallel = float(rows[0]["serial (ms/iteration)"]), float(rows[0]["parallel workers (ms/iteration)"])
    assert serial > 0 and parallel > 0
    assert float(rows[0]["serial / parallel"]) == pytest.approx(serial / parallel, abs=0.01)
    # One serial step is the 2-task serial iteration over 2, so this column is 2 x parallel / serial.
    assert float(rows[0]["parallel / one serial step"]) == pytest.approx(2 * parallel / serial, abs=0.01)


def test_evaluation_cost_prints_a_row_per_episode_count_with_its_env_steps(monkeypatch, capsys):
    header, *body = _table_of(
        evaluation_cost, ["--configs", "tiny_picor", "--episodes", "1", "3", "--rounds", "1"], monkeypatch, capsys
    )
    rows = [dict(zip(header, cells)) for cells in body if cells[0] == "tiny_picor"]
    assert [row["episodes per task"] for row in rows] == ["1", "3"]
    # The tiny set: 4 tasks of 30-step episodes, none ending early.
    assert [int(row["env steps"]) for row in rows] == [4 * 30, 3 * 4 * 30]
    assert all(float(row["s per evaluation"]) > 0 and float(row["env steps/s"].replace(",", "")) > 0 for row in rows)
