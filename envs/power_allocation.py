"""Power allocation over orthogonal channels: ``gentwin/PowerAllocation-v0``.

Source: the GDM tutorial (Du et al., "Beyond deep reinforcement learning: a tutorial
on generative diffusion models in network optimization", arXiv:2308.05384), ref. [1]
of seed 002 paper 1 (``sed -n 327,327p ../shared/seeds/002_0c06d0e91042d4e2.txt``,
Table III at ``sed -n 576,580p``), and its released code (GDMOPT, ``env/env.py``
and ``env/utility.py``), which fixes the numbers the survey leaves out: gains
``U(1, 2)`` on half the channels and ``U(0, 1)`` on the other half, noise power 1
and total power 3.

Description
-----------
A base station splits a total transmit power ``P_T`` over ``M`` orthogonal
channels with gains ``g_n``.  Channel ``n`` then carries
``log2(1 + g_n p_n / N0)`` bit/s/Hz, and the goal is the largest sum rate.  The
exact optimum is the classic water-filling solution
``p_n* = max(mu - N0 / g_n, 0)`` with the water level ``mu`` set by
``sum_n p_n* = P_T`` (Cover & Thomas, "Elements of information theory", 2nd ed.,
section 9.4).  Every episode is one decision (a contextual bandit): each reset
draws new gains.

Action Space
------------
``Box(0, 1, (M,), float32)``: non-negative weights, normalised to the budget,
``p_n = P_T w_n / sum_m w_m``.  All-zero weights mean an equal split (the only
weights without a direction).

With ``zero_weight_below = t`` (default ``0``: the weights are the action, as
in the tutorial) the weights are ``w_n = max(a_n - t, 0) / (1 - t)``: every
action at or below ``t`` gives its channel no power.  The allocations and the
reward are unchanged (every split of ``P_T`` is still an action), but the
water-filling optimum, which switches channels off (about 4 of 10 in the
tutorial preset), is then reached from a whole interval of actions per
switched-off channel instead of only at the box edge ``a_n = 0``, which
squashed-Gaussian policies approach only asymptotically: a weight floor of 3%
of the largest weight on the switched-off channels costs 1% of the optimum.

Observation Space
-----------------
``Box(g_min, g_max, (M,), float32)``: the channel gains ``g_n`` (linear power
gains), in channel order: the ``num_good_channels`` good channels first, then the
others (the tutorial's order).  ``g_min`` / ``g_max`` are the bounds of the two
gain ranges.

Rewards
-------
The sum rate ``sum_n log2(1 + g_n p_n / N0)`` in bit/s/Hz (the tutorial code
reports it minus the water-filling rate; ``info["optimal_sum_rate"]`` gives that
offset, so ``reward / optimal_sum_rate`` is the share of the optimum).

Starting State
--------------
``g_n ~ U(good_gain_range)`` for ``n < num_good_channels``, ``U(bad_gain_range)``
for the rest, independently per channel and episode.

Episode End
-----------
Terminated after one step (episode length 1).

Arguments
---------
``gym.make("gentwin/PowerAllocation-v0", params="deep_fade")`` selects a preset;
fields override as keyword arguments (``total_power_w=12.0``).  Presets:

* ``tutorial`` (default): ``M = 10``, 5 gains ``U(1, 2)`` and 5 gains ``U(0, 1)``,
  ``P_T = 3``, ``N0 = 1`` (GDMOPT ``env/utility.py``).
* ``deep_fade``: ``M = 100``, 50 good channels ``U(13, 14)`` and 50 in deep fade
  ``U(0, 0.1)``; ``P_T`` and ``N0`` as above.

Option that makes the problem learnable without changing it (see Action Space):
``zero_weight_below`` (float in ``[0, 1)``, default ``0``), e.g.
``gym.make(id, zero_weight_below=0.25)``: actions at or below it switch their
channel off.  The reward needs no scaling: it is the sum rate, about 4.7
bit/s/Hz at the optimum of the tutorial preset.

Info
----
``sum_rate`` (the reward), ``optimal_sum_rate`` (water-filling), ``rate_ratio``
(their quotient), ``power_w`` ``(M,)`` (the applied allocation) and
``expert_action`` ``(M,)``: the water-filling powers divided by ``P_T`` (mapped to
``t + (1 - t) p_n / P_T``, and ``t / 2`` for switched-off channels, when
``zero_weight_below = t > 0``), an action of this space that attains the optimum (the "expert database" of the tutorial's
diffusion agent).  ``episode_summary`` repeats ``sum_rate``, ``optimal_sum_rate``
and ``rate_ratio``.

Version History
---------------
* v0: initial release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from gentwin.envs.core import BatchedKernel, KernelEnv, KernelVectorEnv, check_field

__all__ = [
    "PRESETS",
    "PowerAllocationEnv",
    "PowerAllocationKernel",
    "PowerAllocationParams",
    "PowerAllocationVectorEnv",
    "sum_rate",
    "water_filling",
    "weights_to_action",
]


def sum_rate(gains: np.ndarray, power_w: np.ndarray, noise_power_w: float = 1.0) -> np.ndarray:
    """``sum_n log2(1 + g_n p_n / N0)`` over the last axis (bit/s/Hz)."""
    return np.log2(1.0 + np.asarray(gains) * np.asarray(power_w) / noise_power_w).sum(axis=-1)


def water_filling(gains: np.ndarray, total_power_w: float, noise_power_w: float = 1.0) -> np.ndarray:
    """Exact water-filling powers for gains ``(..., M)``: ``p_n = max(mu - N0/g_n, 0)``, ``sum p = P_T``.

    Closed form, no bisection: with the floors ``a_n = N0 / g_n`` sorted ascending,
    the channels that get power are the ``k`` lowest floors for the largest ``k``
    with ``mu_k = (P_T + sum_{i<=k} a_i) / k > a_k``, and then ``mu = mu_k``.
    Channels with zero gain never get power.
    """
    gains = np.asarray(gains, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where(gains > 0, noise_power_w / gains, np.inf)
        order = np.argsort(floor, axis=-1, kind="stable")
        sorted_floor = np.take_along_axis(floor, order, axis=-1)
        k = np.arange(1, gains.shape[-1] + 1)
        level = (total_power_w + np.cumsum(sorted_floor, axis=-1)) / k
        active = level > sorted_floor  # a prefix of the sorted channels
    n_active = np.maximum(active.sum(axis=-1, keepdims=True), 1)
    mu = np.take_along_axis(level, n_active - 1, axis=-1)
    return np.maximum(mu - floor, 0.0)


def weights_to_action(params: "PowerAllocationParams", weights: np.ndarray) -> np.ndarray:
    """The action (float64) whose weights are ``weights`` in ``[0, 1]`` (``zero_weight_below``).

    Zero weights get ``t / 2``, the middle of the actions that mean no power.
    """
    t = params.zero_weight_below
    w = np.asarray(weights, dtype=np.float64)
    if t == 0.0:
        return w
    return np.where(w > 0, t + (1.0 - t) * w, 0.5 * t)


@dataclass(frozen=True)
class PowerAllocationParams:
    """Static configuration of the channel model and power budget (validated)."""

    num_channels: int = 10
    num_good_channels: int = 5
    good_gain_range: tuple[float, float] = (1.0, 2.0)
    bad_gain_range: tuple[float, float] = (0.0, 1.0)
    total_power_w: float = 3.0
    noise_power_w: float = 1.0
    #: Actions at or below this give no power: w = max(a - t, 0) / (1 - t) (0: w = a).
    zero_weight_below: float = 0.0

    def __post_init__(self) -> None:
        check_field(self, "num_channels", low=1, high=100_000, integer=True)
        check_field(self, "num_good_channels", low=0, high=self.num_channels, integer=True)
        check_field(self, "good_gain_range", low=0.0)
        check_field(self, "bad_gain_range", low=0.0)
        check_field(self, "total_power_w", low=0.0, low_inclusive=False)
        check_field(self, "noise_power_w", low=0.0, low_inclusive=False)
        check_field(self, "zero_weight_below", low=0.0, high=1.0, high_inclusive=False)
        for name in ("good_gain_range", "bad_gain_range"):
            value = getattr(self, name)
            if len(value) != 2 or value[0] > value[1]:
                raise ValueError(
                    f"PowerAllocationParams.{name} = {value!r} is invalid: must be a pair (low, high) "
                    f"with 0 <= low <= high"
                )


PRESETS: dict[str, PowerAllocationParams] = {
    "tutorial": PowerAllocationParams(),
    "deep_fade": PowerAllocationParams(
        num_channels=100, num_good_channels=50, good_gain_range=(13.0, 14.0), bad_gain_range=(0.0, 0.1)
    ),
}


class PowerAllocationKernel(BatchedKernel):
    """Batched power allocation (see the module docstring for the MDP)."""

    params_class = PowerAllocationParams
    presets = PRESETS

    def __init__(self, params: PowerAllocationParams | str | None = None, num_envs: int = 1):
        super().__init__(params, num_envs)
        p = self.params
        B, M = self.num_envs, p.num_channels
        self.gains = np.zeros((B, M))
        self.last_sum_rate = np.zeros(B)
        self.last_optimal_sum_rate = np.zeros(B)

    def _build_spaces(self):
        p = self.params
        ranges = []
        if p.num_good_channels > 0:
            ranges.append(p.good_gain_range)
        if p.num_good_channels < p.num_channels:
            ranges.append(p.bad_gain_range)
        low = min(r[0] for r in ranges)
        high = max(r[1] for r in ranges)
        obs = spaces.Box(np.float32(low), np.float32(high), shape=(p.num_channels,), dtype=np.float32)
        act = spaces.Box(0.0, 1.0, shape=(p.num_channels,), dtype=np.float32)
        return obs, act

    def _reset_instances(self, idx: np.ndarray) -> None:
        p = self.params
        n_good, n_bad = p.num_good_channels, p.num_channels - p.num_good_channels
        for i in idx:  # reset path: one generator per instance (see envs/core.py)
            rng = self.rngs[i]
            self.gains[i, :n_good] = rng.uniform(p.good_gain_range[0], p.good_gain_range[1], size=n_good)
            self.gains[i, n_good:] = rng.uniform(p.bad_gain_range[0], p.bad_gain_range[1], size=n_bad)

    def _observe(self) -> np.ndarray:
        return self.gains.astype(np.float32)

    def weights(self, actions: np.ndarray) -> np.ndarray:
        """Weights ``w = max(a - t, 0) / (1 - t)`` of actions ``(B, M)`` (``t = zero_weight_below``)."""
        t = self.params.zero_weight_below
        a = np.asarray(actions, dtype=np.float64)
        return a if t == 0.0 else np.maximum(a - t, 0.0) / (1.0 - t)

    def power_to_action(self, power_w: np.ndarray) -> np.ndarray:
        """An action (float64) playing the powers ``(B, M)``, which sum to ``P_T``."""
        return weights_to_action(self.params, np.asarray(power_w, dtype=np.float64) / self.params.total_power_w)

    def allocation(self, actions: np.ndarray) -> np.ndarray:
        """Powers ``(B, M)`` in W for actions: ``P_T w / sum w`` (equal split if all weights are zero)."""
        p = self.params
        weights = self.weights(actions)
        total = weights.sum(axis=1, keepdims=True)
        equal = np.full_like(weights, p.total_power_w / p.num_channels)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, p.total_power_w * weights / total, equal)

    def _step(self, actions: np.ndarray):
        p = self.params
        power_w = self.allocation(actions)
        rate = sum_rate(self.gains, power_w, p.noise_power_w)
        optimal_power_w = water_filling(self.gains, p.total_power_w, p.noise_power_w)
        optimal = sum_rate(self.gains, optimal_power_w, p.noise_power_w)
        self.last_sum_rate = rate
        self.last_optimal_sum_rate = optimal
        terminated = np.ones(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        info = {
            "sum_rate": rate,
            "optimal_sum_rate": optimal,
            "rate_ratio": rate / optimal,
            "power_w": power_w,
            "expert_action": self.power_to_action(optimal_power_w),
        }
        return rate, terminated, truncated, info

    def _episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "sum_rate": self.last_sum_rate[idx].copy(),
            "optimal_sum_rate": self.last_optimal_sum_rate[idx].copy(),
            "rate_ratio": self.last_sum_rate[idx] / self.last_optimal_sum_rate[idx],
        }


class PowerAllocationEnv(KernelEnv):
    __doc__ = __doc__
    kernel_class = PowerAllocationKernel


class PowerAllocationVectorEnv(KernelVectorEnv):
    __doc__ = __doc__
    kernel_class = PowerAllocationKernel
