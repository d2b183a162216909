"""Meta-World's multi-task benchmarks, MT10 and MT50, with fixed goals (docs/design.md, "Benchmarks and evaluation")."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import pickle
from pathlib import Path
from typing import Any, ClassVar, Sequence

import gin
import gymnasium as gym
from torchrl.envs import EnvBase

from picor_gin.tasks.base import TaskSet
from picor_gin.tasks.gym import _check_episode_steps, gym_task_env
from picor_gin.whole_files import write_whole


def goal_cache_file(benchmark: str, goal_seed: int) -> Path:
    """Where the goals metaworld draws for `benchmark` and `goal_seed` are kept on this machine:
    $PICOR_GIN_CACHE, else $XDG_CACHE_HOME/picor_gin, else ~/.cache/picor_gin; one file per
    metaworld version, so an upgrade draws anew."""
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = Path(os.environ.get("PICOR_GIN_CACHE") or user_cache / "picor_gin")
    return root / f"metaworld-{importlib.metadata.version('metaworld')}-{benchmark}-goal_seed{goal_seed}.pkl"


@functools.lru_cache(maxsize=None)
def _metaworld_fixed_tasks(benchmark: str, goal_seed: int) -> tuple[tuple[str, type, Any], ...]:
    """(env name, env class, Task) per env of metaworld's `benchmark`, the first of its goals.

    `metaworld.MT10(seed=goal_seed)` draws 50 goals per env from a seeded RNG (about 6 s for
    MT10, 30 s for MT50 on one core), hence the caches: one draw per process, kept in
    goal_cache_file for every later process on the machine (sweeps, DDP ranks, evaluations).
    """
    path = goal_cache_file(benchmark, goal_seed)
    try:
        with path.open("rb") as file:
            return pickle.load(file)
    except Exception:  # absent, or damaged in any way a pickle can be: draw again
        pass
    import metaworld  # slow to import; only Meta-World task sets need it

    suite = getattr(metaworld, benchmark)(seed=goal_seed)
    tasks = tuple(
        (name, env_cls, next(t for t in suite.train_tasks if t.env_name == name))
        for name, env_cls in suite.train_classes.items()
    )
    try:
        write_whole(path, pickle.dumps(tasks))
    except OSError:  # a cache that cannot be written costs the next process a draw, nothing else
        pass
    return tasks


def _make_metaworld_env(env_cls: type, task: Any, max_episode_steps: int) -> gym.Env:
    env = env_cls()
    env.set_task(task)  # freezes the goal: every reset starts from the same object and goal
    env.max_path_length = max_episode_steps  # Meta-World refuses to step past it
    return env


class MetaWorldTasks(TaskSet):
    """A Meta-World multi-task benchmark with fixed goals (docs/design.md, "Benchmarks and evaluation").

    One task per env of the benchmark, each with one goal: the first of the goals that
    metaworld's benchmark class draws with `goal_seed`, so a run, its evaluations and any rebuild
    with the same `goal_seed` see the same goal. The observation is Meta-World's 39 dims (hand,
    gripper, objects, previous frame, goal position) then the one-hot task id; actions are in
    [-1, 1]^4; episodes are truncated at `max_episode_steps` (500 in the benchmark), never
    terminated on success. `info["success"]` is reported as ("next", "success").

    Subclasses name the benchmark; `goal_seed` is independent of `Experiment.seed` on purpose:
    runs with different seeds face the same goals.
    """

    benchmark: ClassVar[str]
    has_success = True

    def __init__(
        self,
        goal_seed: int = 0,
        max_episode_steps: int = 500,
        tasks: Sequence[str] | None = None,
    ):
        """Args: tasks: a subset of the benchmark's env names, in this order; None keeps all."""
        _check_episode_steps(type(self).__name__, max_episode_steps)
        self.goal_seed = goal_seed
        self.max_episode_steps = max_episode_steps
        by_name = {entry[0]: entry for entry in _metaworld_fixed_tasks(self.benchmark, goal_seed)}
        for name in tasks or ():
            if name not in by_name:
                raise ValueError(
                    f"{type(self).__name__}.tasks: unknown task {name!r}; valid tasks: {', '.join(by_name)}"
                )
        self._tasks = tuple(by_name[name] for name in (tasks or by_name))
        self.names = [name for name, _, _ in self._tasks]

    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        _, env_cls, task = self._tasks[task_id]
        make = functools.partial(_make_metaworld_env, env_cls, task, self.max_episode_steps)
        return gym_task_env(
            make, task_id, self.num_tasks, num_envs, seed, self.max_episode_steps,
            reads_success=True,
        )


@gin.configurable
class MetaWorldMT10(MetaWorldTasks):
    """Meta-World MT10: the 10 v3 tasks of the PiCor paper's Table 1 (reach ... window-close)."""

    benchmark = "MT10"


@gin.configurable
class MetaWorldMT50(MetaWorldTasks):
    """Meta-World MT50: all 50 v3 tasks (goal drawing takes ~30 s once per process)."""

    benchmark = "MT50"
