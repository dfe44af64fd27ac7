"""Name -> algorithm class, and which action spaces each algorithm accepts.

Classes are given as ``"module:Class"`` strings and imported on first use, so
listing the algorithms costs nothing and optional ones fail with a clear error.
"""

from __future__ import annotations

import importlib

from gymnasium import spaces

#: algorithm name -> ("module:Class", action-space types it supports)
ALGORITHMS: dict[str, tuple[str, tuple[type[spaces.Space], ...]]] = {
    "ppo": ("stable_baselines3:PPO", (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box)),
    "a2c": ("stable_baselines3:A2C", (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box)),
    "dqn": ("stable_baselines3:DQN", (spaces.Discrete,)),
    "sac": ("stable_baselines3:SAC", (spaces.Box,)),
    "td3": ("stable_baselines3:TD3", (spaces.Box,)),
    "ddpg": ("stable_baselines3:DDPG", (spaces.Box,)),
    "maskable_ppo": ("sb3_contrib:MaskablePPO", (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)),
    "qrdqn": ("sb3_contrib:QRDQN", (spaces.Discrete,)),
    "trpo": ("sb3_contrib:TRPO", (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box)),
    "tqc": ("sb3_contrib:TQC", (spaces.Box,)),
    "ars": ("sb3_contrib:ARS", (spaces.Discrete, spaces.Box)),
    "crossq": ("sb3_contrib:CrossQ", (spaces.Box,)),
    "diffusion": ("gentwin.agents.diffusion:DiffusionActorCritic", (spaces.Discrete, spaces.MultiDiscrete, spaces.Box)),
}

#: algorithms that take ``action_masks`` in ``predict``
MASKABLE = {"maskable_ppo"}
#: off-policy algorithms (replay buffer; ``train_freq``/``gradient_steps`` apply)
OFF_POLICY = {"dqn", "sac", "td3", "ddpg", "qrdqn", "tqc", "crossq", "diffusion"}


def get_algorithm(name: str) -> type:
    """The algorithm class registered as ``name``."""
    key = name.lower().replace("-", "_")
    if key not in ALGORITHMS:
        raise ValueError(f"algo = {name!r} is invalid: allowed are {sorted(ALGORITHMS)}")
    module, cls = ALGORITHMS[key][0].split(":")
    return getattr(importlib.import_module(module), cls)


def algorithm_supports(name: str, action_space: spaces.Space) -> bool:
    """Whether algorithm ``name`` accepts ``action_space``."""
    key = name.lower().replace("-", "_")
    if key not in ALGORITHMS:
        raise ValueError(f"algo = {name!r} is invalid: allowed are {sorted(ALGORITHMS)}")
    return isinstance(action_space, ALGORITHMS[key][1])
