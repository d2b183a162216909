"""Networks: builders of the actor torso and the twin critic of a multi-task agent.

`Network` (base.py) is the interface; each family lives in its own module. The task set appends
the one-hot task id to every observation, so a network reads the task from the observation's last
`num_tasks` entries. The default is the paper's: an MLP on the observation with the one-hot id,
two hidden layers of 512 (PiCor, AAAI 2023, section 5).

Importing this package registers every network with gin.
"""
from picor_gin.networks.base import Network, TwinCritic
from picor_gin.networks.mlp import MultiHeadMLP, OneHotMLP, TaskHeads
from picor_gin.networks.moore import MooreNet, MooreNetwork
from picor_gin.networks.paco import PaCoNet, PaCoNetwork
from picor_gin.networks.soft_modular import SoftModularNet, SoftModularNetwork

__all__ = ["MooreNet", "MooreNetwork", "MultiHeadMLP", "Network", "OneHotMLP", "PaCoNet", "PaCoNetwork", "SoftModularNet", "SoftModularNetwork", "TaskHeads", "TwinCritic"]
