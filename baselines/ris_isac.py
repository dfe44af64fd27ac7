"""Baselines of RIS-ISAC (seed 004 sections V-B/V-C; model in :mod:`gentwin.envs.ris_isac`).

* ``random_phase_mrt`` / ``random_phase_zf``: uniformly random RIS phases each
  slot; maximum-ratio (``w_k ~ h_k``) or zero-forcing (``W = H^H (H H^H)^-1``,
  pseudo-inverse when K > M) precoders on the twin's effective channel, equal
  power per user; a fixed share ``1.05 Gamma`` of ``P_max`` goes to the sensing
  stream steered at the target (for a directly visible target this alone gives
  ``g >= 1.05 Gamma``).
* ``direct_zf``: the RIS-unaware BS: phases 0, ZF on the twin's direct channel
  only, same sensing share.  On ``params="no_ris"`` this is the no-RIS system.
* ``ao_perfect_csi``: alternating optimisation on the *true* channel (an oracle,
  ``requires_kernel``): the reference upper bound.
* ``ao_twin``: the same alternating optimisation on the twin's estimate decoded
  from the observation -- a classical controller with the agent's information.

The alternating optimisation maximises the environment's own slot reward
``F = sum_k R_k - lambda max(0, 1 - g/Gamma)`` by blocks, from a fixed-share ZF
start with zero phases, for ``outer_iterations`` rounds of:

1. precoders: for every sensing share ``s`` of a grid, the radar stream gets
   ``s P_max`` along the best single beam toward the target (``w_0 ~ c^H``), and
   the user precoders run ``wmmse_iterations`` WMMSE updates (Shi et al., IEEE
   TSP 2011) with the power budget ``(1 - s) P_max`` and the radar stream as
   interference; the design with the largest ``F`` among all shares *and the
   current design* is kept;
2. phases: element-wise (block coordinate) update -- for ``n = 1..N`` the phase
   ``theta_n`` is chosen from ``phase_levels`` uniform levels *and its current
   value* to maximise ``F`` with everything else fixed.

Keeping the incumbent among the candidates makes ``F`` non-decreasing over the
steps (:meth:`AlternatingOptimisation.optimise` returns the history).  The
result is a local optimum of a non-convex problem: an upper *reference*, not a
certified bound (an agent may exceed it).
"""

from __future__ import annotations

import numpy as np

from gentwin.baselines.base import Baseline
from gentwin.envs.ris_isac import (
    RisIsacParams,
    decode_observation,
    design_to_action,
    effective_channel,
    sensing_row,
    slot_reward,
)

#: Share of P_max the fixed-share baselines give the sensing stream, relative to Gamma.
SENSING_SHARE_MARGIN = 1.05


def mrt_precoder(channel: np.ndarray, power_w) -> np.ndarray:
    """Maximum-ratio precoders ``(..., M, K)``, ``w_k = sqrt(P/K) h_k / ||h_k||``."""
    K = channel.shape[-2]
    w = np.swapaxes(channel.conj(), -1, -2)
    norm = np.linalg.norm(w, axis=-2, keepdims=True)
    return w / np.maximum(norm, 1e-300) * np.sqrt(np.asarray(power_w) / K)[..., None, None]


def zf_precoder(channel: np.ndarray, power_w) -> np.ndarray:
    """Zero-forcing precoders ``(..., M, K)`` (pseudo-inverse), equal power per user."""
    K = channel.shape[-2]
    w = np.linalg.pinv(channel)
    norm = np.linalg.norm(w, axis=-2, keepdims=True)
    return w / np.maximum(norm, 1e-300) * np.sqrt(np.asarray(power_w) / K)[..., None, None]


def sensing_beam(row: np.ndarray, power_w) -> np.ndarray:
    """The radar stream ``w_0 = sqrt(P) c^H / ||c||`` (the beam that maximises ``|c w_0|``)."""
    beam = row.conj()
    norm = np.linalg.norm(beam, axis=-1, keepdims=True)
    return beam / np.maximum(norm, 1e-300) * np.sqrt(np.asarray(power_w))[..., None]


def _power_limited_solve(gram: np.ndarray, rhs: np.ndarray, power_w: np.ndarray,
                         bisection_steps: int = 40) -> np.ndarray:
    """``W = (A + mu I)^-1 X`` with the smallest ``mu >= 0`` such that ``||W||_F^2 <= P``.

    Uses the eigendecomposition of the Hermitian ``A`` so the power is a closed
    form in ``mu``, bisected over the whole batch at once.
    """
    lam, vec = np.linalg.eigh(gram)
    lam = np.maximum(lam, 0.0)
    proj = np.swapaxes(vec.conj(), -1, -2) @ rhs  # V^H X: (..., M, K)
    weight = np.sum(np.abs(proj) ** 2, axis=-1)  # (..., M)

    def power(mu):
        return np.sum(weight / np.maximum(lam + mu[..., None], 1e-150) ** 2, axis=-1)

    zero = np.zeros(power_w.shape)
    feasible_at_zero = (lam.min(axis=-1) > 1e-12 * np.maximum(lam.max(axis=-1), 1e-300)) & (
        power(zero) <= power_w
    )
    lo = zero
    hi = np.sqrt(weight.sum(axis=-1) / np.maximum(power_w, 1e-300))  # power(hi) <= P
    for _ in range(bisection_steps):
        mid = 0.5 * (lo + hi)
        over = power(mid) > power_w
        lo = np.where(over, mid, lo)
        hi = np.where(over, hi, mid)
    mu = np.where(feasible_at_zero, 0.0, hi)
    return vec @ (proj / np.maximum(lam + mu[..., None], 1e-300)[..., None])


def wmmse_precoder(channel: np.ndarray, precoder: np.ndarray, noise_w: np.ndarray, power_w: np.ndarray,
                   iterations: int) -> np.ndarray:
    """WMMSE sum-rate updates of the user precoders ``(..., M, K)`` under ``||W||^2 <= P``.

    ``noise_w (..., K)`` is each user's noise plus radar-stream interference.
    """
    h_herm = np.swapaxes(channel.conj(), -1, -2)  # columns h_k: (..., M, K)
    w = precoder
    for _ in range(iterations):
        gains = channel @ w  # h_k^H w_j
        total = np.sum(np.abs(gains) ** 2, axis=-1) + noise_w
        signal = np.diagonal(gains, axis1=-2, axis2=-1)
        receiver = signal / total  # MMSE receiver u_k
        mse = np.maximum(1.0 - np.abs(signal) ** 2 / total, 1e-12)
        weight = 1.0 / mse  # omega_k
        gram = h_herm @ ((weight * np.abs(receiver) ** 2)[..., None] * channel)
        rhs = h_herm * (weight * receiver)[..., None, :]
        w = _power_limited_solve(gram, rhs, power_w)
    return w


class _RisIsacBaseline(Baseline):
    """Shared decoding of observations and the action map."""

    def __init__(self, env, seed: int | None = None):
        super().__init__(env, seed)
        p: RisIsacParams = self.params
        self.fixed_share = min(1.0, SENSING_SHARE_MARGIN * p.sensing_threshold)

    def twin_view(self, obs: np.ndarray):
        """Twin channels ``(H_d, H_r, G)`` and target ``sin`` from observations."""
        direct, ris_user, bs_ris, target_sin, _ = decode_observation(self.params, obs)
        return direct, ris_user, bs_ris, target_sin

    def fixed_share_design(self, direct, ris_user, bs_ris, target_sin, theta, precoder_fn):
        p = self.params
        channel = effective_channel(direct, ris_user, bs_ris, theta)
        p_max = p.max_transmit_power_w
        users = precoder_fn(channel, np.full(channel.shape[:-2], (1.0 - self.fixed_share) * p_max))
        row, _ = sensing_row(p, bs_ris, theta, target_sin)
        radar = sensing_beam(row, np.full(channel.shape[:-2], self.fixed_share * p_max))
        return np.concatenate([users, radar[..., None]], axis=-1)


class RandomPhaseMRT(_RisIsacBaseline):
    """Random RIS phases, MRT precoding, fixed sensing share."""

    name = "random_phase_mrt"
    precoder = staticmethod(mrt_precoder)

    def act(self, obs):
        direct, ris_user, bs_ris, target_sin = self.twin_view(obs)
        theta = self.rng.uniform(-np.pi, np.pi, size=(obs.shape[0], self.params.num_ris_elements))
        w = self.fixed_share_design(direct, ris_user, bs_ris, target_sin, theta, self.precoder)
        return design_to_action(self.params, w, theta)


class RandomPhaseZF(RandomPhaseMRT):
    """Random RIS phases, zero-forcing precoding, fixed sensing share."""

    name = "random_phase_zf"
    precoder = staticmethod(zf_precoder)


class DirectZF(_RisIsacBaseline):
    """RIS-unaware BS: zero phases, ZF on the direct channel only, fixed sensing share."""

    name = "direct_zf"

    def act(self, obs):
        direct, ris_user, bs_ris, target_sin = self.twin_view(obs)
        theta = np.zeros((obs.shape[0], self.params.num_ris_elements))
        w = self.fixed_share_design(direct, np.zeros_like(ris_user), bs_ris, target_sin, theta, zf_precoder)
        return design_to_action(self.params, w, theta)


class AlternatingOptimisation(_RisIsacBaseline):
    """Alternating optimisation (WMMSE precoders / element-wise phases) on the twin's channel."""

    name = "ao_twin"
    outer_iterations: int = 4
    wmmse_iterations: int = 8
    phase_levels: int = 8
    share_grid = np.linspace(0.0, 0.9, 10)
    #: Weight of the relative sensing shortfall in the AO's objective; far above
    #: any attainable sum rate, so the AO treats ``g >= Gamma`` as a constraint.
    constraint_penalty: float = 1e4

    def channels(self, obs):
        return self.twin_view(obs)

    def act(self, obs):
        theta, w, _ = self.optimise(*self.channels(obs))
        return design_to_action(self.params, w, theta)

    def objective(self, direct, ris_user, bs_ris, target_sin, theta, precoder) -> np.ndarray:
        """``sum_k R_k - constraint_penalty * max(0, 1 - g / Gamma)``."""
        p = self.params
        channel = effective_channel(direct, ris_user, bs_ris, theta)
        row, norm = sensing_row(p, bs_ris, theta, target_sin)
        out = slot_reward(p, channel, precoder, row, norm)
        return out["sum_rate"] - self.constraint_penalty * out["shortfall"]

    def optimise(self, direct, ris_user, bs_ris, target_sin):
        """Run the AO on channels ``(B, ...)``; return ``theta``, ``W`` and the objective history.

        The history has one row per block step (start, then precoder/phase steps
        alternately), shape ``(2 * outer_iterations + 1, B)``.
        """
        p = self.params
        B, N, K = direct.shape[0], p.num_ris_elements, p.num_users
        p_max = p.max_transmit_power_w
        theta = np.zeros((B, N))
        w = self.fixed_share_design(direct, ris_user, bs_ris, target_sin, theta, zf_precoder)
        best = self.objective(direct, ris_user, bs_ris, target_sin, theta, w)
        history = [best.copy()]
        S = len(self.share_grid) + 1
        levels = np.linspace(-np.pi, np.pi, self.phase_levels, endpoint=False)
        for _ in range(self.outer_iterations):
            # -- precoder block: every sensing share, WMMSE for the users ----------
            channel = effective_channel(direct, ris_user, bs_ris, theta)[:, None]  # (B, 1, K, M)
            row, norm = sensing_row(p, bs_ris, theta, target_sin)
            # The grid plus the share whose radar beam alone gives exactly g = Gamma.
            shares = np.concatenate(
                [np.minimum(1.0, p.sensing_threshold * norm / (p_max * np.sum(np.abs(row) ** 2, axis=-1)))[:, None],
                 np.broadcast_to(self.share_grid, (B, S - 1))],
                axis=1,
            )  # (B, S)
            radar = sensing_beam(row[:, None], shares * p_max)  # (B, S, M)
            noise = p.noise_power_w + np.abs((channel @ radar[..., None])[..., 0]) ** 2  # (B, S, K)
            users = w[:, None, :, :K]
            users_power = np.sum(np.abs(users) ** 2, axis=(-2, -1))
            budget = (1.0 - shares) * p_max  # (B, S)
            start = users * np.sqrt(budget / np.maximum(users_power, 1e-300))[..., None, None]
            users = wmmse_precoder(
                np.broadcast_to(channel, (B, S, K, channel.shape[-1])), start, noise, budget,
                self.wmmse_iterations,
            )
            cand = np.concatenate([users, radar[..., None]], axis=-1)  # (B, S, M, K+1)
            cand = np.concatenate([w[:, None], cand], axis=1)  # incumbent first
            value = self.objective(
                direct[:, None], ris_user[:, None], bs_ris[:, None], target_sin[:, None], theta[:, None], cand
            )
            pick = np.argmax(value, axis=1)  # ties keep the incumbent
            w = cand[np.arange(B), pick]
            best = value[np.arange(B), pick]
            history.append(best.copy())
            # -- phase block: element-wise, incumbent among the candidates ---------
            for n in range(N):
                trial = np.repeat(theta[:, None], self.phase_levels + 1, axis=1)  # (B, Q+1, N)
                trial[:, 1:, n] = levels
                value = self.objective(
                    direct[:, None], ris_user[:, None], bs_ris[:, None], target_sin[:, None], trial, w[:, None]
                )
                pick = np.argmax(value, axis=1)
                theta = trial[np.arange(B), pick]
                best = value[np.arange(B), pick]
            history.append(best.copy())
        return theta, w, np.asarray(history)


class AlternatingOptimisationPerfectCSI(AlternatingOptimisation):
    """The alternating optimisation on the true channel (oracle): the reference upper bound."""

    name = "ao_perfect_csi"
    requires_kernel = True

    def channels(self, obs):
        direct, ris_user, bs_ris = self.kernel.true_channels()
        return direct, ris_user, bs_ris, self.kernel.target_sin()


BASELINES = {
    cls.name: cls
    for cls in (RandomPhaseMRT, RandomPhaseZF, DirectZF, AlternatingOptimisation, AlternatingOptimisationPerfectCSI)
}
UPPER_BOUND = "ao_perfect_csi"
