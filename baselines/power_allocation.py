"""Baselines of power allocation (the GDM tutorial's problem, ref. [1] of seed 002 paper 1).

Water-filling is the exact optimum of the sum rate (it reads the gains from the
observation, which carries them); equal split, the best single channel and random
weights are the usual references below it.
"""

from __future__ import annotations

import numpy as np

from gentwin.baselines.base import EXACT_OPTIMUM, Baseline, Bound
from gentwin.envs.power_allocation import sum_rate, water_filling, weights_to_action


class WaterFillingPolicy(Baseline):
    """Exact optimum: ``p_n = max(mu - N0/g_n, 0)`` with ``sum p_n = P_T`` (weights ``p / P_T``)."""

    name = "water_filling"

    def act(self, obs):
        gains = np.asarray(obs, dtype=np.float64)
        power = water_filling(gains, self.params.total_power_w, self.params.noise_power_w)
        return weights_to_action(self.params, power / self.params.total_power_w).astype(np.float32)


class EqualSplitPolicy(Baseline):
    """``P_T / M`` on every channel, ignoring the gains."""

    name = "equal_split"

    def act(self, obs):
        return np.ones((obs.shape[0], self.params.num_channels), dtype=np.float32)


class BestChannelPolicy(Baseline):
    """All power on the strongest channel (optimal only at very low SNR)."""

    name = "best_channel"

    def act(self, obs):
        weights = np.zeros((obs.shape[0], self.params.num_channels), dtype=np.float32)
        weights[np.arange(obs.shape[0]), np.argmax(obs, axis=1)] = 1.0
        return weights


class RandomPolicy(Baseline):
    """Uniformly random weights in ``[0, 1]`` (then normalised by the environment)."""

    name = "random"

    def act(self, obs):
        return self.rng.uniform(0.0, 1.0, size=(obs.shape[0], self.params.num_channels)).astype(np.float32)


BASELINES = {
    cls.name: cls for cls in (RandomPolicy, BestChannelPolicy, EqualSplitPolicy, WaterFillingPolicy)
}
def _water_filling_sum_rate(kernel) -> np.ndarray:
    """The optimal sum rate of each episode's gains (float64, as the reward is computed)."""
    p = kernel.params
    return sum_rate(kernel.gains, water_filling(kernel.gains, p.total_power_w, p.noise_power_w), p.noise_power_w)


#: The evaluation reference of "share of bound": water-filling is the optimum of a concave problem.
BOUND = Bound(
    name="water_filling",
    kind=EXACT_OPTIMUM,
    value=_water_filling_sum_rate,
    description="water-filling sum rate of the episode's gains, the optimum of the concave sum-rate problem",
)
