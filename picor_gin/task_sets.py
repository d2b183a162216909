"""Compatibility: task sets live in `picor_gin.tasks`; gin files may still import this module."""
from picor_gin.tasks import (  # noqa: F401  (re-exported for old imports and gin files)
    HALF_CHEETAH_PARTS,
    GymTasks,
    HalfCheetahGroup,
    MetaWorldMT10,
    MetaWorldMT50,
    MetaWorldTasks,
    PointGoals,
    PointGoalsEnv,
    TaskSet,
    gym_task_env,
    scaled_half_cheetah_xml,
)
