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
entry of ``BASELINES``).  ``BOUND`` is ``None``: the enumeration exists only for ``U <= 4``
devices (the ``small`` preset) and not for the default ``medium`` preset, and
even there it is the optimum of *one slot* (it ignores how today's placements
delay tomorrow's tasks), not a bound on the episode return.
"""

from __future__ import annotations

import itertools

import numpy as np

from gentwin.baselines.base import Baseline
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


#: The rules that apply to every preset (train.py evaluates all of them).
BASELINES = {
    cls.name: cls
    for cls in (AllLocalPolicy, AllNearestEdgePolicy, AllCloudPolicy, RandomPolicy, GreedyLatencyPolicy)
}
#: Exact per-slot optimum, only for ``num_devices <= 4`` (e.g. ``params="small"``);
#: kept out of ``BASELINES`` because it cannot be built for the default preset.
EXACT_BASELINES = {OneSlotOptimumPolicy.name: OneSlotOptimumPolicy}
#: No exact optimum or certified bound of the episode return (the one-slot optimum is
#: exact per slot only, and only for U <= 4); see the module docstring.  No share is reported.
BOUND = None
