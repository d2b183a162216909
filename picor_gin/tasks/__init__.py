"""Task sets: the benchmarks a multi-task run trains on, as TorchRL environments.

A task set names its tasks and builds, for one task, a (possibly batched) TorchRL env whose
"observation" already carries the one-hot task id (docs/design.md, "The algorithm"), so networks, collectors
and evaluation need no task-specific code.

One module per family (docs/design.md, "Benchmarks and evaluation"), as TorchRL keeps one per env library:
- `base`: the `TaskSet` interface.
- `point_goals`: `PointGoals` (the tiny set) and `UnevenPointGoals` (the same with task rewards
  scaled apart, so tasks learn at different speeds).
- `gym`: `GymTasks` (any list of gymnasium ids) and the path every gymnasium family shares,
  `gym_task_env`: gymnasium env -> actions rescaled to [-1, 1] -> one-hot appended -> gymnasium
  vector env of `num_envs` copies -> TorchRL `GymWrapper` -> DoubleToFloat, StepCounter (the time
  limit: truncation, not termination), RewardSum.
- `metaworld`: `MetaWorldMT10` / `MetaWorldMT50` (fixed goals, success flag).
- `half_cheetah`: `HalfCheetahGroup` (8 morphology variants).
- `subset`: `TaskSubset`, some tasks of any set with the full set's observations (teacher runs).

Importing this package registers every task set with gin.
"""
from picor_gin.tasks.base import TaskSet
from picor_gin.tasks.gym import GymTasks, gym_task_env
from picor_gin.tasks.half_cheetah import (
    HALF_CHEETAH_PARTS,
    HalfCheetahGroup,
    scaled_half_cheetah_xml,
)
from picor_gin.tasks.metaworld import MetaWorldMT10, MetaWorldMT50, MetaWorldTasks
from picor_gin.tasks.point_goals import PointGoals, PointGoalsEnv, UnevenPointGoals
from picor_gin.tasks.subset import TaskSubset

__all__ = [
    "HALF_CHEETAH_PARTS",
    "GymTasks",
    "HalfCheetahGroup",
    "MetaWorldMT10",
    "MetaWorldMT50",
    "MetaWorldTasks",
    "PointGoals",
    "PointGoalsEnv",
    "TaskSet",
    "TaskSubset",
    "UnevenPointGoals",
    "gym_task_env",
    "scaled_half_cheetah_xml",
]
