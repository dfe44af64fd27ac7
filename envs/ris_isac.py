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
``||W||_F^2 <= P_max`` (what the baselines use).

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

Info
----
Per step: ``user_rate_bps_hz`` (K,), ``sum_rate_bps_hz``, ``sensing_gain``,
``sensing_shortfall`` (``max(0, 1 - g/Gamma)``), ``sensing_violation``
(``g < Gamma (1 - 1e-9)``), ``transmit_power_w``, ``twin_nmse`` (NMSE of the
observed normalised channel vector against the true one, for the slot the
action was chosen in) and ``twin_age_slots``.  At episode end,
``episode_summary``: ``return``, ``length``, ``mean_sum_rate_bps_hz``,
``sensing_violation_rate``, ``mean_sensing_gain``, ``mean_twin_nmse``.

Version History
---------------
* v0: initial release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces
from scipy.special import j0

from gentwin.envs.core import (
    BatchedKernel,
    KernelEnv,
    KernelVectorEnv,
    check_field,
)

__all__ = [
    "PRESETS",
    "RisIsacEnv",
    "RisIsacKernel",
    "RisIsacParams",
    "RisIsacVectorEnv",
    "action_to_design",
    "decode_observation",
    "design_to_action",
    "effective_channel",
    "sensing_gain",
    "sensing_row",
    "sinr",
    "slot_reward",
    "steering_vector",
]

SPEED_OF_LIGHT_MPS = 299_792_458.0
#: Relative tolerance of the sensing check (``g < Gamma (1 - tol)`` is a violation).
SENSING_TOLERANCE = 1e-9


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
        return 2 * self.num_bs_antennas * self.num_streams + self.num_ris_elements

    @property
    def observation_dim(self) -> int:
        M, N, K = self.num_bs_antennas, self.num_ris_elements, self.num_users
        return 2 * (N * M + K * N + K * M) + 3


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
    """Project actions ``(..., action_dim)`` onto a feasible design.

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


def decode_observation(params: RisIsacParams, obs: np.ndarray):
    """The twin's ``(H_d, H_r, G)`` in physical units, target ``sin`` and age share from observations."""
    M, N, K = params.num_bs_antennas, params.num_ris_elements, params.num_users
    o = np.asarray(obs, dtype=np.float64)
    lead = o.shape[:-1]
    sizes = [N * M, K * N, K * M]
    out = []
    pos = 0
    for size, shape, scale in zip(
        sizes,
        [(N, M), (K, N), (K, M)],
        [params.bs_ris_gain, params.ris_user_reference_gain, params.bs_user_reference_gain],
    ):
        z = o[..., pos : pos + size] + 1j * o[..., pos + size : pos + 2 * size]
        out.append(np.sqrt(scale) * z.reshape(*lead, *shape))
        pos += 2 * size
    bs_ris, ris_user, direct = out
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
        channels = self._normalised(self.twin_channels())
        self._twin_observed = channels
        extra = np.stack(
            [np.sin(self.target_angle_rad), np.cos(self.target_angle_rad),
             self.twin_age / p.twin_sync_period_slots],
            axis=1,
        )
        return np.concatenate([channels, extra], axis=1).astype(np.float32)

    # -- step ------------------------------------------------------------------------
    def _step(self, actions: np.ndarray):
        p = self.params
        B, T = self.num_envs, p.episode_slots
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
        }
        self.sum_rate_total += out["sum_rate"]
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
        return out["reward"], terminated, truncated, info

    def _episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        n = np.maximum(self.episode_length[idx] + 0, 1)
        # episode_length is updated after _step, so it already counts the last slot.
        return {
            "mean_sum_rate_bps_hz": self.sum_rate_total[idx] / n,
            "sensing_violation_rate": self.violations[idx] / n,
            "mean_sensing_gain": self.gain_total[idx] / n,
            "mean_twin_nmse": self.twin_nmse_total[idx] / n,
        }


class RisIsacEnv(KernelEnv):
    """Single RIS-ISAC environment (B = 1); see :mod:`gentwin.envs.ris_isac`."""

    kernel_class = RisIsacKernel


class RisIsacVectorEnv(KernelVectorEnv):
    """Native batched RIS-ISAC ``VectorEnv``; see :mod:`gentwin.envs.ris_isac`."""

    kernel_class = RisIsacKernel
