"""launch/plot.py reads run folders' own logs and writes PNG figures of the stated size."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from picor_gin.reports import plots
from tests.conftest import REPO, load_launch_script


def _fake_run(run_dir, name: str, seed: int, finished: bool = True, config: str = "",
              weights: tuple[tuple[float, float], ...] = ((0.6, 0.6), (0.4, 0.4)),
              temperatures: tuple[tuple[float, float], ...] = ((0.1, 0.2), (0.01, 0.02)),
              critic: tuple[tuple[float, float], tuple[float, float]] | None = ((10.0, 30.0), (5.0, 1.0))) -> None:
    """A run folder as launch/run.py writes it: config.gin (plus `config`), eval.jsonl, TensorBoard
    weights, temperatures and entropies (tasks a and b, two steps each), the critic's Q and loss
    unless `critic` is None, summary.json if finished."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.gin").write_text(f"Experiment.name = '{name}'\nExperiment.seed = {seed}\n{config}")
    rows = []
    for step in (1_000, 2_000, 3_000):
        tasks = {t: {"return": -step / 1e3, "success": None, "score": step / 3e3 - 0.1 * seed} for t in ("a", "b")}
        rows.append({"env_steps": step, "tasks": tasks, "mean_return": -step / 1e3, "mean_success": None,
                     "mean_score": step / 3e3 - 0.1 * seed})
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    writer = SummaryWriter(str(run_dir))
    entropies = ((-1.0, -2.0), (-1.0, -2.0))
    for prefix, per_task in (("train/weight/", weights), ("train/alpha/", temperatures), ("train/entropy/", entropies)):
        for task, values in zip(("a", "b"), per_task):
            for step, value in zip((1_100, 2_100), values):
                writer.add_scalar(prefix + task, value, step)
    for tag, values in zip(("train/q", "train/loss_critic", "train/q/a"), (*critic, critic[0]) if critic else ()):
        for step, value in zip((1_100, 2_100), values):
            writer.add_scalar(tag, value, step)
    writer.close()
    if finished:
        (run_dir / "summary.json").write_text(json.dumps(rows[-1]) + "\n")


plot = load_launch_script("plot")


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """File name -> (legend texts of the first axes, y-axis offset text of every axes), as drawn."""
    figures = {}
    save = plots._save

    def record(fig, path, bottom=0.0):
        fig.canvas.draw()
        legend = fig.axes[0].get_legend() or (fig.legends[0] if fig.legends else None)
        figures[path.name] = ([" ".join(t.get_text().split()) for t in legend.get_texts()] if legend else [],
                              [ax.yaxis.get_offset_text().get_text() for ax in fig.axes if ax.has_data()])
        return save(fig, path, bottom)

    monkeypatch.setattr(plots, "_save", record)
    return figures


@pytest.fixture
def curves(monkeypatch) -> dict:
    """File name -> {label: (x, y)} of the lines of the first axes, as drawn."""
    figures = {}
    save = plots._save

    def record(fig, path, bottom=0.0):
        figures[path.name] = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                              for line in fig.axes[0].get_lines()}
        return save(fig, path, bottom)

    monkeypatch.setattr(plots, "_save", record)
    return figures


def test_each_curve_is_its_arms_mean_over_seeds(tmp_path, curves):
    # Seed s scores step / 3000 - 0.1 s: PiCor's seeds 0 and 1 average to step / 3000 - 0.05,
    # MTSAC's one seed is step / 3000; task "a" of the per-task grid scores the same.
    for seed in (0, 1):
        _fake_run(tmp_path / "runs" / f"picor-s{seed}", "tiny_picor", seed)
    _fake_run(tmp_path / "runs" / "mtsac-s0", "tiny_mtsac", 0)
    assert plot.main([str(tmp_path / "runs"), f"--out={tmp_path / 'plots'}"]) == 0
    steps = [1_000, 2_000, 3_000]
    for name in ("mean_score.png", "per_task_score.png"):
        lines = curves[name]
        assert lines["tiny_picor (n=2)"] == (steps, pytest.approx([1 / 3 - 0.05, 2 / 3 - 0.05, 0.95]))
        assert lines["tiny_mtsac (n=1)"] == (steps, pytest.approx([1 / 3, 2 / 3, 1.0]))


def test_a_shorter_run_counts_only_where_its_evaluations_reach(tmp_path, curves):
    # Seed 1 stops after its 2,000-step evaluation (scores 1/3 - 0.1, 2/3 - 0.1): at 3,000 the
    # band is seed 0's 1.0 alone, not a mean with seed 1 held at its last value (0.95 - 0.05 / 2).
    for seed in (0, 1):
        _fake_run(tmp_path / "runs" / f"s{seed}", "tiny_picor", seed)
    eval_file = tmp_path / "runs" / "s1" / "eval.jsonl"
    eval_file.write_text("".join(eval_file.read_text().splitlines(keepends=True)[:2]))
    assert plot.main([str(tmp_path / "runs"), f"--out={tmp_path / 'plots'}"]) == 0
    assert curves["mean_score.png"]["tiny_picor (n=2)"] == ([1_000, 2_000, 3_000],
                                                           pytest.approx([1 / 3 - 0.05, 2 / 3 - 0.05, 1.0]))


def test_temperatures_are_drawn_per_task_as_the_geometric_mean_over_seeds_on_a_log_axis(tmp_path, curves, monkeypatch):
    y_scales, save = {}, plots._save

    def record_y_scale(fig, path, bottom=0.0):
        y_scales[path.name] = fig.axes[0].get_yscale()
        return save(fig, path, bottom)

    monkeypatch.setattr(plots, "_save", record_y_scale)
    _fake_run(tmp_path / "s0", "tiny_picor", 0, temperatures=((0.1, 0.2), (0.01, 0.02)))
    _fake_run(tmp_path / "s1", "tiny_picor", 1, temperatures=((0.3, 0.4), (0.03, 0.04)))
    assert plot.main([str(tmp_path), f"--out={tmp_path / 'plots'}"]) == 0
    lines = curves["task_temperatures.png"]  # geometric means: a band on a log axis stays positive
    assert lines["a (n=2)"] == ([1_100, 2_100], pytest.approx([(0.1 * 0.3) ** 0.5, (0.2 * 0.4) ** 0.5]))
    assert lines["b (n=2)"] == ([1_100, 2_100], pytest.approx([(0.01 * 0.03) ** 0.5, (0.02 * 0.04) ** 0.5]))
    assert y_scales["task_temperatures.png"] == "log" and y_scales["task_weights.png"] == "linear"


def test_the_critic_is_drawn_per_run_in_its_arms_colour_and_runs_without_it_are_left_out(tmp_path, monkeypatch):
    lines, save = {}, plots._save

    def record(fig, path, bottom=0.0):
        if path.name == "critic.png":
            for ax, key in zip(fig.axes, ("q", "loss_critic")):
                lines[key] = [(line.get_color(), list(line.get_ydata())) for line in ax.get_lines()]
            lines["loss_scale"] = fig.axes[1].get_yscale()
        if path.name == "mean_score.png":
            lines["arms"] = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
        return save(fig, path, bottom)

    monkeypatch.setattr(plots, "_save", record)
    _fake_run(tmp_path / "picor-s0", "tiny_picor", 0, critic=((10.0, 30.0), (5.0, 1.0)))
    _fake_run(tmp_path / "picor-s1", "tiny_picor", 1, critic=((20.0, 2_000.0), (50.0, 900.0)))  # diverges
    _fake_run(tmp_path / "ppo-s0", "tiny_mtppo", 0, critic=None)  # logs no Q, and is the first arm
    assert plot.main([str(tmp_path), f"--out={tmp_path / 'plots'}"]) == 0
    # Each run its own line (the first and last of 40 spans hold one logged value each), not the mean over seeds.
    assert [values for _, values in lines["q"]] == [[10.0, 30.0], [20.0, 2_000.0]]
    assert [values for _, values in lines["loss_critic"]] == [[5.0, 1.0], [50.0, 900.0]]
    assert {colour for colour, _ in lines["q"]} == {lines["arms"]["tiny_picor (n=2)"]}  # its colour in every figure
    assert lines["loss_scale"] == "log"


def test_critic_values_are_averaged_over_equal_spans_of_env_steps():
    steps = np.arange(100)  # 4 spans: [0, 24.75), [24.75, 49.5), [49.5, 74.25), [74.25, 99], the last closed
    centres, means = plots._window_means(steps, steps * 2.0, windows=4)
    assert centres.tolist() == pytest.approx([12.375, 37.125, 61.875, 86.625])
    assert means.tolist() == pytest.approx([24.0, 74.0, 124.0, 174.0])  # twice the mean of 0-24, 25-49, ...
    centres, means = plots._window_means(np.array([0, 1, 99]), np.array([1.0, 3.0, 5.0]), windows=4)
    assert means.tolist() == [2.0, 5.0] and len(centres) == 2  # empty spans are left out


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
    assert sorted(p.name for p in out.iterdir()) == ["critic.png", "forgetting.png", "mean_score.png", "per_task_score.png",
                                                     "task_temperatures.png", "task_weights.png"]
    assert _png_size(out / "mean_score.png") == (800, 500)
    assert _png_size(out / "per_task_score.png") == (800, 300)  # 2 tasks x (4 x 3 inches) at 100 dpi
    assert _png_size(out / "task_weights.png") == (1600, 500)  # one panel per experiment
    assert _png_size(out / "critic.png") == (1600, 500)  # Q and loss side by side
    assert _png_size(out / "forgetting.png") == (800, 500)  # from rows without the key, as older runs wrote them
    assert all((out / name).stat().st_size > 10_000 for name in ("mean_score.png", "task_weights.png", "forgetting.png"))


def test_plot_refuses_a_run_without_evaluations_and_paths_without_runs(tmp_path, capsys):
    _fake_run(tmp_path / "runs" / "seed0", "tiny_picor", 0)
    (tmp_path / "runs" / "seed0" / "eval.jsonl").unlink()
    assert plot.main([str(tmp_path / "runs"), f"--out={tmp_path / 'plots'}"]) == 2
    assert capsys.readouterr().err == f"error: no eval.jsonl in {tmp_path / 'runs' / 'seed0'}\n"
    (tmp_path / "empty").mkdir()
    assert plot.main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"error: no run folder (with summary.json) below {tmp_path / 'empty'}\n"
    assert not (tmp_path / "plots").exists()


def test_plot_takes_roots_and_globs_as_report_does_one_curve_per_arm(tmp_path, capsys, drawn):
    root, picor = tmp_path / "sweep", "MultiTaskLearner.correction = @PolicyCorrection\n"
    for seed in (0, 1):
        _fake_run(root / "tiny_picor" / f"seed{seed}", "tiny_picor", seed, config=picor)
        (root / "tiny_picor" / f"seed{seed}.log").write_text("$ launch/run.py\n")
    _fake_run(root / "tiny_picor" / "seed0.stale1", "tiny_picor", 0, config=picor)  # set aside by the sweep
    _fake_run(root / "tiny_picor" / "seed2", "tiny_picor", 2, finished=False, config=picor)  # still running
    _fake_run(root / "tiny_picor_corx" / "seed0", "tiny_picor", 0, config="MultiTaskLearner.correction = None\n")

    assert plot.main([*map(str, sorted(root.glob("*/seed*"))), f"--out={tmp_path / 'globbed'}"]) == 0
    assert capsys.readouterr().err == f"skipped 1 unfinished run(s) (no summary.json): {root / 'tiny_picor' / 'seed2'}\n"
    globbed = dict(drawn)
    assert globbed["mean_score.png"][0] == ["tiny_picor [MultiTaskLearner.correction = @PolicyCorrection] (n=2)",
                                            "tiny_picor [MultiTaskLearner.correction = None] (n=1)"]
    drawn.clear()
    assert plot.main([str(root), f"--out={tmp_path / 'rooted'}"]) == 0
    assert drawn == globbed
    assert sorted(p.name for p in (tmp_path / "rooted").iterdir()) == sorted(globbed)


def test_long_arm_labels_are_wrapped_and_their_legends_stay_inside_the_figure(tmp_path, monkeypatch):
    """Labels that name several telling bindings would run off the figure or over the curves."""
    laid_out = {}
    save = plots._save

    def record(fig, path, bottom=0.0):
        written = save(fig, path, bottom)
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends
        laid_out[path.name] = [(legend.get_window_extent(), [t.get_text() for t in legend.get_texts()])
                               for legend in legends], fig.bbox, [ax.get_window_extent() for ax in fig.axes if ax.has_data()]
        return written

    monkeypatch.setattr(plots, "_save", record)
    for arm, (lam, tau) in enumerate(((10.0, 0.5), (1.0, 2.0))):
        for seed in (0, 1):
            _fake_run(tmp_path / f"arm{arm}" / f"seed{seed}", "tiny_picor", seed,
                      config=f"PolicyCorrection.lam = {lam}\nSoftmaxAlphaWeights.tau = {tau}\nMultiTaskData.sampler = @RoundRobin\n")
    assert plot.main([str(tmp_path), f"--out={tmp_path / 'plots'}"]) == 0
    for name in ("mean_score.png", "per_task_score.png", "forgetting.png", "critic.png"):
        legends, figure, panels = laid_out[name]
        assert legends, name
        for box, texts in legends:
            assert all(len(line) <= plots.LEGEND_WIDTH for text in texts for line in text.splitlines()), name
            assert figure.x0 <= box.x0 and box.x1 <= figure.x1 and figure.y0 <= box.y0 and box.y1 <= figure.y1, name
            assert not any(box.overlaps(panel) for panel in panels), name  # over no curve


def test_plot_axes_show_the_values_themselves_without_an_offset(tmp_path, drawn):
    """Eq. 9's weights stay near 1/Z: matplotlib would write them as '+2.5e-1' over ticks of 1e-5."""
    _fake_run(tmp_path / "seed0", "tiny_picor", 0, weights=((0.25, 0.25002), (0.25001, 0.25003)))
    assert plot.main([str(tmp_path), f"--out={tmp_path / 'plots'}"]) == 0
    assert drawn.keys() == {"mean_score.png", "per_task_score.png", "forgetting.png", "task_weights.png",
                            "task_temperatures.png", "critic.png"}
    for name, (_, offsets) in drawn.items():
        assert offsets and offsets == [""] * len(offsets), name


def test_scalars_of_a_resumed_run_follow_the_resumed_attempt_without_a_warning(tmp_path, caplog):
    from picor_gin.reports.collect import read_scalars

    # The first attempt logs steps 1-4 and dies; the second resumes from its checkpoint at step 2
    # and, as a resumed run's logger does (Experiment.build), purges from step 3 on.
    for value, steps, purge in ((1.0, (1, 2, 3, 4), None), (2.0, (3, 4, 5), 3)):
        writer = SummaryWriter(str(tmp_path), purge_step=purge)
        for step in steps:
            writer.add_scalar("train/alpha/a", value, step)
        writer.close()
    steps, values = read_scalars(tmp_path, "train/alpha/")["a"]
    assert steps.tolist() == [1, 2, 3, 4, 5] and values.tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
    assert not [record for record in caplog.records if "out of order" in record.getMessage()]


def test_collect_keeps_only_the_small_files_and_the_weights_and_they_plot_alike(tmp_path):
    from picor_gin.reports.collect import collect, read_scalars

    runs_root = tmp_path / "runs"
    _fake_run(runs_root / "tiny_picor" / "seed0", "tiny_picor", 0)
    _fake_run(runs_root / "tiny_picor" / "seed1", "tiny_picor", 1, finished=False)
    _fake_run(runs_root / "tiny_picor" / "seed2.discarded", "tiny_picor", 2)  # set aside by hand: not a result
    written = collect(runs_root, tmp_path / "results")
    assert written == [tmp_path / "results" / "tiny_picor" / "seed0"]
    assert sorted(p.name for p in written[0].iterdir()) == ["config.gin", "eval.jsonl", "scalars.json", "summary.json"]
    assert sorted(json.loads((written[0] / "scalars.json").read_text())) == sorted(
        ["train/q", "train/q/a", "train/loss_critic"]
        + [f"train/{stat}/{task}" for stat in ("alpha", "entropy", "weight") for task in ("a", "b")])
    kept, logged = read_scalars(written[0], "train/weight/"), read_scalars(runs_root / "tiny_picor" / "seed0", "train/weight/")
    assert kept.keys() == logged.keys() == {"a", "b"}
    for task in kept:
        assert kept[task][0].tolist() == logged[task][0].tolist() == [1_100, 2_100]
        expected = 0.6 if task == "a" else 0.4
        assert kept[task][1].tolist() == pytest.approx([expected] * 2) == logged[task][1].tolist()
