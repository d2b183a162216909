"""picor-gin: multi-task RL with policy correction (PiCor, AAAI 2023), configured in gin.

Importing the package registers every configurable, so gin files may bind any of them.
"""
from picor_gin import (  # noqa: F401  (imported for their gin registrations)
    backbones,
    constraints,
    externals,
    gradient_surgery,
    ktm_drl,
    networks,
    objectives,
    samplers,
    tasks,
    weighting,
)
