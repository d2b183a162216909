"""PiCor's correction (eq. 9 weights, eq. 10 constraint), one component of the learner:
`MultiTaskLearner.correction = @PolicyCorrection`. Importing the package registers its gin
configurables: the component, the constraint forms, the solvers and the weighting rules."""
from picor_gin.correction.constraints import ConstraintForm, LagrangePenalty, PerTaskQuadraticPenalty, QuadraticPenalty
from picor_gin.correction.policy_correction import PolicyCorrection
from picor_gin.correction.solvers import ConstraintSizedStep, CorrectionSolver, PenaltyDescent, TrustRegionProjection
from picor_gin.correction.weighting import SoftmaxAlphaWeights, SoftmaxReturnWeights, UniformWeights, WeightingRule

__all__ = [
    "ConstraintForm", "ConstraintSizedStep", "CorrectionSolver", "LagrangePenalty", "PenaltyDescent",
    "PerTaskQuadraticPenalty", "PolicyCorrection", "QuadraticPenalty", "SoftmaxAlphaWeights",
    "SoftmaxReturnWeights", "TrustRegionProjection", "UniformWeights", "WeightingRule",
]
