"""Figures from run folders' own logs: learning curves with a band over seeds (the paper's
Figure 2 style), per-task curves, forgetting, and the adaptive weights w_z over time (Figure 4 style)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from picor_gin.reports.collect import read_scalars  # noqa: E402
from picor_gin.reports.runs import group_by_arm  # noqa: E402
from picor_gin.run.evaluation import headline_metric  # noqa: E402
from picor_gin.run.forgetting import forgetting_history, mean_over_tasks  # noqa: E402

FIGURE_SIZE = (8.0, 5.0)  # inches
DPI = 100  # so every figure is 800 x 500 pixels, per-task grids aside


def read_evaluations(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines() if line]


def _band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation over seeds on the union of their env-step grids."""
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    values = np.stack([np.interp(grid, steps, ys) for steps, ys in curves])
    return grid, values.mean(0), values.std(0)


def _plot_band(ax, curves, label: str) -> None:
    grid, mean, std = _band(curves)
    ax.plot(grid, mean, label=f"{label} (n={len(curves)})")
    ax.fill_between(grid, mean - std, mean + std, alpha=0.25)
    # Values as they are: an offset ("+2.5e-1" over ticks like 0.00008) hides what w_z is.
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def plot_runs(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Writes the figures for `run_dirs` into `out_dir`, one curve per arm (runs/group_by_arm);
    returns their paths."""
    runs = {label: [(run_dir, read_evaluations(run_dir)) for run_dir in arm_runs]
            for label, arm_runs in group_by_arm(run_dirs).items()}
    metric = headline_metric(next(iter(runs.values()))[0][1][-1])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    for name, members in runs.items():
        _plot_band(ax, [(np.array([r["env_steps"] for r in rows]), np.array([r[f"mean_{metric}"] for r in rows]))
                        for _, rows in members], name)
    ax.set(xlabel="environment steps", ylabel=f"mean {metric} over tasks", title=f"mean {metric} (band: ±1 std over seeds)")
    ax.legend()
    written.append(_save(fig, out_dir / f"mean_{metric}.png"))

    tasks = list(next(iter(runs.values()))[0][1][0]["tasks"])
    columns = min(4, len(tasks))
    rows_count = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows_count, columns, figsize=(4 * columns, 3 * rows_count), dpi=DPI, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for name, members in runs.items():
            _plot_band(ax, [(np.array([r["env_steps"] for r in rows]), np.array([r["tasks"][task][metric] for r in rows]))
                            for _, rows in members], name)
        ax.set(title=task, xlabel="environment steps", ylabel=metric)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    written.append(_save(fig, out_dir / f"per_task_{metric}.png"))

    # Rebuilt from the scores rather than read from "mean_forgetting", so run folders older than that key plot too.
    fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    for name, members in runs.items():
        _plot_band(ax, [(np.array([r["env_steps"] for r in rows]),
                         np.array([mean_over_tasks(f) for f in forgetting_history(rows)[0]])) for _, rows in members], name)
    ax.set(xlabel="environment steps", ylabel=f"mean forgetting over tasks ({metric})",
           title=f"forgetting: drop below each task's best {metric} so far (band: ±1 std over seeds)")
    ax.legend()
    written.append(_save(fig, out_dir / "forgetting.png"))

    weights = {name: [read_scalars(run_dir, "train/weight/") for run_dir, _ in members] for name, members in runs.items()}
    weights = {name: per_run for name, per_run in weights.items() if all(per_run)}
    if weights:
        fig, axes = plt.subplots(1, len(weights), figsize=(FIGURE_SIZE[0] * len(weights), FIGURE_SIZE[1]), dpi=DPI, squeeze=False)
        for ax, (name, per_run) in zip(axes.flat, weights.items()):
            for task in per_run[0]:
                _plot_band(ax, [run[task] for run in per_run], task)
            ax.set(title=f"{name}: task weights w_z", xlabel="environment steps", ylabel="w_z")
            ax.legend(fontsize="small")
        written.append(_save(fig, out_dir / "task_weights.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
