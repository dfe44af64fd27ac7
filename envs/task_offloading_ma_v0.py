"""``gentwin/TaskOffloading-ma-v0`` in PettingZoo's module convention.

As in ``pettingzoo.butterfly.pistonball_v6``::

    from gentwin.envs import task_offloading_ma_v0

    par = task_offloading_ma_v0.parallel_env()   # ParallelEnv, as make_parallel("gentwin/TaskOffloading-ma-v0")
    aec = task_offloading_ma_v0.env()            # AEC env by PettingZoo's parallel_to_aec

Keyword arguments go to the environment (``params=``, field overrides), as for
``gentwin.envs.make_parallel``.  The environment itself is specified in
:mod:`gentwin.envs.task_offloading`.
"""

from __future__ import annotations

from pettingzoo.utils.conversions import parallel_to_aec, parallel_to_aec_wrapper

from gentwin.envs.task_offloading import TaskOffloadingParallelEnv

__all__ = ["env", "parallel_env", "raw_env"]


def parallel_env(**kwargs) -> TaskOffloadingParallelEnv:
    """The PettingZoo ``ParallelEnv``."""
    return TaskOffloadingParallelEnv(**kwargs)


def raw_env(**kwargs) -> parallel_to_aec_wrapper:
    """The AEC env without PettingZoo's order-enforcing wrapper."""
    return parallel_to_aec_wrapper(parallel_env(**kwargs))


def env(**kwargs):
    """The AEC env (``parallel_to_aec``, with PettingZoo's order-enforcing wrapper)."""
    return parallel_to_aec(parallel_env(**kwargs))
