"""Compatibility: the task sets moved to `picor_gin.tasks`; gin files that `import picor_gin.task_sets` still work."""
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
