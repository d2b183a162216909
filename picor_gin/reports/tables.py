"""Final performance over seeds from run folders' summary.json: mean ± std and the interquartile
mean (IQM) with a stratified-bootstrap confidence interval from rliable (Agarwal et al., 2021),
which stays honest with the handful of seeds an RL sweep affords."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from rliable import library as rly
from rliable import metrics as rly_metrics

from picor_gin.reports import paper
from picor_gin.reports.runs import Arms, ReportError, find_runs, group_by_arm, require_runs

METRICS = ("mean_success", "mean_score", "mean_return")  # the default is the first every run reports
LOWER_IS_BETTER = ("average_forgetting",)  # on request only: a run's mean drop of each task below its best
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Row:
    """One arm's final metric over its seeds; `experiment` is the arm's label (runs/group_by_arm)."""

    experiment: str
    seeds: int
    mean: float
    std: float
    iqm: float
    ci_low: float
    ci_high: float


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def choose_metric(summaries: dict[Path, dict], metric: str | None) -> str:
    """`metric`, or the first of METRICS that every run reports, so all rows compare like with like."""
    candidates = METRICS if metric is None else (metric,)
    for candidate in candidates:
        missing = [run_dir for run_dir, summary in summaries.items() if summary.get(candidate) is None]
        if not missing:
            diverged = [run_dir for run_dir, summary in summaries.items() if not np.isfinite(summary[candidate])]
            if diverged:  # one NaN would turn its arm's row into nan ± nan
                raise ReportError(f"{candidate} is {summaries[diverged[0]][candidate]} in {diverged[0]}")
            return candidate
    if metric is None:
        raise ReportError(f"none of {', '.join(METRICS)} is reported by every run")
    raise ReportError(f"{metric} is null in {len(missing)} of {len(summaries)} runs, e.g. {missing[0]}")


@contextlib.contextmanager
def _bootstrap_seed(seed: int) -> Iterator[None]:
    """rliable 1.2's bootstraps resample with NumPy's global generator, ignoring their
    random_state argument: seed that generator, and give the caller's state back afterwards."""
    caller_state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(caller_state)


def iqm_interval(finals: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    """IQM and its percentile-bootstrap CI (rliable), reseeded per call so every row is
    reproducible whichever other experiments share the report. `finals` is one value per run, or
    rliable's runs x tasks matrix: its IQM then pools every (run, task) and its bootstrap resamples
    runs within each task (stratified)."""
    scores = {"runs": finals.reshape(len(finals), -1)}  # one value per run: a single aggregate task
    with _bootstrap_seed(seed):
        points, intervals = rly.get_interval_estimates(
            scores, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=reps, confidence_interval_size=CONFIDENCE
        )
    return float(points["runs"][0]), float(intervals["runs"][0, 0]), float(intervals["runs"][1, 0])


def summarize(name: str, values: Sequence[float], reps: int, seed: int) -> Row:
    """One experiment's row; std is over seeds (ddof=0, as the plots' bands)."""
    finals = np.asarray(values, dtype=float)
    return Row(name, len(finals), float(finals.mean()), float(finals.std()), *iqm_interval(finals, reps, seed))


def report_rows(arms: Arms, summaries: dict[Path, dict], metric: str, reps: int, seed: int) -> list[Row]:
    """One row per arm, in `arms`' order (group_by_arm sorts by label)."""
    return [summarize(label, [summaries[run_dir][metric] for run_dir in run_dirs], reps, seed)
            for label, run_dirs in arms.items()]


def env_steps_to_reach(run_dir: Path, metric: str, threshold: float) -> int | None:
    """The env steps of the run's first evaluation (eval.jsonl) with `metric` >= `threshold`;
    None if none reached it."""
    for line in (run_dir / "eval.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row[metric] is not None and row[metric] >= threshold:
            return row["env_steps"]
    return None


def reach_report(arms: Arms, metric: str, threshold: float, reps: int, seed: int) -> tuple[str, list[Row]]:
    """Env steps to reach `threshold` per arm, over the seeds that reached it (how many
    did is its own column: a run that never reaches has no step count to average)."""
    groups = {label: [env_steps_to_reach(run_dir, metric, threshold) for run_dir in run_dirs]
              for label, run_dirs in arms.items()}
    lines = [
        f"Env steps to the first evaluation with `{metric}` >= {threshold}, over the seeds that reached it; "
        f"IQM with {CONFIDENCE:.0%} percentile-bootstrap CI (rliable, {reps} reps, seed {seed}).",
        "",
        "| experiment | reached | env steps (mean ± std) | IQM [95% CI] |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = []
    for name, steps in groups.items():
        reached = [s for s in steps if s is not None]
        cells = "| - | - |"
        if reached:
            row = summarize(name, reached, reps, seed)
            rows.append(row)
            cells = f"| {row.mean:,.0f} ± {row.std:,.0f} | {row.iqm:,.0f} [{row.ci_low:,.0f}, {row.ci_high:,.0f}] |"
        lines.append(f"| {name} | {len(reached)}/{len(steps)} {cells}")
    return "\n".join(lines) + "\n", rows


def task_scores(
    arms: Arms, summaries: dict[Path, dict], metric: str, flag: str,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """(task names, per arm its runs x tasks matrix of the final per-task value behind `metric`,
    a mean over tasks such as mean_success); `flag` names the option asking, for the refusals."""
    if not metric.startswith("mean_"):
        raise ReportError(f"{flag} needs a metric with a value per task ({', '.join(METRICS)}), not {metric}")
    key = metric.removeprefix("mean_")
    first = next(iter(summaries))
    tasks = list(summaries[first]["tasks"])
    for run_dir, summary in summaries.items():
        if set(summary["tasks"]) != set(tasks):
            raise ReportError(f"{flag} needs runs of one task set, but {first} and {run_dir} have different tasks")
    for run_dir, summary in summaries.items():
        for task in tasks:
            value = summary["tasks"][task][key]
            if value is None or not np.isfinite(value):  # would make its arm's cells nan
                raise ReportError(f"{flag} needs every task's {key}, but it is {value} for {task} in {run_dir}")
    scores = {label: np.array([[summaries[run_dir]["tasks"][task][key] for task in tasks] for run_dir in run_dirs],
                              dtype=float)
              for label, run_dirs in arms.items()}
    return tasks, scores


def over_tasks_report(arms: Arms, summaries: dict[Path, dict], metric: str, reps: int, seed: int) -> str:
    """rliable's aggregate IQM: the middle half of every (run, task) final value pooled, with a
    bootstrap that resamples runs within each task. The main table's IQM is over seeds of each
    run's mean over tasks; this one also trims the tasks that fail or excel in a run."""
    tasks, scores = task_scores(arms, summaries, metric, "--over_tasks")
    key = metric.removeprefix("mean_")
    lines = [
        f"IQM of the final `{key}` over runs x tasks ({len(tasks)} tasks), rliable's aggregate IQM, with "
        f"{CONFIDENCE:.0%} stratified-bootstrap CI (runs resampled within each task; {reps} reps, seed {seed}).",
        "",
        f"| experiment | seeds | IQM over runs x tasks [{CONFIDENCE:.0%} CI] |",
        "| --- | ---: | ---: |",
    ]
    for name, runs in scores.items():
        iqm, low, high = iqm_interval(runs, reps, seed)
        lines.append(f"| {name} | {len(runs)} | {iqm:.3f} [{low:.3f}, {high:.3f}] |")
    return "\n".join(lines) + "\n"


def per_task_report(arms: Arms, summaries: dict[Path, dict], metric: str) -> str:
    """Each task's final value of `metric` (a mean over tasks, e.g. mean_success) per arm:
    mean ± std over its seeds, so a mean over tasks can be traced to the tasks behind it."""
    tasks, scores = task_scores(arms, summaries, metric, "--per_task")
    lines = [
        f"Final `{metric.removeprefix('mean_')}` per task, mean ± std over seeds.",
        "",
        "| experiment | seeds | " + " | ".join(tasks) + " |",
        "| --- | ---: |" + " ---: |" * len(tasks),
    ]
    for name, runs in scores.items():
        cells = [f"{mean:.3f} ± {std:.3f}" for mean, std in zip(runs.mean(0), runs.std(0))]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def improvement_report(arms: Arms, summaries: dict[Path, dict], metric: str, reps: int, seed: int) -> str:
    """For each pair of arms, the probability of improvement P(X > Y) (Agarwal et al. 2021): per
    task, the chance that a run of X ends above a run of Y, ties counting half (Mann-Whitney U /
    (n m)), averaged over tasks; with its stratified-bootstrap CI (rliable). Where IQM intervals
    overlap, it says how often one arm beats the other, task by task."""
    if len(arms) < 2:
        raise ReportError(f"--improvement compares arms, and the runs are one arm: {next(iter(arms))}")
    tasks, scores = task_scores(arms, summaries, metric, "--improvement")
    pairs = list(itertools.combinations(scores, 2))
    with _bootstrap_seed(seed):
        points, intervals = rly.get_interval_estimates(
            {str(i): (scores[x], scores[y]) for i, (x, y) in enumerate(pairs)},
            rly_metrics.probability_of_improvement, reps=reps, confidence_interval_size=CONFIDENCE,
        )
    lines = [
        f"Probability of improvement P(X > Y) on the final `{metric.removeprefix('mean_')}` of each of "
        f"{len(tasks)} tasks: the chance that a run of X ends above a run of Y, ties counting half, averaged "
        f"over tasks; 0.5 is no difference, and P(Y > X) = 1 - P(X > Y). {CONFIDENCE:.0%} stratified-bootstrap "
        f"CI (rliable, {reps} reps, seed {seed}).",
        "",
        f"| X | Y | P(X > Y) [{CONFIDENCE:.0%} CI] |",
        "| --- | --- | ---: |",
    ]
    for i, (x, y) in enumerate(pairs):
        low, high = intervals[str(i)].ravel()
        lines.append(f"| {x} | {y} | {float(points[str(i)]):.3f} [{low:.3f}, {high:.3f}] |")
    return "\n".join(lines) + "\n"


def markdown(rows: Sequence[Row], metric: str, reps: int, seed: int) -> str:
    """The table with a caption naming the metric and how the interval was drawn."""
    direction = " (lower is better)" if metric in LOWER_IS_BETTER else ""
    lines = [
        f"Final `{metric}` over seeds{direction}; mean ± std (ddof 0) and the IQM (the mean of the middle "
        f"half of the seeds) with {CONFIDENCE:.0%} percentile-bootstrap CI (rliable, {reps} reps, seed {seed}).",
        "",
        f"| experiment | seeds | {metric} (mean ± std) | IQM [{CONFIDENCE:.0%} CI] |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.experiment} | {row.seeds} | {row.mean:.3f} ± {row.std:.3f} "
            f"| {row.iqm:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] |"
        )
    return "\n".join(lines) + "\n"


def budget_note(arms: Arms, summaries: dict[Path, dict]) -> str:
    """A line naming each arm's env steps run (summary.json's total_env_steps) where the runs'
    differ, else nothing: final values after unequal env steps do not compare at equal samples."""
    budgets = {label: sorted({summaries[run_dir]["total_env_steps"] for run_dir in run_dirs})
               for label, run_dirs in arms.items()}
    if len({steps for values in budgets.values() for steps in values}) < 2:
        return ""
    listed = "; ".join(f"{label} {' and '.join(f'{steps:,}' for steps in values)}" for label, values in budgets.items())
    return f"\nNote: the runs' env steps differ (total_env_steps: {listed}), so these rows do not compare at equal samples.\n"


def few_seeds_note(rows: Sequence[Row]) -> str:
    """A line naming the arms with 3 seeds or fewer, else nothing: their IQM trims nothing, and
    their bootstrap interval is the range of their seeds (a resample of n values is all the lowest
    with chance n^-n, above 2.5% for n <= 3), not a 95% interval."""
    few = [f"{row.experiment} ({row.seeds})" for row in rows if row.seeds <= 3]
    if not few:
        return ""
    return (f"\nNote: with 3 seeds or fewer an arm's IQM is its mean and its interval is the range of its seeds, "
            f"not a 95% interval: {', '.join(few)}.\n")


def task_set_note(arms: Arms, summaries: dict[Path, dict]) -> str:
    """A line naming each arm's tasks where the runs' task sets differ, else nothing: a mean over
    different tasks is a different quantity, even under one metric's name."""
    task_sets = {label: sorted({tuple(sorted(summaries[run_dir]["tasks"])) for run_dir in run_dirs})
                 for label, run_dirs in arms.items()}
    if len({tasks for sets in task_sets.values() for tasks in sets}) < 2:
        return ""
    listed = "; ".join(f"{label} {' and '.join(f'{len(tasks)} tasks ({tasks[0]}, ...)' for tasks in sets)}"
                       for label, sets in task_sets.items())
    return f"\nNote: the runs' task sets differ ({listed}), so these rows average over different tasks.\n"


def build_report(
    paths: Iterable[Path], metric: str | None = None, reps: int = 2000, seed: int = 0, reach: float | None = None,
    per_task: bool = False, improvement: bool = False, over_tasks: bool = False,
) -> tuple[str, list[Row]]:
    """Finds the runs below `paths` and returns (markdown, rows) of the final metric, or with
    `reach` of the env steps to reach it, with `per_task` its value per task, with `improvement`
    each pair of arms' probability of improvement, with `over_tasks` its IQM over runs x tasks
    (no rows for those three); raises ReportError if there is nothing to report. Each ends with
    the notes that apply: few seeds, different task sets (the tables that pool tasks refuse
    those), unequal env steps."""
    summaries = {run_dir: read_summary(run_dir) for run_dir in require_runs(list(paths))}
    metric = choose_metric(summaries, metric)
    if reach is not None and metric in LOWER_IS_BETTER:
        raise ReportError(f"--reach times the first evaluation at or above a threshold, and {metric} is lower-is-better")
    arms = group_by_arm(summaries)
    notes = task_set_note(arms, summaries)
    if reach is not None:
        table, rows = reach_report(arms, metric, reach, reps, seed)
        notes = few_seeds_note(rows) + notes
    elif per_task:
        table, rows = per_task_report(arms, summaries, metric), []
    elif improvement:
        table, rows = improvement_report(arms, summaries, metric, reps, seed), []
    elif over_tasks:
        table, rows = over_tasks_report(arms, summaries, metric, reps, seed), []
    else:
        rows = report_rows(arms, summaries, metric, reps, seed)
        table = markdown(rows, metric, reps, seed)
        notes = few_seeds_note(rows) + notes
    return table + notes + budget_note(arms, summaries), rows


def _cell_summaries(runs: list[Path], root: Path, stem: str | None) -> dict[Path, dict]:
    """The summaries of the runs below <root>/<stem>; refuses a cell whose runs are several arms
    (reproduce.py runs at two --scale values into one root), whose numbers would be a mixture."""
    cell_runs = [run_dir for run_dir in runs if run_dir.relative_to(root).parts[:1] == (stem,)]
    arms = group_by_arm(cell_runs)
    if len(arms) > 1:
        raise ReportError(f"{root / stem} holds {len(arms)} configs, not one: {'; '.join(arms)}")
    return {run_dir: read_summary(run_dir) for run_dir in cell_runs}


def paper_table(root: Path, table: str, benchmark: str, reps: int = 2000, seed: int = 0) -> tuple[str, list[Row | None]]:
    """The paper's table shape (one column per method or ablation cell), the paper's number above
    ours; a cell's runs are the finished ones below <root>/<its gin file's stem>, as
    launch/reproduce.py lays them out. Returns (markdown, one Row or None per column)."""
    if not root.is_dir():
        raise ReportError(f"no such folder: {root}")
    columns = paper.cells(table, benchmark)
    metric = paper.METRIC[benchmark]
    scale, unit = (100.0, "%") if benchmark in paper.PERCENT else (1.0, "")
    digits = 1 if unit else (0 if benchmark == "halfcheetah" else 3)

    def number(value: float) -> str:
        return f"{value * scale:.{digits}f}{unit}"

    runs = find_runs([root])
    rows: list[Row | None] = []
    for cell in columns:
        summaries = _cell_summaries(runs, root, cell.stem)
        if summaries:
            metric = choose_metric(summaries, metric)  # raises, naming a run, if one lacks it
        rows.append(summarize(cell.label, [s[metric] for s in summaries.values()], reps, seed) if summaries else None)
    title = {"table1": "Table 1 (methods)", "table2": "Table 2 (ablation: Ada = adaptive weights, Cor = correction)"}
    lines = [
        f"{title[table]} on {benchmark}: final `{metric}`{' in %' if unit else ''}; paper: Bai et al. (AAAI 2023); "
        f"ours: mean ± std over seeds and IQM [{CONFIDENCE:.0%} CI] (rliable, {reps} reps, seed {seed}).",
        "",
        "| | " + " | ".join(cell.label for cell in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
        "| paper | " + " | ".join("—" if c.paper is None else f"{c.paper:.{digits}f}{unit}" for c in columns) + " |",
        "| ours | " + " | ".join("not run" if r is None else f"{number(r.mean)} ± {number(r.std)}" for r in rows) + " |",
        "| ours, IQM | " + " | ".join(
            "—" if r is None else f"{number(r.iqm)} [{number(r.ci_low)}, {number(r.ci_high)}]" for r in rows) + " |",
        "| seeds | " + " | ".join("0" if r is None else str(r.seeds) for r in rows) + " |",
    ]
    return "\n".join(lines) + "\n" + few_seeds_note([r for r in rows if r is not None]), rows
