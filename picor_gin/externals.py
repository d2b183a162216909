"""Library classes registered with gin once, under short names used by every gin file.

Optimizers are scoped in gin files: `PiCor.actor_optimizer = @actor/Adam`, `actor/Adam.lr = ...`.
"""
from __future__ import annotations

import gin
import lightning as L
import torch

# The run owns logging, callbacks, checkpoint files and the epoch; everything else is bindable.
Trainer = gin.external_configurable(
    L.Trainer,
    "Trainer",
    denylist=["logger", "callbacks", "max_epochs", "default_root_dir", "enable_checkpointing"],
)
Adam = gin.external_configurable(torch.optim.Adam, "Adam", denylist=["params"])
SGD = gin.external_configurable(torch.optim.SGD, "SGD", denylist=["params"])
