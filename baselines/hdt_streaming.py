"""Baselines of HDT streaming (seed 001 section IV; model in ``gentwin.envs.hdt_streaming``).

* ``equal_split``: every active user gets ``B / n`` MHz and ``floor(C / (n c))``
  steps -- the reference the QoE thresholds are built on, so always feasible.
* ``greedy``: QoE gain per resource share.  Starting from the smallest
  allocation it first lifts the users below their threshold, each time buying
  the increment (bandwidth for bitrate, or one more diffusion step) with the
  highest QoE gain per share of the resource it uses; then it spends what is
  left: bandwidth to the best channels (QoE per MHz is ``w_1 eta_u``) and steps
  to the largest similarity gains.
* ``rounded_relaxation``: the best rounded feasible allocation of the LP
  relaxation (below): steps floored, users pushed below their threshold by the
  floor repaired (one more step, or bandwidth moved from users with QoE to
  spare), and the compute freed by the floors handed out step by step to the
  largest similarity gains.  If the repair fails it plays the equal split.  A
  **heuristic** policy (0.1-0.3% below the bound in the measurements of
  docs/hdt_streaming.md), not a bound.

The relaxation (:func:`solve_relaxation`): the only integer decision is the
number of steps; with real-valued steps and the similarity replaced by its
piecewise-linear interpolation between integer steps (concave, equal to the
similarity at every integer), maximising total QoE over the resource and
threshold constraints is a linear program, solved by HiGHS through
``scipy.optimize.linprog``.  Its optimum bounds the total QoE of every
*feasible* allocation.

The family's certified bound (``BOUND``, :func:`reward_bound`): the same LP
with the environment's penalties written in, i.e. excess bandwidth, excess
compute and threshold shortfalls as non-negative slack variables charged at
``penalty_*`` (beyond the ``feasibility_tol`` the environment forgives), so
its optimum bounds the *reward* of every action, feasible or not (the
environment's penalty of an action is at least the LP's charge for it).
Where the penalties exceed the LP's dual prices it equals the relaxation
value.  Contexts evolve independently of the allocations, so an episode's
bound is the sum over its contexts (:func:`episode_reward_bound`).

All baselines read the true context from the kernel they are attached to (the
observation carries the same numbers in float32; reading the kernel spares the
round-off).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from gentwin.baselines.base import CERTIFIED_UPPER_BOUND, Baseline, Bound
from gentwin.envs.hdt_streaming import (
    HdtStreamingParams,
    allocation_metrics,
    allocation_to_action,
    fair_share_allocation,
    similarity,
    spectral_efficiency,
)

__all__ = [
    "BASELINES",
    "BOUND",
    "EqualSplitPolicy",
    "GreedyPolicy",
    "RelaxedSolution",
    "RoundedRelaxationPolicy",
    "episode_reward_bound",
    "greedy_allocation",
    "relaxation_bound",
    "reward_bound",
    "round_relaxed",
    "solve_relaxation",
]


def _context_rows(context: dict[str, np.ndarray]) -> list[dict]:
    n = context["snr_db"].shape[0]
    return [{k: v[i] for k, v in context.items()} for i in range(n)]


def _qoe(p: HdtStreamingParams, r, s, kappa) -> np.ndarray:
    return p.qoe_weight_bitrate * p.bitrate_max_mbps * r + p.qoe_weight_similarity * similarity(p, s, kappa)


# ---------------------------------------------------------------------------
# The continuous relaxation (LP, HiGHS) and the certified reward bound
# ---------------------------------------------------------------------------
@dataclass
class RelaxedSolution:
    """Optimum of the continuous relaxation for one context."""

    value: float  # total QoE, an upper bound on every feasible allocation
    resolution: np.ndarray  # (U,), 0 for inactive users
    steps: np.ndarray  # (U,) real-valued, 0 for inactive users
    success: bool


def solve_relaxation(p: HdtStreamingParams, ctx: dict, penalised: bool = False) -> RelaxedSolution:
    """Maximise total QoE with real-valued steps for one context (an LP, HiGHS).

    ``penalised=True``: the environment's reward instead, with the budgets and
    thresholds soft (see :func:`reward_bound`); the returned ``value`` is then
    the reward bound.

    The only integer decision is the number of steps.  Relaxing it, the
    similarity is replaced by its concave piecewise-linear interpolation between
    integer steps (equal to ``m`` at every integer, so every feasible allocation
    keeps its QoE and stays feasible: the optimum is an upper bound on them
    all).  With the epigraph variable ``t_u <= m`` written as one chord
    constraint per step interval, the program is linear::

        max  sum_u w_1 b_max r_u + w_2 t_u
        s.t. t_u <= m(k) + (m(k+1) - m(k)) (s_u - k)   k = 1 .. S_max - 1
             sum_u b_max r_u / eta_u <= B,   c sum_u s_u <= C
             w_1 b_max r_u + w_2 t_u >= thr_u
             r_min <= r_u <= r_max,  1 <= s_u <= S_max
    """
    active = np.asarray(ctx["active"], dtype=bool)
    U = p.num_users
    out_r, out_s = np.zeros(U), np.zeros(U)
    n = int(active.sum())
    if n == 0:
        return RelaxedSolution(0.0, out_r, out_s, True)
    eta = spectral_efficiency(ctx["snr_db"][active])
    kappa = np.asarray(ctx["complexity"])[active]
    thr = np.asarray(ctx["threshold"])[active]
    B, C = float(ctx["bandwidth_mhz"]), float(ctx["compute_tflops"])
    w1b = p.qoe_weight_bitrate * p.bitrate_max_mbps
    w2 = p.qoe_weight_similarity
    S = p.max_steps
    users = np.arange(n)
    # Variables: r (0..n-1), s (n..2n-1), t (2n..3n-1).
    k = np.arange(1, max(S, 2))  # chord intervals [k, k+1]
    m_k = similarity(p, k[None, :], kappa[:, None])  # (n, K)
    slope = similarity(p, k[None, :] + 1, kappa[:, None]) - m_k
    if S == 1:  # one step only: t <= m(1)
        slope = np.zeros_like(slope)
    K = k.size
    rows_chord = np.arange(n * K)
    chord = sparse.csr_matrix(
        (
            np.concatenate([np.ones(n * K), -slope.ravel()]),
            (np.concatenate([rows_chord, rows_chord]),
             np.concatenate([2 * n + np.repeat(users, K), n + np.repeat(users, K)])),
        ),
        shape=(n * K, 3 * n),
    )
    chord_rhs = (m_k - slope * k[None, :]).ravel()
    budget = sparse.csr_matrix(
        (
            np.concatenate([p.bitrate_max_mbps / eta, np.full(n, p.compute_per_step_tflops)]),
            (np.repeat([0, 1], n), np.concatenate([users, n + users])),
        ),
        shape=(2, 3 * n),
    )
    thresholds = sparse.csr_matrix(
        (
            np.concatenate([np.full(n, -w1b), np.full(n, -w2)]),
            (np.concatenate([users, users]), np.concatenate([users, 2 * n + users])),
        ),
        shape=(n, 3 * n),
    )
    A = sparse.vstack([chord, budget, thresholds]).tocsr()
    b = np.concatenate([chord_rhs, [B, C], -thr])
    cost = -np.concatenate([np.full(n, w1b), np.zeros(n), np.full(n, w2)])
    bounds = (
        [(p.resolution_min, p.resolution_max)] * n + [(1.0, float(S))] * n
        + [(0.0, p.similarity_max)] * n
    )
    if penalised:
        # Slack columns: bandwidth excess, compute excess, one shortfall per user.  The
        # environment forgives violations up to feasibility_tol and charges the whole
        # violation beyond, so charging only the part beyond the tolerance is a lower
        # bound on its penalty (and the LP an upper bound on its reward).
        tol = p.feasibility_tol
        slack = sparse.vstack([
            sparse.csr_matrix((chord.shape[0], n + 2)),
            sparse.csr_matrix(([-1.0, -1.0], ([0, 1], [0, 1])), shape=(2, n + 2)),
            sparse.hstack([sparse.csr_matrix((n, 2)), -sparse.identity(n)]),
        ])
        A = sparse.hstack([A, slack]).tocsr()
        b = np.concatenate([chord_rhs, [B * (1 + tol), C * (1 + tol)], -(thr - tol * p.qoe_max)])
        cost = np.concatenate([cost, [p.penalty_bandwidth_per_mhz, p.penalty_compute_per_tflops],
                               np.full(n, p.penalty_threshold_per_qoe)])
        bounds = bounds + [(0.0, None)] * (n + 2)
    res = linprog(cost, A_ub=A, b_ub=b, bounds=bounds, method="highs")
    if res.status != 0:
        return RelaxedSolution(float("nan"), out_r, out_s, False)
    x = res.x
    out_r[active], out_s[active] = x[:n], x[n : 2 * n]
    return RelaxedSolution(float(-res.fun), out_r, out_s, True)


def relaxation_bound(kernel) -> np.ndarray:
    """Relaxation optimum ``(B,)`` for the current context of every kernel instance.

    Bounds the total QoE of every feasible allocation (:func:`reward_bound`
    bounds every action's reward).
    """
    return np.array([solve_relaxation(kernel.params, row).value for row in _context_rows(kernel.context())])


def reward_bound(kernel) -> np.ndarray:
    """Certified bound ``(B,)`` on the reward of every action in the current context of every instance."""
    return np.array([solve_relaxation(kernel.params, row, penalised=True).value
                     for row in _context_rows(kernel.context())])


def episode_reward_bound(kernel) -> np.ndarray:
    """:func:`reward_bound` summed over the episode of every instance of a freshly reset kernel.

    The contexts do not depend on the allocations, so a copy of the kernel is
    stepped through the episode (any action will do) and every context's
    bound added up; the kernel itself is not touched.
    """
    walk = copy.deepcopy(kernel)
    total = np.zeros(walk.num_envs)
    idle = np.zeros((walk.num_envs, walk.single_action_space.shape[0]), dtype=np.float32)
    for _ in range(walk.params.horizon):
        total += reward_bound(walk)
        walk.step(idle)
    return total


def _feasible(p: HdtStreamingParams, ctx: dict, r, s) -> tuple[bool, float]:
    m = allocation_metrics(
        p, r, s, ctx["snr_db"], ctx["complexity"], ctx["threshold"], ctx["active"],
        ctx["bandwidth_mhz"], ctx["compute_tflops"],
    )
    return bool(m["feasible"]), float(m["total_qoe"])


def _fill_steps(p: HdtStreamingParams, s, kappa, active, compute_left) -> np.ndarray:
    """Hand out whole steps, each to the largest similarity gain, while compute lasts."""
    s = s.copy()
    c = p.compute_per_step_tflops
    while compute_left >= c * (1 - 1e-12):
        gain = np.where(active & (s < p.max_steps), similarity(p, s + 1, kappa) - similarity(p, s, kappa), -np.inf)
        u = int(np.argmax(gain))
        if not np.isfinite(gain[u]):
            break
        s[u] += 1
        compute_left -= c
    return s


def _fill_bandwidth(p: HdtStreamingParams, r, eta, active, bandwidth_left) -> np.ndarray:
    """Spend spare bandwidth on the best channels (QoE per MHz is ``w_1 eta``)."""
    r = r.copy()
    for u in np.argsort(-np.where(active, eta, -np.inf)):
        if not active[u] or bandwidth_left <= 0:
            break
        room_mhz = (p.resolution_max - r[u]) * p.bitrate_max_mbps / eta[u]
        take = min(room_mhz, bandwidth_left)
        r[u] += take * eta[u] / p.bitrate_max_mbps
        bandwidth_left -= take
    return r


def round_relaxed(p: HdtStreamingParams, ctx: dict, sol: RelaxedSolution) -> tuple[np.ndarray, np.ndarray] | None:
    """Best rounded feasible allocation from a relaxed optimum (None if repair fails)."""
    active = np.asarray(ctx["active"], dtype=bool)
    eta = spectral_efficiency(ctx["snr_db"])
    kappa = np.asarray(ctx["complexity"], dtype=np.float64)
    thr = np.asarray(ctx["threshold"], dtype=np.float64)
    B, C = float(ctx["bandwidth_mhz"]), float(ctx["compute_tflops"])
    c = p.compute_per_step_tflops
    r = np.where(active, np.clip(sol.resolution, p.resolution_min, p.resolution_max), p.resolution_min)
    s = np.where(active, np.clip(np.floor(sol.steps + 1e-9), 1, p.max_steps), 1).astype(np.int64)
    # Stay inside the budget exactly (HiGHS may overshoot by its tolerance).
    bw = np.sum(np.where(active, r * p.bitrate_max_mbps / eta, 0.0))
    if bw > B:
        r = np.where(active, p.resolution_min + (r - p.resolution_min) * (1 - (bw - B) / max(bw, 1e-12)), r)
    compute_left = C - c * np.sum(np.where(active, s, 0))
    if compute_left < -1e-12:
        return None
    # Repair: users the floor pushed below their threshold, worst deficit first.
    deficit = np.where(active, thr - _qoe(p, r, s, kappa), -np.inf)
    for u in np.argsort(-deficit):
        if deficit[u] <= 0:
            break
        if compute_left >= c and s[u] < p.max_steps and _qoe(p, r[u], s[u] + 1, kappa[u]) >= thr[u]:
            s[u] += 1
            compute_left -= c
            continue
        # Bandwidth: spare first, then from users with QoE to spare, worst channel first.
        need_mhz = (thr[u] - _qoe(p, r[u], s[u], kappa[u])) / (p.qoe_weight_bitrate * eta[u]) * (1 + 1e-9)
        if p.qoe_weight_bitrate <= 0 or (p.resolution_max - r[u]) * p.bitrate_max_mbps / eta[u] < need_mhz:
            return None
        bw_used = np.sum(np.where(active, r * p.bitrate_max_mbps / eta, 0.0))
        got = min(max(B - bw_used, 0.0), need_mhz)
        for d in np.argsort(np.where(active, eta, np.inf)):
            if got >= need_mhz:
                break
            if d == u or not active[d]:
                continue
            slack_qoe = _qoe(p, r[d], s[d], kappa[d]) - thr[d]
            give = min(
                max(slack_qoe, 0.0) / (p.qoe_weight_bitrate * eta[d]) * (1 - 1e-9),
                (r[d] - p.resolution_min) * p.bitrate_max_mbps / eta[d],
                need_mhz - got,
            )
            if give > 0:
                r[d] -= give * eta[d] / p.bitrate_max_mbps
                got += give
        if got < need_mhz * (1 - 1e-12):
            return None
        r[u] += got * eta[u] / p.bitrate_max_mbps
    s = _fill_steps(p, s, kappa, active, compute_left)
    bw_used = np.sum(np.where(active, r * p.bitrate_max_mbps / eta, 0.0))
    r = _fill_bandwidth(p, r, eta, active, B - bw_used)
    return r, s


# ---------------------------------------------------------------------------
# Greedy by QoE gain per resource
# ---------------------------------------------------------------------------
def greedy_allocation(p: HdtStreamingParams, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """Greedy allocation for one context (see the module docstring)."""
    active = np.asarray(ctx["active"], dtype=bool)
    eta = spectral_efficiency(ctx["snr_db"])
    kappa = np.asarray(ctx["complexity"], dtype=np.float64)
    thr = np.asarray(ctx["threshold"], dtype=np.float64)
    B, C = float(ctx["bandwidth_mhz"]), float(ctx["compute_tflops"])
    c = p.compute_per_step_tflops
    w1b = p.qoe_weight_bitrate * p.bitrate_max_mbps
    r = np.full(p.num_users, p.resolution_min)
    s = np.ones(p.num_users, dtype=np.int64)
    bw_left = B - np.sum(np.where(active, r * p.bitrate_max_mbps / eta, 0.0))
    c_left = C - c * int(active.sum())
    # Phase 1: lift users below their threshold, best gain per resource share first.
    while True:
        qoe = _qoe(p, r, s, kappa)
        need = np.where(active, thr - qoe, 0.0)
        below = need > p.feasibility_tol * p.qoe_max * 0.1
        if not below.any():
            break
        # Bandwidth option: exactly what closes the gap (bitrate is linear), if affordable.
        dr = np.minimum(need / w1b if w1b > 0 else np.zeros_like(need), p.resolution_max - r)
        bw_cost = dr * p.bitrate_max_mbps / eta
        bw_ok = below & (dr > 0) & (bw_cost <= bw_left)
        bw_score = np.where(bw_ok, (w1b * dr) / np.maximum(bw_cost / B, 1e-300), -np.inf)
        # Compute option: one more step; gain counted up to the gap.
        step_gain = np.minimum(p.qoe_weight_similarity * (similarity(p, s + 1, kappa) - similarity(p, s, kappa)), need)
        c_ok = below & (s < p.max_steps) & (c <= c_left * (1 + 1e-12))
        c_score = np.where(c_ok, step_gain / (c / C), -np.inf)
        u_bw, u_c = int(np.argmax(bw_score)), int(np.argmax(c_score))
        if not np.isfinite(bw_score[u_bw]) and not np.isfinite(c_score[u_c]):
            break  # nothing affordable helps: leave the rest to phase 2
        if bw_score[u_bw] >= c_score[u_c]:
            r[u_bw] += dr[u_bw]
            bw_left -= bw_cost[u_bw]
        else:
            s[u_c] += 1
            c_left -= c
    # Phase 2: spend what is left.
    s = _fill_steps(p, s, kappa, active, c_left)
    r = _fill_bandwidth(p, r, eta, active, bw_left)
    return r, s


# ---------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------
class _HdtBaseline(Baseline):
    requires_kernel = True

    def allocate(self, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def act(self, observations: np.ndarray) -> np.ndarray:
        rows = _context_rows(self.kernel.context())
        alloc = [self.allocate(row) for row in rows]
        r = np.stack([a[0] for a in alloc])
        s = np.stack([a[1] for a in alloc])
        return self.kernel.allocation_to_action(r, s)


class EqualSplitPolicy(_HdtBaseline):
    """Equal split of bandwidth and compute among the active users."""

    name = "equal_split"

    def act(self, observations: np.ndarray) -> np.ndarray:
        k = self.kernel
        r, s = fair_share_allocation(
            self.params, k.snr_db, k.active, k.bandwidth_available_mhz, k.compute_available_tflops
        )
        return k.allocation_to_action(r, s)


class GreedyPolicy(_HdtBaseline):
    """Greedy by QoE gain per resource share (thresholds first)."""

    name = "greedy"

    def allocate(self, ctx):
        return greedy_allocation(self.params, ctx)


class RoundedRelaxationPolicy(_HdtBaseline):
    """Best rounded feasible allocation of the LP relaxation's optimum (a heuristic policy).

    After each ``act``, ``last_bound`` holds the relaxation optimum (the bound
    on the total QoE of feasible allocations) of every instance and
    ``last_fallback`` whether the equal split had to be played instead of the
    rounded optimum.
    """

    name = "rounded_relaxation"

    def __init__(self, env, seed: int | None = None):
        super().__init__(env, seed)
        self.last_bound = np.zeros(0)
        self.last_fallback = np.zeros(0, dtype=bool)

    def act(self, observations: np.ndarray) -> np.ndarray:
        p = self.params
        rows = _context_rows(self.kernel.context())
        r_all, s_all, bounds, fallback = [], [], [], []
        for ctx in rows:
            sol = solve_relaxation(p, ctx)
            rounded = round_relaxed(p, ctx, sol)
            ok = rounded is not None and _feasible(p, ctx, *rounded)[0]
            if not ok:
                rounded = fair_share_allocation(
                    p, ctx["snr_db"], ctx["active"], ctx["bandwidth_mhz"], ctx["compute_tflops"]
                )
            r_all.append(rounded[0])
            s_all.append(rounded[1])
            bounds.append(sol.value)
            fallback.append(not ok)
        self.last_bound = np.asarray(bounds)
        self.last_fallback = np.asarray(fallback)
        return self.kernel.allocation_to_action(np.stack(r_all), np.stack(s_all))


BASELINES = {cls.name: cls for cls in (EqualSplitPolicy, GreedyPolicy, RoundedRelaxationPolicy)}

#: Shares are against the LP bound itself, not against the rounded policy's return.
BOUND = Bound(
    name="lp_relaxation",
    kind=CERTIFIED_UPPER_BOUND,
    value=episode_reward_bound,
    description=(
        "LP relaxation of the penalised reward per context (real-valued steps, concave chord "
        "similarity; budgets and thresholds soft at the environment's penalty prices), summed over "
        "the episode: at least the reward of every action"
    ),
)
