"""Digital-twin-assisted RIS beamforming for ISAC: ``gentwin/RisIsac-v0``.

Source: seed 004 (survey "GenAI-driven digital twins for 6G and metaverse"),
section V-B "Reconfigurable intelligent surfaces" (``sed -n 488,552p
../shared/seeds/004_d159756bebbde3aa.txt``) and section V-C "Integrated sensing
and communication" (``sed -n 554,595p`` of the same file).  The survey has no
formal model; it describes the loop: a digital twin mirrors the radio
environment (CSI, user mobility) and "reduces the overhead of frequency DT
updates" [sic] (line 523), a decision layer chooses "phase shifts, beamforming
vectors" (line 533) and is rewarded by throughput, while ISAC "jointly designs
the communication and sensing" (line 556) and DTs "optimize joint communication
and sensing beamforming designs" (lines 579-581).  The system model below is the
standard RIS-aided multi-user MISO downlink with a dedicated radar stream, the
setting of Huang et al. (IEEE JSAC 2020, DDPG for joint beamforming and phase
shifts), completed with sensing, a power-feasible action map and the twin.
Every choice the survey leaves open is a field of :class:`RisIsacParams`.

Description
-----------
A base station (BS) with an ``M``-antenna half-wavelength ULA serves ``K``
single-antenna users through an ``N``-element RIS (a half-wavelength ULA,
modelled as passive unit-modulus reflectors) and the direct links, while
illuminating one sensing target.  Geometry (metres, 2-D): BS at
``bs_position_m`` with its array along the y axis (broadside +x), RIS at
``ris_position_m`` with its elements along the x axis (broadside -y); users
start uniformly in a disc (``user_area_center_m``, ``user_area_radius_m``) and
walk at ``user_speed_mps`` in a uniformly random heading.

Array responses (``m = 0..M-1``, ``n = 0..N-1``)::

    a_M(phi)_m = exp(j pi m sin phi)      phi: angle from the BS broadside
    b_N(psi)_n = exp(j pi n sin psi)      psi: angle from the RIS broadside

Large-scale fading (distance ``d`` clamped to >= 1 m)::

    beta(d) = 10^(-reference_path_loss_db / 10) * d^(-alpha)

with exponents ``alpha_BR`` (BS-RIS), ``alpha_RU`` (RIS-user), ``alpha_BU``
(BS-user), and an extra ``direct_link_blockage_db`` on the BS-user links.

Channels of slot ``t`` (Rician; rows are conjugate-transposed vectors)::

    G        = sqrt(beta_BR) [ sqrt(k_BR/(1+k_BR)) b_N(psi_BS) a_M(phi_RIS)^H + sqrt(1/(1+k_BR)) S_G ]     (N x M)
    h_r,k^H  = sqrt(beta_RU,k(t)) [ sqrt(k_RU/(1+k_RU)) b_N(psi_k(t))^H + sqrt(1/(1+k_RU)) s_r,k(t) ]  (1 x N)
    h_d,k^H  = sqrt(beta_BU,k(t)) [ sqrt(k_BU/(1+k_BU)) a_M(phi_k(t))^H + sqrt(1/(1+k_BU)) s_d,k(t) ]  (1 x M)

The scattered parts ``S_G, s_r,k, s_d,k`` have i.i.d. CN(0, 1) entries.  The
BS and the RIS do not move, so ``S_G`` is fixed for the episode; the user links
evolve as a first-order Gauss-Markov process with Jakes' correlation::

    s(t+1) = rho s(t) + sqrt(1 - rho^2) e(t),   e(t) ~ CN(0, I)
    rho    = J0(2 pi f_D T_s),   f_D = user_speed_mps * carrier_frequency_hz / c

while the line-of-sight parts and path losses follow the users' positions
``p_k(t) = p_k(0) + v_k t T_s``.  With ``ris_present=False`` the RIS is absent
(``h_r,k = 0``): the no-RIS reference system.

Transmission (``Theta = diag(exp(j theta_1), .., exp(j theta_N))``)::

    h_k^H   = h_d,k^H + h_r,k^H Theta G                                     (effective channel)
    x       = sum_k w_k s_k + w_0 s_0                                        (s_0: radar stream)
    SINR_k  = |h_k^H w_k|^2 / (sum_{j != k, j >= 1} |h_k^H w_j|^2 + |h_k^H w_0|^2 + sigma^2)
    R_k     = log2(1 + SINR_k)                                 [bit/s/Hz]

Sensing (transmit beampattern gain toward the target, normalised to the
largest gain a full-power beam can give; ``R = sum_{j=0..K} w_j w_j^H``)::

    target seen directly (target_via_ris=False), angle phi_t from the BS:
        g = a_M(phi_t)^H R a_M(phi_t) / (M P_max)                          in [0, 1]
    target visible only via the RIS (target_via_ris=True), angle psi_t from the RIS:
        g = b_N(psi_t)^H Theta G R G^H Theta^H b_N(psi_t) / (N^2 M beta_BR P_max)   (about [0, 1])

The sensing requirement is ``g >= Gamma`` (``sensing_threshold``).

The digital twin.  The twin tracks the geometry (positions, hence path losses
and line-of-sight components, e.g. from the ISAC sensing itself) exactly, and
estimates the scattered components.  It is refreshed every
``twin_sync_period_slots`` slots (at ``t = 0, T, 2T, ..``); a refresh measures
``y = s + sqrt(eps) n`` with ``n ~ CN(0, I)`` and ``eps = twin_estimation_nmse``
(error variance relative to the scattered component's power), and between
refreshes the twin predicts with the linear MMSE predictor of the Gauss-Markov
process::

    s_hat(t) = rho^age * y / (1 + eps),     age = t - t_refresh
    E|s - s_hat|^2 = 1 - rho^(2 age) / (1 + eps)     (grows with the age)

``S_G`` is estimated once per episode the same way (it does not change).  The
agent sees the twin's channels; the environment evaluates its action on the
true ones.  ``twin_estimation_nmse=0`` with ``twin_sync_period_slots=1`` is a
perfect twin: the observation is then exactly the true channel.  The twin's
measurement errors are drawn after the physical channel's randomness, so the
physical channels of a seed do not depend on the twin's parameters: twin
settings can be compared on identical channel realisations.

Action Space
------------
``Box(-1, 1, (2 M (K+1) + N,), float32)``, mapped to a feasible design by a
projection:

* ``a[0 : M(K+1)]`` and ``a[M(K+1) : 2M(K+1)]``: real and imaginary parts of
  ``W_raw = sqrt(P_max) (Re + j Im)`` reshaped ``(M, K+1)`` (column ``k < K``:
  user ``k``'s precoder; column ``K``: the sensing stream ``w_0``).  The precoder
  is the Euclidean projection onto the power ball,
  ``W = W_raw * min(1, sqrt(P_max) / ||W_raw||_F)``, so ``||W||_F^2 <= P_max``.
* ``a[2M(K+1) :]``: phase shifts ``theta_n = pi a_n`` (unit modulus by
  construction).

:func:`design_to_action` inverts the map for any design with
``||W||_F^2 <= P_max`` (what the baselines use).  This is ``action_mode="raw"``
(the default).

``action_mode="phases"``: ``Box(-1, 1, (N + K,), float32)``; the agent picks the
RIS phases and how the users share the power, and the precoders follow in
closed form from the twin's channel estimate (the BS knows only the twin; the
design is scored on the true channel).  :func:`phase_action_to_design`:

* ``a[:N]``: phases ``theta_n = pi a_n``.
* ``a[N:]``: the users' power shares ``q_k = (1 + a_k) / sum_j (1 + a_j)``
  (``a_k = -1`` switches user ``k`` off; all ``-1``: equal shares),
  ``p_k = q_k P_max``.
* with ``H`` the twin's effective channel at ``theta``, the user directions are
  ``precoder`` (a field):

  - ``"sensing_mmse"`` (default): ``w_k ~ (I + sum_j (p_j / sigma^2) h_j h_j^H
    - nu c^H c)^-1 h_k`` with ``c`` the sensing row.  At ``nu = 0`` this is the
    MMSE-type structure of the optimal multi-user beamformers (Bjornson,
    Bengtsson, Ottersten, IEEE Signal Process. Mag. 2014); ``-nu c^H c`` is the
    term a Lagrange multiplier ``nu >= 0`` of ``g >= Gamma`` adds to the sum-rate
    stationarity condition, so it bends the users' beams toward the target.
    ``nu`` is the smallest value (bisection, closed form in ``nu`` by
    Sherman-Morrison) at which the users' beams alone give ``g = Gamma``; no
    radar stream is sent.  Only where no ``nu`` reaches ``Gamma`` does a radar
    stream ``w_0 ~ c^H`` take the least share ``s`` of ``P_max`` that does
    (the users keep ``(1 - s)`` of their powers).
  - ``"rzf"`` (``H^H (H H^H + alpha I)^-1``, ``alpha = K sigma^2 / sum_k p_k``),
    ``"zf"`` (pseudo-inverse), ``"mrt"`` (``w_k ~ h_k``): the users' beams are
    left as they are and the radar stream ``w_0 ~ c^H`` takes the share
    ``s_min = min(1, Gamma normaliser / (P_max ||c||^2))`` that alone gives
    ``g = Gamma`` (:func:`sensing_floor`; ``Gamma`` itself for a directly
    visible target), the users ``(1 - s_min) p_k``.

  Either way ``||W||_F^2 = P_max`` exactly, every action is a valid design,
  and for a directly visible target (whose sensing row does not depend on the
  channel) ``g >= Gamma`` holds on the true channel in every slot.  More sensing
  power than the least that meets ``Gamma`` never pays (it only takes power from
  the users and interferes), so the mode leaves no choice there.  Designs the
  mode cannot express: user directions other than the closed form, and
  sensing above the least power.  :func:`design_to_phase_action` maps a design
  to the action with its phases and power shares (what the baselines play in
  this mode, so their values there differ from the raw mode's; measured in
  docs/ris_isac.md).

``action_mode="steering"``: ``Box(-1, 1, (2 + K,), float32)``, as ``"phases"``
but the phases are a linear profile, ``theta_n = pi (n a_0 + a_1)``
(:func:`steering_phases`: the surface steers one beam, a continuous
DFT-codebook beam; every linear profile modulo ``2 pi`` has ``a_0`` in
``[-1, 1]``), and ``a[2:]`` are the users' power weights.  Two numbers
instead of ``N`` for the surface; designs it cannot express: non-linear
phase profiles.  :func:`design_to_phase_action` maps a design's phases to the
closest linear profile.

``action_mode="alignment"``: ``Box(-1, 1, (2 K,), float32)``, as ``"phases"``
but the agent shares the surface among the users instead of setting each
element: ``a[:K]`` gives the surface shares ``q = user_power_shares(a[:K])``
and ``theta_n = arg sum_k q_k z_k,n`` (:func:`alignment_phases`), where
``z_k,n`` is user ``k``'s single-user alignment on the twin's channel
(:func:`alignment_phasors`: with ``v`` the dominant right singular vector of
``G``, ``arg z_k,n = arg(h_d,k^H v) - arg(h_r,k,n (G v)_n)`` puts every
element's path to user ``k`` in phase with the direct one); ``a[K:]`` are
the users' power weights.  A one-hot ``q`` points the whole surface at one
user; the phases are a channel-dependent function of ``2 K`` numbers, so a
policy need not learn the map from the channel to ``N`` phases.  Designs it
cannot express: phases outside that ``K``-parameter family (the phases of
``ao_twin`` fitted to it lose about 2%, docs/ris_isac.md).
:func:`design_to_phase_action` fits a design's phases by non-negative least
squares on the ``z_k``.

Observation Space
-----------------
``Box(-inf, inf, (2 (N M + K N + K M) + 3,), float32)``, the twin's state,
normalised by fixed reference path losses (no clipping; entries are O(1)):

==========================  =====================================================
slice                       meaning
==========================  =====================================================
``2 N M``                   Re, Im of ``G_hat / sqrt(beta_BR)``, row-major (N, M)
``2 K N``                   Re, Im of ``H_r_hat / sqrt(beta_RU(d_ref,RU))`` (K, N)
``2 K M``                   Re, Im of ``H_d_hat / sqrt(beta_BU(d_ref,BU))`` (K, M)
``2``                       ``sin``, ``cos`` of the target angle (phi_t or psi_t)
``1``                       twin age / ``twin_sync_period_slots`` (in [0, 1))
==========================  =====================================================

``d_ref,RU`` and ``d_ref,BU`` are the distances from the RIS and the BS to the
centre of the user area; ``beta_BU`` there includes the blockage loss.
:func:`decode_observation` recovers the twin's channels in physical units.
This is ``observation_mode="channels"`` (the default).

``observation_mode="cascade"``: ``Box(-inf, inf, (2 (N M + K N M + K M) + 3,),
float32)`` (675 at the default), the twin's effective channel as the affine
function of the phases it is, ``h_k^T = h_d,k^T + e^T diag(h_r,k) G`` with
``e_n = exp(j theta_n)``: the same slices with ``H_r_hat`` replaced by the
cascaded channels ``diag(h_r,k_hat) G_hat`` ``(K, N, M)``, row-major, divided by
``sqrt(beta_BR beta_RU(d_ref,RU))`` (O(1) entries).  An MLP then sees the
coefficient of every phase in every user's channel directly instead of having
to learn the product of two observed matrices.  :func:`decode_observation`
recovers ``H_r_hat`` from it (least squares against ``G_hat``'s rows).

``observation_mode="cascade_gains"``: the ``"cascade"`` observation followed by
``K K + K`` features the choice of ``"alignment"`` shares depends on
(:func:`alignment_gain_features`, 695 numbers at the default): the log gain
``g_kj`` each user ``k`` gets when the whole surface is aligned to user
``j``, and the users' log direct-link gains.  They are functions of the
observed channels (nothing the twin does not know), precomputed because an
MLP does not find them from the 672 channel entries in a few thousand
episodes (measured in docs/ris_isac.md).

Rewards
-------
``r = sum_k R_k - sensing_penalty * max(0, 1 - g / Gamma)``: the sum rate
[bit/s/Hz] minus a penalty proportional to the relative sensing shortfall.
The radar stream also interferes with every user, so a small shortfall can
buy a lot of rate; the default ``sensing_penalty = 100`` is large enough that
the reward-maximising design meets ``g >= Gamma`` in about 99% of slots
(measured on 96 slots with the baselines' alternating optimisation run on
the reward: it missed the threshold in 1% of them with 100, in 12.5% with 20).  Treat it as the exact-penalty
form of the constraint ``g >= Gamma``.

``reward_scale="per_user"`` divides the reward by ``num_users`` (a constant:
the order of all designs and returns is unchanged), so a good slot is worth
about 3 instead of about 11 bit/s/Hz; ``"none"`` (default) keeps the sum rate.
``info["unscaled_reward"]`` and ``episode_summary["unscaled_return"]`` are
always in bit/s/Hz (the harness computes shares from ``unscaled_return``).

Starting State
--------------
Users placed uniformly in the user disc with random headings, target angle
uniform in ``[target_angle_min_deg, target_angle_max_deg]``, scattered channel
components drawn from CN(0, 1), the twin freshly refreshed (age 0).

Episode End
-----------
Never terminated; truncated after ``episode_slots`` slots (a time limit).

Arguments
---------
``gym.make("gentwin/RisIsac-v0", params="large")`` selects a preset; field
overrides go as keyword arguments (``num_ris_elements=32``).  Presets:

* ``default``: M=4, N=16, K=4, twin NMSE 0.01 refreshed every 4 slots.
* ``perfect_twin``: as default with an exact twin refreshed every slot.
* ``stale_twin``: twin NMSE 0.1 refreshed every 10 slots.
* ``large``: N=64 RIS elements, K=6 users, M=8 antennas.
* ``nlos_target``: target visible only via the RIS (``target_via_ris``).
* ``no_ris``: the RIS is absent (reference system).

Options meant to make the problem easier to learn (see Action Space,
Observation Space and Rewards; what they give is measured in docs/ris_isac.md;
they combine with every preset), e.g. ``gym.make(id,
action_mode="phases", observation_mode="cascade", reward_scale="per_user")``;
any other value raises ``ValueError`` naming the field:

=====================  ==========================================  ==========================================
field                  values (default first)                      what it changes
=====================  ==========================================  ==========================================
``action_mode``        ``"raw"``, ``"phases"``, ``"steering"``,    all precoders and phases; or phases (all
                       ``"alignment"``                             N, a linear profile, or the users' shares
                                                                   of the surface) and users' power shares
                                                                   with closed-form precoders
``precoder``           ``"sensing_mmse"``, ``"rzf"``, ``"zf"``,    the closed form of the modes other than
                       ``"mrt"``                                   ``"raw"`` (another value with ``"raw"``
                                                                   is an error)
``observation_mode``   ``"channels"``, ``"cascade"``,              twin's G, H_r, H_d, or G, the cascaded
                       ``"cascade_gains"``                         channels diag(h_r,k) G and H_d (and the
                                                                   alignment gains)
``reward_scale``       ``"none"``, ``"per_user"``                  reward divided by ``num_users``
``expert``             ``"none"``, ``"ao_twin"``                   ``info["expert_action"]``: ``ao_twin``'s
                                                                   action for the slot (on the twin, in the
                                                                   env's mode), for agents that clone it
``expert_residual``    ``0`` (off), ``r in (0, 2]``                the action corrects the expert's: the
                                                                   env plays ``clip(expert + r a, -1, 1)``;
                                                                   the expert's action is observed too
=====================  ==========================================  ==========================================

Info
----
Per step: ``user_rate_bps_hz`` (K,), ``sum_rate_bps_hz``, ``sensing_gain``,
``sensing_shortfall`` (``max(0, 1 - g/Gamma)``), ``sensing_violation``
(``g < Gamma (1 - 1e-9)``), ``transmit_power_w``, ``twin_nmse`` (NMSE of the
observed normalised channel vector against the true one, for the slot the
action was chosen in; always on the ``"channels"`` vector), ``twin_age_slots``,
``sensing_share`` (the radar stream's share of ``P_max``) and
``unscaled_reward`` (the slot's reward before ``reward_scale``);
with ``expert="ao_twin"`` also ``expert_action``, the action of the alternating
optimisation fed the twin (``gentwin.baselines.ris_isac.AlternatingOptimisation``)
for the slot the action was chosen in: the diffusion papers' "expert database",
computed from the twin only (about 7 ms per instance and slot, so it costs more
than the rest of the step).  With ``expert_residual = r > 0`` (needs ``expert="ao_twin"``) the
agent's action ``a`` is a correction: the environment plays
``clip(expert_action + r a, -1, 1)`` (``info["played_action"]``), the
observation ends with the expert's action for the state (``action_dim`` more
numbers), and ``a = 0`` plays the twin-fed AO in the env's mode.  This is the
twin-proposes, agent-corrects loop: the twin's model-based design is the
starting point, and the agent learns from the true channel's rewards where to
depart from it (e.g. where the twin is stale).  At episode end,
``episode_summary``: ``return``, ``length``, ``mean_sum_rate_bps_hz``,
``sensing_violation_rate``, ``mean_sensing_gain``, ``mean_twin_nmse``,
``unscaled_return``.

Version History
---------------
* v0: initial release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces
from scipy.optimize import nnls
from scipy.special import j0

from gentwin.envs.core import (
    BatchedKernel,
    KernelEnv,
    KernelVectorEnv,
    check_choice,
    check_field,
)

__all__ = [
    "ACTION_MODES",
    "EXPERTS",
    "OBSERVATION_MODES",
    "PRECODERS",
    "PRESETS",
    "REWARD_SCALES",
    "RisIsacEnv",
    "RisIsacKernel",
    "RisIsacParams",
    "RisIsacVectorEnv",
    "action_to_design",
    "alignment_gain_features",
    "alignment_phases",
    "alignment_phasors",
    "closed_form_precoder",
    "decode_observation",
    "design_to_action",
    "design_to_phase_action",
    "effective_channel",
    "phase_action_to_design",
    "sensing_floor",
    "sensing_gain",
    "sensing_row",
    "sinr",
    "slot_reward",
    "steering_phases",
    "steering_vector",
    "user_power_shares",
]

SPEED_OF_LIGHT_MPS = 299_792_458.0
#: Relative tolerance of the sensing check (``g < Gamma (1 - tol)`` is a violation).
SENSING_TOLERANCE = 1e-9
#: Options (default first); see the module docstring, section Arguments.
ACTION_MODES = ("raw", "phases", "steering", "alignment")
PRECODERS = ("sensing_mmse", "rzf", "zf", "mrt")
OBSERVATION_MODES = ("channels", "cascade", "cascade_gains")
REWARD_SCALES = ("none", "per_user")
EXPERTS = ("none", "ao_twin")


@dataclass(frozen=True)
class RisIsacParams:
    """Static configuration of the RIS-ISAC system and its digital twin (validated)."""

    num_bs_antennas: int = 4
    num_ris_elements: int = 16
    num_users: int = 4
    episode_slots: int = 50
    slot_duration_s: float = 5e-3
    carrier_frequency_hz: float = 3.5e9
    max_transmit_power_dbm: float = 30.0
    noise_power_dbm: float = -80.0
    #: Path loss at the 1 m reference distance, C0 [dB] (typical RIS-literature value).
    reference_path_loss_db: float = 30.0
    bs_position_m: tuple[float, float] = (0.0, 0.0)
    ris_position_m: tuple[float, float] = (50.0, 10.0)
    user_area_center_m: tuple[float, float] = (50.0, 0.0)
    user_area_radius_m: float = 5.0
    user_speed_mps: float = 1.0
    path_loss_exponent_bs_ris: float = 2.2
    path_loss_exponent_ris_user: float = 2.8
    path_loss_exponent_bs_user: float = 3.6
    direct_link_blockage_db: float = 10.0
    #: Rician factors (linear); 0 is Rayleigh fading.
    rician_factor_bs_ris: float = 10.0
    rician_factor_ris_user: float = 2.0
    rician_factor_bs_user: float = 0.0
    ris_present: bool = True
    #: The target angle is uniform in this range, from the BS broadside, or from
    #: the RIS broadside when ``target_via_ris``.
    target_angle_min_deg: float = -60.0
    target_angle_max_deg: float = -30.0
    target_via_ris: bool = False
    #: Gamma: required normalised beampattern gain toward the target.
    sensing_threshold: float = 0.25
    #: Reward lost per unit of relative sensing shortfall max(0, 1 - g/Gamma) [bit/s/Hz].
    sensing_penalty: float = 100.0
    #: Twin estimation-error variance relative to the scattered component's power.
    twin_estimation_nmse: float = 0.01
    twin_sync_period_slots: int = 4
    #: Learnable formulations (module docstring, Arguments): how an action becomes a design,
    #: the closed-form user precoder of action_mode="phases", the observation's features and
    #: the reward's scale.  The defaults are the raw problem.
    action_mode: str = "raw"
    precoder: str = "sensing_mmse"
    observation_mode: str = "channels"
    reward_scale: str = "none"
    expert: str = "none"
    expert_residual: float = 0.0

    def __post_init__(self) -> None:
        check_field(self, "num_bs_antennas", low=1, high=256, integer=True)
        check_field(self, "num_ris_elements", low=1, high=1024, integer=True)
        check_field(self, "num_users", low=1, high=64, integer=True)
        check_field(self, "episode_slots", low=1, high=100_000, integer=True)
        check_field(self, "slot_duration_s", low=0.0, low_inclusive=False)
        check_field(self, "carrier_frequency_hz", low=0.0, low_inclusive=False)
        check_field(self, "max_transmit_power_dbm", low=-50.0, high=80.0)
        check_field(self, "noise_power_dbm", low=-200.0, high=50.0)
        check_field(self, "reference_path_loss_db", low=0.0, high=200.0)
        for name in ("bs_position_m", "ris_position_m", "user_area_center_m"):
            check_field(self, name)
            if np.shape(getattr(self, name)) != (2,):
                raise ValueError(
                    f"RisIsacParams.{name} = {getattr(self, name)!r} is invalid: must be an (x, y) pair"
                )
        check_field(self, "user_area_radius_m", low=0.0)
        check_field(self, "user_speed_mps", low=0.0, high=1000.0)
        for name in ("path_loss_exponent_bs_ris", "path_loss_exponent_ris_user", "path_loss_exponent_bs_user"):
            check_field(self, name, low=1.0, high=10.0)
        check_field(self, "direct_link_blockage_db", low=0.0, high=200.0)
        for name in ("rician_factor_bs_ris", "rician_factor_ris_user", "rician_factor_bs_user"):
            check_field(self, name, low=0.0, high=1e6)
        check_field(self, "ris_present", low=0, high=1)
        check_field(self, "target_angle_min_deg", low=-90.0, high=90.0)
        check_field(self, "target_angle_max_deg", low=self.target_angle_min_deg, high=90.0)
        check_field(self, "target_via_ris", low=0, high=1)
        check_field(self, "sensing_threshold", low=0.0, high=1.0, low_inclusive=False)
        check_field(self, "sensing_penalty", low=0.0)
        check_field(self, "twin_estimation_nmse", low=0.0, high=100.0)
        check_field(self, "twin_sync_period_slots", low=1, high=100_000, integer=True)
        check_choice(self, "action_mode", ACTION_MODES)
        check_choice(self, "precoder", PRECODERS)
        if self.precoder != PRECODERS[0] and self.action_mode == "raw":
            raise ValueError(
                f"RisIsacParams.precoder = {self.precoder!r} is invalid with action_mode = "
                f"{self.action_mode!r}: the closed-form precoder applies to action_mode='phases', "
                f"'steering' or 'alignment' only"
            )
        check_choice(self, "observation_mode", OBSERVATION_MODES)
        check_choice(self, "reward_scale", REWARD_SCALES)
        check_choice(self, "expert", EXPERTS)
        check_field(self, "expert_residual", low=0.0, high=2.0)
        if self.expert_residual > 0 and self.expert == "none":
            raise ValueError(
                f"RisIsacParams.expert_residual = {self.expert_residual!r} is invalid with expert = 'none': "
                f"the action corrects the expert's, so it needs expert='ao_twin'"
            )
        if self.target_via_ris and not self.ris_present:
            raise ValueError(
                "RisIsacParams.target_via_ris = True is invalid with ris_present = False: "
                "a target visible only via the RIS needs the RIS"
            )
        if np.hypot(*np.subtract(self.ris_position_m, self.bs_position_m)) < 1.0:
            raise ValueError(
                f"RisIsacParams.ris_position_m = {self.ris_position_m!r} is invalid: "
                f"must be at least 1 m from bs_position_m = {self.bs_position_m!r}"
            )

    # -- derived quantities --------------------------------------------------
    @property
    def max_transmit_power_w(self) -> float:
        return 10.0 ** ((self.max_transmit_power_dbm - 30.0) / 10.0)

    @property
    def noise_power_w(self) -> float:
        return 10.0 ** ((self.noise_power_dbm - 30.0) / 10.0)

    @property
    def num_streams(self) -> int:
        """K user streams plus the dedicated sensing stream."""
        return self.num_users + 1

    @property
    def channel_correlation(self) -> float:
        """Jakes' slot-to-slot correlation rho = J0(2 pi f_D T_s) of the user links."""
        doppler_hz = self.user_speed_mps * self.carrier_frequency_hz / SPEED_OF_LIGHT_MPS
        return float(j0(2.0 * np.pi * doppler_hz * self.slot_duration_s))

    def path_gain(self, distance_m, exponent: float, extra_loss_db: float = 0.0):
        """beta(d) = 10^(-(C0 + extra) / 10) d^-alpha, with d clamped to >= 1 m."""
        d = np.maximum(np.asarray(distance_m, dtype=np.float64), 1.0)
        return 10.0 ** (-(self.reference_path_loss_db + extra_loss_db) / 10.0) * d ** (-exponent)

    @property
    def bs_ris_gain(self) -> float:
        d = np.hypot(*np.subtract(self.ris_position_m, self.bs_position_m))
        return float(self.path_gain(d, self.path_loss_exponent_bs_ris))

    @property
    def ris_user_reference_gain(self) -> float:
        d = np.hypot(*np.subtract(self.user_area_center_m, self.ris_position_m))
        return float(self.path_gain(d, self.path_loss_exponent_ris_user))

    @property
    def bs_user_reference_gain(self) -> float:
        d = np.hypot(*np.subtract(self.user_area_center_m, self.bs_position_m))
        return float(self.path_gain(d, self.path_loss_exponent_bs_user, self.direct_link_blockage_db))

    @property
    def action_dim(self) -> int:
        if self.action_mode == "phases":
            return self.num_ris_elements + self.num_users
        if self.action_mode == "steering":
            return 2 + self.num_users
        if self.action_mode == "alignment":
            return 2 * self.num_users
        return 2 * self.num_bs_antennas * self.num_streams + self.num_ris_elements

    @property
    def observation_dim(self) -> int:
        M, N, K = self.num_bs_antennas, self.num_ris_elements, self.num_users
        if self.observation_mode == "cascade":
            dim = 2 * (N * M + K * N * M + K * M) + 3
        elif self.observation_mode == "cascade_gains":
            dim = 2 * (N * M + K * N * M + K * M) + 3 + K * K + K
        else:
            dim = 2 * (N * M + K * N + K * M) + 3
        # With expert_residual the expert's action for the slot is observed too.
        return dim + (self.action_dim if self.expert_residual > 0 else 0)

    @property
    def cascade_reference_gain(self) -> float:
        """beta_BR beta_RU(d_ref,RU): the power scale of one cascaded entry h_r,k,n G_n,m."""
        return self.bs_ris_gain * self.ris_user_reference_gain

    @property
    def reward_divisor(self) -> float:
        """Positive constant the reward is divided by (``reward_scale``)."""
        return float(self.num_users) if self.reward_scale == "per_user" else 1.0


PRESETS: dict[str, RisIsacParams] = {
    "default": RisIsacParams(),
    "perfect_twin": RisIsacParams(twin_estimation_nmse=0.0, twin_sync_period_slots=1),
    "stale_twin": RisIsacParams(twin_estimation_nmse=0.1, twin_sync_period_slots=10),
    "large": RisIsacParams(num_bs_antennas=8, num_ris_elements=64, num_users=6),
    "nlos_target": RisIsacParams(
        target_via_ris=True, target_angle_min_deg=40.0, target_angle_max_deg=70.0, sensing_threshold=0.2
    ),
    "no_ris": RisIsacParams(ris_present=False),
}


# ---------------------------------------------------------------------------
# The signal model as functions over arbitrary leading (batch) axes, shared by
# the kernel, the baselines and the tests.
# ---------------------------------------------------------------------------
def steering_vector(sin_angle: np.ndarray, size: int) -> np.ndarray:
    """Half-wavelength ULA response ``exp(j pi n sin(angle))``, shape ``(..., size)``."""
    n = np.arange(size)
    return np.exp(1j * np.pi * np.asarray(sin_angle)[..., None] * n)


def action_to_design(params: RisIsacParams, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project raw actions ``(..., 2 M (K+1) + N)`` onto a feasible design (``action_mode="raw"``).

    Returns ``W`` ``(..., M, K+1)`` with ``||W||_F^2 <= P_max`` (column ``K`` is
    the sensing stream) and RIS phases ``theta`` ``(..., N)`` in ``[-pi, pi]``.
    """
    M, K1 = params.num_bs_antennas, params.num_streams
    a = np.asarray(actions, dtype=np.float64)
    n = M * K1
    lead = a.shape[:-1]
    p_max = params.max_transmit_power_w
    w_raw = np.sqrt(p_max) * (a[..., :n] + 1j * a[..., n : 2 * n]).reshape(*lead, M, K1)
    norm = np.sqrt(np.sum(np.abs(w_raw) ** 2, axis=(-2, -1)))
    # Euclidean projection onto the ball ||W||_F <= sqrt(P_max).
    scale = np.sqrt(p_max) / np.maximum(norm, np.sqrt(p_max))
    return w_raw * scale[..., None, None], np.pi * a[..., 2 * n :]


def design_to_action(params: RisIsacParams, precoder: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The action whose projection is ``(precoder, theta)`` (requires ``||W||_F^2 <= P_max``)."""
    M, K1 = params.num_bs_antennas, params.num_streams
    w = np.asarray(precoder) / np.sqrt(params.max_transmit_power_w)
    lead = w.shape[:-2]
    flat = w.reshape(*lead, M * K1)
    # Wrap the phases into [-pi, pi] first, so theta = pi a reproduces them exactly.
    phase = np.angle(np.exp(1j * np.asarray(theta, dtype=np.float64))) / np.pi
    action = np.concatenate([flat.real, flat.imag, phase], axis=-1)
    return np.clip(action, -1.0, 1.0).astype(np.float32)


def effective_channel(direct: np.ndarray, ris_user: np.ndarray, bs_ris: np.ndarray,
                      theta: np.ndarray) -> np.ndarray:
    """``H = H_d + H_r Theta G`` (rows ``h_k^H``), shape ``(..., K, M)``.

    Broadcasting matmul (no einsum path choice), so batch results do not depend on B.
    """
    return direct + (ris_user * np.exp(1j * theta)[..., None, :]) @ bs_ris


def sinr(channel: np.ndarray, precoder: np.ndarray, noise_power_w: float) -> np.ndarray:
    """SINR_k ``(..., K)`` of the users; ``precoder`` ``(..., M, K+1)``, column K = radar stream."""
    K = channel.shape[-2]
    gains = np.abs(channel @ precoder) ** 2  # (..., K, K+1): |h_k^H w_j|^2
    signal = np.diagonal(gains[..., :K], axis1=-2, axis2=-1)
    others = np.ones((K, K + 1), dtype=bool)
    others[np.arange(K), np.arange(K)] = False
    interference = np.sum(np.where(others, gains, 0.0), axis=-1)
    return signal / (interference + noise_power_w)


def sensing_row(params: RisIsacParams, bs_ris: np.ndarray, theta: np.ndarray,
                target_sin: np.ndarray) -> tuple[np.ndarray, float]:
    """The row ``c`` with ``a^H R a = ||c W||^2`` toward the target, and its normaliser.

    Direct target: ``c = a_M(phi_t)^H``, normaliser ``M P_max``.  Target via the RIS:
    ``c = b_N(psi_t)^H Theta G``, normaliser ``N^2 M beta_BR P_max``.
    """
    M, N = params.num_bs_antennas, params.num_ris_elements
    p_max = params.max_transmit_power_w
    if params.target_via_ris:
        b = steering_vector(target_sin, N).conj() * np.exp(1j * theta)
        row = (b[..., None, :] @ bs_ris)[..., 0, :]
        return row, N * N * M * params.bs_ris_gain * p_max
    row = steering_vector(target_sin, M).conj()
    row = np.broadcast_to(row, (*np.shape(theta)[:-1], M))
    return row, M * p_max


def sensing_gain(row: np.ndarray, normaliser: float, precoder: np.ndarray) -> np.ndarray:
    """Normalised beampattern gain ``sum_j |c w_j|^2 / normaliser`` ``(...)``."""
    return np.sum(np.abs((row[..., None, :] @ precoder)[..., 0, :]) ** 2, axis=-1) / normaliser


def slot_reward(params: RisIsacParams, channel: np.ndarray, precoder: np.ndarray,
                row: np.ndarray, normaliser: float) -> dict[str, np.ndarray]:
    """Rates, sensing gain, shortfall and reward of one slot (any leading axes)."""
    rates = np.log2(1.0 + sinr(channel, precoder, params.noise_power_w))
    sum_rate = rates.sum(axis=-1)
    gain = sensing_gain(row, normaliser, precoder)
    shortfall = np.maximum(0.0, 1.0 - gain / params.sensing_threshold)
    reward = sum_rate - params.sensing_penalty * shortfall
    return {"rates": rates, "sum_rate": sum_rate, "gain": gain, "shortfall": shortfall, "reward": reward}


# ---------------------------------------------------------------------------
# action_mode="phases": the agent picks the RIS phases and the users' power
# shares; the precoders and the sensing power follow in closed form from the
# twin's channel estimate.
# ---------------------------------------------------------------------------
def _unit_columns(w: np.ndarray) -> np.ndarray:
    return w / np.maximum(np.linalg.norm(w, axis=-2, keepdims=True), 1e-300)


def closed_form_precoder(kind: str, channel: np.ndarray, user_power_w: np.ndarray,
                         noise_power_w: float) -> np.ndarray:
    """Unit-norm user precoder directions ``(..., M, K)`` for rows ``h_k^H`` of ``channel``.

    ``kind``: ``"mrt"`` (``w_k ~ h_k``), ``"zf"`` (pseudo-inverse), ``"rzf"``
    (``H^H (H H^H + alpha I)^-1``, ``alpha = K sigma^2 / sum_k p_k``) or
    ``"sensing_mmse"`` at ``nu = 0`` (``(I + sum_j p_j h_j h_j^H / sigma^2)^-1 h_k``).
    ``user_power_w`` ``(..., K)``: the users' powers ``p_k`` (only ``rzf`` and
    ``sensing_mmse`` depend on them).
    """
    K = channel.shape[-2]
    h_herm = np.swapaxes(channel.conj(), -1, -2)
    if kind == "mrt":
        w = h_herm
    elif kind == "zf":
        w = np.linalg.pinv(channel)
    elif kind == "rzf":
        alpha = K * noise_power_w / np.maximum(np.sum(user_power_w, axis=-1), 1e-300)
        gram = channel @ h_herm + alpha[..., None, None] * np.eye(K)
        # (H H^H + alpha I) is Hermitian, so H^H (H H^H + alpha I)^-1 = (solve(., H))^H.
        w = np.swapaxes(np.linalg.solve(gram, channel).conj(), -1, -2)
    elif kind == "sensing_mmse":
        w = np.linalg.solve(_mmse_matrix(channel, user_power_w, noise_power_w), h_herm)
    else:
        raise ValueError(f"precoder = {kind!r} is invalid: must be one of {', '.join(map(repr, PRECODERS))}")
    return _unit_columns(w)


def _mmse_matrix(channel, user_power_w, noise_power_w):
    """``A_0 = I + sum_j (p_j / sigma^2) h_j h_j^H`` ``(..., M, M)``."""
    M = channel.shape[-1]
    h_herm = np.swapaxes(channel.conj(), -1, -2)
    return np.eye(M) + h_herm @ ((np.asarray(user_power_w) / noise_power_w)[..., None] * channel)


def sensing_floor(params: RisIsacParams, row: np.ndarray, normaliser: float) -> np.ndarray:
    """Share of ``P_max`` whose radar beam alone gives ``g = Gamma`` (at most 1), ``(...)``.

    The radar stream ``w_0 = sqrt(s P_max) c^H / ||c||`` gives ``g = s P_max ||c||^2 /
    normaliser``; for a directly visible target the floor is ``Gamma`` itself.
    """
    full_beam = params.max_transmit_power_w * np.sum(np.abs(row) ** 2, axis=-1) / normaliser
    return np.minimum(1.0, params.sensing_threshold / np.maximum(full_beam, 1e-300))


def _sensing_mmse_users(channel, user_power_w, noise_power_w, row, gain_needed, bisection_steps=50):
    """User precoders ``(..., M, K)`` of the sensing-aware MMSE structure and their gain.

    ``w_k ~ (A_0 - nu c^H c)^-1 h_k`` with the smallest ``nu in [0, 1/q)``, ``q = c A_0^-1 c^H``,
    whose users' beams alone give ``sum_k |c w_k|^2 >= gain_needed`` (``(...)``, in units
    of ``|c w|^2``).  By Sherman-Morrison the direction is ``x_k + tau (c x_k) y``
    with ``x_k = A_0^-1 h_k``, ``y = A_0^-1 c^H`` and ``tau = nu / (1 - nu q) in [0, inf)``,
    so the bisection (on ``z = tau q / (1 + tau q) in [0, 1)``) needs no new solves.
    Returns ``(W, gain, feasible)``; where even ``z -> 1`` cannot reach the need,
    ``W`` is the ``nu = 0`` design and ``feasible`` is False.
    """
    a0 = _mmse_matrix(channel, user_power_w, noise_power_w)
    rhs = np.concatenate([np.swapaxes(channel.conj(), -1, -2), row.conj()[..., :, None]], axis=-1)
    sol = np.linalg.solve(a0, rhs)
    x, y = sol[..., :-1], sol[..., -1:]  # (..., M, K), (..., M, 1)
    beta = (row[..., None, :] @ x)[..., 0, :]  # c x_k: (..., K)
    q = np.maximum(np.real((row[..., None, :] @ y)[..., 0, 0]), 1e-300)  # c A0^-1 c^H > 0
    power = np.asarray(user_power_w, dtype=np.float64)

    def design(z):
        tau = (z / np.maximum(1.0 - z, 1e-300) / q)[..., None, None]
        w = _unit_columns(x + tau * y * beta[..., None, :]) * np.sqrt(power)[..., None, :]
        return w, np.sum(np.abs((row[..., None, :] @ w)[..., 0, :]) ** 2, axis=-1)

    w0, g0 = design(np.zeros(q.shape))
    top = 1.0 - 1e-12
    _, g_top = design(np.full(q.shape, top))
    feasible = (g0 >= gain_needed) | (g_top >= gain_needed)
    lo, hi = np.zeros(q.shape), np.full(q.shape, top)
    for _ in range(bisection_steps):  # invariant where needed: g(lo) < need <= g(hi)
        mid = 0.5 * (lo + hi)
        below = design(mid)[1] < gain_needed
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    z = np.where(g0 >= gain_needed, 0.0, np.where(feasible, hi, 0.0))
    w, g = design(z)
    return w, g, feasible


def user_power_shares(actions_users: np.ndarray) -> np.ndarray:
    """Power shares ``q_k = (1 + a_k) / sum_j (1 + a_j)`` ``(..., K)``; all ``a_k = -1``: equal shares."""
    weight = 1.0 + np.asarray(actions_users, dtype=np.float64)
    total = np.sum(weight, axis=-1, keepdims=True)
    K = weight.shape[-1]
    return np.where(total > 0.0, weight / np.maximum(total, 1e-300), 1.0 / K)


def steering_phases(params: RisIsacParams, slope, offset) -> np.ndarray:
    """Linear RIS phase profile ``theta_n = pi (n slope + offset)`` ``(..., N)`` (``slope, offset in [-1, 1]``).

    Every linear profile modulo ``2 pi`` has a slope in ``[-1, 1]``: the beam the
    surface steers from the BS to one direction (a DFT-codebook beam, continuous).
    """
    n = np.arange(params.num_ris_elements)
    return np.pi * (np.asarray(slope)[..., None] * n + np.asarray(offset)[..., None])


def alignment_phasors(direct: np.ndarray, ris_user: np.ndarray, bs_ris: np.ndarray) -> np.ndarray:
    """Each user's single-user phase alignment ``z_k,n`` ``(..., K, N)`` (unit modulus).

    With ``v`` the dominant right singular vector of ``G`` (the BS beam that puts the
    most power on the surface), user ``k`` receives ``h_d,k^H v + sum_n e^(j theta_n)
    h_r,k,n (G v)_n`` through that beam; ``theta_n = arg z_k,n = arg(h_d,k^H v) -
    arg(h_r,k,n (G v)_n)`` adds every element's path in phase with the direct one
    (the single-user optimum for the beam ``v``).
    """
    return _alignment_parts(direct, ris_user, bs_ris)[2]


def _alignment_parts(direct, ris_user, bs_ris):
    """``(h_d,k^H v (..., K), h_r,k,n (G v)_n (..., K, N), z (..., K, N))`` of :func:`alignment_phasors`."""
    _, _, vh = np.linalg.svd(bs_ris)
    beam = vh[..., 0, :].conj()  # (..., M)
    via_ris = ris_user * (bs_ris @ beam[..., None])[..., 0][..., None, :]  # (..., K, N)
    direct_part = (direct @ beam[..., None])[..., 0]  # (..., K)
    return direct_part, via_ris, np.exp(1j * (np.angle(direct_part)[..., None] - np.angle(via_ris)))


def alignment_phases(weights: np.ndarray, direct, ris_user, bs_ris) -> np.ndarray:
    """``theta_n = arg sum_k q_k z_k,n`` ``(..., N)``: the surface shared among the users by ``q``.

    ``q`` ``(..., K)``: the users' shares of the surface (:func:`user_power_shares` of
    the action); a one-hot ``q`` aligns every element to one user.
    """
    z = alignment_phasors(direct, ris_user, bs_ris)
    return np.angle(np.sum(np.asarray(weights)[..., :, None] * z, axis=-2))


def alignment_gain_features(params: RisIsacParams, direct, ris_user, bs_ris) -> np.ndarray:
    """``observation_mode="cascade_gains"``'s extra features ``(..., K K + K)``.

    First ``log10(g_kj / (N^2 beta_BR beta_RU(d_ref,RU)) + 1e-6)``, row-major ``(k, j)``,
    with ``g_kj = |h_d,k^H v + sum_n h_r,k,n (G v)_n z_j,n|^2`` the gain user ``k``
    gets through the beam ``v`` when the whole surface is aligned to user ``j``
    (:func:`alignment_phasors`; ``g_kk`` is user ``k``'s best gain for that beam,
    ``g_kj`` for ``j != k`` how much an alignment to ``j`` also serves ``k``); then
    ``log10(||h_d,k||^2 / beta_BU(d_ref,BU) + 1e-6)``, the users' direct-link gains.
    The 1e-6 floors a user the surface does not reach (no RIS); entries are O(1).
    """
    direct_part, via_ris, z = _alignment_parts(direct, ris_user, bs_ris)
    gain = np.abs(direct_part[..., :, None] + via_ris @ np.swapaxes(z, -1, -2)) ** 2  # (..., K, J)
    scale = params.num_ris_elements**2 * params.cascade_reference_gain
    lead = gain.shape[:-2]
    cross = np.log10(gain / scale + 1e-6).reshape(*lead, -1)
    own = np.log10(np.sum(np.abs(direct) ** 2, axis=-1) / params.bs_user_reference_gain + 1e-6)
    return np.concatenate([cross, own], axis=-1)


def _phases_of(params: RisIsacParams, a: np.ndarray, direct=None, ris_user=None,
               bs_ris=None) -> tuple[np.ndarray, int]:
    """RIS phases of an action (``"phases"``, ``"steering"`` or ``"alignment"``) and where its user weights start.

    ``"alignment"`` needs the twin's channels.
    """
    if params.action_mode == "steering":
        return steering_phases(params, a[..., 0], a[..., 1]), 2
    if params.action_mode == "alignment":
        K = params.num_users
        return alignment_phases(user_power_shares(a[..., :K]), direct, ris_user, bs_ris), K
    return np.pi * a[..., : params.num_ris_elements], params.num_ris_elements


def phase_action_to_design(params: RisIsacParams, actions: np.ndarray, direct, ris_user, bs_ris,
                           target_sin) -> tuple[np.ndarray, np.ndarray]:
    """``action_mode`` other than ``"raw"``: actions and the twin's channels -> ``(W, theta)``.

    ``theta = pi a[:N]`` (``"phases"``, actions ``(..., N + K)``),
    :func:`steering_phases` of ``a[0], a[1]`` (``"steering"``, ``(..., 2 + K)``) or
    :func:`alignment_phases` of the shares of ``a[:K]`` on the twin's channels
    (``"alignment"``, ``(..., 2 K)``); the users' power shares are
    :func:`user_power_shares` of the last ``K`` entries; the sensing requirement is
    met with the least power the structure allows (module docstring, Action Space).
    ``||W||_F^2 = P_max`` exactly.
    """
    a = np.asarray(actions, dtype=np.float64)
    theta, first_user = _phases_of(params, a, direct, ris_user, bs_ris)
    shares = user_power_shares(a[..., first_user:])
    p_max, noise = params.max_transmit_power_w, params.noise_power_w
    row, normaliser = sensing_row(params, bs_ris, theta, target_sin)
    channel = effective_channel(direct, ris_user, bs_ris, theta)
    need = params.sensing_threshold * normaliser  # in units of |c w|^2
    radar_gain = p_max * np.sum(np.abs(row) ** 2, axis=-1)  # the radar beam alone at full power
    if params.precoder == "sensing_mmse":
        users, users_gain, feasible = _sensing_mmse_users(channel, shares * p_max, noise, row, need)
        # Where the users' beams cannot reach Gamma, a radar stream tops up: with the users at
        # (1 - s) of their power, g = (1 - s) g_u + s g_r >= Gamma.
        share = np.where(
            feasible, 0.0,
            np.clip((need - users_gain) / np.maximum(radar_gain - users_gain, 1e-300), 0.0, 1.0),
        )
    else:
        share = sensing_floor(params, row, normaliser)
        users = closed_form_precoder(params.precoder, channel, shares * (1.0 - share)[..., None] * p_max, noise)
        users = users * np.sqrt(shares * p_max)[..., None, :]
    users = users * np.sqrt(1.0 - share)[..., None, None]
    beam = row.conj() / np.maximum(np.linalg.norm(row, axis=-1, keepdims=True), 1e-300)
    radar = beam * np.sqrt(share * p_max)[..., None]
    return np.concatenate([users, radar[..., None]], axis=-1), theta


def design_to_phase_action(params: RisIsacParams, precoder: np.ndarray, theta: np.ndarray,
                           steering_grid: int = 257, twin=None) -> np.ndarray:
    """The ``action_mode="phases"`` / ``"steering"`` / ``"alignment"`` action closest to a design.

    The users' power shares: ``a_k = 2 ||w_k||^2 / max_j ||w_j||^2 - 1`` reproduces
    them exactly.  The phases: as they are (``"phases"``), or the linear profile
    closest to them, ``max_(slope, offset) Re sum_n exp(j (theta_n - pi (n slope +
    offset)))`` over a grid of ``steering_grid`` slopes (``"steering"``), or the
    surface shares ``q >= 0`` whose :func:`alignment_phases` come closest, the
    non-negative least-squares fit ``min_q ||sum_k q_k z_k - exp(j theta)||``
    (``"alignment"``; needs ``twin = (H_d, H_r, G)``, the twin's channels the
    environment aligns on).  The directions and the sensing power are the mode's
    closed form, not the design's.
    """
    w = np.asarray(precoder)
    power = np.sum(np.abs(w[..., :, :-1]) ** 2, axis=-2)  # (..., K)
    users = _shares_to_action(power)
    theta = np.asarray(theta, dtype=np.float64)
    if params.action_mode == "steering":
        slopes = np.linspace(-1.0, 1.0, steering_grid)
        n = np.arange(params.num_ris_elements)
        fit = np.sum(np.exp(1j * (theta[..., None, :] - np.pi * slopes[:, None] * n)), axis=-1)  # (..., S)
        best = np.argmax(np.abs(fit), axis=-1)
        offset = np.angle(np.take_along_axis(fit, best[..., None], axis=-1)[..., 0]) / np.pi
        phase = np.stack([slopes[best], offset], axis=-1)
    elif params.action_mode == "alignment":
        if twin is None:
            raise ValueError("design_to_phase_action: twin = None is invalid with action_mode = 'alignment': "
                             "pass the twin's channels (H_d, H_r, G) the surface is aligned on")
        z = alignment_phasors(*twin)  # (..., K, N)
        target = np.exp(1j * theta)
        lead = target.shape[:-1]
        z2 = z.reshape(-1, *z.shape[-2:])
        t2 = target.reshape(-1, target.shape[-1])
        weights = np.empty((len(t2), z.shape[-2]))
        for i in range(len(t2)):  # tiny (2N x K) problems; used by the baselines only
            basis = np.concatenate([z2[i].real, z2[i].imag], axis=-1).T
            weights[i] = nnls(basis, np.concatenate([t2[i].real, t2[i].imag]))[0]
        phase = _shares_to_action(weights.reshape(*lead, -1))
    else:
        phase = np.angle(np.exp(1j * theta)) / np.pi
    return np.clip(np.concatenate([phase, users], axis=-1), -1.0, 1.0).astype(np.float32)


def _shares_to_action(weight: np.ndarray) -> np.ndarray:
    """``a_k = 2 w_k / max_j w_j - 1``, whose :func:`user_power_shares` are ``w / sum w`` (all ``-1`` if ``w = 0``)."""
    top = np.max(weight, axis=-1, keepdims=True)
    return np.where(top > 0.0, 2.0 * weight / np.maximum(top, 1e-300) - 1.0, -1.0)


def decode_observation(params: RisIsacParams, obs: np.ndarray):
    """The twin's ``(H_d, H_r, G)`` in physical units, target ``sin`` and age share from observations.

    Either ``observation_mode``; with ``"cascade"`` ``H_r`` is recovered from the
    cascaded channels by least squares against ``G``'s rows.
    """
    M, N, K = params.num_bs_antennas, params.num_ris_elements, params.num_users
    o = np.asarray(obs, dtype=np.float64)
    lead = o.shape[:-1]
    cascade = params.observation_mode in ("cascade", "cascade_gains")
    sizes = [N * M, K * N * M if cascade else K * N, K * M]
    shapes = [(N, M), (K, N, M) if cascade else (K, N), (K, M)]
    scales = [params.bs_ris_gain, params.cascade_reference_gain if cascade else params.ris_user_reference_gain,
              params.bs_user_reference_gain]
    out = []
    pos = 0
    for size, shape, scale in zip(sizes, shapes, scales):
        z = o[..., pos : pos + size] + 1j * o[..., pos + size : pos + 2 * size]
        out.append(np.sqrt(scale) * z.reshape(*lead, *shape))
        pos += 2 * size
    bs_ris, ris_user, direct = out
    if cascade:
        # Row n of diag(h_r,k) G is h_r,k,n G_n: least squares against the twin's G_n.
        row_power = np.sum(np.abs(bs_ris) ** 2, axis=-1)  # (..., N)
        ris_user = np.sum(ris_user * bs_ris.conj()[..., None, :, :], axis=-1) / np.maximum(
            row_power[..., None, :], 1e-300
        )
    return direct, ris_user, bs_ris, o[..., pos], o[..., pos + 2]


class RisIsacKernel(BatchedKernel):
    """Batched RIS-ISAC dynamics with a digital twin (see the module docstring).

    At reset each instance draws, from its own generator, its geometry, its
    initial scattered channels, the whole episode's Gauss-Markov innovations
    and the twin's measurement errors for every refresh of the episode, so the
    step is array code over the batch and instance ``i`` of a batch seeded
    ``s`` equals a single environment seeded ``s + i``.
    """

    params_class = RisIsacParams
    presets = PRESETS

    def __init__(self, params: RisIsacParams | str | None = None, num_envs: int = 1):
        super().__init__(params, num_envs)
        p = self.params
        B, M, N, K, T = self.num_envs, p.num_bs_antennas, p.num_ris_elements, p.num_users, p.episode_slots
        self.rho = p.channel_correlation
        self.num_refreshes = T // p.twin_sync_period_slots + 1
        self._batch = np.arange(B)
        # Fixed geometry: the BS-RIS line-of-sight channel.
        bs, ris = np.asarray(p.bs_position_m, float), np.asarray(p.ris_position_m, float)
        d_br = ris - bs
        sin_phi_ris = d_br[1] / np.hypot(*d_br)  # RIS seen from the BS (array along y)
        sin_psi_bs = -d_br[0] / np.hypot(*d_br)  # BS seen from the RIS (array along x)
        self.bs_ris_los = np.outer(steering_vector(sin_psi_bs, N), steering_vector(sin_phi_ris, M).conj())
        # Per-instance episode draws.
        self.user_start_m = np.zeros((B, K, 2))
        self.user_velocity_mps = np.zeros((B, K, 2))
        self.target_angle_rad = np.zeros(B)
        self.scatter_bs_ris = np.zeros((B, N, M), dtype=np.complex128)
        self.scatter_ris_user = np.zeros((B, K, N), dtype=np.complex128)
        self.scatter_direct = np.zeros((B, K, M), dtype=np.complex128)
        self.innovation_ris_user = np.zeros((B, T, K, N), dtype=np.complex64)
        self.innovation_direct = np.zeros((B, T, K, M), dtype=np.complex64)
        self.error_bs_ris = np.zeros((B, N, M), dtype=np.complex128)
        self.error_ris_user = np.zeros((B, self.num_refreshes, K, N), dtype=np.complex64)
        self.error_direct = np.zeros((B, self.num_refreshes, K, M), dtype=np.complex64)
        # Twin state: LMMSE-shrunk measurements of the scattered parts at the last refresh.
        self.twin_bs_ris = np.zeros((B, N, M), dtype=np.complex128)
        self.twin_ris_user = np.zeros((B, K, N), dtype=np.complex128)
        self.twin_direct = np.zeros((B, K, M), dtype=np.complex128)
        self.twin_age = np.zeros(B, dtype=np.int64)
        self.slot = np.zeros(B, dtype=np.int64)
        # Episode accumulators.
        self.sum_rate_total = np.zeros(B)
        self.violations = np.zeros(B, dtype=np.int64)
        self.gain_total = np.zeros(B)
        self.twin_nmse_total = np.zeros(B)
        self.unscaled_total = np.zeros(B)
        self._obs_scale = np.sqrt([p.bs_ris_gain, p.ris_user_reference_gain, p.bs_user_reference_gain])
        # Constants of the channel composition (sqrt(K/(1+K)), sqrt(1/(1+K)) per link).
        self._rician_weights = [
            (np.sqrt(k / (1.0 + k)), np.sqrt(1.0 / (1.0 + k)))
            for k in (p.rician_factor_bs_ris, p.rician_factor_ris_user, p.rician_factor_bs_user)
        ]
        self._bs_ris_gain_sqrt = np.sqrt(p.bs_ris_gain)
        self._bs_position = np.asarray(p.bs_position_m, dtype=np.float64)
        self._ris_position = np.asarray(p.ris_position_m, dtype=np.float64)
        self._geometry_cache = None
        self._expert = None  # expert="ao_twin": the optimiser, built on first use
        self._expert_cache = None  # expert_residual: the expert's action for the observed state
        # Normalised twin channels of the last observation (reused by the next step).
        self._twin_observed = None

    def _build_spaces(self):
        p = self.params
        obs = spaces.Box(-np.inf, np.inf, shape=(p.observation_dim,), dtype=np.float32)
        act = spaces.Box(-1.0, 1.0, shape=(p.action_dim,), dtype=np.float32)
        return obs, act

    # -- reset -----------------------------------------------------------------
    def _reset_instances(self, idx: np.ndarray) -> None:
        p = self.params
        M, N, K, T = p.num_bs_antennas, p.num_ris_elements, p.num_users, p.episode_slots
        lo, hi = np.deg2rad(p.target_angle_min_deg), np.deg2rad(p.target_angle_max_deg)
        R = self.num_refreshes
        n64 = 2 * N * M + K * N + K * M  # S_G, its twin error, s_r(0), s_d(0)
        n_link = K * N + K * M  # entries of the user links
        n = len(idx)
        uniform = np.empty((n, 3 * K + 1))
        normal64 = np.empty((n, 2, n64))
        innovations = np.empty((n, 2, T * n_link), dtype=np.float32)
        errors = np.empty((n, 2, R * n_link), dtype=np.float32)
        for row, i in enumerate(idx):  # reset path: one generator per instance (see envs/core.py)
            rng = self.rngs[i]
            uniform[row] = rng.random(3 * K + 1)
            normal64[row] = rng.standard_normal((2, n64))
            # Single precision for the long per-slot blocks keeps memory small.  The twin's
            # errors come last, so the physical channels of a seed do not depend on the
            # twin's parameters (paired comparisons across twin settings).
            innovations[row] = rng.standard_normal((2, T * n_link), dtype=np.float32)
            errors[row] = rng.standard_normal((2, R * n_link), dtype=np.float32)
        # Transform the draws for all reset instances at once.
        radius = p.user_area_radius_m * np.sqrt(uniform[:, :K])
        angle = 2.0 * np.pi * uniform[:, K : 2 * K] - np.pi
        heading = 2.0 * np.pi * uniform[:, 2 * K : 3 * K] - np.pi
        self.user_start_m[idx] = np.asarray(p.user_area_center_m) + radius[..., None] * np.stack(
            [np.cos(angle), np.sin(angle)], axis=-1
        )
        self.user_velocity_mps[idx] = p.user_speed_mps * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
        self.target_angle_rad[idx] = lo + (hi - lo) * uniform[:, 3 * K]
        z64 = (normal64[:, 0] + 1j * normal64[:, 1]) * np.sqrt(0.5)  # CN(0, 1)
        half = np.sqrt(np.float32(0.5))
        inn = (innovations[:, 0] + 1j * innovations[:, 1]) * half
        err = (errors[:, 0] + 1j * errors[:, 1]) * half
        cuts = np.cumsum([N * M, N * M, K * N])
        g, g_err, s_r, s_d = np.split(z64, cuts, axis=1)
        self.scatter_bs_ris[idx] = g.reshape(n, N, M)
        self.error_bs_ris[idx] = g_err.reshape(n, N, M)
        self.scatter_ris_user[idx] = s_r.reshape(n, K, N)
        self.scatter_direct[idx] = s_d.reshape(n, K, M)
        inn_r, inn_d = np.split(inn, [T * K * N], axis=1)
        err_r, err_d = np.split(err, [R * K * N], axis=1)
        self.innovation_ris_user[idx] = inn_r.reshape(n, T, K, N)
        self.innovation_direct[idx] = inn_d.reshape(n, T, K, M)
        self.error_ris_user[idx] = err_r.reshape(n, R, K, N)
        self.error_direct[idx] = err_d.reshape(n, R, K, M)
        self.slot[idx] = 0
        self._geometry_cache = None
        self._twin_observed = None
        shrink = 1.0 / (1.0 + p.twin_estimation_nmse)
        noise = np.sqrt(p.twin_estimation_nmse)
        self.twin_bs_ris[idx] = shrink * (self.scatter_bs_ris[idx] + noise * self.error_bs_ris[idx])
        self._refresh_twin(idx, np.zeros(len(idx), dtype=np.int64))
        self.sum_rate_total[idx] = 0.0
        self.violations[idx] = 0
        self.gain_total[idx] = 0.0
        self.twin_nmse_total[idx] = 0.0
        self.unscaled_total[idx] = 0.0

    def _refresh_twin(self, idx: np.ndarray, refresh: np.ndarray) -> None:
        """Twin refresh ``refresh`` of instances ``idx``: measure and LMMSE-shrink the scattered parts."""
        eps = self.params.twin_estimation_nmse
        shrink, noise = 1.0 / (1.0 + eps), np.sqrt(eps)
        self.twin_ris_user[idx] = shrink * (
            self.scatter_ris_user[idx] + noise * self.error_ris_user[idx, refresh]
        )
        self.twin_direct[idx] = shrink * (self.scatter_direct[idx] + noise * self.error_direct[idx, refresh])
        self.twin_age[idx] = 0

    # -- channels ----------------------------------------------------------------
    def _geometry(self):
        """Path gains ``(B, K)`` and line-of-sight rows of the user links at the current slot.

        Cached per slot: one step needs it for the true channel, the twin's error
        and (after advancing) the next observation.
        """
        if self._geometry_cache is not None and np.array_equal(self._geometry_cache[0], self.slot):
            return self._geometry_cache[1]
        p = self.params
        M, N = p.num_bs_antennas, p.num_ris_elements
        t_s = (self.slot * p.slot_duration_s)[:, None, None]
        pos = self.user_start_m + self.user_velocity_mps * t_s  # (B, K, 2)
        rel_bs = pos - self._bs_position
        rel_ris = pos - self._ris_position
        d_bs = np.maximum(np.hypot(rel_bs[..., 0], rel_bs[..., 1]), 1.0)
        d_ris = np.maximum(np.hypot(rel_ris[..., 0], rel_ris[..., 1]), 1.0)
        gain_direct = p.path_gain(d_bs, p.path_loss_exponent_bs_user, p.direct_link_blockage_db)
        gain_ris = p.path_gain(d_ris, p.path_loss_exponent_ris_user)
        # Angles from the array broadsides: BS array along y (broadside +x), RIS along x (broadside -y).
        los_direct = steering_vector(rel_bs[..., 1] / d_bs, M).conj()
        los_ris = steering_vector(rel_ris[..., 0] / d_ris, N).conj()
        geometry = (gain_direct, gain_ris, los_direct, los_ris)
        self._geometry_cache = (self.slot.copy(), geometry)
        return geometry

    def _compose(self, scatter_bs_ris, scatter_ris_user, scatter_direct):
        """Channels ``(H_d, H_r, G)`` from scattered parts and the current geometry."""
        gain_direct, gain_ris, los_direct, los_ris = self._geometry()
        (l_br, s_br), (l_ru, s_ru), (l_bu, s_bu) = self._rician_weights
        bs_ris = self._bs_ris_gain_sqrt * (l_br * self.bs_ris_los + s_br * scatter_bs_ris)
        if self.params.ris_present:
            ris_user = np.sqrt(gain_ris)[..., None] * (l_ru * los_ris + s_ru * scatter_ris_user)
        else:
            ris_user = np.zeros(scatter_ris_user.shape, dtype=np.complex128)
        direct = np.sqrt(gain_direct)[..., None] * (l_bu * los_direct + s_bu * scatter_direct)
        return direct, ris_user, bs_ris

    def true_channels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The physical ``(H_d (B,K,M), H_r (B,K,N), G (B,N,M))`` of the current slot."""
        return self._compose(self.scatter_bs_ris, self.scatter_ris_user, self.scatter_direct)

    def twin_channels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The twin's prediction of ``(H_d, H_r, G)`` for the current slot."""
        decay = (self.rho ** self.twin_age)[:, None, None]
        return self._compose(self.twin_bs_ris, decay * self.twin_ris_user, decay * self.twin_direct)

    def twin_posterior_samples(self, num_samples: int, rng: np.random.Generator):
        """Draws of the current slot's true ``(H_d, H_r, G)`` given the twin's estimate, ``(S, B, ...)`` each.

        The twin's own uncertainty, not the truth: the geometry (path gains, LoS parts) is
        what the twin tracks, and given its latest refresh the scattered parts are Gaussian
        around its prediction (module docstring, "The digital twin")::

            s | twin ~ CN(rho^age y / (1 + eps), (1 - rho^(2 age) / (1 + eps)) I)   (user links)
            S_G | twin ~ CN(y_G / (1 + eps), eps / (1 + eps) I)                       (BS-RIS)

        exact for the latest refresh alone (older refreshes, which a Kalman filter would
        also use, are ignored, as the twin's predictor ignores them).  Used by the robust
        twin-fed optimiser ``ao_twin_robust``; nothing of the true channel is read.
        """
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples = {num_samples!r} is invalid: a positive integer is required")
        eps = self.params.twin_estimation_nmse
        age = self.twin_age[:, None, None]
        decay = self.rho**age
        std_link = np.sqrt(np.maximum(0.0, 1.0 - self.rho ** (2 * age) / (1.0 + eps)))
        std_g = np.sqrt(eps / (1.0 + eps))

        def cn(shape):
            return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * np.sqrt(0.5)

        S = int(num_samples)
        scatter_g = self.twin_bs_ris + std_g * cn((S, *self.twin_bs_ris.shape))
        scatter_r = decay * self.twin_ris_user + std_link * cn((S, *self.twin_ris_user.shape))
        scatter_d = decay * self.twin_direct + std_link * cn((S, *self.twin_direct.shape))
        return self._compose(scatter_g, scatter_r, scatter_d)

    def target_sin(self) -> np.ndarray:
        return np.sin(self.target_angle_rad)

    # -- observation ---------------------------------------------------------------
    def _normalised(self, channels) -> np.ndarray:
        direct, ris_user, bs_ris = channels
        B = self.num_envs
        parts = [
            bs_ris.reshape(B, -1) / self._obs_scale[0],
            ris_user.reshape(B, -1) / self._obs_scale[1],
            direct.reshape(B, -1) / self._obs_scale[2],
        ]
        return np.concatenate([x for z in parts for x in (z.real, z.imag)], axis=1)

    def _observe(self) -> np.ndarray:
        p = self.params
        twin = self.twin_channels()
        channels = self._normalised(twin)
        # twin_nmse is always measured on the "channels" vector, whatever the observation mode.
        self._twin_observed = channels
        extra = np.stack(
            [np.sin(self.target_angle_rad), np.cos(self.target_angle_rad),
             self.twin_age / p.twin_sync_period_slots],
            axis=1,
        )
        if p.observation_mode in ("cascade", "cascade_gains"):
            direct, ris_user, bs_ris = twin
            B = self.num_envs
            cascade = ris_user[..., :, :, None] * bs_ris[..., None, :, :]  # diag(h_r,k) G: (B, K, N, M)
            parts = [
                bs_ris.reshape(B, -1) / self._obs_scale[0],
                cascade.reshape(B, -1) / np.sqrt(p.cascade_reference_gain),
                direct.reshape(B, -1) / self._obs_scale[2],
            ]
            channels = np.concatenate([x for z in parts for x in (z.real, z.imag)], axis=1)
        parts = [channels, extra]
        if p.observation_mode == "cascade_gains":
            parts.append(alignment_gain_features(p, *twin))
        self._expert_cache = None
        if p.expert_residual > 0:
            # The expert's action for this state: observed, and what the next action corrects.
            self._expert_cache = self._expert_actions()
            parts.append(self._expert_cache)
        return np.concatenate(parts, axis=1).astype(np.float32)

    # -- step ------------------------------------------------------------------------
    def _step(self, actions: np.ndarray):
        p = self.params
        B, T = self.num_envs, p.episode_slots
        expert = None
        if p.expert_residual > 0:
            expert = self._expert_cache if self._expert_cache is not None else self._expert_actions()
            # The played action: the expert's, corrected by the agent (clipped to the box).
            actions = np.clip(expert + p.expert_residual * np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        if p.action_mode != "raw":
            # Closed-form precoders on the twin's estimate (what the BS knows); scored on the truth.
            precoder, theta = phase_action_to_design(p, actions, *self.twin_channels(), self.target_sin())
        else:
            precoder, theta = action_to_design(p, actions)
        true = self.true_channels()
        direct, ris_user, bs_ris = true
        channel = effective_channel(direct, ris_user, bs_ris, theta)
        row, normaliser = sensing_row(p, bs_ris, theta, self.target_sin())
        out = slot_reward(p, channel, precoder, row, normaliser)
        violation = out["gain"] < p.sensing_threshold * (1.0 - SENSING_TOLERANCE)
        # Twin fidelity of the observation this action was chosen on.
        x_true = self._normalised(true)
        x_twin = self._twin_observed if self._twin_observed is not None else self._normalised(self.twin_channels())
        self._twin_observed = None
        twin_nmse = np.sum((x_twin - x_true) ** 2, axis=1) / np.sum(x_true**2, axis=1)
        info = {
            "user_rate_bps_hz": out["rates"],
            "sum_rate_bps_hz": out["sum_rate"],
            "sensing_gain": out["gain"],
            "sensing_shortfall": out["shortfall"],
            "sensing_violation": violation,
            "transmit_power_w": np.sum(np.abs(precoder) ** 2, axis=(1, 2)),
            "twin_nmse": twin_nmse,
            "twin_age_slots": self.twin_age.copy(),
            "sensing_share": np.sum(np.abs(precoder[..., :, -1]) ** 2, axis=-1) / p.max_transmit_power_w,
            "unscaled_reward": out["reward"],
        }
        if p.expert == "ao_twin":
            info["expert_action"] = expert if expert is not None else self._expert_actions()
        if p.expert_residual > 0:
            info["played_action"] = actions.astype(np.float32)
        self.sum_rate_total += out["sum_rate"]
        self.unscaled_total += out["reward"]
        self.violations += violation
        self.gain_total += out["gain"]
        self.twin_nmse_total += twin_nmse

        # Advance the physical channel one slot (Gauss-Markov, the episode's own innovations).
        t = self.slot
        innovation_scale = np.sqrt(max(0.0, 1.0 - self.rho**2))
        self.scatter_ris_user = self.rho * self.scatter_ris_user + innovation_scale * self.innovation_ris_user[
            self._batch, np.minimum(t, T - 1)
        ]
        self.scatter_direct = self.rho * self.scatter_direct + innovation_scale * self.innovation_direct[
            self._batch, np.minimum(t, T - 1)
        ]
        self.slot = t + 1
        # The twin: refreshed every sync period, otherwise one slot older.
        self.twin_age += 1
        refresh = self.slot % p.twin_sync_period_slots == 0
        if refresh.any():
            idx = np.flatnonzero(refresh)
            self._refresh_twin(idx, np.minimum(self.slot[idx] // p.twin_sync_period_slots, self.num_refreshes - 1))
        truncated = self.slot >= T
        terminated = np.zeros(B, dtype=bool)
        return out["reward"] / p.reward_divisor, terminated, truncated, info

    def _expert_actions(self) -> np.ndarray:
        """``expert="ao_twin"``: the twin-fed alternating optimisation's action for this slot ``(B, action_dim)``.

        Computed on the twin's channels only (what the BS knows), in the env's
        ``action_mode`` (its phases fitted to the mode, its power shares kept); the
        "expert database" of the diffusion papers, for agents that clone it (``bc_coef``).
        """
        if self._expert is None:
            from gentwin.baselines.ris_isac import AlternatingOptimisation  # baselines import this module

            self._expert = AlternatingOptimisation(self)
        direct, ris_user, bs_ris = self.twin_channels()
        theta, w, _ = self._expert.optimise(direct, ris_user, bs_ris, self.target_sin())
        return self._expert.to_action(w, theta, twin=(direct, ris_user, bs_ris))

    def _episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        n = np.maximum(self.episode_length[idx] + 0, 1)
        # episode_length is updated after _step, so it already counts the last slot.
        return {
            "mean_sum_rate_bps_hz": self.sum_rate_total[idx] / n,
            "sensing_violation_rate": self.violations[idx] / n,
            "mean_sensing_gain": self.gain_total[idx] / n,
            "mean_twin_nmse": self.twin_nmse_total[idx] / n,
            "unscaled_return": self.unscaled_total[idx].copy(),
        }


class RisIsacEnv(KernelEnv):
    """Single RIS-ISAC environment (B = 1); see :mod:`gentwin.envs.ris_isac`."""

    kernel_class = RisIsacKernel


class RisIsacVectorEnv(KernelVectorEnv):
    """Native batched RIS-ISAC ``VectorEnv``; see :mod:`gentwin.envs.ris_isac`."""

    kernel_class = RisIsacKernel
