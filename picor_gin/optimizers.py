"""The optimizer factories the learner and the correction take: a callable from parameters to an
optimizer (gin binds `@actor/Adam` and its siblings), with SAC's Adam at 3e-4 as the default."""
from __future__ import annotations

from typing import Callable, Iterable

import torch

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def default_adam(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam at SAC's learning rate (Haarnoja et al. 2018, Table 1)."""
    return torch.optim.Adam(params, lr=3e-4)
