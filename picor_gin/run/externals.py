"""Library classes registered with gin once, under short names used by every gin file.

Optimizers are scoped in gin files: `MultiTaskLearner.actor_optimizer = @actor/Adam`, `actor/Adam.lr = ...`.
"""
from __future__ import annotations

import inspect
import os

import gin
import lightning as L
import torch
import torchjd.aggregation
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, Strategy, StrategyRegistry

# The learner's phases leave parameters without gradient on some backwards (the correction's touches
# only the actor; TD3's delayed updates skip it), which plain DDP refuses after start-up. So
# 'ddp', the name users type first, means DDP that allows it, as
# 'ddp_find_unused_parameters_true' does. (The spawning and forking spellings cannot run this
# framework at all: check_strategy refuses them.)
StrategyRegistry.register(
    "ddp", DDPStrategy, description="DDP with unused parameters allowed (picor-gin)",
    override=True, find_unused_parameters=True, start_method="popen",
)


def check_strategy(strategy: Strategy) -> None:
    """Refuses, before the run, a Trainer strategy the learner cannot train under: one that shards
    parameters or optimizer state (FSDP, DeepSpeed, XLA: the phases step their own optimizers
    on parameter groups they hold), DDP that forbids unused parameters, or DDP that spawns or
    forks its processes (measured: spawn fails to pickle, fork hangs).

    Raises:
        ValueError: naming the strategy and what to bind instead.
    """
    name = type(strategy).__name__
    if type(strategy) not in (SingleDeviceStrategy, DDPStrategy):
        raise ValueError(
            f"Trainer.strategy: {name} cannot run picor-gin's manual optimization (several "
            "optimizers on parameter groups of one module); bind 'auto' or 'ddp'"
        )
    if not isinstance(strategy, DDPStrategy):
        return
    # DDPStrategy keeps its start method and DistributedDataParallel arguments private.
    if strategy._start_method == "spawn":
        raise ValueError(
            "Trainer.strategy: DDP's 'spawn' start method pickles the module, and gin's configurable "
            "classes cannot be pickled; bind 'ddp', which starts each process from the command line"
        )
    if strategy._start_method == "fork":
        raise ValueError(
            "Trainer.strategy: DDP's 'fork' start method forks a process whose torch thread pools "
            "are running, and the forked processes hang; bind 'ddp', which starts each process "
            "from the command line"
        )
    if not strategy._ddp_kwargs.get("find_unused_parameters", False):
        raise ValueError(
            "Trainer.strategy: DDP without find_unused_parameters fails on the first update (the "
            "correction's backward leaves the critic unused); bind 'ddp', which allows them"
        )


def check_nodes(trainer: L.Trainer) -> None:
    """Refuses several nodes that nothing starts: outside SLURM or torchrun, and without
    NODE_RANK set on each node by hand, rank 0 would wait for the other nodes until DDP's
    timeout (30 minutes) and then fail.

    Raises:
        ValueError: naming the binding and the ways to launch it.
    """
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if trainer.num_nodes > 1 and isinstance(environment, LightningEnvironment) and "NODE_RANK" not in os.environ:
        raise ValueError(
            f"Trainer.num_nodes = {trainer.num_nodes}, but nothing starts the other nodes here (no SLURM "
            "job, torchrun or NODE_RANK): launch it with launch/sweep.py --backend slurm (docs/sweeps.md), "
            "or use this machine's devices alone with Trainer.devices"
        )


# Trainer arguments that would cut or stretch the run's one epoch, or set a validation or logging
# cadence the run does not have, each with what sets it here (cli names it when one is bound).
LOOP_ARGUMENTS = {
    **dict.fromkeys(
        ("fast_dev_run", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches", "overfit_batches"),
        "the run's length is Experiment.total_env_steps",
    ),
    **dict.fromkeys(
        ("limit_val_batches", "limit_test_batches", "limit_predict_batches", "val_check_interval",
         "check_val_every_n_epoch", "num_sanity_val_steps"),
        "evaluation is Experiment.eval_every_env_steps and eval_episodes",
    ),
    "log_every_n_steps": "the logging interval is Experiment.log_every_updates",
}
# The run owns logging, callbacks, checkpoint files, the epoch and what it prints (a bar on a
# terminal, a line a minute in a log file); everything else is bindable.
Trainer = gin.external_configurable(
    L.Trainer,
    "Trainer",
    denylist=[
        "logger", "callbacks", "max_epochs", "default_root_dir", "enable_checkpointing", "enable_model_summary",
        "enable_progress_bar", *LOOP_ARGUMENTS,
    ],
)
Adam = gin.external_configurable(torch.optim.Adam, "Adam", denylist=["params"])
SGD = gin.external_configurable(torch.optim.SGD, "SGD", denylist=["params"])

# TorchJD's aggregators and weightings under their class names: `@UPGrad()`, `CAGrad.c = 0.5`.
for _name in torchjd.aggregation.__all__:
    _class = getattr(torchjd.aggregation, _name)
    if issubclass(_class, (torchjd.aggregation.Aggregator, torchjd.aggregation.Weighting)) and not inspect.isabstract(_class):
        gin.external_configurable(_class, _name, module="torchjd")
