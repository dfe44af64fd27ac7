"""Baseline policies of every environment family (``predict(obs)`` like an SB3 model).

``get_baselines(env_id)`` returns the family's baselines by name and
``upper_bound_name(env_id)`` the name of its upper bound or exact optimum.
"""

from gentwin.baselines.base import Baseline, get_baselines, kernel_of, upper_bound_name

__all__ = ["Baseline", "get_baselines", "kernel_of", "upper_bound_name"]
