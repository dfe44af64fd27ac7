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
"""

from __future__ import annotations

import numpy as np

from gentwin.baselines.base import Baseline

__all__ = [
    "BASELINES",
    "CloudOnlyPolicy",
    "FifoPolicy",
    "LeastContextPolicy",
    "LfuPolicy",
    "LruPolicy",
    "MissPenaltyUtilityPolicy",
    "BOUND",
    "RandomPolicy",
]


class _CachingBaseline(Baseline):
    requires_kernel = True

    def _shape(self):
        k = self.kernel
        return k.num_envs, k.num_edges, k.num_models

    @staticmethod
    def _to_action(cached: np.ndarray) -> np.ndarray:
        """Cached models serve at the edge (option 1), the rest are not cached (0)."""
        return np.where(cached, 1, 0).reshape(cached.shape[0], -1).astype(np.int64)


class RandomPolicy(_CachingBaseline):
    """A uniformly random option per model among those the action mask allows."""

    name = "random"

    def act(self, obs):
        B, E, M = self._shape()
        options = np.where(self.kernel.fits, 3, 1)
        draw = self.rng.integers(0, 3, size=(B, E, M)) % options
        return draw.reshape(B, -1).astype(np.int64)


class CloudOnlyPolicy(_CachingBaseline):
    """Cache nothing; every request runs in the cloud (Table II "Cloud")."""

    name = "cloud_only"

    def act(self, obs):
        B, E, M = self._shape()
        return np.zeros((B, E * M), dtype=np.int64)


class _PassivePolicy(_CachingBaseline):
    """Load on a miss, evicting the lowest-scored unrequested models (see module doc)."""

    #: The missed model is always admitted (FIFO, LRU): it is the newest / most recent.
    always_admit = False

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(score of each cached model, score of each model as a newcomer), ``(B, E, M)``."""
        raise NotImplementedError

    def act(self, obs):
        k = self.kernel
        B, E, M = self._shape()
        G = k.params.gpu_memory_gb
        memory = k.memory_gb
        cached = k.cached.copy()
        n = k.current_requests()
        score, newcomer = self.scores()
        score = score.astype(np.float64).copy()
        order = np.argsort(-n * (M + 1) + np.arange(M), axis=2, kind="stable")
        b_idx, e_idx = np.meshgrid(np.arange(B), np.arange(E), indexing="ij")
        for r in range(M):  # requested models, most requested first (a policy, not the kernel)
            m = order[:, :, r]
            requested = n[b_idx, e_idx, m] > 0
            if not requested.any():
                break
            need = requested & ~cached[b_idx, e_idx, m] & k.fits[m]
            if not need.any():
                continue
            mem_need = memory[m]
            free = G - (cached * memory).sum(axis=2)
            own = newcomer[b_idx, e_idx, m]
            candidate = cached & (n == 0)
            if not self.always_admit:
                candidate &= score < own[:, :, None]
            key = np.where(candidate, score, np.inf)
            ev_order = np.argsort(key, axis=2, kind="stable")
            mem_sorted = np.take_along_axis(np.where(candidate, memory, 0.0), ev_order, axis=2)
            enough = free[:, :, None] + np.cumsum(mem_sorted, axis=2) >= mem_need[:, :, None] - 1e-9
            fits_now = free >= mem_need - 1e-9
            feasible = fits_now | enough.any(axis=2)
            count = np.where(fits_now, 0, np.argmax(enough, axis=2) + 1)
            evict = np.zeros_like(cached)
            np.put_along_axis(evict, ev_order, np.arange(M)[None, None, :] < count[:, :, None], axis=2)
            load = need & feasible
            cached &= ~(evict & load[:, :, None])
            cached[b_idx[load], e_idx[load], m[load]] = True
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


BASELINES = {
    cls.name: cls
    for cls in (RandomPolicy, CloudOnlyPolicy, FifoPolicy, LruPolicy, LfuPolicy, LeastContextPolicy,
                MissPenaltyUtilityPolicy)
}
#: No exact optimum or certified bound is known (Table II compares heuristics only):
#: every policy here, LC included, is a heuristic, and no share of a bound is reported.
BOUND = None
