"""Baselines of ASP selection (seed 002 paper 1 section V-B, lines 651-661).

The survey lists four comparison policies; all act on the observation only.
The upper bound additionally knows the hidden quality curves (it rebuilds the
market from the environment's params, as the paper's omniscient scheduler
"has complete knowledge of the utility each ASP offers").
"""

from __future__ import annotations

import numpy as np

from gentwin.baselines.base import Baseline
from gentwin.envs.asp_selection import draw_market


class _AspBaseline(Baseline):
    def __init__(self, env, seed: int | None = None):
        super().__init__(env, seed)
        self.num_asps = self.params.num_asps
        self.capacity = draw_market(self.params).capacity
        self.demand_choices = np.asarray(self.params.demand_choices, dtype=np.int64)
        self.demand_max = int(self.demand_choices.max())

    def decode(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Free capacity ``(B, I)`` and task demand ``(B,)`` from observations."""
        I = self.num_asps
        free = np.rint(obs[:, I : 2 * I].astype(np.float64) * self.capacity).astype(np.int64)
        demand = np.rint(obs[:, 2 * I].astype(np.float64) * self.demand_max).astype(np.int64)
        return free, demand


class RandomPolicy(_AspBaseline):
    """Uniformly random ASP, ignoring resources (the survey's minimum benchmark)."""

    name = "random"

    def act(self, obs):
        return self.rng.integers(0, self.num_asps, size=obs.shape[0])


class RoundRobinPolicy(_AspBaseline):
    """ASPs in a fixed cyclic order, one pointer per batch instance."""

    name = "round_robin"

    def __init__(self, env, seed=None):
        super().__init__(env, seed)
        self._next = np.zeros(0, dtype=np.int64)

    def reset(self):
        self._next = np.zeros(0, dtype=np.int64)

    def act(self, obs):
        if self._next.shape[0] != obs.shape[0]:
            self._next = np.zeros(obs.shape[0], dtype=np.int64)
        action = self._next.copy()
        self._next = (self._next + 1) % self.num_asps
        return action


class CrashAvoidPolicy(_AspBaseline):
    """The ASP with the most free capacity ("overloading-avoidance")."""

    name = "crash_avoid"

    def act(self, obs):
        free, _ = self.decode(obs)
        return np.argmax(free, axis=1)


class UpperBoundPolicy(_AspBaseline):
    """Best quality among ASPs that can host the task, knowing the hidden curves.

    When no ASP has room every choice crashes; it then picks the ASP with the
    most free capacity (the fewest running tasks to kill, on average).
    """

    name = "upper_bound"

    def __init__(self, env, seed=None):
        super().__init__(env, seed)
        self.quality = draw_market(self.params).quality

    def act(self, obs):
        free, demand = self.decode(obs)
        didx = np.searchsorted(self.demand_choices, demand)
        didx = np.clip(didx, 0, len(self.demand_choices) - 1)
        quality = self.quality[:, didx].T  # (B, I)
        feasible = free >= demand[:, None]
        # Among feasible ASPs: highest quality, ties broken by more free capacity.
        score = np.where(feasible, quality * 1e6 + free, -np.inf)
        best = np.argmax(score, axis=1)
        none = ~feasible.any(axis=1)
        return np.where(none, np.argmax(free, axis=1), best)


BASELINES = {
    cls.name: cls for cls in (RandomPolicy, RoundRobinPolicy, CrashAvoidPolicy, UpperBoundPolicy)
}
#: No certified bound yet: the greedy policy above is not one (issue 13).
BOUND = None
