"""Library classes registered with gin once, under short names used by every gin file.

Optimizers are scoped in gin files: `PiCor.actor_optimizer = @actor/Adam`, `actor/Adam.lr = ...`.
"""
from __future__ import annotations

import inspect

import gin
import lightning as L
import torch
import torchjd.aggregation
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

# PiCor's phases leave parameters without gradient on some backwards (the correction's touches
# only the actor; TD3's delayed updates skip it), which plain DDP refuses after start-up. So the
# DDP names users type first mean DDP that allows it, as their `_find_unused_parameters_true`
# spellings do.
for _name, _start_method in (("ddp", "popen"), ("ddp_spawn", "spawn"), ("ddp_fork", "fork"), ("ddp_notebook", "fork")):
    StrategyRegistry.register(
        _name, DDPStrategy, description=f"DDP with unused parameters allowed, start method {_start_method!r} (picor-gin)",
        override=True, find_unused_parameters=True, start_method=_start_method,
    )

# The run owns logging, callbacks, checkpoint files and the epoch; everything else is bindable.
Trainer = gin.external_configurable(
    L.Trainer,
    "Trainer",
    denylist=["logger", "callbacks", "max_epochs", "default_root_dir", "enable_checkpointing"],
)
Adam = gin.external_configurable(torch.optim.Adam, "Adam", denylist=["params"])
SGD = gin.external_configurable(torch.optim.SGD, "SGD", denylist=["params"])

# TorchJD's aggregators and weightings under their class names: `@UPGrad()`, `CAGrad.c = 0.5`.
for _name in torchjd.aggregation.__all__:
    _class = getattr(torchjd.aggregation, _name)
    if issubclass(_class, (torchjd.aggregation.Aggregator, torchjd.aggregation.Weighting)) and not inspect.isabstract(_class):
        gin.external_configurable(_class, _name, module="torchjd")
