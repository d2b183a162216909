"""Forgetting: how far each task's score has fallen since its own best evaluation so far.

A sampler that dwells on one task for many iterations can make the other tasks' scores drop while
the final mean hides it; PiCor's policy correction is meant to prevent that drop, so it is measured
directly: forgetting_z(i) = max_{j <= i} m_z(j) - m_z(i) >= 0, with m the headline metric of the
task set (`headline_metric`) at evaluation i. The callback writes it into eval.jsonl as it goes;
resumes and plots rebuild it from the rows with the same functions.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from picor_gin.run.evaluation import headline_metric


def forgetting_step(bests: dict[str, float], row: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Forgetting at one evaluation.

    Args:
        bests: each task's best headline metric over the earlier evaluations ({} before the first).
        row: an eval.jsonl row (docs/running.md, the run contract).

    Returns:
        ({task: forgetting}, {task: best including this row}).
    """
    metric = headline_metric(row)
    scores = {name: result[metric] for name, result in row["tasks"].items()}
    updated = {name: _best(bests.get(name), score) for name, score in scores.items()}
    return {name: updated[name] - score for name, score in scores.items()}, updated


def _best(best: float | None, score: float) -> float:
    """The larger of the two, where a non-finite score (a diverged evaluation) is no best: its
    own forgetting is unknown (NaN), and it does not poison the later evaluations'."""
    finite = [value for value in (best, score) if value is not None and math.isfinite(value)]
    return max(finite) if finite else score


def forgetting_history(rows: Iterable[dict[str, Any]]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Forgetting at every evaluation of a run, in order, and the per-task bests after the last one."""
    bests: dict[str, float] = {}
    history = []
    for row in rows:
        forgetting, bests = forgetting_step(bests, row)
        history.append(forgetting)
    return history, bests


def mean_over_tasks(forgetting: dict[str, float]) -> float:
    """eval.jsonl's "mean_forgetting": every task counts once, as in the other mean_* keys."""
    return sum(forgetting.values()) / len(forgetting)
