"""Baselines of task offloading (``gentwin/TaskOffloading-v0``, issue 6).

Fixed rules: all-local, all-nearest-edge (each device's serving cell), all-cloud,
random (uniform over the feasible choices of ``action_masks``), and greedy
(minimum estimated latency given the current queues, the usual myopic
benchmark of the offloading literature, e.g. the "greedy" of seed 002 Table V
ref. [32]).  ``one_slot_optimum`` is the exact optimum of the current slot's
cost by enumerating every feasible joint placement, for small instances only.

All of them read the true state from the kernel they are attached to (the
positions, queues and channels a network twin mirrors), so they set
``requires_kernel``; the evaluation harness attaches them.

``BASELINES`` holds the five rules; the enumeration is in ``EXACT_BASELINES``
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

and one multi-slot reference *policy*, :class:`HindsightRolloutPolicy`
(``HINDSIGHT_BASELINES``): greedy improved by rollouts over the episode's known
future; never below greedy, episode by episode, and attainable, so the true
optimum lies between it and ``fluid_lp`` (a heuristic reference, not a bound).
"""

from __future__ import annotations

import itertools

import numpy as np

from gentwin.baselines.base import CERTIFIED_UPPER_BOUND, Baseline, Bound
from gentwin.envs.task_offloading import TaskOffloadingKernel, uplink_rate_bps

#: The enumeration is exact but costs (E + 2)^U evaluations per slot.
MAX_ENUMERATION_DEVICES = 4


class _OffloadingBaseline(Baseline):
    requires_kernel = True

    def __init__(self, env, seed: int | None = None):
        super().__init__(env, seed)
        p = self.params
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
    FIFO order at the edge is approximated by decision order.
    """

    name = "greedy"

    def act(self, obs):
        self._check_batch(obs)
        k: TaskOffloadingKernel = self.kernel
        p = self.params
        B, U, E = k.num_envs, p.num_devices, p.num_edges
        b = np.arange(B)
        task = k.current_tasks()
        link = k.link_state()
        now = k.now_s()
        mask = k.action_masks().reshape(B, U, p.num_choices)
        n_up = np.zeros((B, E), dtype=np.int64)
        edge_free = np.maximum(k.edge_free_s, now[:, None])
        actions = np.zeros((B, U), dtype=np.int64)
        for u in range(U):  # sequential by design: each device sees the earlier ones
            cycles = task["cycles"][:, u]
            bits = task["bits"][:, u]
            est = np.full((B, p.num_choices), np.inf)
            est[:, 0] = np.maximum(now, k.local_free_s[:, u]) + cycles / p.device_cpu_hz
            up_start = np.maximum(now, k.uplink_free_s[:, u])
            share = p.edge_bandwidth_hz / (n_up + 1)  # (B, E)
            up_end = up_start[:, None] + bits[:, None] / uplink_rate_bps(share, link["gain"][:, u, :], p)
            est[:, 1 : E + 1] = np.maximum(up_end, edge_free) + (cycles / p.edge_cpu_hz)[:, None]
            near = link["nearest"][:, u]
            est[:, E + 1] = up_end[b, near] + p.cloud_backhaul_s + cycles / p.cloud_cpu_hz
            est = np.where(mask[:, u], est, np.inf)
            choice = np.argmin(est, axis=1)
            has = task["present"][:, u]
            choice = np.where(has, choice, 0)
            actions[:, u] = choice
            relay = np.where(choice == E + 1, near, choice - 1)
            offload = has & (choice >= 1)
            n_up[b[offload], relay[offload]] += 1
            at_edge = has & (choice >= 1) & (choice <= E)
            edge_free[b[at_edge], relay[at_edge]] = est[b[at_edge], choice[at_edge]]
        return actions


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
        if self.num_devices > self.max_devices:
            raise ValueError(
                f"{self.name}: num_devices = {self.num_devices} is too large for the rollout "
                f"(allowed: at most {self.max_devices}; the cost grows as T^2 U)"
            )

    def continuation_returns(self, i: int, joint: np.ndarray) -> np.ndarray:
        """Return of this slot plus greedy's rest of the episode, for each joint action (rows) in instance ``i``."""
        clone = self.kernel.clone_instance(i, len(joint))
        greedy = GreedyLatencyPolicy(clone)
        total = np.zeros(len(joint))
        actions = joint
        while True:
            _, reward, terminated, truncated, _ = clone.step(actions)
            total += reward
            if (terminated | truncated).all():
                return total
            actions = greedy.act(np.zeros((len(joint), 1)))

    def act(self, obs):
        self._check_batch(obs)
        k: TaskOffloadingKernel = self.kernel
        U, C = self.num_devices, self.params.num_choices
        greedy = GreedyLatencyPolicy(k).act(obs)
        present = k.current_tasks()["present"]
        mask = k.action_masks().reshape(k.num_envs, U, C)
        out = greedy.copy()
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
    for cls in (AllLocalPolicy, AllNearestEdgePolicy, AllCloudPolicy, RandomPolicy, GreedyLatencyPolicy)
}
#: Exact per-slot optimum, only for ``num_devices <= 4`` (e.g. ``params="small"``);
#: kept out of ``BASELINES`` because it cannot be built for the default preset.
EXACT_BASELINES = {OneSlotOptimumPolicy.name: OneSlotOptimumPolicy}
#: Policies that know the episode's future (oracles; references for the headroom, not bounds).
HINDSIGHT_BASELINES = {HindsightRolloutPolicy.name: HindsightRolloutPolicy}
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
