"""Baselines of joint PFM caching and inference (seed 002 paper 2 section V-B, Table II).

Table II compares Random, cloud-only, FIFO, LFU and the paper's Least Context
(LC); we add LRU and the miss-penalty-aware utility policy of Ogden et al.
(seed 002 paper 1 ref. [210], lines 851-853: "model utility calculation from
cache miss penalty and the number of requests").

Every caching baseline is *passive* (section III-B): it acts only on a model
miss.  Per slot, each requested model that is not cached is considered in order
of this slot's requests (most first); the policy ranks the cached models that
are not requested in this slot by its score and evicts the lowest-scored ones
until the missed model fits.  A model is loaded only if that is possible by
evicting models whose score is *below* the missed model's own score
(admission); otherwise its requests are offloaded to the cloud.  Models that
are cached serve their requests at the edge.

==============  ======================================  ===========================
policy          score of a cached model                 score of the missed model
==============  ======================================  ===========================
FIFO            slot it was loaded                      now (always admitted)
LRU             slot of its last request                now (always admitted)
LFU             requests since the episode began        its requests so far
LC              (examples in context, requests so       (0, its requests so far)
                far), lexicographic
utility [210]   requests * miss penalty / memory        same formula
==============  ======================================  ===========================

The miss penalty of [210] is the cost of loading the model (the environment's
switching cost).  The policies keep no memory of their own: they read the
edge's bookkeeping (load slots, request counts, contexts) from the kernel, which
is why they must be attached to the environment they act on.

Hindsight references (they know the episode's whole request stream, drawn at reset):

* ``BOUND`` = :func:`hindsight_lp_bound`, a **certified** upper bound on the return (a lower
  bound on the system cost): an LP relaxation of caching over the known arrivals (proof in
  its docstring); tested against brute-force optima and every baseline.
* ``hindsight`` (:class:`HindsightPolicy`), a Belady-style **heuristic** that scores models
  by their future requests: an achievable cost, not a bound.
"""

from __future__ import annotations

import numpy as np

from gentwin.baselines.base import CERTIFIED_UPPER_BOUND, Baseline, Bound
from gentwin.envs.model_caching import RESIDUAL_GRID, passive_caching, scores_as_action

__all__ = [
    "BASELINES",
    "CloudOnlyPolicy",
    "FifoPolicy",
    "HindsightPolicy",
    "LeastContextPolicy",
    "LfuPolicy",
    "LruPolicy",
    "MissPenaltyUtilityPolicy",
    "BOUND",
    "RandomPolicy",
    "edge_cost_lower_bound",
    "hindsight_lp_bound",
]


class _CachingBaseline(Baseline):
    requires_kernel = True

    def _shape(self):
        k = self.kernel
        return k.num_envs, k.num_edges, k.num_models

    def _to_action(self, cached: np.ndarray) -> np.ndarray:
        """Cached models serve at the edge (option 1), the rest are not cached (0).

        In the env's ``action_mode``: ``box`` reads 1.0 as option 1 and -1.0 as option 0;
        ``scores`` (which has no "not cached" option, only the passive rule) keeps the
        cached models first (score 1) and admits no missed model (score -1).
        """
        mode = self.kernel.params.action_mode
        flat = cached.reshape(cached.shape[0], -1)
        if mode == "discrete":
            return np.where(flat, 1, 0).astype(np.int64)
        return np.where(flat, 1.0, -1.0).astype(np.float32)

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        """As :meth:`Baseline.predict`; with ``expert_residual = r > 0`` the action is turned into the
        correction the env applies to its expert, ``clip((a - expert) / r, -1, 1)``: the played
        action is the baseline's wherever it is within ``r`` of the expert's, the nearest playable
        one elsewhere.  Every baseline's scores lie in ``[-1, 1]`` with the expert's in ``(0, 1]``,
        so for ``r >= 1`` each plays exactly its own episode (tested)."""
        actions, state = super().predict(observation, state, episode_start, deterministic, action_masks)
        r = self.params.expert_residual
        if r > 0:
            expert = np.reshape(self.kernel.expert_actions(), np.shape(actions))
            target = np.round(np.asarray(actions, dtype=np.float64) * RESIDUAL_GRID) / RESIDUAL_GRID
            actions = np.clip((target - expert) / r, -1.0, 1.0).astype(np.float32)
        return actions, state


class RandomPolicy(_CachingBaseline):
    """A uniformly random option per model among those the action mask allows.

    With ``action_mode="box"`` or ``"scores"``: a uniformly random action of the Box
    (for ``box`` a uniform option per model, the mask aside; for ``scores`` random
    keep-priorities, so random eviction and admission of each missed model with
    probability 1/2).
    """

    name = "random"

    def act(self, obs):
        B, E, M = self._shape()
        if self.kernel.params.action_mode != "discrete":
            return self.rng.uniform(-1.0, 1.0, size=(B, E * M)).astype(np.float32)
        options = np.where(self.kernel.fits, 3, 1)
        draw = self.rng.integers(0, 3, size=(B, E, M)) % options
        return draw.reshape(B, -1).astype(np.int64)


class CloudOnlyPolicy(_CachingBaseline):
    """Cache nothing; every request runs in the cloud (Table II "Cloud")."""

    name = "cloud_only"

    def act(self, obs):
        return self._to_action(np.zeros(self._shape(), dtype=bool))


class _PassivePolicy(_CachingBaseline):
    """Load on a miss, evicting the lowest-scored unrequested models (see module doc)."""

    #: The missed model is always admitted (FIFO, LRU): it is the newest / most recent.
    always_admit = False

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(score of each cached model, score of each model as a newcomer), ``(B, E, M)``."""
        raise NotImplementedError

    def keep_scores(self) -> np.ndarray:
        """One score per model ``(B, E, M)`` for :func:`~gentwin.envs.model_caching.passive_caching`.

        A cached model's score, a missed model's newcomer score (``inf`` where the missed
        model is always admitted: every finite score is below it).  One array suffices:
        the rule reads a model's newcomer score only while it is not cached, and a model
        loaded or evicted in this slot is never looked at again in it (loaded models are
        requested, evicted ones are not).
        """
        score, newcomer = self.scores()
        newcomer = np.inf if self.always_admit else newcomer
        return np.where(self.kernel.cached, score, newcomer).astype(np.float64)

    def act(self, obs):
        k = self.kernel
        score = self.keep_scores()
        if k.params.action_mode == "scores":  # the same rule, applied by the environment
            return scores_as_action(score)
        cached = passive_caching(k.cached, k.current_requests(), score, k.memory_gb, k.params.gpu_memory_gb,
                                 k.fits[None, None, :])
        return self._to_action(cached)


class FifoPolicy(_PassivePolicy):
    """First in, first out: evict the models loaded earliest."""

    name = "fifo"
    always_admit = True

    def scores(self):
        k = self.kernel
        return k.load_slot, np.full(k.cached.shape, np.inf)


class LruPolicy(_PassivePolicy):
    """Least recently used: evict the models whose last request is oldest."""

    name = "lru"
    always_admit = True

    def scores(self):
        k = self.kernel
        return k.last_request_slot, np.full(k.cached.shape, np.inf)


class LfuPolicy(_PassivePolicy):
    """Least frequently used: evict the models with the fewest requests so far."""

    name = "lfu"

    def scores(self):
        count = self.kernel.request_count
        return count, count


class LeastContextPolicy(_PassivePolicy):
    """Least Context (paper 2 section V-B): evict the models with the fewest examples in context.

    Examples in context are the AoC-weighted demonstrations a cached LFM holds;
    less than one example counts as none (below one-shot), and models without
    in-context learning always have none.  Ties -- in particular among models
    without context -- go to the request count (as LFU).  A missed model holds
    no context, so it displaces only context-free models requested less often.
    """

    name = "lc"
    #: Lexicographic (examples in context, requests) as one number.
    _CONTEXT_SCALE = 1e9

    def scores(self):
        k = self.kernel
        context = np.where(k.context >= 1.0, k.context, 0.0)
        count = np.minimum(k.request_count, self._CONTEXT_SCALE / 10)
        return context * self._CONTEXT_SCALE + count, count


class MissPenaltyUtilityPolicy(_PassivePolicy):
    """Miss-penalty-aware utility (ref. [210]): requests x load cost / memory, lowest evicted."""

    name = "utility"

    def scores(self):
        k = self.kernel
        utility = k.request_count * k.switch_cost / k.memory_gb
        return utility, utility


# ---------------------------------------------------------------------------
# Hindsight references (issue 15): they know the episode's whole request stream
# ---------------------------------------------------------------------------
def edge_cost_lower_bound(kernel) -> np.ndarray:
    """Per-request cost ``(M,)`` of serving model ``m`` at an edge, never above the true one.

    The true cost is ``inference(K) + accuracy_cost(K) + uplink`` with ``K`` the
    examples in context (0 for a fresh load, at most ``K_max``).  Inference latency
    grows with ``K`` (context recomputation), so it is at least its ``K = 0`` value;
    the accuracy of Fig. 4's curve is linear on ``[0, 1]`` and monotone in ``K`` on
    ``[1, K_max]`` (``K ** alpha``), so its maximum over ``[0, K_max]`` is at ``K`` in
    ``{0, 1, K_max}``.  The sum of the two minima bounds the cost from below.
    """
    k = kernel
    zeros = np.zeros(k.num_models)
    infer0, _, uplink = k.edge_cost_per_request(zeros)
    best_accuracy = np.max([k.edge_accuracy(np.full(k.num_models, c)) for c in (0.0, 1.0)]
                           + [k.edge_accuracy(k.k_max)], axis=0)
    return infer0 + k.params.accuracy_weight * (1.0 - best_accuracy) + uplink


def hindsight_lp_bound(kernel, instance: int) -> float:
    """Certified upper bound on the episode return (= minus a lower bound on its system cost).

    LP relaxation over the episode's known arrivals ``n[t, e, m]`` (drawn at reset):
    ``x[t, e, m]`` in ``[0, 1]`` (model cached at edge ``e`` during slot ``t``; 0 for models
    larger than the GPU), loads ``y >= x[t] - x[t-1]`` (``x[-1] = 0``: empty at start) paid
    ``switch_cost``, memory ``sum_m mem_m x[t, e, m] <= G``, and the share ``z[t, e, m] <=
    sum_e' x[t, e', m]`` of the requests served at some edge, each paying at least
    :func:`edge_cost_lower_bound` (backhaul >= 0), the others the cloud's exact cost.  Every
    policy's cache states, loads and routing are a feasible integer point of this LP and its
    per-request costs are at least the LP's, so no policy's cost is below the LP optimum.  The
    value used is the smaller of HiGHS's primal and dual objectives (weak duality) minus
    ``1e-7 (1 + |value|)`` for the solver's tolerances.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    k = kernel
    n = k.arrivals[instance].astype(np.float64)  # (T, E, M)
    T, E, M = n.shape
    cloud = k.cloud_cost_per_request + k.cloud_accuracy_cost
    benefit = np.maximum(cloud - edge_cost_lower_bound(k), 0.0)  # saving per request served at an edge
    constant = float((n * cloud).sum())
    fit = np.flatnonzero(k.fits & (benefit > 0))  # caching anything else cannot lower the bound
    if fit.size == 0:
        return -constant
    F = fit.size
    nx = T * E * F
    xi = np.arange(nx).reshape(T, E, F)  # x, then y at xi + nx
    zt, ze, zf = np.nonzero(n[:, :, fit] > 0)
    nz = zt.size
    zi = 2 * nx + np.arange(nz)
    c = np.concatenate([np.zeros(nx), np.broadcast_to(k.switch_cost[fit], (T, E, F)).ravel(),
                        -(n[zt, ze, fit[zf]] * benefit[fit[zf]])])
    rows, cols, vals = [], [], []
    # loads: x[t] - x[t-1] - y[t] <= 0
    r = np.arange(nx)
    rows += [r, r]
    cols += [xi.ravel(), nx + xi.ravel()]
    vals += [np.ones(nx), -np.ones(nx)]
    prev = xi[:-1].ravel()
    rows.append(xi[1:].ravel())
    cols.append(prev)
    vals.append(-np.ones(prev.size))
    row = nx
    # memory per slot and edge
    mem_rows = row + np.arange(T * E).repeat(F)
    rows.append(mem_rows)
    cols.append(xi.ravel())
    vals.append(np.tile(k.memory_gb[fit], T * E))
    row += T * E
    # served share: z - sum_e' x[t, e', m] <= 0
    zr = row + np.arange(nz)
    rows += [zr, zr.repeat(E)]
    cols += [zi, xi[zt, :, zf].ravel()]  # (nz, E): every edge's copy of the model
    vals += [np.ones(nz), -np.ones(nz * E)]
    row += nz
    A = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(row, 2 * nx + nz)).tocsr()
    b = np.concatenate([np.zeros(nx), np.full(T * E, float(k.params.gpu_memory_gb)), np.zeros(nz)])
    upper = np.concatenate([np.ones(nx), np.full(nx, np.inf), np.ones(nz)])
    res = linprog(c, A_ub=A, b_ub=b, bounds=np.stack([np.zeros(upper.size), upper], axis=1), method="highs")
    if res.status != 0:
        raise RuntimeError(f"hindsight LP of instance {instance} failed: {res.message}")
    dual = float(b @ res.ineqlin.marginals + (np.where(np.isfinite(upper), upper, 0.0) @ res.upper.marginals))
    value = min(float(res.fun), dual)
    cost = constant + value
    return -(cost - 1e-7 * (1.0 + abs(cost)))


def _hindsight_bound_values(kernel) -> np.ndarray:
    return np.array([hindsight_lp_bound(kernel, i) for i in range(kernel.num_envs)])


class HindsightPolicy(_PassivePolicy):
    """Belady-style hindsight heuristic: it knows the episode's future requests (a reference, not a bound).

    Passive like the others (acts on misses only).  A model's score is the saving its
    requests in the next ``horizon_slots`` slots would make at an edge instead of the
    cloud (at :func:`edge_cost_lower_bound`); cached models with the lowest scores are
    evicted first (Belady's rule, weighted by request counts), and a missed model is
    loaded only if its own score minus the load's switching cost beats theirs.  A
    feasible policy, so its cost is an achievable value; whether it is optimal is not
    known (see :func:`hindsight_lp_bound` for the certified side).
    """

    name = "hindsight"
    horizon_slots = 25

    def scores(self):
        k = self.kernel
        T = k.params.num_slots
        cloud = k.cloud_cost_per_request + k.cloud_accuracy_cost
        benefit = np.maximum(cloud - edge_cost_lower_bound(k), 0.0)
        future = np.zeros(k.cached.shape)
        for b in range(k.num_envs):
            t = int(k.slot[b])
            future[b] = k.arrivals[b, t + 1:min(t + 1 + self.horizon_slots, T)].sum(axis=0)
        value = future * benefit
        return value, value - k.switch_cost


BASELINES = {
    cls.name: cls
    for cls in (RandomPolicy, CloudOnlyPolicy, FifoPolicy, LruPolicy, LfuPolicy, LeastContextPolicy,
                MissPenaltyUtilityPolicy, HindsightPolicy)
}
#: Certified upper bound on the return (minus a lower bound on the system cost): the hindsight LP
#: relaxation over the episode's request stream (:func:`hindsight_lp_bound`).  Returns are negative,
#: so "share of bound" = mean return / mean bound is the cost ratio (bound cost / policy cost)^-1 >= 1;
#: the share of the *saving* over cloud-only is the more telling number.  Every policy in
#: ``BASELINES`` (LC included) and ``hindsight`` is a heuristic.
BOUND = Bound(
    name="hindsight_lp",
    kind=CERTIFIED_UPPER_BOUND,
    value=_hindsight_bound_values,
    description=("LP relaxation knowing the episode's requests: fractional caching within GPU memory, "
                 "loads paid, edge requests at a cost no policy can undercut; certified by weak duality"),
)
