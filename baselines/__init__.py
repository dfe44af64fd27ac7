"""Baseline policies of every environment family (``predict(obs)`` like an SB3 model).

``get_baselines(env_id)`` returns the family's baselines by name and
``get_bound(env_id)`` its evaluation reference (:class:`Bound`: an exact
optimum or a certified upper bound per episode, or None).
"""

from gentwin.baselines.base import (
    BOUND_KINDS,
    CERTIFIED_UPPER_BOUND,
    EXACT_OPTIMUM,
    Baseline,
    Bound,
    get_baselines,
    get_bound,
    kernel_of,
)

__all__ = [
    "BOUND_KINDS",
    "CERTIFIED_UPPER_BOUND",
    "EXACT_OPTIMUM",
    "Baseline",
    "Bound",
    "get_baselines",
    "get_bound",
    "kernel_of",
]
