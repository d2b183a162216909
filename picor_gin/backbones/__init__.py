"""Backbones: the single-task RL algorithm of PiCor's policy optimization phase.

`Backbone` (base.py) is the interface; each variant lives in its own module.
"""
from picor_gin.backbones.base import Backbone
from picor_gin.backbones.ppo import PPO
from picor_gin.backbones.sac import SAC, soft_bellman_target
from picor_gin.backbones.td3 import TD3

__all__ = ["Backbone", "PPO", "SAC", "TD3", "soft_bellman_target"]
