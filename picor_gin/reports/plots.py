"""Figures from run folders' own logs: learning curves with a band over seeds (the paper's
Figure 2 style), per-task curves, forgetting, the adaptive weights w_z over time (Figure 4 style),
the SAC temperatures they are computed from, and the critic's Q and loss per run."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from picor_gin.reports.collect import read_scalars  # noqa: E402
from picor_gin.reports.runs import group_by_arm  # noqa: E402
from picor_gin.run.evaluation import headline_metric  # noqa: E402
from picor_gin.run.forgetting import forgetting_history, mean_over_tasks  # noqa: E402

FIGURE_SIZE = (8.0, 5.0)  # inches
DPI = 100  # so every figure is 800 x 500 pixels, per-task grids aside
Series = dict[str, tuple[np.ndarray, np.ndarray]]  # a run's scalars: tag -> (env steps, values), as read_scalars gives
LEGEND_WIDTH = 48  # characters per legend line: an arm's label names its telling bindings and can run long
CRITIC_WINDOWS = 40  # the critic's scalars come from one batch per logged update: averaged over this many spans


def read_evaluations(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines() if line]


def _band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation over seeds on the union of their env-step grids; at each step
    only over the runs whose evaluations span it, so a shorter run is not held at its last value."""
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    values = np.stack([np.where((grid >= steps[0]) & (grid <= steps[-1]), np.interp(grid, steps, ys), np.nan)
                       for steps, ys in curves])
    return grid, np.nanmean(values, 0), np.nanstd(values, 0)


# Env steps in thousands: a 4-wide grid of MT10 panels ran "75000100000" together.
STEPS_IN_THOUSANDS = FuncFormatter(lambda steps, _: f"{steps / 1000:g}k" if steps else "0")


def _plot_band(ax, curves, label: str, log: bool = False) -> None:
    """The mean over seeds with a ±1 std band; with `log`, both in log space on a log axis (the
    geometric mean, a band that stays positive), for values that span decades."""
    grid, mean, std = _band([(steps, np.log(ys) if log else ys) for steps, ys in curves])
    low, centre, high = (np.exp(v) if log else v for v in (mean - std, mean, mean + std))
    ax.plot(grid, centre, label=f"{label} (n={len(curves)})")
    ax.fill_between(grid, low, high, alpha=0.25)
    ax.xaxis.set_major_formatter(STEPS_IN_THOUSANDS)
    if log:
        ax.set_yscale("log")
    else:  # values as they are: an offset ("+2.5e-1" over ticks like 0.00008) hides what w_z is
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")


def _wrapped_legend_entries(ax) -> tuple[list, list[str]]:
    """The axes' legend handles and labels, each label wrapped to LEGEND_WIDTH at its spaces."""
    handles, labels = ax.get_legend_handles_labels()
    return handles, [textwrap.fill(label, LEGEND_WIDTH, subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False) for label in labels]


def _legend(ax, fontsize: str = "medium") -> None:
    """The axes' legend, labels wrapped; with a wrapped label, below the axes rather than over the
    curves (tight_layout then shrinks the axes to keep it in the figure)."""
    handles, labels = _wrapped_legend_entries(ax)
    if any("\n" in label for label in labels):
        ax.legend(handles, labels, fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    else:
        ax.legend(handles, labels, fontsize=fontsize)


def _grid_legend(fig, ax, fontsize: str = "small") -> float:
    """One legend for a grid of panels, from `ax`'s curves, under the whole grid (in a panel it
    would cover the next row); returns the share of the figure's height it takes, for _save."""
    handles, labels = _wrapped_legend_entries(ax)
    legend = fig.legend(handles, labels, fontsize=fontsize, loc="lower center", ncols=min(2, len(labels)))
    fig.canvas.draw()
    return legend.get_window_extent().height / fig.bbox.height


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
    _legend(ax)
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
    written.append(_save(fig, out_dir / f"per_task_{metric}.png", _grid_legend(fig, axes.flat[0])))

    # Rebuilt from the scores rather than read from "mean_forgetting", so run folders older than that key plot too.
    fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    for name, members in runs.items():
        _plot_band(ax, [(np.array([r["env_steps"] for r in rows]),
                         np.array([mean_over_tasks(f) for f in forgetting_history(rows)[0]])) for _, rows in members], name)
    ax.set(xlabel="environment steps", ylabel=f"mean forgetting over tasks ({metric})",
           title=f"forgetting: drop below each task's best {metric} so far (band: ±1 std over seeds)")
    _legend(ax)
    written.append(_save(fig, out_dir / "forgetting.png"))

    # Each run's train/ scalars, read once (a run's TensorBoard events take seconds to load).
    scalars = {name: [read_scalars(run_dir, "train/") for run_dir, _ in members] for name, members in runs.items()}
    written += _per_task_scalars(scalars, "weight/", "task weights w_z", out_dir / "task_weights.png")
    # Eq. 9's weights are softmax(alpha / tau): the temperatures say why a weight moved. They span
    # decades across tasks, hence the log axis.
    written += _per_task_scalars(scalars, "alpha/", "SAC temperatures alpha_z", out_dir / "task_temperatures.png",
                                 log_y=True)
    written += _critic_per_run(scalars, out_dir / "critic.png")
    return written


def _window_means(steps: np.ndarray, values: np.ndarray, windows: int = CRITIC_WINDOWS) -> tuple[np.ndarray, np.ndarray]:
    """Means of `values` over equal spans of env steps, at each span's centre (empty spans left out)."""
    edges = np.linspace(steps.min(), steps.max(), windows + 1)
    sums, _ = np.histogram(steps, edges, weights=values)
    counts, _ = np.histogram(steps, edges)
    filled = counts > 0
    return ((edges[:-1] + edges[1:]) / 2)[filled], sums[filled] / counts[filled]


def _critic_per_run(scalars: dict[str, list[Series]], path: Path) -> list[Path]:
    """The critic's mean Q and its loss, one line per run coloured by arm: a critic that diverges
    does so in one seed, which a mean over seeds would hide. Runs that did not log them are left out."""
    logged = {name: [series for series in per_run if "q" in series and "loss_critic" in series]
              for name, per_run in scalars.items()}
    if not any(logged.values()):
        return []
    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_SIZE[0] * 2, FIGURE_SIZE[1]), dpi=DPI)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for arm, (name, runs) in enumerate(logged.items()):  # every arm counts, so each keeps the other figures' colour
        for index, series in enumerate(runs):
            for ax, key in zip(axes, ("q", "loss_critic")):
                ax.plot(*_window_means(*series[key]), color=colours[arm % len(colours)], linewidth=1,
                        label=f"{name} (n={len(runs)})" if index == 0 else None)
    for ax in axes:
        ax.xaxis.set_major_formatter(STEPS_IN_THOUSANDS)
    axes[0].set(title="critic: mean Q on the logged batches", xlabel="environment steps", ylabel="Q")
    axes[0].ticklabel_format(axis="y", useOffset=False, style="plain")
    axes[1].set(title="critic loss (log axis)", xlabel="environment steps", ylabel="loss_critic", yscale="log")
    _legend(axes[0], "small")
    return [_save(fig, path)]


def _per_task_scalars(scalars: dict[str, list[Series]], prefix: str, what: str, path: Path, log_y: bool = False) -> list[Path]:
    """One panel per arm whose runs all logged the per-task scalars under train/`prefix`, one curve
    per task with its band over seeds; no figure where no arm logged them."""
    series = {name: [{tag[len(prefix):]: values for tag, values in run.items() if tag.startswith(prefix)} for run in per_run]
              for name, per_run in scalars.items()}
    series = {name: per_run for name, per_run in series.items() if all(per_run)}
    if not series:
        return []
    fig, axes = plt.subplots(1, len(series), figsize=(FIGURE_SIZE[0] * len(series), FIGURE_SIZE[1]), dpi=DPI, squeeze=False)
    for ax, (name, per_run) in zip(axes.flat, series.items()):
        for task in per_run[0]:
            _plot_band(ax, [run[task] for run in per_run], task, log=log_y)
        ax.set(title=f"{name}: {what}", xlabel="environment steps", ylabel=what.split()[-1])
        _legend(ax, "small")
    return [_save(fig, path)]


def _save(fig, path: Path, bottom: float = 0.0) -> Path:
    """Writes `fig`, its panels laid out above the lowest `bottom` share of its height."""
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
