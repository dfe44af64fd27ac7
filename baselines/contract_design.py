"""Baselines of contract design (seed 002 paper 1 section V-A, lines 563-630).

The survey compares the diffusion-generated contract with SAC and PPO only;
it reports no optimum.  We add the exact optimum and two simple mechanisms:

* ``optimal``: the exact optimal menu of every state, by the standard
  contract-theory reduction (IR binding for the least efficient type,
  downward-adjacent IC binding, monotone amounts), solved exactly with ironing
  (:func:`gentwin.envs.contract_design.optimal_contract`); every menu is checked
  against the full IR/IC constraint set before it is played.
* ``linear_price``: a two-part tariff ``R = U_min + price * q`` with one price
  for all states (the best such price over 512 calibration states, seed
  ``CALIBRATION_SEED``, disjoint from evaluation seeds); item ``k`` is type
  ``k``'s best response, so IR and IC hold by construction (unless a payment
  exceeds the action range and is clipped).
* ``average_type``: one item designed for the average type
  ``theta_bar = sum_k p_k theta_k`` under complete information
  (``g'(q) = psi_bar E'(q)``, ``R = U_min + psi_bar E(q)``) offered to every
  type; it ignores heterogeneity, so below-average types' IR fails.

All three read the state from the kernel they are attached to (the state is
the observation, in exact float64), hence ``requires_kernel = True``.
"""

from __future__ import annotations

import functools

import numpy as np

from gentwin.baselines.base import EXACT_OPTIMUM, Baseline, Bound
from gentwin.envs import contract_design as cd

#: Seed of the states used to calibrate the linear price (never an evaluation seed).
CALIBRATION_SEED = 4_242_424


class _ContractBaseline(Baseline):
    requires_kernel = True

    def menu(self) -> tuple[np.ndarray, np.ndarray]:
        """The menu ``(q, R)`` (B, K) for the kernel's current states."""
        raise NotImplementedError

    def act(self, observations: np.ndarray) -> np.ndarray:
        q, payment = self.menu()
        return self.kernel.menu_to_action(q, payment)


class OptimalContract(_ContractBaseline):
    """The exact optimal contract, verified against every IR and IC constraint."""

    name = "optimal"

    def menu(self):
        k = self.kernel
        q, payment, _ = cd.optimal_contract(
            self.params, k.theta, k.prob, k.users, k.gain_per_w, k.capacity_kbit
        )
        check = k.evaluate(q, payment)
        if not check["feasible"].all():
            bad = int(np.argmin(check["feasible"]))
            raise RuntimeError(
                f"optimal contract of instance {bad} violates IR/IC by "
                f"{check['total_violation'][bad]:.3g}: this is a bug"
            )
        return q, payment


def best_response_kbit(params: cd.ContractDesignParams, price, cost_per_mj, gain_per_w, q_cap):
    """Amount maximising ``price q - psi E(q)`` on ``[0, q_cap]`` (closed form).

    ``E'(q) = A r e^(r q) + e_x`` with ``A = 1000 T / gamma``, ``r = ln 2 / Q``,
    so the first-order condition ``price = psi E'(q)`` gives
    ``q = ln((price / psi - e_x) / (A r)) / r``.
    """
    rate = np.log(2.0) / params.kbit_per_spectral_efficiency
    scale = 1000.0 * params.slot_s / gain_per_w
    margin = price / cost_per_mj - params.extraction_energy_mj_per_kbit
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.log(np.maximum(margin, 1e-300) / (scale * rate)) / rate
    return np.clip(np.where(margin > 0, q, 0.0), 0.0, q_cap)


class LinearPrice(_ContractBaseline):
    """Two-part tariff ``R = U_min + price * q`` with one price for every state."""

    name = "linear_price"

    def __init__(self, env, seed: int | None = None, price_per_kbit: float | None = None):
        super().__init__(env, seed)
        self.price_per_kbit = (
            float(price_per_kbit) if price_per_kbit is not None else self.calibrate(self.params)
        )

    @staticmethod
    def _menu_for(kernel, price):
        p = kernel.params
        q = best_response_kbit(
            p, price, kernel.cost_per_mj, kernel.gain_per_w[:, None], kernel.capacity_kbit[:, None]
        )
        payment = p.utility_threshold + price * q
        return q, payment

    @classmethod
    @functools.lru_cache(maxsize=16)
    def calibrate(cls, params: cd.ContractDesignParams, n_states: int = 512) -> float:
        """The price (per kbit) with the highest mean reward over calibration states."""
        kernel = cd.ContractDesignKernel(params, num_envs=n_states)
        kernel.reset(seed=CALIBRATION_SEED)
        prices = np.geomspace(1e-3, 10.0, 121)
        best, best_value = prices[0], -np.inf
        for price in prices:
            q, payment = cls._menu_for(kernel, price)
            # The menu as the environment would see it (through the action box).
            q, payment = kernel.action_to_menu(kernel.menu_to_action(q, payment))
            value = float(kernel.reward_of(q, payment)[0].mean())
            if value > best_value:
                best, best_value = price, value
        return float(best)

    def menu(self):
        return self._menu_for(self.kernel, self.price_per_kbit)


class AverageTypeContract(_ContractBaseline):
    """One complete-information item for the average type, offered to all types."""

    name = "average_type"

    def menu(self):
        k, p = self.kernel, self.params
        theta_bar = np.sum(k.prob * k.theta, axis=1, keepdims=True)
        psi_bar = p.energy_price_per_mj / theta_bar
        gain = k.gain_per_w[:, None]
        q = cd.solve_first_order(p, psi_bar, gain, k.capacity_kbit[:, None])
        payment = p.utility_threshold + psi_bar * cd.semantic_energy_mj(p, q, gain)
        K = p.num_types
        return np.repeat(q, K, axis=1), np.repeat(payment, K, axis=1)


BASELINES = {cls.name: cls for cls in (OptimalContract, LinearPrice, AverageTypeContract)}
#: The evaluation reference of "share of bound", one-period presets only: the exact
#: optimal menu's utility of the episode's one state (no infeasible menu earns more,
#: see the Rewards section of gentwin.envs.contract_design).  Multi-period episodes
#: get none: the per-period optimum can be negative (down to -U_min per provider), so
#: a policy that drives providers away may beat the sum of per-period optima.
BOUND = Bound(
    name="optimal_contract",
    kind=EXACT_OPTIMUM,
    value=lambda kernel: kernel.optimal_utility.copy(),
    description="principal utility of the exact optimal IR/IC menu of the episode's state",
    applies=lambda params: params.periods_per_episode == 1,
)
