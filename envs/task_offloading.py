"""Digital-twin task offloading across device, edge and cloud: ``gentwin/TaskOffloading-v0``
(central scheduler) and ``gentwin/TaskOffloading-ma-v0`` (PettingZoo, one agent per device).

Sources
-------
* Seed 002, paper 1, section VI-B "Task and Computation Offloading" and Table V
  (``sed -n 785,805p ../shared/seeds/002_0c06d0e91042d4e2.txt``): the KPIs are
  service latency (input upload + inference computation) and reliability; ref.
  [189] (end of VI-B, ``sed -n 820,820p``) formulates cooperative offloading as an
  MDP whose "state is composed of current tasks, local loads, and edge loads",
  whose agents "select task processing positions" and whose QoE "simultaneously
  considers service latency, energy consumption, task drop rate".  Cloud vs edge
  vs device and the backhaul of the cloud path: lines 478 and 809-810 of the
  same file.
* Seed 004, line 62 (``sed -n 62,62p ../shared/seeds/004_d159756bebbde3aa.txt``):
  a DT-assisted framework that offloads vehicle tasks across edge servers by
  "continuously mirroring the states of vehicular and roadside units" for
  "timely task completion" -- here the scheduler sees the exact queue states
  (the twin of the network) and tasks have deadlines.
* Seed 000, section III-B, line 240 and ref. [84] (``sed -n 240,240p`` and
  ``sed -n 585,585p ../shared/seeds/000_19885885a077adf1.txt``): PT-VT
  synchronisation needs fresh data; AoI-aware offloading.  Each device's twin
  has an age of information that an update task resets.

The seeds give no numbers for this model.  The defaults follow the slotted
MEC offloading model with deadlines and drops of Tang & Wong ("Deep
reinforcement learning for task offloading in mobile edge computing systems",
IEEE TMC 2022): slot 0.1 s, task arrival probability 0.3 per slot, input 2-5
Mbit, about 0.3 Gcycles per Mbit, device CPU 2.5 GHz, deadline 10 slots.  The
radio side uses the 3GPP TR 36.814 macro path loss 128.1 + 37.6 log10(d/km) dB,
Rayleigh fading, 23 dBm uplink power and -174 dBm/Hz noise.  Edge and cloud
speeds, backhaul delay, energy coefficient and cost weights are our choices,
set so that no fixed rule is best (see docs/task_offloading.md); all are
parameters.

Description
-----------
``U`` devices (wearables or vehicles, each keeping a digital twin) move in a
square area of side ``area_m`` served by ``E`` edge servers on a fixed grid and
a remote cloud.  Time is slotted (``slot_s``).  At the start of slot ``t`` each
device generates a task with probability ``task_arrival_prob``: input size
``L`` bits ~ U[``task_bits_min``, ``task_bits_max``], CPU cycles ``C = L * rho``
with ``rho`` ~ U[``cycles_per_bit_min``, ``cycles_per_bit_max``], a relative
deadline ``deadline_s`` (absolute ``D = t slot_s + deadline_s``), and, with
probability ``twin_update_prob``, it carries a status update of the device's
twin.  The scheduler places every new task: on the device, on edge server
``j`` or in the cloud.

*Uplink* (Shannon, equal FDMA split).  The bandwidth ``W`` of edge ``j`` is split
equally among the ``n_j`` devices that start an upload through ``j`` in the
slot (offloads to ``j`` and cloud offloads relayed by ``j``); each keeps its
sub-band until its upload ends::

    g_uj  = 10^(-(128.1 + 37.6 log10(d_uj / 1 km)) / 10) * h_uj,  h_uj ~ Exp(1)
    r_u   = (W / n_j) log2(1 + P g_uj / (N0 W / n_j))             [bit/s]

with ``d_uj`` the distance (at least ``min_distance_m``) and ``h`` Rayleigh
block fading, fresh every slot.  A device has one radio: its uploads queue
FIFO, start ``max(t slot_s, uplink free)`` and last ``L / r_u``.  A device can
reach its nearest edge (its serving cell) and every edge within
``coverage_radius_m``; the cloud is reached through the nearest edge plus a
fixed backhaul delay ``cloud_backhaul_s``.

*Queues* (each FIFO, work conserving, reservation based: a task's service
interval is fixed when it is placed, which is what a network twin can predict):

* local CPU per device, speed ``device_cpu_hz``;
* one CPU queue per edge server, speed ``edge_cpu_hz``, shared by all devices
  offloading there.  Tasks join in slot order and, within a slot, in order of
  upload completion (arrival at the edge); start ``max(arrival, server free)``;
* the cloud, speed ``cloud_cpu_hz``, without queueing (ample capacity).

Latency = waiting + transmission + computation (+ backhaul for the cloud).
The result download is neglected (small outputs).  A task that cannot finish
by its deadline is dropped *at* its deadline: the radio or CPU working on it
stops then, and a task whose service would start at or after its deadline is
discarded without service.  All tasks share the relative deadline, so within
a slot all tasks at an edge share ``D``; the Lindley recursion with the cut
at ``D`` then has the closed form (``a_k`` arrivals in FIFO order, ``s_k =
C_k / f_edge``, ``F_0`` the time the server frees up from earlier slots)::

    G_k = S_k + max(F_0, max_{i<=k} (a_i - S_{i-1})),  S_k = s_1 + .. + s_k
    F_k = max(F_0, min(G_k, D))                     (server free after task k)
    start_k = max(a_k, F_{k-1}),  task k completes iff G_k <= D

which the step evaluates for all edges and instances at once.

*Energy* (seed 002 ref. [189]'s energy term): local computing costs
``kappa f_dev^2 C`` J for the cycles it executes (``kappa`` the effective
switched capacitance); offloading costs ``P`` times the time spent
transmitting.

*Twin age of information* (Kaul et al., INFOCOM 2012; seed 000 ref. [84]): the
twin of device ``u`` at time ``tau`` is as old as the newest update it has
received, ``A_u(tau) = tau - g``, where ``g`` is the generation time of the
newest update task completed by ``tau`` (0 at the start: twins begin synced).

*Mobility*: each device moves with its own constant speed ~ U[``speed_min_mps``,
``speed_max_mps``] along a heading that does a Gaussian random walk
(``heading_std_rad`` per slot), reflecting off the area's borders.

Action Space
------------
``MultiDiscrete([E + 2] * U)``: per device ``0`` = run locally, ``1 .. E`` =
offload to edge ``j = a - 1``, ``E + 1`` = cloud.  The choice of a device with
no task is ignored.  ``action_masks()`` (flattened, ``U (E + 2)``, as
sb3-contrib expects) allows only ``0`` for devices without a task and masks
edges out of reach.  An unreachable edge is not an error: the upload fails and
the task is dropped.

``action_mode="prices"`` (ours): ``Box(-1, 1, (E + 2,))``, one *price* per
placement (local, each edge, cloud), shared by all devices.  The environment
places the slot's tasks with the list scheduler of the ``greedy`` baseline
(:meth:`TaskOffloadingKernel.list_schedule`): devices in index order, each on
the feasible placement with the smallest estimated completion time plus
``base_price_s + price_scale_s * a`` seconds.  So the zero action is greedy
(``base_price_s`` empty) or ``greedy_priced`` (``base_price_s`` its tuned
prices: a residual action), every action is a feasible schedule, and the agent
decides what greedy's latency estimate leaves out (energy, drops, twin age,
the load a placement leaves for later slots) as shadow prices of the
placements, in the way price-based offloading schemes steer users.  Why: with
one placement per device, PPO with parameter sharing got worse than greedy as
it trained (docs/task_offloading.md).  Only differences between prices matter.
``info["placement"]`` holds the scheduled placements.  With
``expert="greedy_priced"`` every step also reports ``info["expert_action"]``, the
action that plays that baseline (:meth:`TaskOffloadingKernel.expert_actions`), for
agents that clone it (``bc_coef``).  No action masks (every action is feasible);
``prices`` is one action for all devices, so the multi-agent view takes
``placements`` or ``device_prices``.

``action_mode="device_prices"`` (ours): ``Box(-1, 1, (U, E + 2))``, row ``u`` the
prices of device ``u``'s own task, placed by the same list scheduler (device
``u``'s placements compared with ``base_price_s + price_scale_s * a[u]``).  In
the multi-agent view each device agent gives its row, ``Box(-1, 1, (E + 2,))``:
the devices bid for the placements and the network twin's scheduler places
their tasks in device order.  Every row equal is ``prices`` with that row, so
the zero action is again greedy (or ``greedy_priced`` with its tuned
``base_price_s``), and one policy shared by the devices can learn what
``prices`` learns, and beyond it prices that depend on a device's own channel
and queues.  Why: per-device placements (``placements``) with parameter
sharing got worse than greedy as PPO trained (docs/task_offloading.md).
``expert="greedy_priced"`` reports the tuned prices in every row.  Baselines
place tasks: the harness evaluates them on the same episodes without these
params (``ACTION_INTERFACE_KWARGS`` of the baselines module).

Observation Space
-----------------
``Box(0, 1, (U (9 + E) + E + 1,), float32)``: for each device ``u`` a block of
``9 + E`` values, then the ``E`` edge backlogs, then ``t / T``.  Device block:

=======  ==============================================================
index    meaning
=======  ==============================================================
0        1 if the device has a new task
1        ``L / task_bits_max``
2        ``C / (task_bits_max * cycles_per_bit_max)``
3        1 if the task is a twin update
4        local CPU backlog / ``deadline_s`` (clipped to 1)
5        uplink backlog / ``deadline_s`` (clipped to 1)
6        twin age / episode duration ``T slot_s``
7, 8     position ``x / area_m``, ``y / area_m``
9 + j    spectral efficiency ``log2(1 + P g_uj / (N0 W)) / se_norm`` to edge
         ``j`` over the full band (clipped; 0 if unreachable)
=======  ==============================================================

Edge backlog: ``(server free time - now)^+ / deadline_s``, clipped to 1.  Task
entries are 0 when there is no task (and after the last slot).

Multi-agent view (``TaskOffloadingParallelEnv``): agent ``device_u`` observes
``Box(0, 1, (10 + 2 E,))``: its own block, the backlogs of the edges it can
reach (1 = unusable for the others) and ``t / T``; it acts with
``Discrete(E + 2)``.  ``state()`` is the central observation.

Rewards
-------
Per device and slot (seed 002 ref. [189]: QoE of latency, energy and drops;
plus the twin's age)::

    cost_u = w_latency * latency_u + w_energy * energy_u + w_drop * dropped_u
             + w_age * A_u(end of slot)

with ``latency_u`` of a completed task (0 otherwise) and ``energy_u`` the
energy spent on the slot's task.  The central reward is ``-mean_u cost_u``.
Agent ``u`` gets ``-((1 - beta) cost_u + beta mean_v cost_v)`` with ``beta =
shared_reward_weight``, so the agents' rewards average to the central reward.
All consequences of a placement are known when it is made (reservation
queues), so the slot's task costs are paid in that slot; the placement still
delays later tasks through the queues.

Starting State
--------------
Empty queues, twins fresh (age 0), uniform random device positions and
headings; slot 0's tasks have arrived.

Episode End
-----------
Never terminated; truncated after ``episode_slots`` slots.

Arguments
---------
``gym.make("gentwin/TaskOffloading-v0", params="large")`` selects a preset, field
overrides go as keyword arguments (``num_devices=8``).  Presets: ``small``
(U = 4, E = 2), ``medium`` (the default, U = 20, E = 3), ``large``
(U = 100, E = 10).  The multi-agent env takes the same arguments.

Info
----
Per step, arrays over devices: ``has_task``, ``is_update``, ``placement`` (-1 none, else the
action), ``completed``, ``dropped``, ``latency_s``, ``energy_j``, ``cost``,
``twin_age_s``, ``cycles``, ``cycles_executed``, ``uplink_end_s`` (when the
upload would end), ``queue_arrival_s`` (arrival at the CPU that serves it),
``service_start_s`` / ``service_end_s`` (the end is cut at the deadline),
``agent_rewards``.  Times are absolute seconds since the episode start; -1
means "does not apply" (no upload, never reached or never served a CPU).  At episode end,
``episode_summary``: ``return``, ``length``, ``cost`` (= -return), ``tasks``,
``completed``, ``dropped``, ``drop_rate``, ``latency_s`` (mean over completed
tasks), ``energy_j`` (per task), ``twin_age_s`` (mean over devices and slots),
``local_share``, ``edge_share``, ``cloud_share``.

Version History
---------------
* v0: initial release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from gentwin.envs.core import (
    BatchedKernel,
    KernelEnv,
    KernelParallelEnv,
    KernelVectorEnv,
    check_choice,
    check_field,
    check_memory,
)

__all__ = [
    "PRESETS",
    "TaskOffloadingEnv",
    "TaskOffloadingKernel",
    "TaskOffloadingParallelEnv",
    "TaskOffloadingParams",
    "TaskOffloadingVectorEnv",
    "device_trajectories",
    "edge_positions",
    "path_gain",
    "uplink_rate_bps",
]

#: Number of per-device observation entries before the per-edge spectral efficiencies.
DEVICE_FEATURES = 9


#: Action interfaces of ``action_mode`` (see Action Space).
ACTION_MODES = ("placements", "prices", "device_prices")
#: The modes whose action is prices for the list scheduler.
PRICE_MODES = ("prices", "device_prices")


@dataclass(frozen=True)
class TaskOffloadingParams:
    """Static configuration of the offloading system (validated; units in the names)."""

    num_devices: int = 20
    num_edges: int = 3
    episode_slots: int = 100
    slot_s: float = 0.1
    # -- tasks (Tang & Wong 2022 ranges) --
    task_arrival_prob: float = 0.3
    task_bits_min: float = 2.0e6
    task_bits_max: float = 5.0e6
    cycles_per_bit_min: float = 200.0
    cycles_per_bit_max: float = 400.0
    deadline_s: float = 1.0
    twin_update_prob: float = 0.5
    # -- computing --
    device_cpu_hz: float = 2.5e9
    edge_cpu_hz: float = 15.0e9
    cloud_cpu_hz: float = 100.0e9
    cloud_backhaul_s: float = 0.3
    #: Effective switched capacitance: local energy = kappa f^2 C.
    kappa: float = 1.0e-28
    # -- radio --
    edge_bandwidth_hz: float = 20.0e6
    tx_power_dbm: float = 23.0
    noise_psd_dbm_hz: float = -174.0
    pathloss_db_at_1km: float = 128.1
    pathloss_db_per_decade: float = 37.6
    min_distance_m: float = 10.0
    rayleigh_fading: bool = True
    #: Spectral efficiency (bit/s/Hz) that maps to 1 in the observation.
    se_norm: float = 30.0
    # -- geometry and mobility --
    area_m: float = 500.0
    coverage_radius_m: float = 300.0
    speed_min_mps: float = 1.0
    speed_max_mps: float = 10.0
    heading_std_rad: float = 0.3
    # -- cost weights --
    w_latency: float = 1.0
    w_energy: float = 0.2
    w_drop: float = 2.0
    w_age: float = 0.1
    #: Share of the team's mean cost in each agent's reward (multi-agent view).
    shared_reward_weight: float = 0.5
    # -- action interface --
    #: "placements": one placement per device (MultiDiscrete, the default); "prices": one price
    #: offset per placement, shared by the devices, for the list scheduler (Box, see Action Space);
    #: "device_prices": one such row of prices per device (Box (U, E + 2); per agent in -ma).
    action_mode: str = "placements"
    #: "prices"/"device_prices": seconds added to a placement's estimated completion time per
    #: unit of action.
    price_scale_s: float = 0.5
    #: "prices"/"device_prices": constant prices (seconds, one per placement) the action is added
    #: to (every device's row in "device_prices"); empty: none.
    #: With ``greedy_priced``'s tuned prices the zero action is that baseline (a residual action).
    base_price_s: tuple[float, ...] = ()
    #: "prices"/"device_prices": "greedy_priced" puts the action that plays that baseline (its prices tuned on
    #: other episodes) in ``info["expert_action"]`` every step, for agents that clone it.
    expert: str = "none"

    def __post_init__(self) -> None:
        check_field(self, "num_devices", low=1, high=10_000, integer=True)
        check_field(self, "num_edges", low=1, high=1_000, integer=True)
        check_field(self, "episode_slots", low=1, high=1_000_000, integer=True)
        check_field(self, "slot_s", low=0.0, low_inclusive=False)
        check_field(self, "task_arrival_prob", low=0.0, high=1.0)
        check_field(self, "task_bits_min", low=0.0, low_inclusive=False)
        check_field(self, "task_bits_max", low=self.task_bits_min)
        check_field(self, "cycles_per_bit_min", low=0.0, low_inclusive=False)
        check_field(self, "cycles_per_bit_max", low=self.cycles_per_bit_min)
        # The twin-age ring holds deadline_s / slot_s + 1 slots per device: at most 10,001.
        check_field(self, "deadline_s", low=0.0, high=10_000 * self.slot_s, low_inclusive=False)
        check_field(self, "twin_update_prob", low=0.0, high=1.0)
        check_field(self, "device_cpu_hz", low=0.0, low_inclusive=False)
        check_field(self, "edge_cpu_hz", low=0.0, low_inclusive=False)
        check_field(self, "cloud_cpu_hz", low=0.0, low_inclusive=False)
        check_field(self, "cloud_backhaul_s", low=0.0)
        check_field(self, "kappa", low=0.0)
        check_field(self, "edge_bandwidth_hz", low=0.0, low_inclusive=False)
        check_field(self, "tx_power_dbm", low=-50.0, high=60.0)
        check_field(self, "noise_psd_dbm_hz", low=-250.0, high=0.0)
        check_field(self, "pathloss_db_at_1km", low=0.0, high=300.0)
        check_field(self, "pathloss_db_per_decade", low=0.0, high=100.0)
        check_field(self, "min_distance_m", low=0.0, low_inclusive=False)
        check_field(self, "rayleigh_fading", low=0, high=1, integer=True)
        check_field(self, "se_norm", low=0.0, low_inclusive=False)
        check_field(self, "area_m", low=0.0, low_inclusive=False)
        check_field(self, "coverage_radius_m", low=0.0)
        check_field(self, "speed_min_mps", low=0.0)
        check_field(self, "speed_max_mps", low=self.speed_min_mps)
        check_field(self, "heading_std_rad", low=0.0)
        check_field(self, "w_latency", low=0.0)
        check_field(self, "w_energy", low=0.0)
        check_field(self, "w_drop", low=0.0)
        check_field(self, "w_age", low=0.0)
        check_field(self, "shared_reward_weight", low=0.0, high=1.0)
        check_choice(self, "action_mode", ACTION_MODES)
        check_choice(self, "expert", ("none", "greedy_priced"))
        if self.expert != "none" and self.action_mode not in PRICE_MODES:
            raise ValueError(
                f"TaskOffloadingParams.expert = {self.expert!r} is invalid with action_mode = "
                f"{self.action_mode!r}: the expert acts in the prices space, so it needs action_mode in "
                f"{PRICE_MODES}"
            )
        check_field(self, "price_scale_s", low=0.0, high=1_000.0, low_inclusive=False)
        if isinstance(self.base_price_s, list):  # from YAML / the command line; stored as a tuple
            object.__setattr__(self, "base_price_s", tuple(self.base_price_s))
        if not isinstance(self.base_price_s, tuple) or len(self.base_price_s) not in (0, self.num_choices):
            raise ValueError(
                f"TaskOffloadingParams.base_price_s = {self.base_price_s!r} is invalid: must be a tuple of "
                f"{self.num_choices} prices in seconds (local, {self.num_edges} edges, cloud) or empty"
            )
        if self.base_price_s:
            check_field(self, "base_price_s", low=-1_000.0, high=1_000.0)
        if self.base_price_s and self.action_mode not in PRICE_MODES:
            raise ValueError(
                f"TaskOffloadingParams.base_price_s = {self.base_price_s!r} is invalid with action_mode = "
                f"{self.action_mode!r}: base prices apply to action_mode in {PRICE_MODES}"
            )

    @property
    def num_choices(self) -> int:
        """Placements per task: local, E edges, cloud."""
        return self.num_edges + 2

    @property
    def pending_slots(self) -> int:
        """Slots a task can stay in flight: ``K slot_s > deadline_s``."""
        return int(math.floor(self.deadline_s / self.slot_s)) + 1


PRESETS: dict[str, TaskOffloadingParams] = {
    "small": TaskOffloadingParams(num_devices=4, num_edges=2, area_m=300.0, coverage_radius_m=200.0,
                                  edge_cpu_hz=5.0e9),
    "medium": TaskOffloadingParams(),
    "large": TaskOffloadingParams(num_devices=100, num_edges=10, area_m=1000.0),
}


# ---------------------------------------------------------------------------
# Model functions (also used by the baselines and the tests)
# ---------------------------------------------------------------------------
def edge_positions(params: TaskOffloadingParams) -> np.ndarray:
    """Edge server positions ``(E, 2)`` in metres: centres of a near-square grid.

    ``ceil(sqrt(E))`` columns; a partly filled last row is spread evenly.
    """
    E, L = params.num_edges, params.area_m
    cols = int(math.ceil(math.sqrt(E)))
    rows = int(math.ceil(E / cols))
    pos = np.zeros((E, 2))
    for k in range(E):  # construction only, not the step path
        r, c = divmod(k, cols)
        in_row = min(cols, E - r * cols)
        pos[k] = ((c + 0.5) * L / in_row, (r + 0.5) * L / rows)
    return pos


def path_gain(distance_m: np.ndarray, params: TaskOffloadingParams) -> np.ndarray:
    """Large-scale power gain ``10^(-PL/10)``, PL = 128.1 + 37.6 log10(d / km) dB (TR 36.814)."""
    d_km = np.maximum(distance_m, params.min_distance_m) / 1000.0
    # 10^(-(A + B log10 d) / 10) = 10^(-A / 10) d^(-B / 10): one power instead of log and power.
    return 10.0 ** (-params.pathloss_db_at_1km / 10.0) * d_km ** (-params.pathloss_db_per_decade / 10.0)


def uplink_rate_bps(bandwidth_hz: np.ndarray, gain: np.ndarray, params: TaskOffloadingParams) -> np.ndarray:
    """Shannon rate ``W log2(1 + P g / (N0 W))`` of a sub-band of ``bandwidth_hz``."""
    power_w = 10.0 ** ((params.tx_power_dbm - 30.0) / 10.0)
    n0_w_hz = 10.0 ** ((params.noise_psd_dbm_hz - 30.0) / 10.0)
    return bandwidth_hz * np.log2(1.0 + power_w * gain / (n0_w_hz * bandwidth_hz))


def device_trajectories(rng: np.random.Generator, params: TaskOffloadingParams) -> np.ndarray:
    """Positions ``(T, U, 2)`` of every device in every slot of one episode.

    Constant speed per device, heading doing a Gaussian random walk; the
    unbounded path is folded into ``[0, area]`` per axis, which is exactly a
    reflection at the borders.
    """
    T, U, L = params.episode_slots, params.num_devices, params.area_m
    start = rng.uniform(0.0, L, size=(U, 2))
    speed = rng.uniform(params.speed_min_mps, params.speed_max_mps, size=U)
    heading0 = rng.uniform(0.0, 2.0 * np.pi, size=U)
    turns = rng.normal(0.0, params.heading_std_rad, size=(T - 1, U))
    heading = heading0 + np.concatenate([np.zeros((1, U)), np.cumsum(turns, axis=0)])[:-1]
    step = (speed * params.slot_s)[None, :, None] * np.stack([np.cos(heading), np.sin(heading)], axis=-1)
    path = start + np.concatenate([np.zeros((1, U, 2)), np.cumsum(step, axis=0)])
    folded = np.mod(path, 2.0 * L)
    return L - np.abs(folded - L)


# ---------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------
class TaskOffloadingKernel(BatchedKernel):
    """Batched device/edge/cloud offloading dynamics (module docstring has the MDP).

    Per instance, the episode's randomness (task arrivals and attributes,
    trajectories, fading) is drawn at reset from the instance's generator; the
    step is array code over instances, devices and edges.
    """

    params_class = TaskOffloadingParams
    presets = PRESETS

    #: Per-instance arrays (leading axis B) that make up an instance's state.
    state_fields = (
        "slot", "local_free_s", "uplink_free_s", "edge_free_s", "fresh_gen_s", "twin_age_s",
        "pending_done_s", "pending_gen_s",
        "task_present", "task_bits", "task_cycles", "task_update", "position_m", "fading",
        "n_tasks", "n_completed", "n_dropped", "n_local", "n_edge", "n_cloud",
        "sum_latency_s", "sum_energy_j", "sum_age_s", "sum_cost",
        "episode_return", "episode_length",
    )

    def __init__(self, params: TaskOffloadingParams | str | None = None, num_envs: int = 1):
        super().__init__(params, num_envs)
        p = self.params
        B, U, E, T, K = self.num_envs, p.num_devices, p.num_edges, p.episode_slots, p.pending_slots
        # Episode draws (T, U[, E]) per instance, the twin-age ring and the reset's temporaries.
        check_memory(type(self).__name__, B, T * U * (130.0 + 12.0 * E) + 16.0 * U * K,
                     {"episode_slots": T, "num_devices": U, "num_edges": E, "deadline_s": p.deadline_s})
        self.possible_agents = [f"device_{u}" for u in range(U)]
        self.single_agent_observation_space = spaces.Box(0.0, 1.0, shape=(10 + 2 * E,), dtype=np.float32)
        self.single_agent_action_space = (spaces.Discrete(p.num_choices) if p.action_mode == "placements"
                                          else spaces.Box(-1.0, 1.0, shape=(p.num_choices,), dtype=np.float32))
        self.edge_pos_m = edge_positions(p)
        self.tx_power_w = 10.0 ** ((p.tx_power_dbm - 30.0) / 10.0)
        # Dynamic state.
        self.slot = np.zeros(B, dtype=np.int64)
        self.local_free_s = np.zeros((B, U))
        self.uplink_free_s = np.zeros((B, U))
        self.edge_free_s = np.zeros((B, E))
        self.fresh_gen_s = np.zeros((B, U))
        self.twin_age_s = np.zeros((B, U))
        # Completed twin updates not yet due, one ring slot per decision slot.
        self.pending_done_s = np.full((B, U, K), np.inf)
        self.pending_gen_s = np.zeros((B, U, K))
        # Episode randomness (float32 where memory matters: the large preset at B = 256).
        self.task_present = np.zeros((B, T, U), dtype=bool)
        self.task_bits = np.zeros((B, T, U))
        self.task_cycles = np.zeros((B, T, U))
        self.task_update = np.zeros((B, T, U), dtype=bool)
        self.position_m = np.zeros((B, T, U, 2), dtype=np.float32)
        self.fading = np.ones((B, T, U, E), dtype=np.float32)
        # Episode counters.
        self.n_tasks = np.zeros(B, dtype=np.int64)
        self.n_completed = np.zeros(B, dtype=np.int64)
        self.n_dropped = np.zeros(B, dtype=np.int64)
        self.n_local = np.zeros(B, dtype=np.int64)
        self.n_edge = np.zeros(B, dtype=np.int64)
        self.n_cloud = np.zeros(B, dtype=np.int64)
        self.sum_latency_s = np.zeros(B)
        self.sum_energy_j = np.zeros(B)
        self.sum_age_s = np.zeros(B)
        self.sum_cost = np.zeros(B)
        self._batch = np.arange(B)
        self._edges = np.arange(E)
        self._devices = np.arange(U)
        self._link: dict[str, np.ndarray] | None = None
        self._expert_action: np.ndarray | None = None  # expert="greedy_priced": built on first use

    def _build_spaces(self):
        p = self.params
        U, E = p.num_devices, p.num_edges
        n_obs = U * (DEVICE_FEATURES + E) + E + 1
        obs = spaces.Box(0.0, 1.0, shape=(n_obs,), dtype=np.float32)
        if p.action_mode == "prices":
            return obs, spaces.Box(-1.0, 1.0, shape=(p.num_choices,), dtype=np.float32)
        if p.action_mode == "device_prices":
            return obs, spaces.Box(-1.0, 1.0, shape=(U, p.num_choices), dtype=np.float32)
        return obs, spaces.MultiDiscrete(np.full(U, p.num_choices, dtype=np.int64))

    # -- reset -------------------------------------------------------------------
    def _reset_instances(self, idx: np.ndarray) -> None:
        p = self.params
        T, U, E = p.episode_slots, p.num_devices, p.num_edges
        for i in idx:  # reset path: one generator per instance (see envs/core.py)
            rng = self.rngs[i]
            self.position_m[i] = device_trajectories(rng, p)
            if p.rayleigh_fading:
                self.fading[i] = rng.exponential(1.0, size=(T, U, E))
            self.task_present[i] = rng.random((T, U)) < p.task_arrival_prob
            bits = rng.uniform(p.task_bits_min, p.task_bits_max, size=(T, U))
            self.task_bits[i] = bits
            self.task_cycles[i] = bits * rng.uniform(p.cycles_per_bit_min, p.cycles_per_bit_max, size=(T, U))
            self.task_update[i] = rng.random((T, U)) < p.twin_update_prob
        self._link = None
        self.slot[idx] = 0
        self.local_free_s[idx] = 0.0
        self.uplink_free_s[idx] = 0.0
        self.edge_free_s[idx] = 0.0
        self.fresh_gen_s[idx] = 0.0
        self.twin_age_s[idx] = 0.0
        self.pending_done_s[idx] = np.inf
        self.pending_gen_s[idx] = 0.0
        for counter in (self.n_tasks, self.n_completed, self.n_dropped, self.n_local, self.n_edge,
                        self.n_cloud, self.sum_latency_s, self.sum_energy_j, self.sum_age_s,
                        self.sum_cost):
            counter[idx] = 0

    # -- the current slot's view ---------------------------------------------------
    def current_tasks(self) -> dict[str, np.ndarray]:
        """Tasks of the current slot ``(B, U)`` (none once the episode is over)."""
        b = self._batch
        t = np.minimum(self.slot, self.params.episode_slots - 1)
        live = (self.slot < self.params.episode_slots)[:, None]
        return {
            "present": self.task_present[b, t] & live,
            "bits": self.task_bits[b, t],
            "cycles": self.task_cycles[b, t],
            "update": self.task_update[b, t],
        }

    def link_state(self) -> dict[str, np.ndarray]:
        """Distances ``(B, U, E)``, channel gains, reachability and nearest edge now.

        Cached until the next reset or step (observe and step share it).
        """
        if self._link is None:
            self._link = self._compute_link_state()
        return self._link

    def _compute_link_state(self) -> dict[str, np.ndarray]:
        p = self.params
        b = self._batch
        t = np.minimum(self.slot, p.episode_slots - 1)
        pos = self.position_m[b, t].astype(np.float64)  # (B, U, 2)
        # In place on (B, U, E) arrays, the same operations as path_gain(distance) * fading.
        dx = pos[:, :, 0, None] - self.edge_pos_m[:, 0]
        dy = pos[:, :, 1, None] - self.edge_pos_m[:, 1]
        dx *= dx
        dy *= dy
        dx += dy
        distance = np.sqrt(dx, out=dx)  # (B, U, E)
        nearest = np.argmin(distance, axis=2)
        reachable = (distance <= p.coverage_radius_m) | (self._edges == nearest[..., None])
        gain = np.maximum(distance, p.min_distance_m)
        gain /= 1000.0
        np.power(gain, -p.pathloss_db_per_decade / 10.0, out=gain)
        gain *= 10.0 ** (-p.pathloss_db_at_1km / 10.0)
        gain *= self.fading[b, t]
        return {"position": pos, "distance": distance, "gain": gain, "nearest": nearest,
                "reachable": reachable}

    def now_s(self) -> np.ndarray:
        return self.slot * self.params.slot_s

    # -- observation -----------------------------------------------------------------
    def _device_features(self, out: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Device blocks ``(B, U, 9 + E)``, written into ``out`` (e.g. a float32 view of the
        observation: each value is rounded once, as a float64 array cast at the end would be)."""
        p = self.params
        task = self.current_tasks()
        link = self.link_state()
        now = self.now_s()[:, None]
        has = task["present"]
        B, U, E = self.num_envs, p.num_devices, p.num_edges
        feat = np.empty((B, U, DEVICE_FEATURES + E)) if out is None else out
        feat[:, :, 0] = has
        feat[:, :, 1] = np.where(has, task["bits"] / p.task_bits_max, 0.0)
        feat[:, :, 2] = np.where(has, task["cycles"] / (p.task_bits_max * p.cycles_per_bit_max), 0.0)
        feat[:, :, 3] = has & task["update"]
        feat[:, :, 4] = np.clip((self.local_free_s - now) / p.deadline_s, 0.0, 1.0)
        feat[:, :, 5] = np.clip((self.uplink_free_s - now) / p.deadline_s, 0.0, 1.0)
        feat[:, :, 6] = self.twin_age_s / (p.episode_slots * p.slot_s)
        feat[:, :, 7:9] = link["position"] / p.area_m
        se = uplink_rate_bps(p.edge_bandwidth_hz, link["gain"], p) / p.edge_bandwidth_hz
        feat[:, :, DEVICE_FEATURES:] = np.where(link["reachable"], np.clip(se / p.se_norm, 0.0, 1.0), 0.0)
        return feat, link

    def edge_backlog(self) -> np.ndarray:
        """Edge backlog ``(B, E)`` in units of the deadline, clipped to 1."""
        now = self.now_s()[:, None]
        return np.clip((self.edge_free_s - now) / self.params.deadline_s, 0.0, 1.0)

    def _observe(self) -> np.ndarray:
        # Written straight into the float32 observation (no float64 copy, no concatenation).
        p = self.params
        B, U, E = self.num_envs, p.num_devices, p.num_edges
        n_dev = U * (DEVICE_FEATURES + E)
        obs = np.empty((B, n_dev + E + 1), dtype=np.float32)
        self._device_features(out=obs[:, :n_dev].reshape(B, U, DEVICE_FEATURES + E))
        obs[:, n_dev : n_dev + E] = self.edge_backlog()
        obs[:, -1] = self.slot / p.episode_slots
        return obs

    def _observe_agents(self) -> np.ndarray:
        p = self.params
        B, U, E = self.num_envs, p.num_devices, p.num_edges
        obs = np.empty((B, U, DEVICE_FEATURES + 2 * E + 1), dtype=np.float32)
        _, link = self._device_features(out=obs[:, :, : DEVICE_FEATURES + E])
        obs[:, :, DEVICE_FEATURES + E : -1] = np.where(link["reachable"], self.edge_backlog()[:, None, :], 1.0)
        obs[:, :, -1] = (self.slot / p.episode_slots)[:, None]
        return obs

    def action_masks(self) -> np.ndarray:
        """Feasible choices, flattened ``(B, U (E + 2))``: local always, reachable edges, cloud."""
        p = self.params
        if p.action_mode != "placements":
            raise AttributeError("action masks exist only for action_mode='placements'")
        return self.feasible_placements().reshape(self.num_envs, -1)

    def feasible_placements(self) -> np.ndarray:
        """``(B, U, E + 2)`` bool: local always, reachable edges and the cloud for devices with a task."""
        p = self.params
        has = self.current_tasks()["present"]
        reachable = self.link_state()["reachable"]
        mask = np.zeros((self.num_envs, p.num_devices, p.num_choices), dtype=bool)
        mask[:, :, 0] = True
        mask[:, :, 1 : p.num_edges + 1] = has[..., None] & reachable
        mask[:, :, p.num_edges + 1] = has
        return mask

    def list_schedule(self, price_s: np.ndarray | None = None) -> np.ndarray:
        """Placements ``(B, U)`` by list scheduling on the estimated completion times, plus prices.

        Devices decide in index order (vectorised over instances); each picks the feasible
        placement whose estimated completion time plus ``price_s[:, choice]`` (seconds,
        ``(B, E + 2)``, or ``(B, U, E + 2)``: row ``u`` for device ``u``; none: 0, which is the
        ``greedy`` baseline) is smallest, given the
        queues and the uploads of the devices that decided before it in the slot (bandwidth
        share ``W / (n_j + 1)``, edge queue extended by their work).  Energy, drops and twin
        age are not in the estimate; the FIFO order at the edge is approximated by decision
        order.  ``action_mode="prices"`` plays this with the agent's prices.
        """
        p = self.params
        B, U, E = self.num_envs, p.num_devices, p.num_edges
        b = self._batch
        task = self.current_tasks()
        link = self.link_state()
        now = self.now_s()
        mask = self.feasible_placements()
        n_up = np.zeros((B, E), dtype=np.int64)
        edge_free = np.maximum(self.edge_free_s, now[:, None])
        actions = np.zeros((B, U), dtype=np.int64)
        per_device = price_s is not None and np.ndim(price_s) == 3
        for u in range(U):  # sequential by design: each device sees the earlier ones
            cycles = task["cycles"][:, u]
            bits = task["bits"][:, u]
            est = np.full((B, p.num_choices), np.inf)
            est[:, 0] = np.maximum(now, self.local_free_s[:, u]) + cycles / p.device_cpu_hz
            up_start = np.maximum(now, self.uplink_free_s[:, u])
            share = p.edge_bandwidth_hz / (n_up + 1)  # (B, E)
            up_end = up_start[:, None] + bits[:, None] / uplink_rate_bps(share, link["gain"][:, u, :], p)
            est[:, 1 : E + 1] = np.maximum(up_end, edge_free) + (cycles / p.edge_cpu_hz)[:, None]
            near = link["nearest"][:, u]
            est[:, E + 1] = up_end[b, near] + p.cloud_backhaul_s + cycles / p.cloud_cpu_hz
            key = est if price_s is None else est + (price_s[:, u] if per_device else price_s)
            choice = np.argmin(np.where(mask[:, u], key, np.inf), axis=1)
            has = task["present"][:, u]
            choice = np.where(has, choice, 0)
            actions[:, u] = choice
            relay = np.where(choice == E + 1, near, choice - 1)
            offload = has & (choice >= 1)
            n_up[b[offload], relay[offload]] += 1
            at_edge = has & (choice >= 1) & (choice <= E)
            edge_free[b[at_edge], relay[at_edge]] = est[b[at_edge], choice[at_edge]]
        return actions

    def expert_actions(self) -> np.ndarray:
        """``expert="greedy_priced"``: the action ``(B, E + 2)`` that plays that baseline's prices.

        ``(prices - base_price_s) / price_scale_s``, clipped to the box (the nearest playable
        action where the tuned prices lie beyond reach); the prices come from
        :func:`gentwin.baselines.task_offloading.tune_prices` for these params (tuned once per
        process on episodes disjoint from the evaluation episodes).  The same for every state.
        """
        p = self.params
        if p.expert == "none":
            raise AttributeError("expert actions exist only with expert != 'none'")
        if self._expert_action is None:
            import dataclasses

            from gentwin.baselines.task_offloading import tune_prices  # the baselines import this module

            prices, _ = tune_prices(dataclasses.replace(p, action_mode="placements", base_price_s=(), expert="none"))
            base = np.asarray(p.base_price_s) if p.base_price_s else 0.0
            self._expert_action = np.clip((prices - base) / p.price_scale_s, -1.0, 1.0).astype(np.float32)
        if p.action_mode == "device_prices":  # the same tuned prices in every device's row
            return np.broadcast_to(self._expert_action, (self.num_envs, p.num_devices, p.num_choices)).copy()
        return np.repeat(self._expert_action[None], self.num_envs, axis=0)

    # -- step --------------------------------------------------------------------------
    def _step(self, actions: np.ndarray):
        p = self.params
        B, U, E = self.num_envs, p.num_devices, p.num_edges
        b = self._batch
        expert = None
        if p.action_mode in PRICE_MODES:
            # The agent prices the placements (on top of the base prices); the list scheduler places.
            # "prices": (B, E + 2), one row for all devices; "device_prices": (B, U, E + 2).
            price = p.price_scale_s * np.asarray(actions, dtype=np.float64)
            if p.base_price_s:
                price = price + np.asarray(p.base_price_s)
            actions = self.list_schedule(price)
            expert = self.expert_actions() if p.expert != "none" else None
        task = self.current_tasks()
        link = self.link_state()
        has, bits, cycles, update = task["present"], task["bits"], task["cycles"], task["update"]
        now = self.now_s()
        deadline = (now + p.deadline_s)[:, None]  # (B, 1): one absolute deadline per slot
        now_c = now[:, None]

        local = has & (actions == 0)
        to_edge = has & (actions >= 1) & (actions <= E)
        to_cloud = has & (actions == E + 1)
        relay = np.where(to_cloud, link["nearest"], np.clip(actions - 1, 0, E - 1))  # (B, U)
        reach = np.take_along_axis(link["reachable"], relay[..., None], axis=2)[..., 0]
        uploading = (to_edge | to_cloud) & reach

        # Uplink: W split equally among this slot's uploads through each edge.
        n_up = np.bincount((b[:, None] * E + relay)[uploading], minlength=B * E).reshape(B, E)
        share_hz = p.edge_bandwidth_hz / np.maximum(np.take_along_axis(n_up, relay, axis=1), 1)
        gain = np.take_along_axis(link["gain"], relay[..., None], axis=2)[..., 0]
        rate = uplink_rate_bps(share_hz, gain, p)
        up_start = np.maximum(now_c, self.uplink_free_s)
        up_end = up_start + np.where(uploading, bits / rate, 0.0)
        up_alive = uploading & (up_start < deadline)
        uploaded = uploading & (up_end <= deadline)
        up_busy_end = np.minimum(up_end, deadline)
        tx_energy = np.where(up_alive, self.tx_power_w * (up_busy_end - up_start), 0.0)
        self.uplink_free_s = np.where(up_alive, up_busy_end, self.uplink_free_s)

        # Local CPU: one task per device per slot, FIFO, cut at the deadline.
        loc_start = np.maximum(now_c, self.local_free_s)
        loc_finish = loc_start + cycles / p.device_cpu_hz
        loc_alive = local & (loc_start < deadline)
        loc_end = np.minimum(loc_finish, deadline)
        self.local_free_s = np.where(loc_alive, loc_end, self.local_free_s)
        loc_cycles = np.where(loc_alive, p.device_cpu_hz * (loc_end - loc_start), 0.0)

        # Edge CPUs: closed-form Lindley recursion with the cut at D (module docstring).
        at_edge = to_edge & uploaded
        arrival = np.where(at_edge, up_end, np.inf)
        order = np.argsort(arrival, axis=1, kind="stable")
        a_sorted = np.take_along_axis(arrival, order, axis=1)  # (B, U)
        # Each edge's tasks in arrival order, packed into (B, E, W) with W the most
        # tasks any edge gets this slot (far fewer than U): the recursion runs on
        # that, not on a (B, E, U) array that is mostly non-members.  The padding
        # (service 0, lead -inf) and the zeros of the full layout add nothing, so
        # the result is the same to the last bit.
        group = np.where(np.take_along_axis(at_edge, order, axis=1),
                         np.take_along_axis(relay, order, axis=1), E)  # (B, U): edge, E = none
        by_edge = np.argsort(group, axis=1, kind="stable")  # sorted positions grouped by edge
        group_sorted = np.take_along_axis(group, by_edge, axis=1)
        counts = np.bincount((group + (E + 1) * b[:, None]).ravel(), minlength=B * (E + 1)).reshape(B, E + 1)
        first = np.cumsum(counts, axis=1) - counts
        rank = self._devices - np.take_along_axis(first, group_sorted, axis=1)
        W = max(int(counts[:, :E].max()), 1)
        sel = group_sorted < E
        rows_m = np.broadcast_to(b[:, None], (B, U))[sel]
        edge_m, rank_m, pos_m = group_sorted[sel], rank[sel], by_edge[sel]
        member = np.zeros((B, E, W), dtype=bool)
        member[rows_m, edge_m, rank_m] = True
        a_packed = np.zeros((B, E, W))
        a_packed[rows_m, edge_m, rank_m] = a_sorted[rows_m, pos_m]
        s = np.zeros((B, E, W))
        s[rows_m, edge_m, rank_m] = cycles[rows_m, order[rows_m, pos_m]] / p.edge_cpu_hz
        S = np.cumsum(s, axis=2)
        lead = np.where(member, a_packed - (S - s), -np.inf)
        free0 = self.edge_free_s[:, :, None]
        G = S + np.maximum(free0, np.maximum.accumulate(lead, axis=2))
        G_prev = np.concatenate([free0, G[:, :, :-1]], axis=2)
        D3 = deadline[:, :, None]
        F_prev = np.maximum(free0, np.minimum(G_prev, D3))
        self.edge_free_s = np.maximum(self.edge_free_s, np.minimum(G[:, :, -1], deadline))
        edge_start = np.zeros((B, U))
        edge_start[rows_m, order[rows_m, pos_m]] = np.maximum(a_packed, F_prev)[rows_m, edge_m, rank_m]
        edge_finish = edge_start + cycles / p.edge_cpu_hz
        edge_alive = at_edge & (edge_start < deadline)
        edge_cycles = np.where(edge_alive, p.edge_cpu_hz * (np.minimum(edge_finish, deadline) - edge_start), 0.0)

        # Cloud: backhaul from the relaying edge, no queueing.
        cloud_start = up_end + p.cloud_backhaul_s
        cloud_finish = cloud_start + cycles / p.cloud_cpu_hz
        at_cloud = to_cloud & uploaded
        cloud_alive = at_cloud & (cloud_start < deadline)
        cloud_cycles = np.where(
            cloud_alive, p.cloud_cpu_hz * (np.minimum(cloud_finish, deadline) - cloud_start), 0.0
        )

        finish = np.where(local, loc_finish, np.where(at_edge, edge_finish, cloud_finish))
        reached = local | at_edge | at_cloud
        completed = reached & (finish <= deadline)
        dropped = has & ~completed
        latency = np.where(completed, finish - now_c, 0.0)
        energy = p.kappa * p.device_cpu_hz**2 * loc_cycles + tx_energy

        # Twin age: completed updates become due at their completion time.
        k = self.slot % p.pending_slots
        rows = b[:, None]
        cols = np.arange(U)[None, :]
        self.pending_done_s[rows, cols, k[:, None]] = np.where(update & completed, finish, np.inf)
        self.pending_gen_s[rows, cols, k[:, None]] = now_c
        end = now_c + p.slot_s
        due = self.pending_done_s <= end[..., None]
        newest = np.max(self.pending_gen_s, axis=2, where=due, initial=-np.inf)
        self.fresh_gen_s = np.maximum(self.fresh_gen_s, newest)
        np.copyto(self.pending_done_s, np.inf, where=due)
        self.twin_age_s = end - self.fresh_gen_s

        cost = (p.w_latency * latency + p.w_energy * energy + p.w_drop * dropped
                + p.w_age * self.twin_age_s)
        team = cost.mean(axis=1)
        reward = -team
        beta = p.shared_reward_weight
        agent_rewards = -((1.0 - beta) * cost + beta * team[:, None])

        # Counters.
        self.n_tasks += has.sum(axis=1)
        self.n_completed += completed.sum(axis=1)
        self.n_dropped += dropped.sum(axis=1)
        self.n_local += local.sum(axis=1)
        self.n_edge += to_edge.sum(axis=1)
        self.n_cloud += to_cloud.sum(axis=1)
        self.sum_latency_s += latency.sum(axis=1)
        self.sum_energy_j += energy.sum(axis=1)
        self.sum_age_s += self.twin_age_s.mean(axis=1)
        self.sum_cost += team
        self.slot = self.slot + 1
        self._link = None

        placement = np.where(has, actions, -1)
        queue_arrival = np.where(local, now_c, np.where(at_edge, up_end, np.where(at_cloud, cloud_start, -1.0)))
        start = np.where(local, loc_start, np.where(at_edge, edge_start, cloud_start))
        served = loc_alive | edge_alive | cloud_alive
        info = {
            "has_task": has,
            "is_update": has & update,
            "placement": placement,
            "completed": completed,
            "dropped": dropped,
            "latency_s": latency,
            "energy_j": energy,
            "cost": cost,
            "twin_age_s": self.twin_age_s.copy(),
            "cycles": np.where(has, cycles, 0.0),
            "cycles_executed": loc_cycles + edge_cycles + cloud_cycles,
            "uplink_end_s": np.where(uploading, up_end, -1.0),
            "queue_arrival_s": queue_arrival,
            "service_start_s": np.where(served, start, -1.0),
            "service_end_s": np.where(served, np.minimum(finish, deadline), -1.0),
            "agent_rewards": agent_rewards,
        }
        if expert is not None:
            info["expert_action"] = expert
        truncated = self.slot >= p.episode_slots
        terminated = np.zeros(B, dtype=bool)
        return reward, terminated, truncated, info

    def _episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        tasks = np.maximum(self.n_tasks[idx], 1)
        return {
            "cost": self.sum_cost[idx].copy(),
            "tasks": self.n_tasks[idx].copy(),
            "completed": self.n_completed[idx].copy(),
            "dropped": self.n_dropped[idx].copy(),
            "drop_rate": self.n_dropped[idx] / tasks,
            "latency_s": self.sum_latency_s[idx] / np.maximum(self.n_completed[idx], 1),
            "energy_j": self.sum_energy_j[idx] / tasks,
            "twin_age_s": self.sum_age_s[idx] / np.maximum(self.episode_length[idx], 1),
            "local_share": self.n_local[idx] / tasks,
            "edge_share": self.n_edge[idx] / tasks,
            "cloud_share": self.n_cloud[idx] / tasks,
        }

    # -- cloning (for the exact one-slot optimum) ------------------------------------------
    def clone_instance(self, i: int, copies: int) -> "TaskOffloadingKernel":
        """A new kernel with ``copies`` identical copies of instance ``i``'s state."""
        clone = type(self)(self.params, num_envs=copies)
        for name in self.state_fields:
            value = getattr(self, name)
            setattr(clone, name, np.repeat(value[i : i + 1], copies, axis=0))
        clone._link = None
        clone._has_reset = True
        return clone


class TaskOffloadingEnv(KernelEnv):
    __doc__ = __doc__
    kernel_class = TaskOffloadingKernel


class TaskOffloadingVectorEnv(KernelVectorEnv):
    __doc__ = __doc__
    kernel_class = TaskOffloadingKernel


class TaskOffloadingParallelEnv(KernelParallelEnv):
    __doc__ = __doc__
    kernel_class = TaskOffloadingKernel
    metadata = {"render_modes": [], "name": "task_offloading_ma_v0", "is_parallelizable": True}

    def __init__(self, params=None, render_mode=None, **overrides):
        super().__init__(params, render_mode=render_mode, **overrides)
        if self.kernel.params.action_mode == "prices":
            raise ValueError(
                f"TaskOffloadingParams.action_mode = {self.kernel.params.action_mode!r} is invalid for the "
                f"multi-agent view: each device acts for its own task there ('placements' or "
                f"'device_prices'); 'prices' is one action for all devices, use gentwin/TaskOffloading-v0"
            )
