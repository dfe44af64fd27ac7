"""Baselines and the certified bound of ASP selection (seed 002 paper 1 section V-B).

Policies (``predict(obs)`` like an SB3 model):

* ``random``, ``round_robin``, ``crash_avoid``: the survey's comparison policies
  (``sed -n 651,661p ../shared/seeds/002_0c06d0e91042d4e2.txt``); they act on the
  observation only.
* ``greedy_oracle``: the survey's "Upper Bound Policy" ("the scheduler has complete
  knowledge of the utility each ASP offers to every user before task distribution.
  The omniscient allocation strategy sets an upper limit on the performance of
  user-centric services by allocating tasks to ASPs with the highest utility and
  avoiding system failures", ``sed -n 659p``).  Despite the papers' wording it is a
  greedy heuristic, not an upper limit: it knows the curves but not the value of
  capacity, and ``capacity_pricing`` beats it.
* ``capacity_pricing``: knows the curves like the greedy oracle and also prices
  capacity: among the ASPs with room it picks the largest ``q_i(t) - rho_i t runtime(t)``,
  with ``rho_i`` the LP relaxation's capacity duals per unit of capacity and second,
  fitted on training seeds (:func:`fit_capacity_prices`), never on evaluation seeds.

Yardstick (``BOUND``, the reference of every "share of bound"): ``lp_relaxation``, a
certified upper bound on the return of every policy on the episode, crashing or not,
even one that knows the whole task stream in advance (:func:`lp_relaxation`).  It is
an evaluation reference, not a policy.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from gentwin.baselines.base import CERTIFIED_UPPER_BOUND, Baseline, Bound
from gentwin.envs.asp_selection import AspSelectionKernel, AspSelectionParams, draw_market, task_runtime_s

#: Training seeds of the capacity-price fit: PRICE_FIT_SEED, PRICE_FIT_SEED + 1, ...
#: (evaluation seeds start at gentwin.evaluation.EVAL_SEED = 1,000,000).
PRICE_FIT_SEED = 0
PRICE_FIT_EPISODES = 2
#: Tasks per fitting episode (arrivals as in the params' rate; shorter than an episode for speed).
PRICE_FIT_TASKS = 500


class _AspBaseline(Baseline):
    def __init__(self, env, seed: int | None = None):
        super().__init__(env, seed)
        self.num_asps = self.params.num_asps
        self.capacity = draw_market(self.params).capacity
        self.demand_choices = np.asarray(self.params.demand_choices, dtype=np.int64)
        self.demand_max = int(self.demand_choices.max())

    def decode(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Free capacity ``(B, I)`` and task demand ``(B,)`` from observations."""
        I = self.num_asps
        free = np.rint(obs[:, I : 2 * I].astype(np.float64) * self.capacity).astype(np.int64)
        demand = np.rint(obs[:, 2 * I].astype(np.float64) * self.demand_max).astype(np.int64)
        return free, demand

    def demand_index(self, demand: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.demand_choices, demand), 0, len(self.demand_choices) - 1)


class RandomPolicy(_AspBaseline):
    """Uniformly random ASP, ignoring resources (the survey's minimum benchmark)."""

    name = "random"

    def act(self, obs):
        return self.rng.integers(0, self.num_asps, size=obs.shape[0])


class RoundRobinPolicy(_AspBaseline):
    """ASPs in a fixed cyclic order, one pointer per batch instance."""

    name = "round_robin"

    def __init__(self, env, seed=None):
        super().__init__(env, seed)
        self._next = np.zeros(0, dtype=np.int64)

    def reset(self):
        self._next = np.zeros(0, dtype=np.int64)

    def act(self, obs):
        if self._next.shape[0] != obs.shape[0]:
            self._next = np.zeros(obs.shape[0], dtype=np.int64)
        action = self._next.copy()
        self._next = (self._next + 1) % self.num_asps
        return action


class CrashAvoidPolicy(_AspBaseline):
    """The ASP with the most free capacity ("overloading-avoidance")."""

    name = "crash_avoid"

    def act(self, obs):
        free, _ = self.decode(obs)
        return np.argmax(free, axis=1)


class _ScoredPolicy(_AspBaseline):
    """The feasible ASP with the highest ``score(free, demand)``; when none has room every
    choice crashes, and the one with the most free capacity kills the least work on average."""

    def __init__(self, env, seed=None):
        super().__init__(env, seed)
        self.quality = draw_market(self.params).quality

    def score(self, free: np.ndarray, demand: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def act(self, obs):
        free, demand = self.decode(obs)
        feasible = free >= demand[:, None]
        score = np.where(feasible, self.score(free, demand), -np.inf)
        # Among the feasible ASPs of the best score, the one with the most free capacity.
        best = feasible & (score == score.max(axis=1, keepdims=True))
        choice = np.argmax(np.where(best, free, -1), axis=1)
        return np.where(feasible.any(axis=1), choice, np.argmax(free, axis=1))


class GreedyOraclePolicy(_ScoredPolicy):
    """Best immediate quality among the ASPs with room, knowing the hidden curves.

    The survey's "Upper Bound Policy" ("sets an upper limit on the performance of
    user-centric services", ``sed -n 659p ../shared/seeds/002_0c06d0e91042d4e2.txt``)
    and the D2SAC code's ``best_reward_service_provider``: it is greedy, not an upper
    limit (:class:`CapacityPricingPolicy` beats it; the certified bound is ``BOUND``).
    """

    name = "greedy_oracle"

    def score(self, free, demand):
        return self.quality[:, self.demand_index(demand)].T


class CapacityPricingPolicy(_ScoredPolicy):
    """Quality minus the price of the capacity the task holds, among the ASPs with room.

    ``score_i = q_i(t) - rho_i * t * runtime(t)``: ``rho_i`` (per unit of capacity and
    second) is the mean of the LP relaxation's capacity duals of ASP ``i`` over the
    stationary middle of the training episodes (:func:`fit_capacity_prices`).  Knows the
    curves like ``greedy_oracle``; acts on the observation, so it is causal.
    """

    name = "capacity_pricing"

    def __init__(self, env, seed=None):
        super().__init__(env, seed)
        self.price = fit_capacity_prices(self.params)

    def score(self, free, demand):
        didx = self.demand_index(demand)
        hold = (demand * task_runtime_s(demand, self.params.runtime_scale_s))[:, None]  # capacity-seconds
        return self.quality[:, didx].T - self.price[None, :] * hold


BASELINES = {
    cls.name: cls
    for cls in (RandomPolicy, RoundRobinPolicy, CrashAvoidPolicy, GreedyOraclePolicy, CapacityPricingPolicy)
}


# ---------------------------------------------------------------------------
# The LP relaxation bound
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LpRelaxation:
    """The LP relaxation of one episode (see :func:`lp_relaxation`)."""

    #: certified upper bound: the dual objective of (capacity_duals, task_duals), >= the LP optimum
    value: float
    #: the solver's primal optimum (equal to ``value`` up to solver tolerance)
    lp_value: float
    #: y[m, i] >= 0: value of a unit of ASP i's capacity at the arrival of task m
    capacity_duals: np.ndarray
    #: mu[n] >= 0: value of task n's assignment row
    task_duals: np.ndarray
    #: arrival times (s) of the episode's assigned tasks
    arrival_s: np.ndarray
    #: wall-clock and CPU seconds of building and solving the LP
    seconds: float
    cpu_seconds: float


def _episode(kernel: AspSelectionKernel, instance: int):
    """Arrival, demand, quality (L, I) and first row without the task (leave) of one drawn episode."""
    L = int(kernel.episode_tasks[instance])
    record = kernel.task_record[:L, instance]
    arrival = record[:, kernel._ARRIVAL]
    demand = record[:, kernel._DEMAND]
    end = record[:, kernel._END]
    quality = kernel.market.quality[:, kernel.task_demand_idx[:L, instance]].T
    # A task counts at the arrivals it is running at: rows n .. leave_n - 1, where
    # leave_n is the first arrival at or after its end (the kernel releases a task that
    # ends at an arrival before that arrival is checked).
    leave = np.maximum(np.searchsorted(arrival, end, side="left"), np.arange(L) + 1)
    return arrival, demand, quality, leave


def lp_relaxation(kernel: AspSelectionKernel, instance: int = 0, crashes: bool = True) -> LpRelaxation:
    """Certified upper bound on every policy's return on episode ``instance`` of ``kernel``.

    ``kernel`` must be freshly reset: the episode (arrival times ``a_n``, demands
    ``d_n``, ends ``e_n``, qualities ``q_{n,i} = q_i(d_n)``) is all drawn at reset, so
    the bound is taken in hindsight over the whole task stream.  LP::

        max  sum_{n,i} q_{n,i} x_{n,i} + sum_{n,i} (q_{n,i} - 2 d_n / C_i) z_{n,i}
        s.t. sum_i (x_{n,i} + z_{n,i}) <= 1                             every task n
             sum_{n <= m, e_n > a_m} d_n x_{n,i} + d_m z_{m,i} <= C_i    every arrival m, ASP i
             0 <= x, z <= 1

    ``x_{n,i}``: task ``n`` runs on ASP ``i`` to its end (or the episode's); ``z_{n,i}``:
    it is accepted by ``i`` and later killed by a crash (counted only at its own
    arrival).  With ``crashes=False`` the ``z`` are left out: the LP relaxation of
    crash-free assignment under the capacity-over-time constraints, a bound for
    crash-free policies only.

    Proof that the value bounds **every** policy's return ``G``, crashing or not.  Take
    any run of the episode.  Set ``x_{n,i} = 1`` for each task accepted by ASP ``i`` (it
    had room) and never killed, ``z_{n,i} = 1`` for each accepted and later killed,
    everything else 0 (the arriving task of a crash is lost and gets nothing).  Each task
    is accepted at most once: the assignment rows hold.  At the arrival of task ``m`` the
    tasks ``n < m`` with ``x_{n,i} = 1`` and ``e_n > a_m`` are still running on ``i``
    (never killed, not yet ended), so their demand is at most the load of ``i``; if ``m``
    is accepted by ``i``, load + ``d_m <= C_i``; if not, load ``<= C_i`` anyway (loads
    only grow by accepted tasks and a crash empties the ASP): the capacity rows hold.
    The return is the quality of the accepted tasks minus, per crash,
    ``2 + 2 sum_killed (1 - progress) >= 2``.  A crash on ``i`` kills tasks that were
    running together on ``i``, of total demand ``<= C_i``, so its ``2`` is at least
    ``sum_killed 2 d_n / C_i``.  Hence ``G <= sum q x + sum (q - 2 d / C) z`` at this
    feasible 0/1 point, which is at most the LP optimum.  A crash-free run has ``z = 0``.

    The reported ``value`` does not trust the solver's tolerance: for any duals
    ``y, mu >= 0`` of the two row families, weak duality gives ``sum_{m,i} C_i y_{m,i} +
    sum_n mu_n + sum over columns of max(0, reduced profit)`` as an upper bound on the LP
    (each variable is in ``[0, 1]``), and ``value`` is that expression at HiGHS's duals
    (clipped at 0), i.e. the LP optimum up to round-off, and never below it.

    Formulation for speed: the capacity rows are written with load variables
    ``l_{m,i} in [0, C_i]``, ``l_{m,i} = l_{m-1,i} + (tasks entering at m) - (tasks leaving
    by m)``, so every task column has two nonzeros per ASP instead of one per running
    arrival; HiGHS's interior-point solver takes a few seconds per 1000-task episode.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    arrival, demand, quality, leave = _episode(kernel, instance)
    capacity = kernel.capacity
    L, I = quality.shape
    kill_profit = quality - 2.0 * demand[:, None] / capacity[None, :]
    # Columns with a non-positive profit never help a packing LP: left out.
    x_cols = np.flatnonzero(quality.ravel() > 0)
    z_cols = np.flatnonzero(kill_profit.ravel() > 0) if crashes else np.zeros(0, dtype=np.int64)
    xn, xi = np.divmod(x_cols, I)
    zn, zi = np.divmod(z_cols, I)
    nx, nz, nl = len(x_cols), len(z_cols), L * I
    nv = nx + nz
    # Load rows r = m * I + i:  l_{m,i} - l_{m-1,i} - d (entering) + d (leaving) = 0.
    x_ids, z_ids, l_ids = np.arange(nx), nx + np.arange(nz), nv + np.arange(nl)
    x_gone = leave[xn] < L
    z_gone = zn + 1 < L
    rows = np.concatenate([xn * I + xi, leave[xn][x_gone] * I + xi[x_gone],
                           zn * I + zi, (zn[z_gone] + 1) * I + zi[z_gone],
                           np.arange(nl), np.arange(I, nl)])
    cols = np.concatenate([x_ids, x_ids[x_gone], z_ids, z_ids[z_gone], l_ids, l_ids[:-I]])
    vals = np.concatenate([-demand[xn], demand[xn][x_gone], -demand[zn], demand[zn][z_gone],
                           np.ones(nl), -np.ones(nl - I)])
    a_eq = sp.csr_matrix((vals, (rows, cols)), shape=(nl, nv + nl))
    a_ub = sp.csr_matrix((np.ones(nv), (np.concatenate([xn, zn]), np.arange(nv))), shape=(L, nv + nl))
    profit = np.concatenate([quality.ravel()[x_cols], kill_profit.ravel()[z_cols]])
    bounds = np.zeros((nv + nl, 2))
    bounds[:nv, 1] = 1.0
    bounds[nv:, 1] = np.tile(capacity, L)
    result = linprog(-np.concatenate([profit, np.zeros(nl)]), A_ub=a_ub, b_ub=np.ones(L), A_eq=a_eq,
                     b_eq=np.zeros(nl), bounds=bounds, method="highs-ipm")
    if result.status != 0:
        raise RuntimeError(f"LP relaxation of episode {instance} failed: {result.message}")
    # Capacity duals: the upper-bound marginals of the load variables (scipy: <= 0 when minimising).
    y = np.maximum(-result.upper.marginals[nv:], 0.0).reshape(L, I)
    mu = np.maximum(-result.ineqlin.marginals, 0.0)
    value = certified_dual_bound(demand, quality, kill_profit if crashes else None, capacity, leave, y, mu)
    return LpRelaxation(value, float(-result.fun), y, mu, arrival.copy(), time.perf_counter() - start,
                        time.process_time() - cpu_start)


def certified_dual_bound(demand, quality, kill_profit, capacity, leave, y, mu) -> float:
    """Weak-duality value of the LP of :func:`lp_relaxation` at duals ``y (L, I), mu (L,) >= 0``."""
    L = len(demand)
    prefix = np.vstack([np.zeros((1, y.shape[1])), np.cumsum(y, axis=0)])
    held = prefix[leave] - prefix[np.arange(L)]  # sum of y over the rows task n counts in
    reduced = np.maximum(quality - demand[:, None] * held - mu[:, None], 0.0)
    total = float((capacity[None, :] * y).sum() + mu.sum() + reduced.sum())
    if kill_profit is not None:
        total += float(np.maximum(kill_profit - demand[:, None] * y - mu[:, None], 0.0).sum())
    return total


def lp_relaxation_values(kernel: AspSelectionKernel) -> np.ndarray:
    """``BOUND`` of the evaluation harness: :func:`lp_relaxation` of every instance."""
    return np.asarray([lp_relaxation(kernel, b).value for b in range(kernel.num_envs)])


BOUND = Bound(
    name="lp_relaxation",
    kind=CERTIFIED_UPPER_BOUND,
    value=lp_relaxation_values,
    description=("LP relaxation of the episode's whole task stream in hindsight under the "
                 "capacity-over-time constraints, crashes relaxed; bounds every policy"),
)


def fit_capacity_prices(params: AspSelectionParams) -> np.ndarray:
    """``rho_i`` (per unit of capacity and second) from the LP duals of training episodes.

    Episodes: seeds ``PRICE_FIT_SEED ..`` (:data:`PRICE_FIT_EPISODES` training seeds, never evaluation seeds),
    :data:`PRICE_FIT_TASKS` Poisson arrivals each at the params' rate.  ``rho_i`` is the
    mean capacity dual of ASP ``i`` per arrival times the arrival rate, over the arrivals
    at least one longest runtime away from both ends of the episode (the empty start and
    the worthless capacity after the end are not the stationary price).
    """
    # The fit depends on the market, rates and penalties, not on the episode length rule.
    fit_params = AspSelectionKernel.resolve_params(params, arrivals="poisson", tasks_per_episode=PRICE_FIT_TASKS,
                                                   window_s=AspSelectionParams.window_s)
    return _fit_capacity_prices(fit_params).copy()


@functools.lru_cache(maxsize=16)
def _fit_capacity_prices(fit_params: AspSelectionParams) -> np.ndarray:
    kernel = AspSelectionKernel(fit_params, num_envs=PRICE_FIT_EPISODES)
    kernel.reset(seed=PRICE_FIT_SEED)
    runtime_max = float(kernel.runtime_values.max())
    duals = []
    for b in range(kernel.num_envs):
        lp = lp_relaxation(kernel, b)
        a = lp.arrival_s
        middle = (a >= a[0] + runtime_max) & (a <= a[-1] - runtime_max)
        duals.append(lp.capacity_duals[middle] if middle.any() else lp.capacity_duals)
    return np.concatenate(duals).mean(axis=0) * fit_params.arrival_rate_per_s
