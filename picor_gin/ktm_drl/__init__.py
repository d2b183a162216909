"""KTM-DRL (Xu et al., NeurIPS 2020) as an objective of the learner: `MultiTaskLearner.objective
= @KTMDRL()`, its teachers read from finished run folders (docs/ktm_drl.md)."""
from picor_gin.ktm_drl.objective import KTMDRL

__all__ = ["KTMDRL"]
