"""Baselines of RIS-ISAC (seed 004 sections V-B/V-C; model in :mod:`gentwin.envs.ris_isac`).

* ``random_phase_mrt`` / ``random_phase_zf``: uniformly random RIS phases each
  slot; maximum-ratio (``w_k ~ h_k``) or zero-forcing (``W = H^H (H H^H)^-1``,
  pseudo-inverse when K > M) precoders on the twin's effective channel, equal
  power per user; a fixed share ``1.05 Gamma`` of ``P_max`` goes to the sensing
  stream steered at the target (for a directly visible target this alone gives
  ``g >= 1.05 Gamma``).
* ``direct_zf``: the RIS-unaware BS: phases 0, ZF on the twin's direct channel
  only, same sensing share.  On ``params="no_ris"`` this is the no-RIS system.
* ``ao_twin``: alternating optimisation (below) on the twin's estimate decoded
  from the observation -- a classical controller with the agent's information.
* ``ao_perfect_csi``: the strong perfect-CSI reference (an oracle,
  ``requires_kernel``): the same alternating optimisation on the *true*
  channel from ``restarts`` starting phases (zeros, then uniform draws of a
  generator seeded ``restart_seed`` at every call, so it is a deterministic
  function of the channel), a local refinement of the best ``refined_starts``
  results by SLSQP on the exact slot reward, and the best design among all of
  them as the environment scores it.  It is a **heuristic**: a local optimum
  of a non-convex problem, measured (docs/ris_isac.md) but not certified; a
  policy may beat it.
* :class:`RobustTwinReference` (``ao_twin_robust``, not in ``BASELINES``: it costs
  about 1 s per slot): the same optimiser fed the twin, then SLSQP on the reward
  averaged over draws from the twin's posterior of the true channel (a sample-average
  approximation of the Bayes-optimal design given the twin): the twin study's test of
  whether knowing the twin's error statistics recovers what the error costs.

The alternating optimisation maximises ``F = sum_k R_k - lambda max(0, 1 -
g/Gamma)`` by blocks, from a fixed-share ZF start, for ``outer_iterations``
rounds of the two steps below.  In ``ao_perfect_csi`` ``lambda`` is the
environment's own ``sensing_penalty`` (``F`` is then exactly the slot reward of
:func:`gentwin.envs.ris_isac.slot_reward`); ``ao_twin`` uses ``lambda = 1e4``,
i.e. it treats ``g >= Gamma`` as a constraint (``search_penalty``, measured
there):

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
steps (:meth:`AlternatingOptimisation.optimise` returns the history).

The local refinement (:func:`refine_design`) writes the exact penalty as a
smooth program with a slack ``u >= max(0, 1 - g/Gamma')``::

    max  sum_k R_k(W, theta) - sensing_penalty * u
    s.t. ||W||_F^2 <= P_max,   u >= 1 - g(W, theta) / Gamma',   u >= 0

over all of ``W`` and ``theta`` jointly, with analytic gradients
(:func:`slot_gradients`), solved by SciPy's SLSQP.  ``Gamma' = Gamma (1 +
sensing_margin)`` keeps designs that meet the threshold meeting it after the
float32 round trip of the action.

The certified bound (:func:`sum_rate_bound`, the family's ``BOUND``): for any
design, ``r <= sum_k R_k <= sum_k log2(1 + ||h_k||^2 ||w_k||^2 / sigma^2)``
(the penalty is >= 0; drop the interference; Cauchy-Schwarz), and for every
unit-modulus ``theta``::

    ||h_k|| <= ||h_d,k|| + min( sum_n |h_r,k,n| ||G_n||,  sqrt(N) sigma_max(diag(h_r,k) G) ) = sqrt(c_k)

(triangle inequality; ``h_r,k^H Theta G = e^T diag(h_r,k) G`` with
``||e|| = sqrt(N)``).  With ``sum_k ||w_k||^2 <= P_max`` the largest
``sum_k log2(1 + c_k p_k / sigma^2)`` is water-filling over the ``c_k``, so
that value bounds the slot reward of every policy, whatever its information.
Channels evolve independently of the actions, so the episode bound is the sum
over the episode's slots (:func:`episode_sum_rate_bound`).  It ignores
interference and lets every user have its own phases, so it is loose (about
1.7x the reference's return at the default preset, docs/ris_isac.md).
"""

from __future__ import annotations

import copy

import numpy as np
from scipy.optimize import minimize

from gentwin.baselines.base import CERTIFIED_UPPER_BOUND, Baseline, Bound
from gentwin.envs.power_allocation import water_filling
from gentwin.envs.ris_isac import (
    RisIsacParams,
    action_to_design,
    decode_observation,
    design_to_action,
    design_to_phase_action,
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

    def to_action(self, precoder: np.ndarray, theta: np.ndarray, twin=None) -> np.ndarray:
        """The action that plays the design ``(precoder, theta)`` in the env's ``action_mode``.

        ``"raw"``: the design itself.  Other modes: its phases (or the mode's closest
        ones) and users' power shares, the user precoders being the mode's closed form on
        the twin (what that action can express), so a baseline's value there differs from
        its raw-mode value.  ``twin``: the twin's ``(H_d, H_r, G)`` (``"alignment"`` fits
        the phases against them).
        """
        if self.params.action_mode != "raw":
            return design_to_phase_action(self.params, precoder, theta, twin=twin)
        return design_to_action(self.params, precoder, theta)

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        """As :meth:`Baseline.predict`; with ``expert_residual = r > 0`` the action is turned into the
        correction the env applies to its expert, ``clip((a - expert) / r, -1, 1)`` (the expert's action
        ends the observation): the played action is the baseline's wherever it is within ``r`` of the
        expert's in every entry, and the nearest playable one elsewhere."""
        actions, state = super().predict(observation, state, episode_start, deterministic, action_masks)
        r = self.params.expert_residual
        if r > 0:
            expert = np.asarray(observation, dtype=np.float64)[..., -self.params.action_dim:]
            actions = np.clip((actions - expert) / r, -1.0, 1.0).astype(np.float32)
        return actions, state

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
        return self.to_action(w, theta, twin=(direct, ris_user, bs_ris))


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
        return self.to_action(w, theta, twin=(direct, ris_user, bs_ris))


class AlternatingOptimisation(_RisIsacBaseline):
    """Alternating optimisation (WMMSE precoders / element-wise phases) on the twin's channel."""

    name = "ao_twin"
    outer_iterations: int = 4
    wmmse_iterations: int = 8
    phase_levels: int = 8
    share_grid = np.linspace(0.0, 0.9, 10)
    #: Weight of the relative sensing shortfall in the AO's search objective; None: the
    #: environment's own ``sensing_penalty``.  The twin-fed controller treats ``g >= Gamma``
    #: as a constraint (1e4, far above any sum rate): on the 16 held-out episodes of
    #: docs/ris_isac.md it earns the same return as with the env's 100 (417.3 vs 417.1)
    #: and meets the threshold in every slot instead of missing it in 4% of them.
    search_penalty: float | None = 1e4

    def channels(self, obs):
        return self.twin_view(obs)

    def act(self, obs):
        theta, w, _ = self.optimise(*self.channels(obs))
        return self.to_action(w, theta, twin=self.twin_view(obs)[:3])

    def objective(self, direct, ris_user, bs_ris, target_sin, theta, precoder) -> np.ndarray:
        """``sum_k R_k - search_penalty * max(0, 1 - g / Gamma)`` (the env's reward when ``search_penalty`` is None)."""
        p = self.params
        channel = effective_channel(direct, ris_user, bs_ris, theta)
        row, norm = sensing_row(p, bs_ris, theta, target_sin)
        out = slot_reward(p, channel, precoder, row, norm)
        if self.search_penalty is None:
            return out["reward"]
        return out["sum_rate"] - self.search_penalty * out["shortfall"]

    def optimise(self, direct, ris_user, bs_ris, target_sin, theta=None):
        """Run the AO on channels ``(B, ...)``; return ``theta``, ``W`` and the objective history.

        ``theta`` ``(B, N)``: the starting phases (default zeros).  The history has
        one row per block step (start, then precoder/phase steps alternately),
        shape ``(2 * outer_iterations + 1, B)``.
        """
        p = self.params
        B, N, K = direct.shape[0], p.num_ris_elements, p.num_users
        p_max = p.max_transmit_power_w
        theta = np.zeros((B, N)) if theta is None else np.array(theta, dtype=np.float64)
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


# ---------------------------------------------------------------------------
# Local refinement: exact slot reward, analytic gradients, SLSQP
# ---------------------------------------------------------------------------
def slot_gradients(params: RisIsacParams, direct, ris_user, bs_ris, target_sin, precoder, theta):
    """Sum rate, sensing gain and their gradients for ONE instance.

    Channels ``H_d (K, M)``, ``H_r (K, N)``, ``G (N, M)``, ``precoder (M, K+1)``,
    ``theta (N,)``.  Returns ``(rate, d rate / d conj(W), d rate / d theta, g,
    d g / d conj(W), d g / d theta)``; the ``conj(W)`` derivatives are Wirtinger
    derivatives, so the gradient w.r.t. ``Re W`` is ``2 Re`` of them and w.r.t.
    ``Im W`` is ``2 Im``.

    With ``a_kj = h_k^H w_j``, ``T_k = sum_j |a_kj|^2 + sigma^2`` and
    ``I_k = T_k - |a_kk|^2``, ``R = sum_k log2(T_k / I_k)``; every ``|a_kj|^2``
    enters with weight ``(1/T_k - [j != k]/I_k) / ln 2``.
    """
    K = params.num_users
    e = np.exp(1j * theta)
    h = direct + (ris_user * e) @ bs_ris  # (K, M)
    a = h @ precoder  # (K, K+1)
    power = np.abs(a) ** 2
    total = power.sum(axis=1) + params.noise_power_w
    interference = total - power[np.arange(K), np.arange(K)]
    rate = float(np.sum(np.log2(total) - np.log2(interference)))
    weight = (1.0 / total[:, None] - (1.0 - np.eye(K, K + 1)) / interference[:, None]) / np.log(2.0)
    grad_w = h.conj().T @ (weight * a)
    reflected = bs_ris @ precoder  # (N, K+1): (G w_j)_n
    # d|a_kj|^2 / d theta_n = 2 Re(conj(a_kj) j h_r,kn e_n (G w_j)_n)
    grad_theta = 2.0 * np.real(1j * np.sum(ris_user * e * ((weight * a.conj()) @ reflected.T), axis=0))
    row, norm = sensing_row(params, bs_ris, theta, target_sin)
    beam = row @ precoder  # (K+1,): c w_j
    gain = float(np.sum(np.abs(beam) ** 2) / norm)
    gain_w = np.outer(row.conj(), beam) / norm
    if params.target_via_ris:
        # c = (b o e) G: d|c w_j|^2 / d theta_n = 2 Re(conj(c w_j) j b_n e_n (G w_j)_n)
        b = np.exp(-1j * np.pi * np.arange(params.num_ris_elements) * target_sin)
        gain_theta = 2.0 * np.real(1j * b * e * (reflected @ beam.conj())) / norm
    else:
        gain_theta = np.zeros_like(theta)
    return rate, grad_w, grad_theta, gain, gain_w, gain_theta


def refine_design(params: RisIsacParams, direct, ris_user, bs_ris, target_sin, precoder, theta,
                  sensing_margin: float = 1e-5, max_iterations: int = 200):
    """SLSQP on the exact-penalty slot reward from ``(precoder, theta)`` (ONE instance).

    See the module docstring for the program.  Channels ``H_d (K, M)``, ``H_r (K, N)``,
    ``G (N, M)``, or ``S`` draws of them with a leading axis (``(S, K, M)`` ...): then the
    sum rate and the sensing gain of the program are their averages over the draws (the
    sample-average program of ``ao_twin_robust``).  Returns the refined ``(precoder,
    theta)``; the precoder is projected onto the power ball (SLSQP may overshoot its
    constraint by round-off).
    """
    M, K1, N = params.num_bs_antennas, params.num_streams, params.num_ris_elements
    scale = np.sqrt(params.max_transmit_power_w)
    n_w = M * K1
    threshold = params.sensing_threshold * (1.0 + sensing_margin)
    penalty = params.sensing_penalty
    cache: dict = {}

    def unpack(z):
        return (z[:n_w] + 1j * z[n_w:2 * n_w]).reshape(M, K1) * scale, z[2 * n_w:2 * n_w + N]

    draws = list(zip(direct, ris_user, bs_ris)) if np.ndim(direct) == 3 else [(direct, ris_user, bs_ris)]

    def averaged(w, th):
        parts = [slot_gradients(params, d, r, g, target_sin, w, th) for d, r, g in draws]
        return parts[0] if len(parts) == 1 else tuple(np.mean([x[i] for x in parts], axis=0) for i in range(6))

    def evaluate(z):
        key = z.tobytes()
        if key not in cache:
            cache.clear()
            cache[key] = averaged(*unpack(z))
        return cache[key]

    def real_grad(wirtinger):  # d / d(Re, Im) of W / sqrt(P_max)
        g = 2.0 * scale * wirtinger
        return np.concatenate([g.real.ravel(), g.imag.ravel()])

    def objective(z):
        return -evaluate(z)[0] + penalty * z[-1]

    def objective_grad(z):
        _, grad_w, grad_theta, *_ = evaluate(z)
        return np.concatenate([-real_grad(grad_w), -grad_theta, [penalty]])

    def constraints(z):
        return np.array([1.0 - np.sum(z[:2 * n_w] ** 2), z[-1] - 1.0 + evaluate(z)[3] / threshold])

    def constraints_jac(z):
        *_, gain_w, gain_theta = evaluate(z)
        power = np.concatenate([-2.0 * z[:2 * n_w], np.zeros(N), [0.0]])
        sensing = np.concatenate([real_grad(gain_w) / threshold, gain_theta / threshold, [1.0]])
        return np.stack([power, sensing])

    w0 = np.asarray(precoder) / scale
    gain0 = averaged(precoder, theta)[3]
    z0 = np.concatenate([w0.real.ravel(), w0.imag.ravel(), theta, [max(0.0, 1.0 - gain0 / threshold)]])
    result = minimize(
        objective, z0, jac=objective_grad, method="SLSQP",
        bounds=[(None, None)] * (2 * n_w + N) + [(0.0, None)],
        constraints=[{"type": "ineq", "fun": constraints, "jac": constraints_jac}],
        options={"maxiter": max_iterations, "ftol": 1e-10},
    )
    w, th = unpack(result.x)
    w = w * min(1.0, scale / max(np.linalg.norm(w), 1e-300))
    return w, th


def scored_reward(params: RisIsacParams, direct, ris_user, bs_ris, target_sin, actions) -> np.ndarray:
    """The reward the environment gives ``actions`` (any leading axes) on these channels."""
    w, theta = action_to_design(params, actions)
    row, norm = sensing_row(params, bs_ris, theta, target_sin)
    return slot_reward(params, effective_channel(direct, ris_user, bs_ris, theta), w, row, norm)["reward"]


class PerfectCSIReference(AlternatingOptimisation):
    """Strong perfect-CSI reference (oracle, heuristic): AO restarts + SLSQP refinement."""

    name = "ao_perfect_csi"
    requires_kernel = True
    #: Every stage maximises the environment's own slot reward.
    search_penalty = None
    #: Starting phases of the AO: zeros, then ``restarts - 1`` uniform draws.
    restarts: int = 8
    restart_seed: int = 0
    #: How many of the best AO results (by the exact slot reward) SLSQP refines.
    refined_starts: int = 4
    refine_iterations: int = 200
    sensing_margin: float = 1e-5

    def channels(self, obs):
        direct, ris_user, bs_ris = self.kernel.true_channels()
        return direct, ris_user, bs_ris, self.kernel.target_sin()

    def act(self, obs):
        return self.played(self.design_actions(*self.channels(obs)), obs)

    def played(self, actions: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Raw design actions ``(B, action_dim)`` as the env's ``action_mode`` takes them."""
        if self.params.action_mode != "raw":
            return self.to_action(*action_to_design(self.params, actions)[:2], twin=self.twin_view(obs)[:3])
        return actions

    def design_actions(self, direct, ris_user, bs_ris, target_sin) -> np.ndarray:
        """The reference's actions ``(B, action_dim)`` for channels ``(B, ...)``."""
        p = self.params
        B, N = direct.shape[0], p.num_ris_elements
        # Without a surface the phases do nothing: one start is all restarts could give.
        R = self.restarts if p.ris_present else 1
        rng = np.random.default_rng(self.restart_seed)
        starts = np.concatenate([np.zeros((1, B, N)), rng.uniform(-np.pi, np.pi, (R - 1, B, N))])
        tile = lambda x: np.concatenate([x] * R)  # noqa: E731  restart r, instance b -> row r B + b
        theta, w, _ = self.optimise(tile(direct), tile(ris_user), tile(bs_ris), tile(target_sin),
                                    theta=starts.reshape(R * B, N))
        actions = design_to_action(p, w, theta).reshape(R, B, -1)
        value = scored_reward(p, direct, ris_user, bs_ris, target_sin, actions)  # (R, B)
        best = np.argmax(value, axis=0)
        out, out_value = actions[best, np.arange(B)], value[best, np.arange(B)]
        w, theta = w.reshape(R, B, *w.shape[1:]), theta.reshape(R, B, N)
        for b in range(B):
            for r in np.argsort(-value[:, b], kind="stable")[: self.refined_starts]:
                w_r, th_r = refine_design(p, direct[b], ris_user[b], bs_ris[b], target_sin[b], w[r, b],
                                          theta[r, b], self.sensing_margin, self.refine_iterations)
                action = design_to_action(p, w_r, th_r)
                v = scored_reward(p, direct[b], ris_user[b], bs_ris[b], target_sin[b], action)
                if v > out_value[b]:
                    out[b], out_value[b] = action, v
        return out


class RobustTwinReference(PerfectCSIReference):
    """The reference's optimiser fed the twin, made robust to the twin's error (heuristic).

    Per slot: ``ao_perfect_csi``'s optimiser (AO restarts + SLSQP) on the twin's estimate
    (the plug-in design), then SLSQP from that design on the *sample-average* program,
    the reward averaged over ``num_samples`` draws of the true channel from the twin's
    posterior (:meth:`RisIsacKernel.twin_posterior_samples`); the robust design is played
    where its sample-average reward beats the plug-in design's.  It asks whether a
    controller that knows how wrong its twin is can recover what the twin's error costs.
    The draws come from a generator seeded ``sample_seed`` at every call (common random
    numbers: a deterministic function of the twin's state).  It reads the twin's state
    from the kernel (its estimates, their age, the geometry it tracks), never the true
    channel, hence ``requires_kernel``.  About 1 s per slot and instance at the default
    (45-55 s per 50-slot episode in docs/ris_isac.md, 3x ``ao_perfect_csi``), so it is
    not in ``BASELINES`` (which ``train.py`` evaluates by default): it is the twin study's
    controller (benchmarks/ris_isac.py, docs/ris_isac.md).
    """

    name = "ao_twin_robust"
    requires_kernel = True
    num_samples: int = 32
    sample_seed: int = 0

    def channels(self, obs):
        return self.twin_view(obs)

    def act(self, obs):
        p = self.params
        direct, ris_user, bs_ris, target_sin = self.channels(obs)
        actions = self.design_actions(direct, ris_user, bs_ris, target_sin)
        draws = self.kernel.twin_posterior_samples(self.num_samples, np.random.default_rng(self.sample_seed))
        for b in range(len(actions)):
            d, r, g = (x[:, b] for x in draws)
            w, theta = action_to_design(p, actions[b])
            w_r, th_r = refine_design(p, d, r, g, target_sin[b], w, theta, self.sensing_margin,
                                      self.refine_iterations)
            robust = design_to_action(p, w_r, th_r)
            if scored_reward(p, d, r, g, target_sin[b], robust).mean() > scored_reward(
                p, d, r, g, target_sin[b], actions[b]
            ).mean():
                actions[b] = robust
        return self.played(actions, obs)


# ---------------------------------------------------------------------------
# Certified bound
# ---------------------------------------------------------------------------
def sum_rate_bound(params: RisIsacParams, direct, ris_user, bs_ris) -> np.ndarray:
    """Certified upper bound ``(...)`` on the slot reward of every design (module docstring)."""
    cascade_sum = np.sum(np.abs(ris_user) * np.linalg.norm(bs_ris, axis=-1)[..., None, :], axis=-1)
    per_user = ris_user[..., :, :, None] * bs_ris[..., None, :, :]  # diag(h_r,k) G: (..., K, N, M)
    cascade_svd = np.sqrt(params.num_ris_elements) * np.linalg.norm(per_user, ord=2, axis=(-2, -1))
    gain = (np.linalg.norm(direct, axis=-1) + np.minimum(cascade_sum, cascade_svd)) ** 2
    power = water_filling(gain, params.max_transmit_power_w, params.noise_power_w)
    return np.log2(1.0 + gain * power / params.noise_power_w).sum(axis=-1)


def episode_sum_rate_bound(kernel) -> np.ndarray:
    """:func:`sum_rate_bound` summed over the episode of every instance of a freshly reset kernel.

    The channels evolve independently of the actions, so a copy of the kernel
    is stepped through the episode (with zero actions) and the bound of every
    slot's true channel is added up.  The kernel itself is not touched.
    """
    walk = copy.deepcopy(kernel)
    p = walk.params
    total = np.zeros(walk.num_envs)
    zero = np.zeros((walk.num_envs, p.action_dim), dtype=np.float32)
    for _ in range(p.episode_slots):
        total += sum_rate_bound(p, *walk.true_channels())
        walk.step(zero)
    return total


BASELINES = {
    cls.name: cls
    for cls in (RandomPhaseMRT, RandomPhaseZF, DirectZF, AlternatingOptimisation, PerfectCSIReference)
}

#: The strong reference ``ao_perfect_csi`` is a heuristic; shares are against this bound.
BOUND = Bound(
    name="interference_free_sum_rate",
    kind=CERTIFIED_UPPER_BOUND,
    value=episode_sum_rate_bound,
    description=(
        "per slot, water-filling over the users' largest channel gains (triangle inequality over "
        "the RIS phases), interference ignored, summed over the episode: at least every policy's return"
    ),
)
