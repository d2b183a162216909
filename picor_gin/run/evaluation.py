"""The evaluation protocol (docs/design.md, "Benchmarks and evaluation"): deterministic mean action, E episodes per task."""
from __future__ import annotations

from typing import Any, Callable

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from picor_gin.tasks import TaskSet


def headline_metric(row: dict[str, Any]) -> str:
    """The metric a task set is judged by: "success" where it has a flag, else "score", else "return"."""
    return next(key for key in ("success", "score", "return") if row[f"mean_{key}"] is not None)


def _mean(values: list[float | None]) -> float | None:
    return None if not values or values[0] is None else sum(values) / len(values)


@torch.no_grad()
def evaluate(
    policy: Callable[[TensorDictBase], TensorDictBase],
    task_set: TaskSet,
    episodes_per_task: int,
    seed: int,
) -> dict[str, Any]:
    """Scores `policy` on every task of `task_set`.

    Args:
        policy: any TorchRL-style module reading "observation" and writing "action"; stochastic
            TorchRL actors act with their deterministic (mean) action here.
        episodes_per_task: E, run as E parallel copies of each task's env.
        seed: seeds each task's evaluation envs (seed + task id).

    Returns:
        The eval.jsonl row of docs/running.md, the run contract without "env_steps": per-task "return",
        "success" (any step of the episode flagged success; None without a flag) and "score"
        (normalized; None where the task set has none), and their means over tasks.
    """
    tasks = {}
    for task_id, name in enumerate(task_set.names):
        env = task_set.make_env(task_id, episodes_per_task, seed=seed + task_id)
        try:
            with set_exploration_type(ExplorationType.DETERMINISTIC):
                rollout = env.rollout(
                    task_set.max_episode_steps,
                    policy,
                    auto_cast_to_device=True,
                    break_when_any_done=False,
                    break_when_all_done=True,
                )
        finally:  # an evaluation's envs are its own: a long run builds them at every evaluation
            env.close()
        done = rollout["next", "done"].squeeze(-1)  # [E, T]
        # Count each env's first episode only: steps up to and including its first done.
        in_episode = (done.cumsum(-1) - done.long()) == 0
        episode_return = (rollout["next", "reward"].squeeze(-1) * in_episode).sum(-1).mean().item()
        success = None
        if ("next", "success") in rollout.keys(include_nested=True):
            flags = rollout["next", "success"].reshape(done.shape).bool() & in_episode
            success = flags.any(-1).float().mean().item()
        tasks[name] = {
            "return": episode_return,
            "success": success,
            "score": task_set.normalized_score(task_id, episode_return),
        }
    return {
        "tasks": tasks,
        "mean_return": _mean([t["return"] for t in tasks.values()]),
        "mean_success": _mean([t["success"] for t in tasks.values()]),
        "mean_score": _mean([t["score"] for t in tasks.values()]),
    }
