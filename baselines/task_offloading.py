"""Baselines of task offloading (``gentwin/TaskOffloading-v0``, issue 6).

Fixed rules: all-local, all-nearest-edge (each device's serving cell), all-cloud,
random (uniform over the feasible choices of ``action_masks``), greedy
(minimum estimated latency given the current queues, the usual myopic
benchmark of the offloading literature, e.g. the "greedy" of seed 002 Table V
ref. [32]) and ``greedy_priced`` (greedy's list schedule with one constant
price per placement, tuned by random search on episodes disjoint from the
evaluation episodes: :func:`tune_prices`).  ``one_slot_optimum`` is the exact optimum of the current slot's
cost by enumerating every feasible joint placement, for small instances only.

All of them read the true state from the kernel they are attached to (the
positions, queues and channels a network twin mirrors), so they set
``requires_kernel``; the evaluation harness attaches them.

``BASELINES`` holds the six rules; the enumeration is in ``EXACT_BASELINES``
because it cannot be built for the default preset (train.py evaluates every
entry of ``BASELINES``).  The enumeration exists only for ``U <= 4`` devices (the
``small`` preset), and even there it is the optimum of *one slot* (it ignores how
today's placements delay tomorrow's tasks), not a bound on the episode return.

Multi-slot references (issue 15), functions of the freshly reset kernel (the
episode's tasks, positions and fading are drawn at reset), both **certified** upper
bounds on the episode return (proofs in their docstrings), neither attained by a
policy in general:

* :func:`contention_free_bound`: every task and twin at its contention-free best;
* :func:`fluid_lp_bound` (``BOUND``): the same costs in an LP with the device and edge
  CPUs' capacities over deadline windows -- tighter, and still loose under load, as
  it leaves out shared bands and queueing delay (docs/task_offloading.md has the gaps).

and two multi-slot reference *policies* (``HINDSIGHT_BASELINES``):
:class:`HindsightRolloutPolicy`, greedy improved by rollouts over the episode's known
future, and :class:`PricedHindsightRolloutPolicy`, the same over ``greedy_priced``; each
never below its base policy, episode by episode, and attainable, so the true optimum
lies between the better of them and ``fluid_lp`` (heuristic references, not bounds).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from gentwin.baselines.base import CERTIFIED_UPPER_BOUND, Baseline, Bound
from gentwin.envs.task_offloading import TaskOffloadingKernel, uplink_rate_bps

#: Params that change only how an action is given, not the episodes (their randomness is drawn
#: at reset from the seed): the harness (``gentwin.training.evaluate_baselines``) evaluates the
#: baselines, which place tasks, on the same seeds without them.
ACTION_INTERFACE_KWARGS = ("action_mode", "price_scale_s", "base_price_s", "expert")

#: The enumeration is exact but costs (E + 2)^U evaluations per slot.
MAX_ENUMERATION_DEVICES = 4


class _OffloadingBaseline(Baseline):
    requires_kernel = True

    def __init__(self, env, seed: int | None = None):
        super().__init__(env, seed)
        p = self.params
        if p.action_mode != "placements":
            raise ValueError(
                f"{self.name}: TaskOffloadingParams.action_mode = {p.action_mode!r} is invalid for a baseline: "
                f"baselines place tasks, so they need action_mode='placements'; the episodes are the same "
                f"in both modes (gentwin's harness evaluates baselines there, see ACTION_INTERFACE_KWARGS)"
            )
        self.num_devices = p.num_devices
        self.num_edges = p.num_edges
        self.cloud = p.num_edges + 1

    def _check_batch(self, obs: np.ndarray) -> None:
        if obs.shape[0] != self.kernel.num_envs:
            raise ValueError(
                f"{self.name} reads the kernel's state: got {obs.shape[0]} observations for "
                f"{self.kernel.num_envs} instances"
            )


class AllLocalPolicy(_OffloadingBaseline):
    """Every task runs on its own device."""

    name = "all_local"

    def act(self, obs):
        self._check_batch(obs)
        return np.zeros((obs.shape[0], self.num_devices), dtype=np.int64)


class AllNearestEdgePolicy(_OffloadingBaseline):
    """Every task goes to the device's nearest edge server (its serving cell)."""

    name = "all_nearest_edge"

    def act(self, obs):
        self._check_batch(obs)
        return self.kernel.link_state()["nearest"] + 1


class AllCloudPolicy(_OffloadingBaseline):
    """Every task goes to the cloud (through the nearest edge)."""

    name = "all_cloud"

    def act(self, obs):
        self._check_batch(obs)
        return np.full((obs.shape[0], self.num_devices), self.cloud, dtype=np.int64)


class RandomPolicy(_OffloadingBaseline):
    """Uniformly random feasible placement per task."""

    name = "random"

    def act(self, obs):
        self._check_batch(obs)
        mask = self.kernel.action_masks().reshape(obs.shape[0], self.num_devices, -1)
        # Uniform over the allowed entries: argmax of masked uniform noise.
        noise = np.where(mask, self.rng.random(mask.shape), -1.0)
        return np.argmax(noise, axis=2)


class GreedyLatencyPolicy(_OffloadingBaseline):
    """Minimum estimated latency given the current queues (list scheduling).

    Devices decide in index order (vectorised over instances); each picks the
    feasible placement with the smallest estimated completion time, given the
    queues and the uploads of the devices that decided before it in the slot
    (bandwidth share ``W / (n_j + 1)``, edge queue extended by their work).
    Energy, drops and twin age are ignored, as in the classic greedy rule; the
    FIFO order at the edge is approximated by decision order.  This is
    :meth:`~gentwin.envs.task_offloading.TaskOffloadingKernel.list_schedule` without
    prices (the scheduler of ``action_mode="prices"``).
    """

    name = "greedy"

    def act(self, obs):
        self._check_batch(obs)
        return self.kernel.list_schedule()


class OneSlotOptimumPolicy(_OffloadingBaseline):
    """Exact minimum of the current slot's cost over all feasible joint placements.

    Enumerates the ``(E + 2)^U`` joint actions per instance on a clone of the
    instance (the kernel's own step, so the cost is exact) and keeps the best
    one that respects ``action_masks``.  Only for ``U <= 4``.  Optimal for one
    slot; not an episode upper bound (it ignores later slots).
    """

    name = "one_slot_optimum"

    def __init__(self, env, seed=None):
        super().__init__(env, seed)
        if self.num_devices > MAX_ENUMERATION_DEVICES:
            raise ValueError(
                f"{self.name}: num_devices = {self.num_devices} is too large for enumeration "
                f"(allowed: at most {MAX_ENUMERATION_DEVICES})"
            )
        self.joint = np.asarray(
            list(itertools.product(range(self.params.num_choices), repeat=self.num_devices)), dtype=np.int64
        )

    def slot_rewards(self, i: int) -> np.ndarray:
        """Reward of every joint action (rows of ``self.joint``) in instance ``i``; -inf if masked."""
        k = self.kernel
        mask = k.action_masks()[i].reshape(self.num_devices, -1)
        feasible = mask[np.arange(self.num_devices)[None, :], self.joint].all(axis=1)
        clone = k.clone_instance(i, len(self.joint))
        _, reward, _, _, _ = clone.step(self.joint)
        return np.where(feasible, reward, -np.inf)

    def act(self, obs):
        self._check_batch(obs)
        rows = [self.joint[int(np.argmax(self.slot_rewards(i)))] for i in range(obs.shape[0])]
        return np.stack(rows)


class HindsightRolloutPolicy(_OffloadingBaseline):
    """Rollout of the greedy rule with the episode's known future: a multi-slot reference policy.

    Every episode's tasks, positions and fading are drawn at reset, so the rest of an
    episode is a deterministic function of the placements.  In each slot the devices
    with a task decide in index order; device ``u`` tries every feasible placement
    (the others keep their choices so far, the later devices greedy's), plays each
    on a clone of the instance (the kernel's own step, so costs are exact) and rolls
    the remaining slots out with :class:`GreedyLatencyPolicy`; it keeps the placement
    of the cheapest continuation (Bertsekas' rollout algorithm).  The current choice
    is always a candidate and greedy continues every state the same way, so the
    cheapest continuation never gets worse from one decision to the next: the episode
    return is at least greedy's, episode by episode (tested).  A policy, so what it
    reaches is attainable; it sees the future (an oracle), so it is a reference for
    the headroom beyond greedy, not a bound (``fluid_lp`` is the bound).

    Cost: one greedy rollout of the remaining slots per placement tried, about
    ``T^2 U p_task (E + 2) / 2`` kernel steps per episode (seconds per ``medium``
    episode); ``max_devices`` (default 20) rejects larger presets.
    """

    name = "hindsight_rollout"
    max_devices: int = 20

    def __init__(self, env, seed=None):
        super().__init__(env, seed)
        #: Prices of the base policy's list schedule (None: greedy's, no prices).
        self.base_price_s: np.ndarray | None = None
        if self.num_devices > self.max_devices:
            raise ValueError(
                f"{self.name}: num_devices = {self.num_devices} is too large for the rollout "
                f"(allowed: at most {self.max_devices}; the cost grows as T^2 U)"
            )

    def continuation_returns(self, i: int, joint: np.ndarray) -> np.ndarray:
        """Return of this slot plus greedy's rest of the episode, for each joint action (rows) in instance ``i``."""
        clone = self.kernel.clone_instance(i, len(joint))
        total = np.zeros(len(joint))
        actions = joint
        while True:
            _, reward, terminated, truncated, _ = clone.step(actions)
            total += reward
            if (terminated | truncated).all():
                return total
            actions = clone.list_schedule(self._base_prices(len(joint)))

    def _base_prices(self, n: int) -> np.ndarray | None:
        if self.base_price_s is None:
            return None
        return np.broadcast_to(self.base_price_s, (n, self.params.num_choices))

    def act(self, obs):
        self._check_batch(obs)
        k: TaskOffloadingKernel = self.kernel
        U, C = self.num_devices, self.params.num_choices
        base = k.list_schedule(self._base_prices(k.num_envs))
        present = k.current_tasks()["present"]
        mask = k.action_masks().reshape(k.num_envs, U, C)
        out = base.copy()
        for i in range(k.num_envs):
            for u in np.flatnonzero(present[i]):
                options = np.flatnonzero(mask[i, u])
                joint = np.repeat(out[i][None], len(options), axis=0)
                joint[:, u] = options
                values = self.continuation_returns(i, joint)
                # Ties keep the current choice (greedy's), so the result is deterministic.
                current = int(np.flatnonzero(options == out[i, u])[0])
                best = int(np.argmax(values))
                if values[best] > values[current]:
                    out[i, u] = options[best]
        return out


def list_schedule_returns(kernel: TaskOffloadingKernel, price_s: np.ndarray | None, seed: int) -> np.ndarray:
    """Episode returns ``(B,)`` of the list schedule with constant ``price_s`` on ``kernel`` reset with ``seed``."""
    kernel.reset(seed=seed)
    total = np.zeros(kernel.num_envs)
    prices = None if price_s is None else np.broadcast_to(price_s, (kernel.num_envs, kernel.params.num_choices))
    while True:
        _, reward, terminated, truncated, _ = kernel.step(kernel.list_schedule(prices))
        total += reward
        if (terminated | truncated).all():
            return total


#: Seed of the episodes the priced greedy is tuned on: disjoint from the training seeds (small
#: integers) and from the evaluation seeds (``gentwin.evaluation.EVAL_SEED`` = 1,000,000 onwards).
TUNING_SEED = 2_000_000


def tune_prices(params, episodes: int = 8, candidates: int = 48, refinements: int = 48,
                seed: int = TUNING_SEED) -> tuple[np.ndarray, float]:
    """Constant per-placement prices (seconds) for the list schedule, by random search on training episodes.

    See :func:`_tune_prices`; results are cached per (params, settings) within a process, so every
    ``greedy_priced`` built for the same params shares one search.
    """
    params = TaskOffloadingKernel.resolve_params(params)
    prices, value = _tune_prices(params, episodes, candidates, refinements, seed)
    return prices.copy(), value


@functools.lru_cache(maxsize=32)
def _tune_prices(params, episodes: int, candidates: int, refinements: int, seed: int) -> tuple[np.ndarray, float]:
    """Constant per-placement prices (seconds) for the list schedule, by random search on training episodes.

    ``candidates`` random price vectors (Gaussian, scales 0.05, 0.1 and 0.2 s; every
    placement's price but local's centred on 0, local's uniform in ``[-scale, 2 scale]``),
    then ``refinements`` Gaussian steps (0.02 s) around the best; zero prices (greedy) are
    the first candidate, so the result is never worse than greedy *on the tuning
    episodes*.  The episodes are ``episodes`` instances reset with ``seed``: not the
    evaluation episodes.  Deterministic.  Returns ``(prices, mean return on the tuning
    episodes)``.  Only differences between prices matter (a constant shift changes no choice).
    """
    kernel = TaskOffloadingKernel(params, num_envs=episodes)
    C = kernel.params.num_choices
    rng = np.random.default_rng(seed)
    best_price = np.zeros(C)
    best = float(list_schedule_returns(kernel, best_price, seed).mean())
    scales = (0.05, 0.1, 0.2)
    for trial in range(candidates + refinements):
        if trial < candidates:
            scale = scales[trial * len(scales) // candidates]
            price = rng.normal(0.0, scale, C)
            price[0] = rng.uniform(-scale, 2.0 * scale)
        else:
            price = best_price + rng.normal(0.0, 0.02, C)
        value = float(list_schedule_returns(kernel, price, seed).mean())
        if value > best:
            best, best_price = value, price
    return best_price, best


def _constant_prices(policy: _OffloadingBaseline, price_s) -> np.ndarray:
    """``price_s`` (one price per placement, seconds) or, if None, :func:`tune_prices` for the policy's params."""
    if price_s is None:
        price_s, _ = tune_prices(policy.params)
    price_s = np.asarray(price_s, dtype=np.float64)
    if price_s.shape != (policy.params.num_choices,):
        raise ValueError(f"{policy.name}: price_s has shape {price_s.shape}, expected "
                         f"({policy.params.num_choices},): one price per placement")
    return price_s


class PricedGreedyPolicy(_OffloadingBaseline):
    """Greedy list scheduling with one constant price per placement, tuned on training episodes.

    The list scheduler of ``greedy`` adds ``price_s[choice]`` seconds to each placement's
    estimated completion time (:meth:`~gentwin.envs.task_offloading.TaskOffloadingKernel.list_schedule`);
    the prices are found by :func:`tune_prices` on episodes disjoint from the evaluation
    episodes, or given.  Greedy ignores energy, drops, twin age and what a placement does
    to later tasks; constant prices correct the average of those (on ``medium`` they make
    the cloud about 0.16 s and local computing 0.05 s cheaper than the edges, see
    docs/task_offloading.md).  It is the constant-action point of ``action_mode="prices"``:
    a heuristic, not a bound.
    Tuning costs 97 batches of 8 episodes of the list schedule at construction (about 20 s on
    ``medium``), once per params in a process (:func:`tune_prices` caches it).
    """

    name = "greedy_priced"

    def __init__(self, env, seed=None, price_s=None):
        super().__init__(env, seed)
        self.price_s = _constant_prices(self, price_s)

    def act(self, obs):
        self._check_batch(obs)
        return self.kernel.list_schedule(np.broadcast_to(self.price_s, (self.kernel.num_envs, self.params.num_choices)))


class PricedHindsightRolloutPolicy(HindsightRolloutPolicy):
    """:class:`HindsightRolloutPolicy` with ``greedy_priced`` as the base policy (prices tuned as there).

    The same rollout argument holds for any base policy that continues every state the same
    way: the return is at least ``greedy_priced``'s (with the same prices), episode by episode
    (tested).  An oracle policy: a reference for the headroom, not a bound.
    """

    name = "hindsight_rollout_priced"

    def __init__(self, env, seed=None, price_s=None):
        super().__init__(env, seed)
        self.base_price_s = _constant_prices(self, price_s)


# ---------------------------------------------------------------------------
# Multi-slot reference (issue 15): a certified bound over the whole episode
# ---------------------------------------------------------------------------
def contention_free_costs(kernel, instance: int) -> dict[str, np.ndarray]:
    """Per task and placement, the cost no policy can undercut, from the episode's known data.

    Returns ``(T, U, E + 2)`` arrays ``latency`` and ``cost`` (``w_latency * latency +
    w_energy * energy``, ``inf`` where even a contention-free placement misses the
    deadline or the edge is out of reach), ``(T, U)`` arrays ``present``, ``cycles`` and
    ``twin_age`` (a lower bound on each twin's age at the end of each slot).

    Contention-free means empty queues and the whole band of the edge: latency local
    ``C / f_dev``; edge ``j`` (reachable) ``L / r_j + C / f_edge``; cloud ``L / r_nearest +
    backhaul + C / f_cloud``, with ``r`` the Shannon rate over the full band -- the most a
    device gets, as the rate grows with its share ``W / n`` -- and energy ``kappa f_dev^2 C``
    locally, ``P L / r`` offloaded.  Waiting only adds latency; a dropped task pays
    ``w_drop`` plus any energy spent.  The twin age at the end of slot ``t`` is at least
    ``end_t - g``, ``g`` the newest generation time of an update task whose contention-free
    completion is due by then (0 if none): no policy refreshes a twin earlier.  Positions,
    fading and tasks are all drawn at reset, so this is a function of the reset kernel.
    """
    from gentwin.envs.task_offloading import path_gain, uplink_rate_bps

    k, p = kernel, kernel.params
    i = instance
    T, U, E = p.episode_slots, p.num_devices, p.num_edges
    pos = k.position_m[i].astype(np.float64)  # (T, U, 2), the kernel's own arithmetic
    dx = pos[:, :, 0, None] - k.edge_pos_m[:, 0]
    dy = pos[:, :, 1, None] - k.edge_pos_m[:, 1]
    distance = np.sqrt(dx * dx + dy * dy)  # (T, U, E)
    nearest = np.argmin(distance, axis=2)
    reachable = (distance <= p.coverage_radius_m) | (np.arange(E) == nearest[..., None])
    gain = path_gain(distance, p) * k.fading[i].astype(np.float64)
    upload = k.task_bits[i][..., None] / uplink_rate_bps(p.edge_bandwidth_hz, gain, p)  # (T, U, E)
    cycles = k.task_cycles[i]
    lat = np.empty((T, U, E + 2))
    energy = np.empty((T, U, E + 2))
    lat[..., 0] = cycles / p.device_cpu_hz
    energy[..., 0] = p.kappa * p.device_cpu_hz**2 * cycles
    lat[..., 1:E + 1] = np.where(reachable, upload + (cycles / p.edge_cpu_hz)[..., None], np.inf)
    energy[..., 1:E + 1] = k.tx_power_w * upload
    up_near = np.take_along_axis(upload, nearest[..., None], axis=2)[..., 0]
    lat[..., E + 1] = up_near + p.cloud_backhaul_s + cycles / p.cloud_cpu_hz
    energy[..., E + 1] = k.tx_power_w * up_near
    # a hair of slack on the deadline test: rounding must not exclude a feasible placement
    meets = lat <= p.deadline_s * (1.0 + 1e-12)
    cost = np.where(meets, p.w_latency * lat + p.w_energy * energy, np.inf)
    present = k.task_present[i]
    best_lat = np.where(meets, lat, np.inf).min(axis=2)
    gen = np.arange(T)[:, None] * p.slot_s
    due = np.where(present & k.task_update[i], gen + best_lat, np.inf)  # (T, U)
    end = (np.arange(T) + 1) * p.slot_s
    fresh = np.zeros((T, U))
    newest = np.zeros(U)
    for t in range(T):  # updates generated by slot t and due by its end
        due_now = due[: t + 1] <= end[t] + 1e-12
        newest = np.maximum(newest, np.where(due_now, gen[: t + 1], 0.0).max(axis=0))
        fresh[t] = newest
    return {"latency": lat, "cost": cost, "present": present, "cycles": cycles,
            "twin_age": end[:, None] - fresh}


def contention_free_bound(kernel, instance: int) -> float:
    """Certified upper bound on the return: every cost term at its :func:`contention_free_costs` minimum.

    The return is minus the sum over slots of the mean over devices of the costs; the minimum
    of a sum is at least the sum of the minima.  Loose where load is high (it ignores shared
    bands and queues); :func:`fluid_lp_bound` adds the CPUs' capacities.
    """
    p = kernel.params
    c = contention_free_costs(kernel, instance)
    task = np.where(c["present"], np.minimum(p.w_drop, c["cost"].min(axis=2)), 0.0)
    total = (task + p.w_age * c["twin_age"]).sum() / p.num_devices
    return -(total + 1e-9 * (1.0 + abs(total)))


#: Window lengths (slots) of the capacity constraints of :func:`fluid_lp_bound`; any subset
#: of the valid windows keeps the relaxation valid, these keep the LP small.
FLUID_WINDOWS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)


def fluid_lp_bound(kernel, instance: int) -> float:
    """Certified upper bound on the return: a fluid LP relaxation with the CPUs' capacities.

    Each task (slot ``t``, device ``u``) is split fractionally, ``sum_p w[p] + w_drop = 1``,
    over the placements that can meet its deadline, at the costs of
    :func:`contention_free_costs` (``w_drop`` per dropped task).  A completed task that
    arrives in slot ``t`` is computed inside ``[t slot, t slot + deadline]``, so the tasks
    of slots ``a .. b`` completed on one CPU need at most its speed times
    ``(b - a) slot + deadline``: one constraint per edge CPU and per device CPU and window
    (lengths :data:`FLUID_WINDOWS`).  Every policy's placements (dropped tasks counted as
    drops) are a feasible point, with costs at least the LP's, and the twin-age terms are
    bounded separately (minimum of a sum >= sum of minima); the cloud has no queue.  The
    value used is the smaller of HiGHS's primal and dual objectives (weak duality) minus
    ``1e-7 (1 + |value|)``.  Still left out: shared bands, queueing delay, one radio per device.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    p = kernel.params
    c = contention_free_costs(kernel, instance)
    T, U, E = p.episode_slots, p.num_devices, p.num_edges
    P = E + 2
    ts, us = np.nonzero(c["present"])
    n_tasks = ts.size
    age = p.w_age * c["twin_age"].sum()
    if n_tasks == 0:
        return -(age / U)
    cost = c["cost"][ts, us]  # (K, P)
    feasible = np.isfinite(cost)
    kk, pp = np.nonzero(feasible)  # one variable per feasible (task, placement), then one drop each
    n_var = kk.size + n_tasks
    obj = np.concatenate([cost[kk, pp], np.full(n_tasks, p.w_drop)])
    a_eq = coo_matrix((np.ones(n_var), (np.concatenate([kk, np.arange(n_tasks)]), np.arange(n_var))),
                      shape=(n_tasks, n_var))
    rows, cols, vals, rhs = [], [], [], []
    row = 0
    work = c["cycles"][ts[kk], us[kk]]
    slot_of = ts[kk]
    # CPUs: device u's own (placement 0) and edge j's (placement j + 1)
    cpus = [(pp == 0) & (us[kk] == u) for u in range(U)] + [pp == j + 1 for j in range(E)]
    speeds = [p.device_cpu_hz] * U + [p.edge_cpu_hz] * E
    for on_cpu, speed in zip(cpus, speeds):
        idx = np.flatnonzero(on_cpu)
        if idx.size == 0:
            continue
        for length in FLUID_WINDOWS:
            if length > T:
                break
            for a in range(T - length + 1):
                sel = idx[(slot_of[idx] >= a) & (slot_of[idx] < a + length)]
                if sel.size < 2:  # one task alone always fits its own deadline window
                    continue
                rows.append(np.full(sel.size, row))
                cols.append(sel)
                vals.append(work[sel])
                rhs.append(speed * ((length - 1) * p.slot_s + p.deadline_s))
                row += 1
    if row:
        a_ub = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(row, n_var)).tocsr()
        b_ub = np.asarray(rhs)
    else:
        a_ub, b_ub = None, None
    res = linprog(obj, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq.tocsr(), b_eq=np.ones(n_tasks), bounds=(0.0, 1.0),
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"fluid LP of instance {instance} failed: {res.message}")
    dual = float(np.ones(n_tasks) @ res.eqlin.marginals + np.ones(n_var) @ res.upper.marginals)
    if b_ub is not None:
        dual += float(b_ub @ res.ineqlin.marginals)
    value = min(float(res.fun), dual)
    total = (value + age) / U
    return -(total + 1e-7 * (1.0 + abs(total)))


def _fluid_values(kernel) -> np.ndarray:
    return np.array([fluid_lp_bound(kernel, i) for i in range(kernel.num_envs)])


#: The rules that apply to every preset (train.py evaluates all of them).
BASELINES = {
    cls.name: cls
    for cls in (AllLocalPolicy, AllNearestEdgePolicy, AllCloudPolicy, RandomPolicy, GreedyLatencyPolicy,
                PricedGreedyPolicy)
}
#: Exact per-slot optimum, only for ``num_devices <= 4`` (e.g. ``params="small"``);
#: kept out of ``BASELINES`` because it cannot be built for the default preset.
EXACT_BASELINES = {OneSlotOptimumPolicy.name: OneSlotOptimumPolicy}
#: Policies that know the episode's future (oracles; references for the headroom, not bounds).
HINDSIGHT_BASELINES = {cls.name: cls for cls in (HindsightRolloutPolicy, PricedHindsightRolloutPolicy)}
#: Certified upper bound on the episode return: the fluid LP relaxation over the episode's known
#: tasks, positions and fading (:func:`fluid_lp_bound`; the one-slot optimum is exact per slot only).
#: Returns are negative: "share of bound" = mean return / mean bound is a cost ratio >= 1.
BOUND = Bound(
    name="fluid_lp",
    kind=CERTIFIED_UPPER_BOUND,
    value=_fluid_values,
    description=("LP relaxation knowing the episode: contention-free costs per placement, CPU capacities "
                 "over deadline windows, twin age at its earliest refresh; certified by weak duality"),
)
