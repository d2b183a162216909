"""launch/sweep.py runs gin files x seeds into resumable run folders; launch/report.py tables
their final metric over seeds (mean ± std, rliable IQM with a bootstrap CI)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from picor_gin.sweeps.local import run_locally
from picor_gin.reports.runs import find_runs, group_by_arm
from picor_gin.reports.tables import ReportError, build_report, paper_table
from picor_gin.sweeps.plan import PlannedRun
from tests.conftest import REPO, load_launch_script


sweep = load_launch_script("sweep")
report = load_launch_script("report")
reproduce = load_launch_script("reproduce")

SCORES = {  # final mean_score per seed
    "tiny_mtsac": [0.1, 0.4, 0.5, 0.9],  # IQM: mean of the middle two = 0.45
    "tiny_picor": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 5.0],  # IQM: mean of the middle four = 0.35
}


def _fake_run(run_dir, name: str, seed: int, score: float, finished: bool = True, config: str = "") -> None:
    """A run folder as launch/run.py writes it: config.gin (plus `config`), eval.jsonl, summary.json (if finished)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text(f"Experiment.name = '{name}'\nExperiment.seed = {seed}\n{config}")
    rows = []
    for step, value in ((1_000, score / 2), (2_000, score)):
        tasks = {t: {"return": 10 * value, "success": None, "score": value} for t in ("goal0", "goal1")}
        rows.append({"env_steps": step, "tasks": tasks, "mean_return": 10 * value, "mean_success": None,
                     "mean_score": value})
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        totals = {"wall_time_s": 12.5, "total_env_steps": 2_000, "updates": 1_000,
                  "env_steps_per_second": 160.0, "updates_per_second": 80.0, "average_forgetting": score / 4}
        (run_dir / "summary.json").write_text(json.dumps({**rows[-1], **totals}, indent=2) + "\n")


@pytest.fixture
def runs_root(tmp_path):
    """Two experiments' seeds, plus a crashed run (no summary.json) that the report must ignore."""
    root = tmp_path / "sweep"
    for name, scores in SCORES.items():
        for seed, score in enumerate(scores):
            _fake_run(root / name / f"seed{seed}", name, seed, score)
    _fake_run(root / "tiny_picor" / "seed99", "tiny_picor", 99, 100.0, finished=False)
    return root


def test_report_gives_mean_std_and_iqm_per_experiment(runs_root):
    table, rows = build_report([runs_root], reps=500)
    assert table.startswith("Final `mean_score` over seeds")  # mean_success is null: the score is next
    assert [row.experiment for row in rows] == ["tiny_mtsac", "tiny_picor"]
    for row, (name, scores) in zip(rows, SCORES.items()):
        assert row.seeds == len(scores)
        assert row.mean == pytest.approx(statistics.fmean(scores))
        assert row.std == pytest.approx(statistics.pstdev(scores))
        assert row.ci_low <= row.iqm <= row.ci_high
        assert min(scores) <= row.ci_low < row.ci_high <= max(scores)
    assert rows[0].mean == pytest.approx(0.475) and rows[0].iqm == pytest.approx(0.45)
    assert rows[1].mean == pytest.approx(0.8875) and rows[1].iqm == pytest.approx(0.35)  # the outlier 5.0 is trimmed


def test_every_report_table_notes_arms_run_for_unequal_env_steps(tmp_path):
    _fake_run(tmp_path / "a" / "seed0", "arm_a", 0, 0.5)  # 2,000 env steps
    _fake_run(tmp_path / "b" / "seed0", "arm_b", 0, 0.5)
    for table, _ in (build_report([tmp_path], reps=50), build_report([tmp_path], per_task=True),
                     build_report([tmp_path], reps=50, reach=0.1)):
        assert "env steps differ" not in table
    summary = tmp_path / "b" / "seed0" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "total_env_steps": 3_000}))
    for table, _ in (build_report([tmp_path], reps=50), build_report([tmp_path], per_task=True),
                     build_report([tmp_path], reps=50, reach=0.1)):
        assert table.endswith("\nNote: the runs' env steps differ (total_env_steps: arm_a 2,000; arm_b 3,000), "
                              "so these rows do not compare at equal samples.\n")


def test_report_is_reproducible_counts_a_run_once_and_leaves_numpy_seeding_alone(runs_root):
    np.random.seed(1)
    first = build_report([runs_root], reps=300, seed=7)
    after_report = np.random.rand()
    again = build_report([runs_root, runs_root / "tiny_mtsac" / "seed0"], reps=300, seed=7)
    assert first == again
    np.random.seed(1)
    assert after_report == np.random.rand()


def test_report_metric_choice_and_errors(runs_root, tmp_path):
    _, rows = build_report([runs_root], metric="mean_return", reps=100)
    assert rows[0].mean == pytest.approx(4.75)
    with pytest.raises(ReportError, match="mean_success is null in 12 of 12 runs"):
        build_report([runs_root], metric="mean_success")
    with pytest.raises(ReportError, match="no run folder"):
        build_report([tmp_path / "sweep" / "tiny_picor" / "seed99"])


def test_report_cli_writes_markdown_with_one_row_per_experiment(runs_root, tmp_path, capsys):
    out = tmp_path / "tables" / "report.md"
    result = subprocess.run([sys.executable, str(REPO / "launch" / "report.py"), str(runs_root), "--out", str(out),
                             "--reps", "200"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[2] == "| experiment | seeds | mean_score (mean ± std) | IQM [95% CI] |"
    assert [line.split(" | ")[:2] for line in lines[4:]] == [["| tiny_mtsac", "4"], ["| tiny_picor", "8"]]
    assert lines[4].startswith("| tiny_mtsac | 4 | 0.475 ± 0.286 | 0.450 [")
    assert out.read_text() in result.stdout

    assert report.main([str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err == f"error: no such file or folder: {tmp_path / 'nothing'}\n"


def test_report_tables_average_forgetting_on_request_as_lower_is_better(runs_root, capsys):
    assert report.main([str(runs_root), "--metric", "average_forgetting", "--reps", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Final `average_forgetting` over seeds (lower is better);")
    assert lines[4].startswith("| tiny_mtsac | 4 | 0.119 ± 0.072 |")  # the scores' 0.475 ± 0.286, over 4


def _interval(cell: str) -> tuple[float, float, float]:
    """A table cell `point [low, high]` as three numbers."""
    point, low, high = (float(v) for v in cell.replace("[", "").replace(",", "").replace("]", "").split())
    return point, low, high


def _summary_with_tasks(run_dir: Path, name: str, seed: int, task_values: dict[str, float | None]) -> None:
    """A finished run whose final evaluation has these per-task scores (mean_score their mean)."""
    _fake_run(run_dir, name, seed, 0.0)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["tasks"] = {t: {"return": None, "success": None, "score": v} for t, v in task_values.items()}
    known = [v for v in task_values.values() if v is not None]
    summary["mean_score"] = sum(known) / len(known)
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_report_over_tasks_is_rliables_iqm_pooling_runs_and_tasks(tmp_path, capsys):
    # Two seeds x four tasks: 0, 1, 1, 1 and 1, 1, 1, 10. Pooled and sorted, 0 1 1 1 1 1 1 10: the
    # middle half is four 1s, IQM 1.0. Over seeds of the run means (0.75, 3.25) it is their mean, 2.0.
    for seed, values in enumerate(([0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 10.0])):
        _summary_with_tasks(tmp_path / f"seed{seed}", "arm", seed, dict(zip("abcd", values)))
    assert report.main([str(tmp_path), "--over_tasks", "--reps", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| experiment | seeds | IQM over runs x tasks [95% CI] |"
    name, seeds, cell = lines[4].strip("| ").split(" | ")
    point, low, high = _interval(cell)
    assert (name, seeds, point) == ("arm", "2", 1.0)
    assert low <= point <= high
    assert build_report([tmp_path], reps=200)[1][0].iqm == 2.0
    with pytest.raises(ReportError, match="--over_tasks needs a metric with a value per task"):
        build_report([tmp_path], "average_forgetting", over_tasks=True)


def test_report_refuses_a_nan_final_value_and_a_null_task_naming_the_run(tmp_path):
    _summary_with_tasks(tmp_path / "seed0", "arm", 0, {"goal0": 1.0, "goal1": None})
    _fake_run(tmp_path / "seed1", "arm", 1, 0.5)
    with pytest.raises(ReportError, match=f"--per_task needs every task's score, but it is None for goal1 in {tmp_path / 'seed0'}"):
        build_report([tmp_path], per_task=True)
    summary = json.loads((tmp_path / "seed1" / "summary.json").read_text())
    (tmp_path / "seed1" / "summary.json").write_text(json.dumps({**summary, "mean_score": float("nan")}))
    with pytest.raises(ReportError, match=f"mean_score is nan in {tmp_path / 'seed1'}"):
        build_report([tmp_path])
    assert report.main([str(tmp_path)]) == 2


def test_report_refuses_reach_on_a_lower_is_better_metric(runs_root):
    with pytest.raises(ReportError, match="average_forgetting is lower-is-better"):
        build_report([runs_root], "average_forgetting", reach=0.1)


def test_report_notes_arms_of_three_seeds_or_fewer_whose_interval_is_their_range(tmp_path, runs_root):
    table, rows = build_report([runs_root], reps=200)  # 4 and 8 seeds: no note
    assert "3 seeds or fewer" not in table
    for seed, score in enumerate((0.1, 0.4, 0.5)):
        _fake_run(tmp_path / "three" / f"seed{seed}", "three", seed, score)
    table, (row,) = build_report([tmp_path / "three"], reps=2000)
    # n = 3: the IQM trims int(0.75) = 0 seeds, so it is the mean; a resample of three all 0.1 has
    # chance 1/27 > 2.5%, so the percentile interval reaches the lowest seed (and the highest).
    assert (row.iqm, row.ci_low, row.ci_high) == pytest.approx((1.0 / 3, 0.1, 0.5))
    assert table.endswith("\nNote: with 3 seeds or fewer an arm's IQM is its mean and its interval is the range "
                          "of its seeds, not a 95% interval: three (3).\n")


def test_report_notes_arms_on_different_task_sets(tmp_path):
    _summary_with_tasks(tmp_path / "mt" / "seed0", "mt", 0, {"reach": 1.0, "push": 0.0})
    _fake_run(tmp_path / "tiny" / "seed0", "tiny", 0, 0.5)
    table, _ = build_report([tmp_path], reps=100)
    assert "Note: the runs' task sets differ (mt 2 tasks (push, ...); tiny 2 tasks (goal0, ...))" in table
    with pytest.raises(ReportError, match="--per_task needs runs of one task set"):
        build_report([tmp_path], per_task=True)


def test_report_per_task_tables_each_tasks_final_metric_over_seeds(runs_root, capsys):
    assert report.main([str(runs_root), "--per_task"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| experiment | seeds | goal0 | goal1 |"
    # tiny_mtsac's four final scores 0.1, 0.4, 0.5, 0.9: mean 0.475, std 0.286 (ddof 0), both tasks alike.
    assert lines[4] == "| tiny_mtsac | 4 | 0.475 ± 0.286 | 0.475 ± 0.286 |"
    with pytest.raises(ReportError, match="needs a metric with a value per task"):
        build_report([runs_root], "average_forgetting", per_task=True)


def test_report_improvement_is_the_hand_counted_probability_that_one_arm_beats_the_other(runs_root, capsys):
    # tiny_mtsac's 4 final scores against tiny_picor's 8, on each of the two tasks alike: of the 32
    # pairs, 0.1 beats 1 and ties 1, 0.4 beats 4 and ties 1, 0.5 beats 5 and ties 1, 0.9 beats 7:
    # (17 + 3 / 2) / 32 = 0.578125.
    assert report.main([str(runs_root), "--improvement", "--reps", "300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| X | Y | P(X > Y) [95% CI] |"
    x, y, cell = lines[4].strip("| ").split(" | ")
    point, low, high = _interval(cell)
    assert (x, y, point) == ("tiny_mtsac", "tiny_picor", 0.578)
    assert 0 <= low < point < high <= 1
    assert build_report([runs_root], reps=300, seed=3, improvement=True) == build_report(
        [runs_root], reps=300, seed=3, improvement=True)
    with pytest.raises(ReportError, match="compares arms, and the runs are one arm: tiny_mtsac"):
        build_report([runs_root / "tiny_mtsac"], improvement=True)
    with pytest.raises(ReportError, match="--improvement needs a metric with a value per task"):
        build_report([runs_root], "average_forgetting", improvement=True)
    with pytest.raises(SystemExit):
        report.main([str(runs_root), "--improvement", "--per_task"])
    assert "--per_task and --improvement are different tables: ask for one" in capsys.readouterr().err


def test_sweep_commands_fresh_resumed_and_finished(tmp_path):
    root = tmp_path / "sweep"
    _fake_run(root / "tiny_picor" / "seed1", "tiny_picor", 1, 0.5)  # finished
    (root / "tiny_mtsac" / "seed0" / "checkpoints").mkdir(parents=True)  # interrupted after a checkpoint
    (root / "tiny_mtsac" / "seed0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    (root / "tiny_mtsac" / "seed1").mkdir(parents=True)  # died before its first checkpoint
    runs = sweep.plan(["gin_configs/tiny_picor.gin", "gin_configs/tiny_mtsac.gin"], [0, 1], root, ["Experiment.eval_episodes = 1"])
    assert [(run.name, run.finished, run.resumable) for run in runs] == [
        ("tiny_picor/seed0", False, False), ("tiny_picor/seed1", True, False),
        ("tiny_mtsac/seed0", False, True), ("tiny_mtsac/seed1", False, False),
    ]
    run_py = str(REPO / "launch" / "run.py")
    assert runs[0].command() == [sys.executable, run_py, "--gin_file=gin_configs/tiny_picor.gin", "--gin_bindings=Experiment.eval_episodes = 1",
                                 "--gin_bindings=Experiment.seed = 0", f"--run_dir={root / 'tiny_picor' / 'seed0'}"]
    assert runs[1].command() is None
    assert runs[2].command() == runs[2].command(rank=1) == [sys.executable, run_py, f"--resume={root / 'tiny_mtsac' / 'seed0'}"]
    assert runs[3].command()[-2:] == ["--gin_bindings=Experiment.seed = 1", f"--run_dir={root / 'tiny_mtsac' / 'seed1'}"]
    assert runs[3].command(rank=2)[-1] == f"--run_dir={root / 'tiny_mtsac' / 'seed1.rank2'}"  # beside, not inside
    assert runs[0].log == root / "tiny_picor" / "seed0.log"
    # Nothing to resume in seed1's folder, and launch/run.py refuses an existing one: set aside for a fresh start.
    stale = root / "tiny_mtsac" / "seed1.stale1"
    assert [run.set_aside_unresumable() for run in runs] == [None, None, None, stale]
    assert stale.is_dir() and not runs[3].run_dir.exists() and runs[1].finished and runs[2].resumable
    runs[3].run_dir.mkdir()
    assert runs[3].set_aside_unresumable() == root / "tiny_mtsac" / "seed1.stale2"


def test_sweep_refuses_a_root_whose_run_was_started_with_other_bindings(tmp_path):
    # A finished run would be skipped, a started one resumed with its own budget: a table would mix budgets.
    run_dir = tmp_path / "sweep" / "tiny_picor" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text("Experiment.seed = 0\nExperiment.total_env_steps = 500\n")
    with pytest.raises(ValueError, match=r"seed0 was started with Experiment.total_env_steps = 500 \(not 5000\)"):
        sweep.plan(["gin_configs/tiny_picor.gin"], [0], tmp_path / "sweep", ["Experiment.total_env_steps = 5_000"])
    (run,) = sweep.plan(["gin_configs/tiny_picor.gin"], [0], tmp_path / "sweep", ["Experiment.total_env_steps = 5_00"])
    assert run.run_dir == run_dir  # the same budget, spelt otherwise: the run is continued


def test_sweep_resumes_a_run_whose_crash_left_only_the_previous_checkpoint(tmp_path):
    # checkpoint_files.promote renames last -> previous, then the new file -> last: a crash between
    # the two leaves previous.ckpt alone, which --resume starts from; the sweep must not restart it.
    run_dir = tmp_path / "sweep" / "tiny_mtsac" / "seed0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "previous.ckpt").write_bytes(b"")
    (run,) = sweep.plan(["gin_configs/tiny_mtsac.gin"], [0], tmp_path / "sweep", [])
    assert run.resumable
    assert run.command() == [sys.executable, str(REPO / "launch" / "run.py"), f"--resume={run_dir}"]
    assert run.set_aside_unresumable() is None and run_dir.is_dir()


def test_sweep_flags_take_several_values_and_repeat():
    args = sweep.parse_args(["--gin_files", "a.gin", "--seeds", "0", "1", "--root", "r",
                             "--gin_bindings", "A.b = 1", "C.d = 2", "--gin_bindings", "E.f = 3", "--seeds", "2"])
    assert args.seeds == [0, 1, 2] and args.gin_bindings == ["A.b = 1", "C.d = 2", "E.f = 3"]
    assert args.backend == "local" and args.parallel is None and not args.dry_run


class _ScriptedRun(PlannedRun):
    """A planned run whose command is a stand-in script instead of launch/run.py."""

    def command(self, rank: int = 0) -> list[str] | None:
        code = {"ok": 0, "broken": 3}[self.name.split("/")[0]]
        return [sys.executable, "-c", f"import sys; print('noisy {self.name}'); sys.exit({code})"]


def test_local_backend_runs_in_parallel_logs_output_shows_progress_and_lists_failures(tmp_path, capsys):
    runs = [_ScriptedRun(f"{name}/seed0", "unused.gin", 0, tmp_path / name / "seed0") for name in ("ok", "broken")]
    _fake_run(tmp_path / "done" / "seed0", "done", 0, 0.5)
    runs.append(PlannedRun("done/seed0", "unused.gin", 0, tmp_path / "done" / "seed0"))
    failed = run_locally(runs, parallel=2)
    assert [(run.name, reason) for run, reason in failed] == [("broken/seed0", "exit 3")]
    assert (tmp_path / "ok" / "seed0.log").read_text().splitlines() == [
        f"$ {shlex.join(runs[0].command())}", "noisy ok/seed0"]
    printed = capsys.readouterr().out.splitlines()
    assert not any("noisy" in line for line in printed)
    assert "skip   done/seed0: finished (summary.json)" in printed
    assert any(line.startswith("FAILED broken/seed0: exit 3 in") and line.endswith(f"log {runs[1].log}") for line in printed)
    assert any(line.startswith("done   ok/seed0: exit 0 in") for line in printed)
    assert "progress: 1/3 done, 2 running, 0 failed, 0 waiting" in printed
    assert printed[-1] == "progress: 2/3 done, 0 running, 1 failed, 0 waiting"


class _ThreadsRun(PlannedRun):
    """A run that prints the torch threads it was given."""

    def command(self, rank: int = 0) -> list[str] | None:
        return [sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"]


@pytest.mark.parametrize("threads, expected", [(3, "3"), (None, str(max(1, (os.cpu_count() or 1) // 2)))])
def test_each_local_run_gets_the_threads_asked_for_or_its_share_of_the_cores(tmp_path, threads, expected):
    runs = [_ThreadsRun(f"arm/seed{s}", "unused.gin", s, tmp_path / "arm" / f"seed{s}") for s in (0, 1)]
    assert run_locally(runs, parallel=2, threads=threads) == []
    assert [run.log.read_text().splitlines()[-1] for run in runs] == [expected, expected]


_SIGTERM_SWEEP = """
import sys
from pathlib import Path
from picor_gin.sweeps.local import run_locally
from picor_gin.sweeps.plan import PlannedRun

STAND_IN = (  # like launch/run.py: on SIGTERM it checkpoints (here: writes a file) and exits 1
    "import pathlib, signal, sys, time\\n"
    "def stop(*_): pathlib.Path(sys.argv[1]).write_text('checkpointed'); sys.exit(1)\\n"
    "signal.signal(signal.SIGTERM, stop)\\n"
    "print('started', flush=True)\\n"
    "time.sleep(60)\\n")

class SleepingRun(PlannedRun):
    def command(self, rank=0):
        return [sys.executable, "-c", STAND_IN, str(self.run_dir) + ".stopped"]

root = Path(sys.argv[1])
runs = [SleepingRun(f"arm/seed{s}", "unused.gin", s, root / f"seed{s}") for s in range(3)]
try:
    run_locally(runs, parallel=2)
except KeyboardInterrupt:
    print("sweep interrupted", flush=True)
"""


def test_a_sigterm_to_the_local_sweep_reaches_its_runs_and_starts_no_queued_one(tmp_path):
    # `kill`, `timeout` and schedulers signal the sweep's process alone, not its process group
    sweep_process = subprocess.Popen([sys.executable, "-c", _SIGTERM_SWEEP, str(tmp_path)], cwd=REPO,
                                     stdout=subprocess.PIPE, text=True)
    logs = [tmp_path / f"seed{s}.log" for s in range(2)]
    deadline = time.monotonic() + 60
    while not all(log.is_file() and "started" in log.read_text().splitlines() for log in logs):
        assert time.monotonic() < deadline, "the runs never started"
        time.sleep(0.1)
    sweep_process.send_signal(signal.SIGTERM)
    out, _ = sweep_process.communicate(timeout=30)
    assert sorted(path.name for path in tmp_path.glob("*.stopped")) == ["seed0.stopped", "seed1.stopped"]
    assert not (tmp_path / "seed2.log").exists()
    lines = out.splitlines()
    assert lines[-1] == "sweep interrupted"
    assert sum(line.startswith("stop   arm/seed") for line in lines) == 2
    assert not any(line.startswith("FAILED") for line in lines)


@pytest.mark.parametrize("argv, problem", [
    (["--gin_files", "gin_configs/missing.gin"], "gin file not found"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--threads_per_run", "0"], "--threads_per_run must be >= 1"),
    (["--gin_files", "gin_configs/mt10_picor.gin", "gin_configs/smoke/mt10_picor.gin"], "share a name"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--parallel", "0"], "--parallel must be >= 1"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--backend", "slurm", "--time", "3 days"], "--time must look like"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--backend", "slurm", "--gin_bindings", "Trainer.devices = 'auto'"],
     "bind Trainer.devices to a number"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--backend", "slurm", "--gin_bindings", "PolicyCorrection.lamm = 1.0"],
     "doesn't have a parameter named 'lamm'"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--gin_bindings", "PolicyCorrection.lamm = 1.0"],
     "gin_configs/tiny_picor.gin: Configurable 'PolicyCorrection' doesn't have a parameter named 'lamm'"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--gin_bindings", "Experiment.total_env_steps = -5"],
     "gin_configs/tiny_picor.gin: Experiment.total_env_steps must be >= 1, got -5"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--gin_bindings", "Experiment.task_set = @TaskSubset()",
      "TaskSubset.task_set = @PointGoals()", "TaskSubset.tasks = ['goal9']"], "goal9"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--partition", "gpu", "--time", "1:00:00"],
     "--backend local does not use --partition --time"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--backend", "submitit_local", "--parallel", "2"],
     "--backend submitit_local does not use --parallel"),
    (["--gin_files", "gin_configs/tiny_picor.gin", "--backend", "slurm", "--threads_per_run", "2"],
     "--backend slurm does not use --threads_per_run"),
])
def test_sweep_refuses_bad_input_before_running(tmp_path, capsys, argv, problem):
    assert sweep.main([*argv, "--seeds", "0", "--root", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert problem in err and "In call to configurable" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


def test_real_tiny_sweep_then_relaunch_skips_then_report(tmp_path):
    """Two ~15 s runs (warm-up plus 10 updates), sequentially."""
    root = tmp_path / "sweep"
    command = [sys.executable, str(REPO / "launch" / "sweep.py"), "--gin_files", "gin_configs/tiny_mtsac.gin",
               "--seeds", "0", "1", "--root", str(root), "--parallel", "1",
               "--gin_bindings", "Experiment.total_env_steps = 1010"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()  # per run: start, progress, end, progress; no progress bars
    assert len(lines) == 8 and lines[-1] == "progress: 2/2 done, 0 running, 0 failed, 0 waiting"
    for seed in (0, 1):
        run_dir = root / "tiny_mtsac" / f"seed{seed}"
        assert f"Experiment.seed = {seed}\n" in (run_dir / "config.gin").read_text()
        assert json.loads((run_dir / "summary.json").read_text())["total_env_steps"] == 1010
        assert "run folder:" in (root / "tiny_mtsac" / f"seed{seed}.log").read_text()

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.splitlines() == [
        "skip   tiny_mtsac/seed0: finished (summary.json)", "skip   tiny_mtsac/seed1: finished (summary.json)",
    ]
    _, rows = build_report([root], reps=100)
    assert [(row.experiment, row.seeds) for row in rows] == [("tiny_mtsac", 2)]


def test_paper_table_has_the_papers_columns_numbers_beside_ours_and_not_run_cells(tmp_path, capsys):
    root = tmp_path / "table1_mt10"
    for stem, successes in (("mt10_picor", [0.6, 0.8, 0.7]), ("mt10_mtsac", [0.2, 0.3])):
        for seed, success in enumerate(successes):
            _fake_run(root / stem / f"seed{seed}", stem, seed, 0.0)
            summary = json.loads((root / stem / f"seed{seed}" / "summary.json").read_text())
            (root / stem / f"seed{seed}" / "summary.json").write_text(json.dumps({**summary, "mean_success": success}))
    table, rows = paper_table(root, "table1", "mt10", reps=200)
    lines = table.splitlines()
    assert lines[0].startswith("Table 1 (methods) on mt10: final `mean_success` in %")
    assert lines[2] == "| | PiCor | MTSAC | MTMHSAC | Soft Modularization | KTM-DRL | PCGrad |"
    assert lines[4] == "| paper | 73.3% | 23.3% | 46.0% | 46.6% | 66.6% | 63.3% |"
    assert lines[5].startswith("| ours | 70.0% ± 8.2% | 25.0% ± 5.0% | not run | not run | not run | not run |")
    assert lines[7] == "| seeds | 3 | 2 | 0 | 0 | 0 | 0 |"
    assert rows[0].iqm == pytest.approx(0.7) and rows[4] is None  # KTM-DRL: no gin file, never run

    assert report.main([str(root), "--table", "table1", "--benchmark", "mt10", "--reps", "200"]) == 0
    assert capsys.readouterr().out.splitlines()[4] == lines[4]


def test_reproduce_builds_the_grid_from_the_shipped_gin_files_with_scaled_budgets(tmp_path, capsys):
    assert reproduce.parse_args(["table2", "--benchmark", "tiny", "--seeds", "0", "--scale", "0.1"]).root == \
        Path("runs/reproduce/table2_tiny_scale0.1")  # never the full grid's root
    assert reproduce.parse_args(["table2", "--benchmark", "tiny", "--seeds", "0"]).root == Path("runs/reproduce/table2_tiny")
    runs = reproduce.grid("table1", "tiny", [0, 1], tmp_path, ["PolicyCorrection.lam = 3.0"], scale=0.1)
    assert [run.name for run in runs[::2]] == [
        "tiny_picor/seed0", "tiny_mtsac/seed0", "tiny_mtmhsac/seed0", "tiny_soft_modular/seed0", "tiny_mtsac_pcgrad/seed0"]
    assert "skip   KTM-DRL: not in this grid" in capsys.readouterr().out
    assert runs[0].bindings == ("PolicyCorrection.lam = 3.0", "Experiment.total_env_steps = 500", "Experiment.eval_every_env_steps = 100",
                                "Experiment.checkpoint_every_env_steps = 400", "MultiTaskData.warmup_env_steps_per_task = 25")
    # A budget the user bound stays as bound; the scaled evaluations are at most 20 per run.
    own = reproduce.grid("table1", "mt10", [0], tmp_path, ["Experiment.eval_every_env_steps = 2_500"], scale=0.01)[0]
    assert own.bindings == ("Experiment.eval_every_env_steps = 2_500", "Experiment.total_env_steps = 50000",
                            "Experiment.checkpoint_every_env_steps = 1000", "MultiTaskData.warmup_env_steps_per_task = 15")
    few = reproduce.grid("table1", "mt10", [0], tmp_path, [], scale=0.01)[0]
    assert "Experiment.eval_every_env_steps = 2500" in few.bindings  # 50,000 / 20, not the file's 50,000 x 0.01
    ablation = reproduce.grid("table2", "halfcheetah", [3], tmp_path, [], scale=1)
    assert [(run.gin_file, run.bindings) for run in ablation] == [
        (f"gin_configs/ablation/halfcheetah_{cell}.gin", ()) for cell in ("adaO_corO", "adaX_corO", "adaO_corX", "adaX_corX")]


def test_report_reach_tables_env_steps_to_a_threshold_over_the_seeds_that_reached_it(runs_root, capsys):
    # Evaluations at 1k (half the final score) and 2k env steps; threshold 0.45.
    table, rows = build_report([runs_root], reps=200, reach=0.45)
    assert "| tiny_mtsac | 2/4 | 1,500 ± 500 |" in table  # seed 2 at 2k (0.5), seed 3 at 1k (0.45)
    assert "| tiny_picor | 3/8 | 1,667 ± 471 |" in table  # 0.5 and 0.6 at 2k, 5.0 already at 1k
    assert [row.seeds for row in rows] == [2, 3] and rows[0].mean == pytest.approx(1_500)
    assert "| tiny_mtsac | 0/4 | - | - |" in build_report([runs_root], reps=200, reach=2.0)[0]
    assert report.main([str(runs_root), "--reach", "0.45", "--reps", "200"]) == 0
    assert "Env steps to the first evaluation with `mean_score` >= 0.45" in capsys.readouterr().out


def test_each_task_plans_one_arm_per_task_of_the_subsets_source_and_refuses_a_file_without_one(tmp_path, capsys):
    from picor_gin.sweeps.plan import plan

    runs = plan(["gin_configs/tiny_ktm_teacher.gin"], [0, 1], tmp_path, ["PointGoals.step_size = 0.2"], each_task=True)
    assert [run.name for run in runs[:3]] == ["tiny_ktm_teacher_goal0/seed0", "tiny_ktm_teacher_goal0/seed1",
                                              "tiny_ktm_teacher_goal1/seed0"]
    assert len(runs) == 8 and runs[-1].run_dir == tmp_path / "tiny_ktm_teacher_goal3" / "seed1"
    assert runs[-1].bindings == ("PointGoals.step_size = 0.2", "TaskSubset.tasks = ['goal3']")
    code = sweep.main(["--gin_files", "gin_configs/tiny_mtsac.gin", "--each_task", "--seeds", "0", "--root", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "error: gin_configs/tiny_mtsac.gin binds no TaskSubset.task_set, so it has no tasks to sweep one by one"
    )


def test_the_sweep_and_the_cli_find_the_repositorys_entry_point_and_gin_files():
    """Both locate the repository from their own file: a module moved a level deeper must not lose it."""
    from picor_gin.run import cli
    from picor_gin.sweeps import plan

    assert plan.RUN_PY == REPO / "launch" / "run.py" and plan.RUN_PY.is_file()
    assert cli.CONFIG_ROOT == REPO and (cli.CONFIG_ROOT / "gin_configs" / "tiny_picor.gin").is_file()


def test_sweep_refuses_a_gin_file_whose_include_is_missing_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.gin"
    bad.write_text("include 'gin_configs/nope.gin'\n")
    assert sweep.main(["--gin_files", str(bad), "--seeds", "0", "--root", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ") and "nope.gin" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


# Operative-config excerpts (as gin.operative_config_str() writes them) of PiCor and of its Cor X
# made on the command line: the same Experiment.name, different experiments.
PICOR = """
Experiment.task_set = @PointGoals()

# Parameters for MultiTaskLearner:
# ==============================================================================
MultiTaskLearner.backbone = @SAC
MultiTaskLearner.correction = @PolicyCorrection

# Parameters for PolicyCorrection:
# ==============================================================================
PolicyCorrection.lam = 1.0
"""
COR_X = """
Experiment.task_set = @PointGoals()
MultiTaskLearner.backbone = @SAC
MultiTaskLearner.correction = None
"""


def test_report_splits_runs_of_one_name_by_config_and_labels_each_by_the_binding_that_differs(tmp_path):
    root = tmp_path / "sweep"
    for seed, score in enumerate([0.2, 0.4]):
        _fake_run(root / "tiny_picor" / f"seed{seed}", "tiny_picor", seed, score, config=PICOR)
    for seed, score in enumerate([0.6, 0.9, 0.3]):
        _fake_run(root / "tiny_picor_corx" / f"seed{seed}", "tiny_picor", seed, score, config=COR_X)
    _, rows = build_report([root], reps=100)
    # PolicyCorrection.lam only follows from the correction: the label names the binding behind it.
    assert [(row.experiment, row.seeds) for row in rows] == [
        ("tiny_picor [MultiTaskLearner.correction = @PolicyCorrection]", 2),
        ("tiny_picor [MultiTaskLearner.correction = None]", 3),
    ]
    assert rows[0].mean == pytest.approx(0.3) and rows[1].mean == pytest.approx(0.6)


def test_report_reads_values_spanning_lines_and_ignores_only_the_seed(tmp_path, capsys):
    root = tmp_path / "sweep"
    one_line = "TaskSubset.tasks = ['goal0', 'goal1']\nExperiment.total_env_steps = 5000\n"
    _fake_run(root / "a" / "seed0", "tiny_mtsac", 0, 0.2, config=one_line)
    _fake_run(root / "a" / "seed1", "tiny_mtsac", 1, 0.4,
              config="TaskSubset.tasks = [\n    'goal0',\n    'goal1',\n]\nExperiment.total_env_steps = 5000\n")
    # Same first line as seed1's list, another task: a line-by-line reading would pool it.
    _fake_run(root / "b" / "seed0", "tiny_mtsac", 0, 0.9,
              config="TaskSubset.tasks = [\n    'goal0',\n    'goal2',\n]\nExperiment.total_env_steps = 5000\n")
    _fake_run(root / "c" / "seed0", "tiny_mtsac", 0, 0.7, config=one_line.replace("5000", "500"))  # reproduce --scale 0.1
    assert report.main([str(root), "--reps", "100"]) == 0
    table = capsys.readouterr().out.split("\n\n")[1]  # the rows, without the caption and the notes
    rows = [line.split(" | ")[:2] for line in table.splitlines()[2:]]
    assert rows == [  # every arm names its value of each binding that differs between them
        ["| tiny_mtsac [Experiment.total_env_steps = 500, TaskSubset.tasks = ['goal0', 'goal1']]", "1"],
        ["| tiny_mtsac [Experiment.total_env_steps = 5000, TaskSubset.tasks = ['goal0', 'goal1']]", "2"],
        ["| tiny_mtsac [Experiment.total_env_steps = 5000, TaskSubset.tasks = ['goal0', 'goal2']]", "1"],
    ]
    (root / "a" / "seed1" / "config.gin").write_text("Experiment.name = \n")
    with pytest.raises(ReportError, match=f"^{root / 'a' / 'seed1' / 'config.gin'}: not a gin config"):
        build_report([root])


def test_report_refuses_two_runs_of_one_arm_with_one_seed_naming_both(runs_root, tmp_path, capsys):
    copy = tmp_path / "copied" / "seed0"
    shutil.copytree(runs_root / "tiny_mtsac" / "seed0", copy)
    assert report.main([str(runs_root), str(copy), "--reps", "100"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("error: ") and str(copy) in error and str(runs_root / "tiny_mtsac" / "seed0") in error
    with pytest.raises(ReportError, match="both seed 0 of one arm"):
        build_report([runs_root / "tiny_mtsac", copy])


def test_report_skips_logs_and_set_aside_folders_and_names_unfinished_runs_on_stderr(runs_root, capsys):
    arm = runs_root / "tiny_mtsac"
    (arm / "seed0.log").write_text("$ launch/run.py\n")
    # Set aside by the sweep (a run restarted afresh, a DDP rank's scratch folder): seeds 1 and 0
    # again, which would be refused as repeated seeds, or pooled, if they were read.
    _fake_run(arm / "seed1.stale1", "tiny_mtsac", 1, 100.0)
    _fake_run(arm / "seed0.rank1", "tiny_mtsac", 0, 100.0)
    assert report.main([*map(str, sorted(arm.glob("seed*"))), "--reps", "100"]) == 0  # the shell's seed*
    out, err = capsys.readouterr()
    assert "| tiny_mtsac | 4 | 0.475 ± 0.286 |" in out and err == ""
    assert report.main([str(runs_root), "--reps", "100"]) == 0
    unfinished = runs_root / "tiny_picor" / "seed99"
    assert capsys.readouterr().err == f"skipped 1 unfinished run(s) (no summary.json): {unfinished}\n"


def test_paper_table_refuses_a_cell_whose_runs_are_two_configs(tmp_path):
    cell = tmp_path / "table2_tiny" / "tiny_adaO_corO"
    _fake_run(cell / "seed0", "tiny_adaO_corO", 0, 0.5, config="Experiment.total_env_steps = 500\n")
    _fake_run(cell / "seed1", "tiny_adaO_corO", 1, 0.5, config="Experiment.total_env_steps = 5000\n")
    with pytest.raises(ReportError, match=f"^{cell} holds 2 configs, not one: ") as error:
        paper_table(tmp_path / "table2_tiny", "table2", "tiny", reps=100)
    assert set(str(error.value).split(": ", 1)[1].split("; ")) == {
        f"tiny_adaO_corO [Experiment.total_env_steps = {steps}]" for steps in (500, 5000)}


def test_committed_result_folders_still_report_one_arm_per_folder():
    """results/ holds config.gin files of older commits: each arm folder must stay one arm."""
    run_dirs = find_runs([REPO / "results"])
    arms = group_by_arm(run_dirs)
    assert run_dirs and sum(map(len, arms.values())) == len(run_dirs)
    assert all(len({run_dir.parent for run_dir in members}) == 1 for members in arms.values())
    assert len(arms) == len({run_dir.parent for run_dir in run_dirs})
