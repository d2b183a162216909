"""Library classes registered with gin once, under short names used by every gin file.

Optimizers are scoped in gin files: `PiCor.actor_optimizer = @actor/Adam`, `actor/Adam.lr = ...`.
"""
from __future__ import annotations

import gin
import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy, StrategyRegistry

# PiCor's phases leave parameters without gradient on some backwards (the correction's touches
# only the actor; TD3's delayed updates skip it), which plain DDP refuses after start-up. So the
# DDP names users type first mean DDP that allows it, as their `_find_unused_parameters_true`
# spellings do.
for _name, _start_method in (("ddp", "popen"), ("ddp_spawn", "spawn"), ("ddp_fork", "fork"), ("ddp_notebook", "fork")):
    StrategyRegistry.register(
        _name, DDPStrategy, description=f"DDP with unused parameters allowed, start method {_start_method!r} (picor-gin)",
        override=True, find_unused_parameters=True, start_method=_start_method,
    )



def check_strategy(strategy: Strategy) -> None:
    """Refuses, before the run, a Trainer strategy PiCor cannot train under: one that shards
    parameters or optimizer state (FSDP, DeepSpeed, XLA: the phases step their own optimizers
    on parameter groups they hold) or DDP that forbids unused parameters.

    Raises:
        ValueError: naming the strategy and what to bind instead.
    """
    name = type(strategy).__name__
    if type(strategy) not in (SingleDeviceStrategy, DDPStrategy):
        raise ValueError(
            f"Trainer.strategy: {name} cannot run picor-gin's manual optimization (several "
            "optimizers on parameter groups of one module); bind 'auto' or 'ddp'"
        )
    # DDPStrategy keeps its DistributedDataParallel arguments private; no public getter exists.
    if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters", False):
        raise ValueError(
            "Trainer.strategy: DDP without find_unused_parameters fails on the first update (the "
            "correction's backward leaves the critic unused); bind 'ddp', which allows them"
        )


# The run owns logging, callbacks, checkpoint files and the epoch; everything else is bindable.
Trainer = gin.external_configurable(
    L.Trainer,
    "Trainer",
    denylist=["logger", "callbacks", "max_epochs", "default_root_dir", "enable_checkpointing"],
)
Adam = gin.external_configurable(torch.optim.Adam, "Adam", denylist=["params"])
SGD = gin.external_configurable(torch.optim.SGD, "SGD", denylist=["params"])
