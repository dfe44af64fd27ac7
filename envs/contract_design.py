"""Contract design for semantic information sharing: ``gentwin/ContractDesign-v0``.

Source: seed 002, paper 1, section V-A ("AI-Generated Incentive Mechanism",
``sed -n 563,630p ../shared/seeds/002_0c06d0e91042d4e2.txt``) and its source,
Du et al., "AI-generated incentive mechanism and full-duplex semantic
communications for information sharing", IEEE JSAC 41(9), 2023 (ref. [143]
of the survey, arXiv:2303.01896).  The survey gives the setting (lines
567-569): mixed-reality (MR) users share AIGC results and semantic information
over *full-duplex device-to-device* links; a semantic-information receiver
designs a *contract* that maximises its utility subject to the providers'
*utility threshold* (IR) and incentive compatibility (IC); the design is a
one-shot decision per environment state (Fig. 9: "different optimal contract
designs under different environmental variables"), reported utilities 189.1
(diffusion, 10 denoising steps), 185.9 (SAC), 184.3 (PPO) (lines 607, 623).
The seed does not print the formulas, so the exact link and cost model below
is our own, built from textbook full-duplex and contract-theory results and
documented so that every number can be re-derived.  Every constant is a field
of :class:`ContractDesignParams`.

Description
-----------
``N`` MR users are potential semantic-information *providers*.  A provider's
private type ``theta_k`` (``k = 1..K``, ``theta_1 < .. < theta_K``, shares
``p_k``) is its energy efficiency at extracting and transmitting semantic
information: delivering ``q`` kbit of semantic information in one slot costs
a type-``k`` provider ::

    cost_k(q) = psi_k * E(q),        psi_k = energy_price_per_mj / theta_k

where ``E(q)`` (mJ) is the energy a unit-efficiency device spends:

* **Full-duplex D2D link** (survey line 567; the JSAC paper analyses its rate
  under generalised small-scale fading, we implement Nakagami-m).  The receiver
  transmits its own AIGC results to the provider *on the same band at the
  same time*, so the provider's signal reaches it through residual
  self-interference (RSI).  With provider transmit power ``P`` (W) ::

      SINR(P) = P * G / (sigma2 + RSI)
      G       = 10^(-PL_1m/10) * d^(-alpha) * |h|^2          (path loss, fading)
      sigma2  = 10^((N0_dBm/Hz - 30)/10) * W                 (thermal noise, W)
      RSI     = P_r * 10^(-SIC_dB/10) * |h_SI|^2             (residual SI, W)

  ``|h|^2`` is Nakagami-m power fading, Gamma(m, 1/m) with unit mean; for the
  integer ``m`` used here it is generated as ``(1/m) sum_{j<m} |c_j|^2`` with
  ``c_j ~ CN(0, 1)`` (``m = 1`` is Rayleigh).  ``|h_SI|^2`` is Rayleigh
  (exponential, unit mean) as for a residual SI channel after cancellation.
  Both gains are clipped to ``[fading_gain_min_db, fading_gain_max_db]``.
  The achievable rate is Shannon's ``C(P) = W log2(1 + SINR(P))``.
* **Transmission energy**: to deliver ``q`` kbit within a slot of ``T``
  seconds the provider must run at rate ``1000 q / T``, i.e. transmit power
  ``P(q) = (2^(q / Q) - 1) (sigma2 + RSI) / G`` with ``Q = W T / 1000`` kbit
  per bit/s/Hz (inverse of ``C``); the energy is ``P(q) T``.
* **Semantic extraction energy** ``e_x q`` (mJ), linear in the extracted amount.

So ``E(q) = 1000 T (2^(q/Q) - 1) / gamma + e_x q`` (mJ) with
``gamma = G / (sigma2 + RSI)`` (per watt), convex and increasing.  A provider
cannot exceed its maximum power ``P_max``: ``q <= q_cap = T C(P_max) / 1000``.

The receiver (principal) values semantic information with the concave
``g(q) = a ln(1 + q / q_ref)`` per provider and offers a menu of ``K`` items
``(q_k, R_k)``.  Provider utilities ``U_kj = R_j - psi_k E(q_j)`` (type ``k``
taking item ``j``); principal utility ::

    U_principal = sum_k N p_k (g(q_k) - R_k)

Constraints: IR ``U_kk >= U_min`` and IC ``U_kk >= U_kj`` for all ``j``.

The exact optimum (:func:`optimal_contract`): by the standard reduction
(single crossing holds since ``psi_k`` decreases in ``k``) IR binds for type 1,
the downward-adjacent IC binds, ``q`` is non-decreasing, and the principal's
problem becomes ``max sum_k [p_k g(q_k) - v_k E(q_k)]`` over non-decreasing
``q`` with virtual costs ``v_k = p_k psi_k + (psi_k - psi_{k+1}) sum_{j>k} p_j``.
With ``x = E(q)`` each term is ``p_k (G(x) - c_k x)``, ``G`` concave,
``c_k = v_k / p_k``; its monotone optimum is given by the weighted antitonic
regression ``c_hat`` of ``c`` (ironing / pooling, Barlow-Brunk), and
``q_k`` solves ``g'(q) = c_hat_k E'(q)`` clipped to ``[0, q_cap]`` (common bounds
keep clipping exact).  Payments follow from the binding constraints:
``R_1 = U_min + psi_1 E(q_1)``, ``R_k = R_{k-1} + psi_k (E(q_k) - E(q_{k-1}))``.

Action Space
------------
``Box(-1, 1, (2K,), float32)``: the whole menu.  Entry ``k`` (``0 <= k < K``)
is the amount for type ``k+1``, ``q_k = q_cap (a_k + 1) / 2`` kbit (so every
amount is deliverable at ``P <= P_max``); entry ``K + k`` the payment
``R_k = R_scale (a_{K+k} + 1) / 2``, with
``R_scale = U_min + max(psi_1 E(q_cap), g(q_cap))``, which is at least every
payment of the optimal menu.  ``q_cap`` and ``R_scale`` depend on the state
and are functions of the observation.  This is ``action_mode="raw"`` (the
default, the paper's formulation): most of the box is IR/IC infeasible.

``action_mode="feasible"`` keeps the box and the problem (the same menus, the
same utility) but reads the action as shares ``z = (a + 1) / 2`` in ``[0, 1]``
so that *every* action is an IR/IC-feasible menu:

* amounts by stick-breaking, ``q_k = q_{k-1} + z_k (q_cap - q_{k-1})``
  (``q_0 = 0``), hence ``0 <= q_1 <= .. <= q_K <= q_cap``;
* type 1's payment binding-or-above IR,
  ``R_1 = b + z_{K+1} (R_scale - b)`` with ``b = U_min + psi_1 E(q_1)``;
* each payment step inside the band of the two adjacent IC constraints,
  ``R_{k+1} - R_k = psi_{k+1} dE_k + z_{K+k+1} (psi_k - psi_{k+1}) dE_k`` with
  ``dE_k = E(q_{k+1}) - E(q_k) >= 0``: the lower end keeps type ``k+1`` from
  taking item ``k``, the upper end keeps type ``k`` from taking item ``k+1``.

Monotone amounts with the adjacent IC constraints give every IC constraint
(single crossing: ``psi_k`` decreases in ``k``), and IR of type 1 with IC gives
IR of every type, so the menu is feasible for every action.  Every feasible menu
with ``R_1 <= R_scale`` has an action (``menu_to_action`` inverts the map), the
exact optimum included: its shares are those of its amounts and ``0`` for every
payment (IR of type 1 and downward IC bind).

Those zero shares sit at the box edge ``a = -1``, which squashed-Gaussian
policies approach only asymptotically.  ``zero_share_below = t`` (default 0,
``action_mode="feasible"`` only) reads the shares as ``max(z - t, 0) / (1 - t)``,
so every ``z <= t`` means a zero share (binding payments, pooled amounts) and
the optimum is reached from a set of actions of positive volume; the menus
are the same.  ``menu_to_action`` then puts zero shares at ``z = t / 2``.

Observation Space
-----------------
``Box(0, 1, (2K + 7,), float32)``:

==============  =================================================================
index           meaning
==============  =================================================================
0               ``N / users_max``
1 .. K          ``theta_k / type_max`` (ascending)
K+1 .. 2K       ``p_k``
2K+1            ``(d - d_min) / (d_max - d_min)``
2K+2            ``m / nakagami_m_max``
2K+3            ``|h|^2`` in dB, scaled from the clip range to [0, 1]
2K+4            ``|h_SI|^2`` in dB, scaled from the clip range to [0, 1]
2K+5            ``log2(1 + SINR(P_max)) / se_max`` (spectral efficiency at
                full power; ``se_max`` is its best case over the state space)
2K+6            period ``t / periods_per_episode`` (0 in the one-shot variant)
==============  =================================================================

Rewards
-------
``U_principal`` of the offered menu when IR and IC hold (deficits up to
``violation_tolerance`` count as zero, so float32 round trips of an exact menu
stay feasible).  Otherwise ::

    min(U_principal, 0) - N (penalty_base + penalty_weight * V)

with ``V`` the total violation ``sum_k IR deficit_k + sum_{k != j} IC deficit_kj``
(utility units per provider).  Because ``penalty_base > utility_threshold`` and
any optimum is at least ``-N U_min`` (serve nobody), no infeasible menu earns
more than the optimal contract: the exact optimum is the reward maximiser.
This is ``penalty="cliff"`` (the default): a step of at least ``N penalty_base``
at the feasible boundary and, for menus far outside, rewards tens of times the
optimum below zero.

``penalty="smooth"`` gives every menu the reward ::

    min(U_principal, U*) - N penalty_weight V

with ``U*`` the exact optimal utility of the state.  For feasible menus this
is ``U_principal`` (they have ``U_principal <= U*``, so the cap is inactive);
it is continuous where the violation vanishes (up to the step of
``N penalty_weight violation_tolerance`` at the tolerance) and falls linearly
with the violation.  No menu earns more than ``U*`` (not even one that the
tolerance lets pass with ``U_principal`` a hair above ``U*``), every infeasible
one earns at most ``U* - N penalty_weight V < U*``, so the exact optimum is the
reward maximiser for any ``penalty_weight > 0``.

``reward_scale`` divides the reward (either penalty) by a positive number that
depends on the state only, never on the action, so in every state the order of
the menus, and the exact optimum as the maximiser, are unchanged:
``"none"`` (default, utility units), ``"per_user"`` (divided by ``N``: utility
per provider, about 5 at the optimum) or ``"optimum"`` (divided by
``max(U*, N U_min)``: the optimum earns 1 in every state where ``U* >= N U_min``,
over 99% of default states; needs ``U_min > 0``).  In the multi-period variant
the divisor weights the periods differently, so only the per-period statement
holds there.  ``info["unscaled_reward"]`` is the reward before the division.

Starting State
--------------
Drawn per instance: ``N ~ U{users_min..users_max}``; ``theta_k`` i.i.d.
``U[type_min, type_max]`` sorted; ``p ~ Dirichlet(type_probability_concentration)``;
``d ~ U[distance_min_m, distance_max_m]``; ``m ~ U{nakagami_m_min..nakagami_m_max}``;
fading and SI gains as above.

Episode End
-----------
``ContractDesign-v0`` (``periods_per_episode = 1``): a contextual bandit, the
episode terminates after one contract, as in the paper.
``ContractDesign-Dynamic-v0`` (preset ``dynamic``): ``periods_per_episode = 20``
periods; between periods the types take a reflected random step of up to
``type_drift`` of their range (then re-sorted), shares move to
``(1 - probability_drift) p + probability_drift Dirichlet``, the distance takes a
reflected step of up to ``distance_step_m``, every fading component follows a
Gauss-Markov process with correlation ``fading_correlation`` (the Nakagami
order is fixed per episode), and the user population takes an integer step
of up to ``users_step``.  Users of a type whose IR is violated walk away for
good (``round(N sum_{IR violated} p_k)`` users are lost), so violations cost
future utility.  The episode terminates after the last period (time is in the
observation).

Arguments
---------
``gym.make("gentwin/ContractDesign-v0", params="rayleigh")`` selects a preset;
keyword arguments override fields (``num_types=3``).  Presets: ``default``
(Nakagami ``m`` in 1..4), ``rayleigh`` (``m = 1``), ``dynamic``.

Options that make the problem learnable without changing it (see Action Space
and Rewards), e.g. ``gym.make(id, action_mode="feasible", reward_scale="optimum")``:

====================  ==============================  ====================================
field                 values (default first)          what it changes
====================  ==============================  ====================================
``action_mode``       ``"raw"``, ``"feasible"``       how an action becomes a menu
``zero_share_below``  ``0.0``, any in ``[0, 1)``      with ``"feasible"``: shares up to
                                                      it mean zero
``penalty``           ``"cliff"``, ``"smooth"``       the reward of infeasible menus
``reward_scale``      ``"none"``, ``"per_user"``,     positive per-state divisor of the
                      ``"optimum"``                   reward
====================  ==============================  ====================================

Info
----
Per step: ``utility`` (principal utility of the menu), ``optimal_utility``
(exact optimum for the state the menu was offered in), ``feasible``,
``ir_violation`` (K,), ``ic_violation`` (K, K) (``[k, j]``: how much type ``k``
prefers item ``j`` over its own), ``total_violation``, ``provider_utility`` (K,),
``users``, ``capacity_kbit`` (``q_cap``), ``expert_action`` (the optimal menu of
the state as an action in the selected ``action_mode``, for agents that learn
from an expert database), ``unscaled_reward`` (the reward before
``reward_scale``).  At episode end ``episode_summary``:
``return``, ``length``, ``utility``, ``unscaled_return``, ``optimal_utility``
(sums over periods), ``share_of_optimal`` (unscaled return / optimal utility,
so comparable across ``reward_scale``), ``violation_rate`` (share of
infeasible periods), ``users_lost``.

Version History
---------------
* v0: initial release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces
from scipy.special import ndtri

from gentwin.envs.core import (
    BatchedKernel,
    KernelEnv,
    KernelVectorEnv,
    check_choice,
    check_field,
)

__all__ = [
    "ContractDesignEnv",
    "ContractDesignKernel",
    "ContractDesignParams",
    "ContractDesignVectorEnv",
    "PRESETS",
    "evaluate_menu",
    "ironed_virtual_costs",
    "link_gain_per_w",
    "optimal_contract",
    "semantic_energy_mj",
    "semantic_valuation",
]


#: Values of the options that make the problem learnable (see the module docstring).
ACTION_MODES = ("raw", "feasible")
PENALTIES = ("cliff", "smooth")
REWARD_SCALES = ("none", "per_user", "optimum")


@dataclass(frozen=True)
class ContractDesignParams:
    """Static configuration of the contract-design problem (validated)."""

    #: K, number of provider types (menu items).
    num_types: int = 5
    #: 1: one-shot contract (contextual bandit); > 1: multi-period variant.
    periods_per_episode: int = 1
    users_min: int = 10
    users_max: int = 50
    #: Provider energy efficiency theta (dimensionless), drawn in [type_min, type_max].
    type_min: float = 1.0
    type_max: float = 5.0
    #: Integer Dirichlet concentration of the type shares p_k.
    type_probability_concentration: int = 2
    #: U_min, the providers' utility threshold (IR).
    utility_threshold: float = 0.5
    #: a in g(q) = a ln(1 + q / q_ref), utility per provider.
    valuation_scale: float = 5.0
    #: q_ref in g(q) = a ln(1 + q / q_ref), kbit.
    valuation_reference_kbit: float = 10.0
    #: Utility units per mJ spent by a provider of efficiency 1.
    energy_price_per_mj: float = 20.0
    #: e_x, energy to extract one kbit of semantic information (mJ).
    extraction_energy_mj_per_kbit: float = 0.005
    bandwidth_hz: float = 1e6
    slot_s: float = 0.01
    noise_psd_dbm_per_hz: float = -174.0
    #: Path loss at 1 m (40 dB ~ free space at 2.4 GHz).
    path_loss_at_1m_db: float = 40.0
    path_loss_exponent: float = 3.0
    distance_min_m: float = 5.0
    distance_max_m: float = 50.0
    nakagami_m_min: int = 1
    nakagami_m_max: int = 4
    #: P_max of the provider.
    provider_power_dbm: float = 20.0
    #: P_r, the receiver's simultaneous (full-duplex) transmit power.
    receiver_power_dbm: float = 20.0
    #: Self-interference cancellation; residual SI = P_r 10^(-SIC/10) |h_SI|^2.
    si_cancellation_db: float = 110.0
    fading_gain_min_db: float = -30.0
    fading_gain_max_db: float = 10.0
    #: Infeasible reward: min(U, 0) - N (penalty_base + penalty_weight * violation).
    penalty_base: float = 1.0
    penalty_weight: float = 1.0
    #: IR/IC deficits up to this (utility per provider) count as satisfied.
    violation_tolerance: float = 1e-4
    #: "raw": the paper's menu, every amount and payment free in its box;
    #: "feasible": the feasibility-preserving map (every action is an IR/IC menu).
    action_mode: str = "raw"
    #: action_mode="feasible" only: shares z <= t mean 0, z = max(z - t, 0) / (1 - t).
    zero_share_below: float = 0.0
    #: "cliff": the paper-style penalty with the ``penalty_base`` step;
    #: "smooth": ``min(U, U*) - N penalty_weight V``, continuous at the feasible boundary.
    penalty: str = "cliff"
    #: "none", "per_user" (reward / N) or "optimum" (reward / max(U*, N U_min)).
    reward_scale: str = "none"
    # -- multi-period dynamics (periods_per_episode > 1) --
    type_drift: float = 0.05
    probability_drift: float = 0.2
    fading_correlation: float = 0.9
    distance_step_m: float = 2.0
    users_step: int = 2

    def __post_init__(self) -> None:
        check_field(self, "num_types", low=1, high=64, integer=True)
        check_field(self, "periods_per_episode", low=1, high=100_000, integer=True)
        check_field(self, "users_min", low=1, integer=True)
        check_field(self, "users_max", low=self.users_min, integer=True)
        check_field(self, "type_min", low=0.0, low_inclusive=False)
        check_field(self, "type_max", low=self.type_min)
        check_field(self, "type_probability_concentration", low=1, high=100, integer=True)
        check_field(self, "utility_threshold", low=0.0)
        check_field(self, "valuation_scale", low=0.0, low_inclusive=False)
        check_field(self, "valuation_reference_kbit", low=0.0, low_inclusive=False)
        check_field(self, "energy_price_per_mj", low=0.0, low_inclusive=False)
        check_field(self, "extraction_energy_mj_per_kbit", low=0.0)
        check_field(self, "bandwidth_hz", low=0.0, low_inclusive=False)
        check_field(self, "slot_s", low=0.0, low_inclusive=False)
        check_field(self, "noise_psd_dbm_per_hz", low=-250.0, high=0.0)
        check_field(self, "path_loss_at_1m_db", low=0.0, high=200.0)
        check_field(self, "path_loss_exponent", low=1.0, high=8.0)
        check_field(self, "distance_min_m", low=0.0, low_inclusive=False)
        check_field(self, "distance_max_m", low=self.distance_min_m)
        check_field(self, "nakagami_m_min", low=1, high=64, integer=True)
        check_field(self, "nakagami_m_max", low=self.nakagami_m_min, high=64, integer=True)
        check_field(self, "provider_power_dbm", low=-60.0, high=60.0)
        check_field(self, "receiver_power_dbm", low=-60.0, high=60.0)
        check_field(self, "si_cancellation_db", low=0.0, high=300.0)
        check_field(self, "fading_gain_min_db", low=-100.0, high=0.0)
        check_field(self, "fading_gain_max_db", low=0.0, high=100.0)
        # penalty_base > U_min makes the exact optimum the reward maximiser.
        check_field(self, "penalty_base", low=self.utility_threshold, low_inclusive=False)
        check_field(self, "penalty_weight", low=0.0)
        check_field(self, "violation_tolerance", low=0.0, high=1.0)
        check_choice(self, "action_mode", ACTION_MODES)
        check_field(self, "zero_share_below", low=0.0, high=1.0, high_inclusive=False)
        if self.zero_share_below > 0.0 and self.action_mode != "feasible":
            raise ValueError(
                f"ContractDesignParams.zero_share_below = {self.zero_share_below!r} is invalid with "
                f"action_mode={self.action_mode!r}: it applies to action_mode='feasible' only"
            )
        check_choice(self, "penalty", PENALTIES)
        check_choice(self, "reward_scale", REWARD_SCALES)
        if self.reward_scale == "optimum" and self.utility_threshold <= 0.0:
            raise ValueError(
                f"ContractDesignParams.utility_threshold = {self.utility_threshold!r} is invalid "
                "with reward_scale='optimum': the scale max(U*, N U_min) needs U_min > 0"
            )
        check_field(self, "type_drift", low=0.0, high=1.0)
        check_field(self, "probability_drift", low=0.0, high=1.0)
        check_field(self, "fading_correlation", low=0.0, high=1.0)
        check_field(self, "distance_step_m", low=0.0)
        check_field(self, "users_step", low=0, integer=True)
        if self.fading_gain_min_db >= self.fading_gain_max_db:
            raise ValueError(
                f"ContractDesignParams.fading_gain_max_db = {self.fading_gain_max_db!r} is invalid: "
                f"must exceed fading_gain_min_db = {self.fading_gain_min_db!r}"
            )

    # -- derived constants ----------------------------------------------------
    @property
    def noise_w(self) -> float:
        return 10.0 ** ((self.noise_psd_dbm_per_hz - 30.0) / 10.0) * self.bandwidth_hz

    @property
    def provider_power_w(self) -> float:
        return 10.0 ** ((self.provider_power_dbm - 30.0) / 10.0)

    @property
    def residual_si_w(self) -> float:
        """Residual self-interference power for a unit SI channel gain."""
        return 10.0 ** ((self.receiver_power_dbm - 30.0 - self.si_cancellation_db) / 10.0)

    @property
    def kbit_per_spectral_efficiency(self) -> float:
        """Q = W T / 1000: kbit per slot per bit/s/Hz."""
        return self.bandwidth_hz * self.slot_s / 1000.0


PRESETS: dict[str, ContractDesignParams] = {
    "default": ContractDesignParams(),
    "rayleigh": ContractDesignParams(nakagami_m_min=1, nakagami_m_max=1),
    "dynamic": ContractDesignParams(periods_per_episode=20),
}


# ---------------------------------------------------------------------------
# The model as functions (broadcast over any leading axes)
# ---------------------------------------------------------------------------
def link_gain_per_w(params: ContractDesignParams, distance_m, fading_gain, si_gain) -> np.ndarray:
    """``gamma = G / (sigma2 + RSI)``: SINR per watt of provider power (1/W)."""
    p = params
    path_gain = 10.0 ** (-p.path_loss_at_1m_db / 10.0) * np.asarray(distance_m, dtype=np.float64) ** (
        -p.path_loss_exponent
    )
    return path_gain * fading_gain / (p.noise_w + p.residual_si_w * np.asarray(si_gain))


def capacity_kbit(params: ContractDesignParams, gain_per_w) -> np.ndarray:
    """``q_cap = T W log2(1 + P_max gamma) / 1000``: kbit deliverable per slot at full power."""
    return params.kbit_per_spectral_efficiency * np.log2(1.0 + params.provider_power_w * gain_per_w)


def semantic_energy_mj(params: ContractDesignParams, q_kbit, gain_per_w) -> np.ndarray:
    """``E(q) = 1000 T (2^(q/Q) - 1) / gamma + e_x q`` (mJ) for a unit-efficiency provider."""
    Q = params.kbit_per_spectral_efficiency
    q = np.asarray(q_kbit, dtype=np.float64)
    return 1000.0 * params.slot_s * np.expm1(q * (np.log(2.0) / Q)) / gain_per_w + (
        params.extraction_energy_mj_per_kbit * q
    )


def semantic_energy_slope(params: ContractDesignParams, q_kbit, gain_per_w) -> np.ndarray:
    """``E'(q)`` (mJ per kbit)."""
    Q = params.kbit_per_spectral_efficiency
    rate = np.log(2.0) / Q
    return 1000.0 * params.slot_s * rate * np.exp(q_kbit * rate) / gain_per_w + (
        params.extraction_energy_mj_per_kbit
    )


def semantic_valuation(params: ContractDesignParams, q_kbit) -> np.ndarray:
    """``g(q) = a ln(1 + q / q_ref)``: the receiver's value of q kbit from one provider."""
    return params.valuation_scale * np.log1p(np.asarray(q_kbit, dtype=np.float64) / params.valuation_reference_kbit)


def ironed_virtual_costs(prob: np.ndarray, cost_per_mj: np.ndarray) -> np.ndarray:
    """Ironed virtual cost ratios ``c_hat`` (..., K) (utility per mJ).

    ``c_k = psi_k + (psi_k - psi_{k+1}) S_k / p_k`` with ``S_k = sum_{j>k} p_j``;
    ``c_hat`` is its ``p``-weighted non-increasing (antitonic) regression, from
    the min-max formula ``c_hat_i = min_{s<=i} max_{t>=i} avg_p(c[s..t])``,
    which pools adjacent violators exactly and vectorises over the batch.
    """
    psi = cost_per_mj
    tail = np.cumsum(prob[..., ::-1], axis=-1)[..., ::-1]  # sum_{j>=k} p_j
    above = tail - prob  # S_k = sum_{j>k} p_j
    next_psi = np.concatenate([psi[..., 1:], psi[..., -1:]], axis=-1)
    c = psi + (psi - next_psi) * above / prob
    K = prob.shape[-1]
    zero = np.zeros((*prob.shape[:-1], 1))
    cum_p = np.concatenate([zero, np.cumsum(prob, axis=-1)], axis=-1)
    cum_pc = np.concatenate([zero, np.cumsum(prob * c, axis=-1)], axis=-1)
    s = np.arange(K)[:, None]
    t = np.arange(K)[None, :]
    valid = t >= s
    t1 = np.where(valid, t + 1, s + 1)  # invalid pairs get a harmless single-item block
    avg = (cum_pc[..., t1] - cum_pc[..., s]) / (cum_p[..., t1] - cum_p[..., s])  # (..., s, t)
    i = np.arange(K)[:, None, None]
    # For each i: max over t >= i (valid), then min over s <= i.
    inner = np.where((t[None] >= i) & valid[None], avg[..., None, :, :], -np.inf)  # (..., i, s, t)
    inner = inner.max(axis=-1)  # (..., i, s)
    outer = np.where(s[None, :, 0] <= i[:, :, 0], inner, np.inf)
    return outer.min(axis=-1)


def solve_first_order(params: ContractDesignParams, c_hat, gain_per_w, q_cap) -> np.ndarray:
    """``q`` with ``g'(q) = c_hat E'(q)``, clipped to ``[0, q_cap]`` (safeguarded Newton).

    ``h(q) = g'(q) - c_hat E'(q)`` is strictly decreasing, so the root (if any
    in ``[0, q_cap]``) is unique and bracketed; Newton steps that leave the
    bracket fall back to bisection.
    """
    a, q_ref = params.valuation_scale, params.valuation_reference_kbit
    Q = params.kbit_per_spectral_efficiency
    rate = np.log(2.0) / Q
    scale = 1000.0 * params.slot_s / gain_per_w
    e_x = params.extraction_energy_mj_per_kbit

    def h(q):
        return a / (q_ref + q) - c_hat * (scale * rate * np.exp(q * rate) + e_x)

    cap = np.broadcast_to(q_cap, c_hat.shape).astype(np.float64)
    at_zero = h(np.zeros_like(c_hat)) <= 0.0
    at_cap = h(cap) >= 0.0
    interior = ~(at_zero | at_cap)
    lo = np.zeros_like(c_hat)
    hi = np.where(interior, cap, 0.0)
    q = 0.5 * (lo + hi)
    active = interior.copy()
    for _ in range(200):
        growth = c_hat * scale * rate * np.exp(q * rate)
        inv = 1.0 / (q_ref + q)
        hq = a * inv - growth - c_hat * e_x
        slope = -a * inv * inv - growth * rate
        pos = hq > 0.0
        lo = np.where(pos, q, lo)
        hi = np.where(pos, hi, q)
        step = q - hq / slope
        inside = (step >= lo) & (step <= hi)
        new = np.where(inside, step, 0.5 * (lo + hi))
        # Converged entries are frozen, so each entry's result depends on its own
        # iterates only (bit-identical whatever else is in the batch).
        change = np.abs(new - q)
        q = np.where(active, new, q)
        active &= change > 1e-12 * cap
        if not active.any():
            break
    return np.where(at_zero, 0.0, np.where(at_cap, cap, q))


def optimal_contract(
    params: ContractDesignParams,
    theta: np.ndarray,
    prob: np.ndarray,
    users: np.ndarray,
    gain_per_w: np.ndarray,
    q_cap: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact optimal menu for a batch of states.

    Arguments have shapes ``theta, prob: (B, K)`` (types ascending),
    ``users, gain_per_w, q_cap: (B,)``.  Returns ``q (B, K)`` kbit, ``R (B, K)``
    payments and the principal utility ``(B,)`` (see the module docstring for
    the reduction).
    """
    theta = np.asarray(theta, dtype=np.float64)
    prob = np.maximum(np.asarray(prob, dtype=np.float64), 1e-300)
    psi = params.energy_price_per_mj / theta
    c_hat = ironed_virtual_costs(prob, psi)
    gain = np.asarray(gain_per_w, dtype=np.float64)[:, None]
    cap = np.asarray(q_cap, dtype=np.float64)[:, None]
    q = solve_first_order(params, c_hat, gain, cap)
    # Ironing makes c_hat non-increasing, so q is non-decreasing; enforce it
    # against the last-ulp noise of the root finder.
    q = np.maximum.accumulate(q, axis=-1)
    energy = semantic_energy_mj(params, q, gain)
    increments = np.diff(energy, axis=-1, prepend=0.0) * psi
    payment = params.utility_threshold + np.cumsum(increments, axis=-1)
    utility = np.asarray(users, dtype=np.float64) * np.sum(
        prob * (semantic_valuation(params, q) - payment), axis=-1
    )
    return q, payment, utility


def evaluate_menu(
    params: ContractDesignParams,
    theta: np.ndarray,
    prob: np.ndarray,
    users: np.ndarray,
    gain_per_w: np.ndarray,
    q: np.ndarray,
    payment: np.ndarray,
) -> dict[str, np.ndarray]:
    """Principal utility, provider utilities and IR/IC deficits of menus ``(q, R)`` (B, K)."""
    psi = params.energy_price_per_mj / np.asarray(theta, dtype=np.float64)
    energy = semantic_energy_mj(params, q, np.asarray(gain_per_w, dtype=np.float64)[:, None])
    # provider[b, k, j]: utility of a type-k provider taking item j.
    provider = payment[:, None, :] - psi[:, :, None] * energy[:, None, :]
    own = np.diagonal(provider, axis1=1, axis2=2)
    tol = params.violation_tolerance
    ir = params.utility_threshold - own
    ir = np.where(ir > tol, ir, 0.0)
    ic = provider - own[:, :, None]
    ic = np.where(ic > tol, ic, 0.0)
    total = ir.sum(axis=1) + ic.sum(axis=(1, 2))
    utility = np.asarray(users, dtype=np.float64) * np.sum(
        prob * (semantic_valuation(params, q) - payment), axis=-1
    )
    return {
        "utility": utility,
        "provider_utility": own,
        "ir_violation": ir,
        "ic_violation": ic,
        "total_violation": total,
        "feasible": total == 0.0,
    }


def _reflect(x: np.ndarray, low, high) -> np.ndarray:
    """Reflect ``x`` back into ``[low, high]`` (one bounce suffices for small steps)."""
    x = np.where(x < low, 2 * low - x, x)
    x = np.where(x > high, 2 * high - x, x)
    return np.clip(x, low, high)


class ContractDesignKernel(BatchedKernel):
    """Batched contract-design dynamics (see the module docstring for the MDP).

    At reset every instance draws one block of uniforms for the whole episode
    (one generator call per instance); states, their links and the exact
    optimum are then computed as array code over the reset instances.
    """

    params_class = ContractDesignParams
    presets = PRESETS

    def __init__(self, params: ContractDesignParams | str | None = None, num_envs: int = 1):
        super().__init__(params, num_envs)
        p = self.params
        B, K, H = self.num_envs, p.num_types, p.periods_per_episode
        M = p.nakagami_m_max
        alpha = p.type_probability_concentration
        # Layout of one period's uniforms.
        self._u_type = slice(0, K)
        self._u_prob = slice(K, K + alpha * K)
        o = K + alpha * K
        self._u_dist = o
        self._u_fading = slice(o + 1, o + 1 + 2 * M)
        self._u_si = slice(o + 1 + 2 * M, o + 3 + 2 * M)
        self._u_users = o + 3 + 2 * M
        self._u_m = o + 4 + 2 * M
        self._draws = o + 5 + 2 * M
        self.uniforms = np.zeros((B, H, self._draws))
        # State.
        self.period = np.zeros(B, dtype=np.int64)
        self.theta = np.ones((B, K))
        self.prob = np.full((B, K), 1.0 / K)
        self.users_base = np.full(B, p.users_min, dtype=np.int64)
        self.users_lost = np.zeros(B, dtype=np.int64)
        self.distance_m = np.full(B, p.distance_min_m)
        self.nakagami_m = np.ones(B, dtype=np.int64)
        self.fading_components = np.zeros((B, M, 2))
        self.si_components = np.zeros((B, 2))
        # Derived per state.
        self.fading_gain = np.ones(B)
        self.si_gain = np.ones(B)
        self.gain_per_w = np.ones(B)
        self.capacity_kbit = np.ones(B)
        self.payment_scale = np.ones(B)
        self.optimal_q = np.zeros((B, K))
        self.optimal_payment = np.zeros((B, K))
        self.optimal_utility = np.zeros(B)
        # Episode accumulators.
        self.utility_sum = np.zeros(B)
        self.unscaled_return = np.zeros(B)
        self.optimal_sum = np.zeros(B)
        self.infeasible_count = np.zeros(B, dtype=np.int64)
        self._component_mask = np.arange(M)[None, :] < self.nakagami_m[:, None]
        # Normalisers.
        self._db_lo, self._db_hi = p.fading_gain_min_db, p.fading_gain_max_db
        best = link_gain_per_w(p, p.distance_min_m, 10 ** (p.fading_gain_max_db / 10), 10 ** (p.fading_gain_min_db / 10))
        self.spectral_efficiency_max = float(np.log2(1.0 + p.provider_power_w * best))

    def _build_spaces(self):
        K = self.params.num_types
        obs = spaces.Box(0.0, 1.0, shape=(2 * K + 7,), dtype=np.float32)
        act = spaces.Box(-1.0, 1.0, shape=(2 * K,), dtype=np.float32)
        return obs, act

    @property
    def users(self) -> np.ndarray:
        """Current number of providers ``N`` per instance."""
        return np.maximum(self.users_base - self.users_lost, 1)

    @property
    def cost_per_mj(self) -> np.ndarray:
        """``psi_k = energy_price / theta_k`` (B, K)."""
        return self.params.energy_price_per_mj / self.theta

    # -- reset -----------------------------------------------------------------
    def _reset_instances(self, idx: np.ndarray) -> None:
        shape = (self.params.periods_per_episode, self._draws)
        for i in idx:  # reset path: one generator call per instance (see envs/core.py)
            self.uniforms[i] = self.rngs[i].random(shape)
        p = self.params
        u = self.uniforms[idx, 0]
        self.theta[idx] = np.sort(p.type_min + (p.type_max - p.type_min) * u[:, self._u_type], axis=1)
        self.prob[idx] = self._dirichlet(u[:, self._u_prob])
        n_users = p.users_max - p.users_min + 1
        self.users_base[idx] = p.users_min + np.minimum((u[:, self._u_users] * n_users).astype(np.int64), n_users - 1)
        self.users_lost[idx] = 0
        n_m = p.nakagami_m_max - p.nakagami_m_min + 1
        self.nakagami_m[idx] = p.nakagami_m_min + np.minimum((u[:, self._u_m] * n_m).astype(np.int64), n_m - 1)
        self._component_mask = np.arange(p.nakagami_m_max)[None, :] < self.nakagami_m[:, None]
        self.distance_m[idx] = p.distance_min_m + (p.distance_max_m - p.distance_min_m) * u[:, self._u_dist]
        self.fading_components[idx] = self._normals(u[:, self._u_fading]).reshape(len(idx), -1, 2)
        self.si_components[idx] = self._normals(u[:, self._u_si])
        self.period[idx] = 0
        self.utility_sum[idx] = 0.0
        self.unscaled_return[idx] = 0.0
        self.optimal_sum[idx] = 0.0
        self.infeasible_count[idx] = 0
        self._refresh(idx)

    def _dirichlet(self, u: np.ndarray) -> np.ndarray:
        """Dirichlet(alpha) shares from ``alpha K`` uniforms (sums of exponentials)."""
        K, alpha = self.params.num_types, self.params.type_probability_concentration
        expo = -np.log1p(-u).reshape(u.shape[0], alpha, K).sum(axis=1)
        expo = np.maximum(expo, 1e-12)
        return expo / expo.sum(axis=1, keepdims=True)

    @staticmethod
    def _normals(u: np.ndarray) -> np.ndarray:
        """Real parts of CN(0, 1) components: N(0, 1/2) by the inverse normal CDF."""
        return ndtri(np.clip(u, 1e-12, 1.0 - 1e-12)) * np.sqrt(0.5)

    def _refresh(self, idx) -> None:
        """Recompute gains, capacity, action scales and the exact optimum for ``idx``."""
        p = self.params
        lo, hi = 10.0 ** (self._db_lo / 10.0), 10.0 ** (self._db_hi / 10.0)
        power = (self.fading_components[idx] ** 2).sum(axis=2)  # |c_j|^2 per branch
        m = self.nakagami_m[idx]
        fading = np.where(self._component_mask[idx], power, 0.0).sum(axis=1) / m
        self.fading_gain[idx] = np.clip(fading, lo, hi)
        self.si_gain[idx] = np.clip((self.si_components[idx] ** 2).sum(axis=1), lo, hi)
        gain = link_gain_per_w(p, self.distance_m[idx], self.fading_gain[idx], self.si_gain[idx])
        self.gain_per_w[idx] = gain
        cap = capacity_kbit(p, gain)
        self.capacity_kbit[idx] = cap
        psi_1 = p.energy_price_per_mj / self.theta[idx, 0]
        self.payment_scale[idx] = p.utility_threshold + np.maximum(
            psi_1 * semantic_energy_mj(p, cap, gain), semantic_valuation(p, cap)
        )
        q, payment, utility = optimal_contract(
            p, self.theta[idx], self.prob[idx], self.users[idx], gain, cap
        )
        self.optimal_q[idx] = q
        self.optimal_payment[idx] = payment
        self.optimal_utility[idx] = utility

    # -- action mapping -----------------------------------------------------------
    def action_to_menu(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map normalised actions (B, 2K) in [-1, 1] to ``(q, R)`` (B, K) each.

        ``action_mode="raw"``: amounts and payments independently in their boxes;
        ``"feasible"``: the feasibility-preserving map of the module docstring.
        """
        K = self.params.num_types
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        if self.params.action_mode == "feasible":
            t = self.params.zero_share_below
            return self._feasible_menu(np.maximum((a + 1.0) / 2.0 - t, 0.0) / (1.0 - t))
        q = self.capacity_kbit[:, None] * (a[:, :K] + 1.0) / 2.0
        payment = self.payment_scale[:, None] * (a[:, K:] + 1.0) / 2.0
        return q, payment

    def _feasible_menu(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The IR/IC menu of shares ``z`` (B, 2K) in [0, 1] (``action_mode="feasible"``)."""
        p = self.params
        K = p.num_types
        cap = self.capacity_kbit[:, None]
        # Stick-breaking: q_k takes share z_k of the capacity q_{k-1} leaves, so
        # 0 <= q_1 <= .. <= q_K <= q_cap (a product of factors <= 1 cannot grow
        # in floating point either).
        q = cap * (1.0 - np.cumprod(1.0 - z[:, :K], axis=1))
        q = np.minimum(np.maximum.accumulate(q, axis=1), cap)
        psi = self.cost_per_mj
        energy = semantic_energy_mj(p, q, self.gain_per_w[:, None])
        step_energy = np.diff(energy, axis=1)  # E(q_{k+1}) - E(q_k) >= 0
        # Type 1: IR binding plus a share of the room left below R_scale.
        binding = p.utility_threshold + psi[:, 0] * energy[:, 0]
        first = binding + z[:, K] * np.maximum(self.payment_scale - binding, 0.0)
        # Each payment step between the two adjacent-IC bounds:
        # psi_{k+1} dE (type k+1 does not mimic k) <= dR <= psi_k dE (type k does not mimic k+1).
        steps = (psi[:, 1:] + z[:, K + 1 :] * (psi[:, :-1] - psi[:, 1:])) * step_energy
        payment = first[:, None] + np.concatenate([np.zeros((len(q), 1)), np.cumsum(steps, axis=1)], axis=1)
        return q, payment

    def menu_to_action(self, q: np.ndarray, payment: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Inverse of :meth:`action_to_menu` (clipped into the box), ``dtype`` (float32).

        ``action_mode="feasible"``: every IR/IC-feasible menu with amounts in
        ``[0, q_cap]`` and ``R_1 <= R_scale`` maps back to itself; any other menu
        maps to the action of the clipped shares, i.e. to a feasible menu near it
        (an IR-violating type-1 payment becomes the binding one, a payment step
        outside its IC band its nearest bound, a decreasing amount the previous one).
        """
        q = np.asarray(q, dtype=np.float64)
        payment = np.asarray(payment, dtype=np.float64)
        if self.params.action_mode == "feasible":
            z = self._menu_shares(q, payment)
            t = self.params.zero_share_below
            if t > 0.0:
                # Zero shares (up to round-off; a share of 1e-6 moves a payment by 1e-6 of
                # its IC band) go to the middle of the actions that mean zero.
                z = np.where(z > 1e-6, t + (1.0 - t) * z, 0.5 * t)
            return (2.0 * z - 1.0).astype(dtype)
        a_q = 2.0 * q / self.capacity_kbit[:, None] - 1.0
        a_r = 2.0 * payment / self.payment_scale[:, None] - 1.0
        return np.clip(np.concatenate([a_q, a_r], axis=1), -1.0, 1.0).astype(dtype)

    def _menu_shares(self, q: np.ndarray, payment: np.ndarray) -> np.ndarray:
        """Shares ``z`` (B, 2K) in [0, 1] with ``_feasible_menu(z)`` closest to ``(q, R)``."""
        p = self.params
        K = p.num_types
        cap = self.capacity_kbit[:, None]

        def share(num, den, scale):
            # A band narrower than round-off (pooled amounts) carries no share.
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.clip(np.where(den > 1e-12 * scale, num / den, 0.0), 0.0, 1.0)

        q = np.clip(q, 0.0, cap)
        previous = np.concatenate([np.zeros((len(q), 1)), q[:, :-1]], axis=1)
        z_q = share(q - previous, cap - previous, cap)
        # Payments are read against the amounts the shares actually give.
        q_mapped, _ = self._feasible_menu(np.concatenate([z_q, np.zeros_like(z_q)], axis=1))
        psi = self.cost_per_mj
        energy = semantic_energy_mj(p, q_mapped, self.gain_per_w[:, None])
        step_energy = np.diff(energy, axis=1)
        binding = p.utility_threshold + psi[:, 0] * energy[:, 0]
        r_scale = self.payment_scale[:, None]
        z_first = share(payment[:, 0] - binding, self.payment_scale - binding, self.payment_scale)
        low = psi[:, 1:] * step_energy
        z_steps = share(np.diff(payment, axis=1) - low, (psi[:, :-1] - psi[:, 1:]) * step_energy, r_scale)
        return np.concatenate([z_q, z_first[:, None], z_steps], axis=1)

    def evaluate(self, q: np.ndarray, payment: np.ndarray) -> dict[str, np.ndarray]:
        """Utility and IR/IC deficits of menus ``(q, R)`` in the current states."""
        return evaluate_menu(self.params, self.theta, self.prob, self.users, self.gain_per_w, q, payment)

    def reward_of(self, q: np.ndarray, payment: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Reward of menus ``(q, R)`` in the current states, and :meth:`evaluate`'s metrics.

        The metrics include ``unscaled_reward``, the reward before ``reward_scale``.
        """
        p = self.params
        result = self.evaluate(q, payment)
        utility = result["utility"]
        violation = result["total_violation"]
        if p.penalty == "smooth":
            # One formula for every menu: feasible menus have U <= U*, so the cap
            # only acts on infeasible ones (and on menus that the tolerance lets
            # pass with U a hair above U*); no menu earns more than U*.
            unscaled = np.minimum(utility, self.optimal_utility) - self.users * p.penalty_weight * violation
        else:
            penalty = self.users * (p.penalty_base + p.penalty_weight * violation)
            unscaled = np.where(result["feasible"], utility, np.minimum(utility, 0.0) - penalty)
        result["unscaled_reward"] = unscaled
        return unscaled / self.reward_divisor, result

    @property
    def reward_divisor(self) -> np.ndarray:
        """Positive, action-independent divisor of the reward per instance (``reward_scale``)."""
        p = self.params
        if p.reward_scale == "per_user":
            return self.users.astype(np.float64)
        if p.reward_scale == "optimum":
            return np.maximum(self.optimal_utility, self.users * p.utility_threshold)
        return np.ones(self.num_envs)

    # -- observation -------------------------------------------------------------
    def _observe(self) -> np.ndarray:
        p = self.params
        K = p.num_types
        obs = np.empty((self.num_envs, 2 * K + 7), dtype=np.float32)
        obs[:, 0] = self.users / p.users_max
        obs[:, 1 : K + 1] = self.theta / p.type_max
        obs[:, K + 1 : 2 * K + 1] = self.prob
        span = p.distance_max_m - p.distance_min_m
        obs[:, 2 * K + 1] = (self.distance_m - p.distance_min_m) / span if span > 0 else 0.0
        obs[:, 2 * K + 2] = self.nakagami_m / p.nakagami_m_max
        db_span = self._db_hi - self._db_lo
        obs[:, 2 * K + 3] = (10 * np.log10(self.fading_gain) - self._db_lo) / db_span
        obs[:, 2 * K + 4] = (10 * np.log10(self.si_gain) - self._db_lo) / db_span
        se = np.log2(1.0 + p.provider_power_w * self.gain_per_w)
        obs[:, 2 * K + 5] = se / self.spectral_efficiency_max
        obs[:, 2 * K + 6] = self.period / p.periods_per_episode
        return np.clip(obs, 0.0, 1.0)

    # -- step -----------------------------------------------------------------------
    def _step(self, actions: np.ndarray):
        p = self.params
        q, payment = self.action_to_menu(actions)
        users = self.users.astype(np.float64)
        reward, result = self.reward_of(q, payment)
        utility = result["utility"]
        feasible = result["feasible"]
        info = {
            "utility": utility,
            "unscaled_reward": result["unscaled_reward"],
            "optimal_utility": self.optimal_utility.copy(),
            "feasible": feasible,
            "ir_violation": result["ir_violation"],
            "ic_violation": result["ic_violation"],
            "total_violation": result["total_violation"],
            "provider_utility": result["provider_utility"],
            "users": self.users.copy(),
            "capacity_kbit": self.capacity_kbit.copy(),
            # The optimal menu of this state as an action: the "expert database" of
            # the GDM papers (used by DiffusionActorCritic with bc_coef > 0).
            "expert_action": self.menu_to_action(self.optimal_q, self.optimal_payment),
        }
        self.utility_sum += utility
        self.unscaled_return += result["unscaled_reward"]
        self.optimal_sum += self.optimal_utility
        self.infeasible_count += ~feasible
        # Users of a type whose IR is violated leave for good (multi-period variant).
        ir_broken = result["ir_violation"] > 0.0
        leaving = np.rint(users * np.sum(np.where(ir_broken, self.prob, 0.0), axis=1)).astype(np.int64)
        self.users_lost += leaving
        self.period += 1
        terminated = self.period >= p.periods_per_episode
        if p.periods_per_episode > 1:
            self._advance(np.flatnonzero(~terminated))
        truncated = np.zeros(self.num_envs, dtype=bool)
        return reward, terminated, truncated, info

    def _advance(self, idx: np.ndarray) -> None:
        """Move the instances ``idx`` to their next period (exogenous dynamics)."""
        if idx.size == 0:
            return
        p = self.params
        u = self.uniforms[idx, self.period[idx]]
        span = p.type_max - p.type_min
        theta = self.theta[idx] + p.type_drift * span * (2.0 * u[:, self._u_type] - 1.0)
        self.theta[idx] = np.sort(_reflect(theta, p.type_min, p.type_max), axis=1)
        rho_p = p.probability_drift
        self.prob[idx] = (1.0 - rho_p) * self.prob[idx] + rho_p * self._dirichlet(u[:, self._u_prob])
        step = p.distance_step_m * (2.0 * u[:, self._u_dist] - 1.0)
        self.distance_m[idx] = _reflect(self.distance_m[idx] + step, p.distance_min_m, p.distance_max_m)
        rho = p.fading_correlation
        innovation = np.sqrt(1.0 - rho * rho)
        self.fading_components[idx] = rho * self.fading_components[idx] + innovation * self._normals(
            u[:, self._u_fading]
        ).reshape(len(idx), -1, 2)
        self.si_components[idx] = rho * self.si_components[idx] + innovation * self._normals(u[:, self._u_si])
        s = p.users_step
        delta = np.minimum((u[:, self._u_users] * (2 * s + 1)).astype(np.int64), 2 * s) - s
        self.users_base[idx] = np.clip(self.users_base[idx] + delta, p.users_min, p.users_max)
        self._refresh(idx)

    def _episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        length = np.maximum(self.episode_length[idx], 1)
        optimal = self.optimal_sum[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(optimal != 0.0, self.unscaled_return[idx] / optimal, 0.0)
        return {
            "utility": self.utility_sum[idx].copy(),
            "unscaled_return": self.unscaled_return[idx].copy(),
            "optimal_utility": optimal.copy(),
            "share_of_optimal": share,
            "violation_rate": self.infeasible_count[idx] / length,
            "users_lost": self.users_lost[idx].copy(),
        }


class ContractDesignEnv(KernelEnv):
    __doc__ = __doc__
    kernel_class = ContractDesignKernel


class ContractDesignVectorEnv(KernelVectorEnv):
    __doc__ = __doc__
    kernel_class = ContractDesignKernel
