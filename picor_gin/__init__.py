"""picor-gin: multi-task RL with policy correction (PiCor, AAAI 2023) and its baselines, configured in gin.

The component families, one subpackage or module each; importing the package registers all
their gin configurables, so any gin file or binding may name any of them.
"""
from picor_gin import backbones, correction, gradient_surgery, ktm_drl, networks, objectives, rollouts, samplers, tasks
from picor_gin.learner import MultiTaskLearner
from picor_gin.run import externals

__all__ = [
    "MultiTaskLearner", "backbones", "correction", "externals", "gradient_surgery", "ktm_drl", "networks",
    "objectives", "rollouts", "samplers", "tasks",
]
