"""launch/plot.py reads run folders' own logs and writes PNG figures of the stated size."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from torch.utils.tensorboard import SummaryWriter

from tests.conftest import REPO


def _fake_run(run_dir, name: str, seed: int) -> None:
    """A run folder as launch/run.py writes it: config.gin, eval.jsonl, TensorBoard weights."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text(f"Experiment.name = '{name}'\nExperiment.seed = {seed}\n")
    rows = []
    for step in (1_000, 2_000, 3_000):
        tasks = {t: {"return": -step / 1e3, "success": None, "score": step / 3e3 - 0.1 * seed} for t in ("a", "b")}
        rows.append({"env_steps": step, "tasks": tasks, "mean_return": -step / 1e3, "mean_success": None,
                     "mean_score": step / 3e3 - 0.1 * seed})
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    writer = SummaryWriter(str(run_dir))
    for step in (1_100, 2_100):
        writer.add_scalar("train/weight/a", 0.6, step)
        writer.add_scalar("train/weight/b", 0.4, step)
    writer.close()


def _png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_plot_writes_mean_per_task_forgetting_and_weight_figures(tmp_path):
    runs = [tmp_path / f"picor-s{seed}" for seed in (0, 1)] + [tmp_path / "mtsac-s0"]
    for seed, run in enumerate(runs[:2]):
        _fake_run(run, "tiny_picor", seed)
    _fake_run(runs[2], "tiny_mtsac", 0)
    out = tmp_path / "plots"
    result = subprocess.run([sys.executable, str(REPO / "launch" / "plot.py"), *map(str, runs), f"--out={out}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["forgetting.png", "mean_score.png", "per_task_score.png",
                                                     "task_weights.png"]
    assert _png_size(out / "mean_score.png") == (800, 500)
    assert _png_size(out / "per_task_score.png") == (800, 300)  # 2 tasks x (4 x 3 inches) at 100 dpi
    assert _png_size(out / "task_weights.png") == (1600, 500)  # one panel per experiment
    assert _png_size(out / "forgetting.png") == (800, 500)  # from rows without the key, as older runs wrote them
    assert all((out / name).stat().st_size > 10_000 for name in ("mean_score.png", "task_weights.png", "forgetting.png"))


def test_plot_refuses_a_folder_without_evaluations(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "launch" / "plot.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "eval.jsonl" in result.stderr


def test_collect_keeps_only_the_small_files_and_the_weights_and_they_plot_alike(tmp_path):
    from picor_gin.reports.collect import collect, read_scalars

    runs_root = tmp_path / "runs"
    _fake_run(runs_root / "tiny_picor" / "seed0", "tiny_picor", 0)
    (runs_root / "tiny_picor" / "seed0" / "summary.json").write_text("{}")
    _fake_run(runs_root / "tiny_picor" / "seed1", "tiny_picor", 1)  # unfinished: no summary.json
    written = collect(runs_root, tmp_path / "results")
    assert written == [tmp_path / "results" / "tiny_picor" / "seed0"]
    assert sorted(p.name for p in written[0].iterdir()) == ["config.gin", "eval.jsonl", "scalars.json", "summary.json"]
    kept, logged = read_scalars(written[0], "train/weight/"), read_scalars(runs_root / "tiny_picor" / "seed0", "train/weight/")
    assert kept.keys() == logged.keys() == {"a", "b"}
    for task in kept:
        assert kept[task][0].tolist() == logged[task][0].tolist() == [1_100, 2_100]
        expected = 0.6 if task == "a" else 0.4
        assert kept[task][1].tolist() == pytest.approx([expected] * 2) == logged[task][1].tolist()
