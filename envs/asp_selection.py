"""AIGC service-provider (ASP) selection: ``gentwin/AspSelection-v0``.

Source: seed 002, paper 1, section V-B ("AIGC Service Provider Selection",
``sed -n 633,670p ../shared/seeds/002_0c06d0e91042d4e2.txt``; the simulation
settings at ``sed -n 662p``) and its source, the D2SAC paper (Du et al.,
"Diffusion-based reinforcement learning for edge-enabled AI-generated content
services", IEEE TMC 2024, ref. [138] of the survey) with its public code
(repository Lizonghang/AGOD, ``env/``: ``config.py`` holds the constants,
``task.py`` the task stream, ``service_provider.py`` the ASPs and crashes).

Description
-----------
A market of ``I`` edge ASPs serves a stream of AIGC tasks.  ASP ``i`` can run at
most ``C_i`` denoising steps at once (its capacity) and has a *hidden* quality
curve ``q_i(t)`` for a task that asks for ``t`` denoising steps::

    q_i(t) = 0                                   t <  a_x
           = (b_y - a_y) (t - a_x) / (b_x - a_x)  a_x <= t <= b_x
           = b_y - a_y                           t >  b_x

with ``a_x ~ U{0,10,..,90}``, ``a_y ~ U{0,.05,..,.45}``, ``b_x ~ U{150,..,240}``,
``b_y ~ U{.5,.55,..,.95}`` (the D2SAC code's ``AX_RANGE`` .. ``BY_RANGE``).  The
market (capacities and curves) is drawn once from ``params.market_seed``
(``market="drawn"``), or is the D2SAC code's own market (``market="d2sac"``, see
below): every instance of every batch built with the same params faces the same
ASPs, which is what lets an agent learn them.  Episode seeds change only the
task stream.

Tasks arrive as a Poisson process of rate ``arrival_rate_per_s``.  The D2SAC code
uses ``LAMBDA = 0.001`` /s (``env/config.py``); the default 0.0015 /s of the
``survey`` preset is gentwin's busier stream, from neither source (the survey's
"1,000 tasks" over "288 hours" is 0.00096 /s; its "0.288 requests per hour"
contradicts its own total).  Two episode-length rules (``arrivals``):

* ``"poisson"`` (default): exactly ``tasks_per_episode`` arrivals (default 1000,
  the survey's "1,000 tasks"), exponential gaps of mean ``1 / arrival_rate_per_s``.
* ``"window"``: the D2SAC code's rule (``TaskGenerator.reset`` in ``env/task.py``):
  ``K ~ Poisson(arrival_rate_per_s * window_s)`` (``TOTAL_TIME = 1e6`` s), arrival
  times ``[0] + sort(K uniforms on [0, window_s))`` floored to whole seconds, i.e.
  ``1 + K`` arrivals.  The code ends the episode when it draws the last arrival,
  which is never assigned, so an episode is ``K`` assignments (921-1057 in the
  code's 5 published episodes at 1000 expected).  ``tasks_per_episode`` is then the
  most assignments an episode can hold (arrays are sized by it): a ``K`` above it is
  cut to it (the ``d2sac`` preset's 1300 is 9.5 standard deviations above the mean).

A task asks for ``t`` steps, drawn uniformly from ``demand_choices``
({100, 110, .., 250}, the code's ``T_RANGE``), and runs for
``runtime(t) = (0.001 t^2 + 2.5 t - 14) * 60`` seconds (the code's ``RUNTIME``),
holding ``t`` units of its ASP's capacity until it finishes.

Action Space
------------
``Discrete(I)``: the ASP that serves the arriving task.  ``action_masks()``
returns the ASPs with at least ``t`` free capacity (all ASPs when none has).

Observation Space
-----------------
``Box(0, 1, (2 I + 2,), float32)``:

=================  ============================================
index              meaning
=================  ============================================
``0 .. I-1``       ``C_i / capacity_max``
``I .. 2I-1``      ``free_i / C_i`` (free capacity share)
``2I``             ``t / t_max`` of the arriving task
``2I + 1``         ``runtime(t) / runtime(t_max)``
=================  ============================================

The quality curves are not observed.  After the last arrival the task entries
are 0 (no task is waiting).

Rewards
-------
If the chosen ASP has ``free_i >= t`` the task runs and the reward is
``q_i(t)``.  Otherwise the ASP crashes: every task running on it is
terminated, the arriving task is lost, the ASP restarts empty, and the reward is
``-(crash_base_penalty + crash_progress_penalty * sum_killed (1 - progress))``
(defaults 2 and 2), where ``progress = elapsed / runtime`` of each killed task.

Starting State
--------------
All ASPs idle; the first task has arrived.

Episode End
-----------
Never terminated; truncated after ``tasks_per_episode`` assignments
(``arrivals="poisson"``) or after the episode's ``K`` assignments
(``arrivals="window"``): a time limit, the task stream would continue.

Arguments
---------
``gym.make("gentwin/AspSelection-v0", params="reference")`` selects a preset;
field overrides go as keyword arguments (``num_asps=10``).  Presets:

* ``survey`` (default): capacity uniform in 600..1500 (the survey's text,
  ``sed -n 662p``), arrival rate 0.0015 /s (gentwin's choice, see above), 1000 tasks.
* ``reference``: capacity from {400, 500, .., 900} (the code's ``TOTAL_T_RANGE``)
  and its ``LAMBDA = 0.001`` /s, with a market drawn from ``market_seed`` and
  exactly 1000 tasks per episode.
* ``d2sac``: the published simulator: the 20 ASPs the D2SAC code draws
  (``market="d2sac"``, :data:`D2SAC_MARKET`), ``LAMBDA = 0.001`` /s and the code's
  episode-length rule (``arrivals="window"``, ``window_s = 1e6``).  Its four
  policies reproduce the code's published returns (``benchmarks/asp_selection.py``).

Info
----
Per step: ``quality`` (0 on a crash), ``crashed``, ``killed_tasks``,
``feasible`` (whether the chosen ASP had room), and running totals
``arrived``, ``finished``, ``killed``, ``dropped``, ``running`` with
``arrived == finished + killed + dropped + running``.  At episode end,
``episode_summary``: ``return``, ``length``, ``utility`` (total quality),
``crashes``, ``crashed_tasks`` (killed + dropped), ``crash_rate`` (crashes per
task), ``finished``, ``killed``, ``dropped``, ``running``.

Version History
---------------
* v0: initial release.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from gentwin.envs.core import (
    BatchedKernel,
    KernelEnv,
    KernelVectorEnv,
    check_field,
    check_memory,
)

__all__ = [
    "ARRIVALS",
    "D2SAC_MARKET",
    "MARKETS",
    "AspMarket",
    "AspSelectionEnv",
    "AspSelectionKernel",
    "AspSelectionParams",
    "AspSelectionVectorEnv",
    "PRESETS",
    "draw_market",
    "quality_curve",
    "task_runtime_s",
]


MARKETS = ("drawn", "d2sac")
ARRIVALS = ("poisson", "window")

#: The 20 ASPs of the published D2SAC simulator, in its order: capacity (denoising
#: steps run at once) and quality-curve parameters, exactly as its objects hold them
#: (the float noise, e.g. 0.15000000000000002, is the code's own ``np.arange`` arithmetic).
#: Provenance: ``../shared/data/agod_market.json`` (see ``../shared/data/README.md``),
#: read off the D2SAC code (github Lizonghang/AGOD, ``env/config.py`` seeds NumPy's
#: global generator with 0, ``env/swarm_manager.py`` builds 1,000 users, each drawing a
#: location, then 20 ``ServiceProvider`` objects, ``env/service_provider.py``, each
#: drawing a_x, a_y, b_x, b_y, its capacity ``total_t`` and a location).  Re-deriving
#: it with that draw order under ``np.random.seed(0)`` gives exactly these numbers.
D2SAC_MARKET: dict[str, tuple[float, ...]] = {
    "capacity": (400, 500, 500, 900, 600, 700, 700, 600, 700, 500,
                 800, 700, 500, 400, 600, 800, 800, 800, 500, 600),
    "a_x": (10.0, 80.0, 40.0, 0.0, 30.0, 30.0, 90.0, 70.0, 40.0, 30.0,
            70.0, 0.0, 40.0, 90.0, 40.0, 70.0, 90.0, 10.0, 80.0, 40.0),
    "a_y": (0.0, 0.45, 0.0, 0.15000000000000002, 0.25, 0.45, 0.25, 0.4, 0.05, 0.0,
            0.15000000000000002, 0.15000000000000002, 0.35000000000000003, 0.2, 0.4, 0.25, 0.45, 0.45,
            0.35000000000000003, 0.4),
    "b_x": (210.0, 200.0, 170.0, 170.0, 160.0, 180.0, 160.0, 190.0, 200.0, 180.0,
            190.0, 200.0, 170.0, 230.0, 200.0, 220.0, 180.0, 220.0, 160.0, 210.0),
    "b_y": (0.8000000000000003, 0.6000000000000001, 0.7500000000000002, 0.6000000000000001, 0.8500000000000003,
            0.5, 0.9500000000000004, 0.8500000000000003, 0.5, 0.8000000000000003,
            0.8500000000000003, 0.8000000000000003, 0.5, 0.8500000000000003, 0.55,
            0.9500000000000004, 0.7000000000000002, 0.7500000000000002, 0.55, 0.55),
}


def task_runtime_s(demand: np.ndarray, runtime_scale_s: float = 60.0) -> np.ndarray:
    """Run time of a task asking for ``demand`` denoising steps (D2SAC code)."""
    demand = np.asarray(demand, dtype=np.float64)
    return (0.001 * demand**2 + 2.5 * demand - 14.0) * runtime_scale_s


def quality_curve(demand, a_x, a_y, b_x, b_y) -> np.ndarray:
    """``q(t)``: 0 below ``a_x``, linear up to ``b_y - a_y`` at ``b_x``, flat above."""
    demand = np.asarray(demand, dtype=np.float64)
    # The D2SAC code's order of operations (env/config.py REWARD), so values match to the ulp.
    ramp = (b_y - a_y) / (b_x - a_x) * (demand - a_x)
    return np.where(demand < a_x, 0.0, np.where(demand > b_x, b_y - a_y, ramp))


@dataclass(frozen=True)
class AspSelectionParams:
    """Static configuration of the ASP market and task stream (validated)."""

    num_asps: int = 20
    capacity_min: int = 600
    capacity_max: int = 1500
    capacity_step: int = 1
    demand_choices: tuple[int, ...] = tuple(range(100, 251, 10))
    tasks_per_episode: int = 1000
    arrival_rate_per_s: float = 0.0015
    #: Seconds per runtime unit: runtime(t) = (0.001 t^2 + 2.5 t - 14) * runtime_scale_s.
    runtime_scale_s: float = 60.0
    crash_base_penalty: float = 2.0
    crash_progress_penalty: float = 2.0
    a_x_choices: tuple[float, ...] = tuple(range(0, 100, 10))
    a_y_choices: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(10))
    b_x_choices: tuple[float, ...] = tuple(range(150, 250, 10))
    b_y_choices: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
    #: Seed of the ASP market (capacities and quality curves), fixed per environment.
    market_seed: int = 0
    #: "drawn": the market is drawn from market_seed; "d2sac": the D2SAC code's 20 ASPs.
    market: str = "drawn"
    #: "poisson": tasks_per_episode arrivals; "window": the D2SAC code's 1 + Poisson(rate * window_s).
    arrivals: str = "poisson"
    #: Length of the arrival window of arrivals="window" (the code's TOTAL_TIME), seconds.
    window_s: float = 1_000_000.0

    def __post_init__(self) -> None:
        check_field(self, "num_asps", low=1, high=10_000, integer=True)
        # Capacities are listed (arange) when the market is drawn: bounded like the other sizes.
        check_field(self, "capacity_min", low=1, high=1_000_000, integer=True)
        check_field(self, "capacity_max", low=self.capacity_min, high=1_000_000, integer=True)
        check_field(self, "capacity_step", low=1, high=1_000_000, integer=True)
        check_field(self, "demand_choices", low=1, high=1_000_000, integer=True)
        check_field(self, "tasks_per_episode", low=1, high=10_000_000, integer=True)
        check_field(self, "arrival_rate_per_s", low=0.0, low_inclusive=False)
        check_field(self, "runtime_scale_s", low=0.0, low_inclusive=False)
        check_field(self, "crash_base_penalty", low=0.0)
        check_field(self, "crash_progress_penalty", low=0.0)
        check_field(self, "a_x_choices", low=0.0)
        check_field(self, "a_y_choices", low=0.0)
        check_field(self, "b_x_choices", low=0.0)
        check_field(self, "b_y_choices", low=0.0)
        check_field(self, "market_seed", low=0, integer=True)
        check_field(self, "window_s", low=0.0, low_inclusive=False)
        if self.market not in MARKETS:
            raise ValueError(f"AspSelectionParams.market = {self.market!r} is invalid: allowed are {MARKETS}")
        if self.arrivals not in ARRIVALS:
            raise ValueError(f"AspSelectionParams.arrivals = {self.arrivals!r} is invalid: allowed are {ARRIVALS}")
        if self.market == "d2sac" and self.num_asps != len(D2SAC_MARKET["capacity"]):
            raise ValueError(
                f"AspSelectionParams.num_asps = {self.num_asps!r} is invalid with market='d2sac': "
                f"the D2SAC market has {len(D2SAC_MARKET['capacity'])} ASPs"
            )
        if self.market == "d2sac" and max(D2SAC_MARKET["capacity"]) > self.capacity_max:
            raise ValueError(
                f"AspSelectionParams.capacity_max = {self.capacity_max!r} is invalid with market='d2sac': "
                f"must be >= {max(D2SAC_MARKET['capacity'])} (observations divide by it)"
            )
        if max(self.a_x_choices) >= min(self.b_x_choices):
            raise ValueError(
                f"AspSelectionParams.b_x_choices = {self.b_x_choices!r} is invalid: every b_x "
                f"must exceed every a_x (max a_x = {max(self.a_x_choices)})"
            )
        if max(self.a_y_choices) > min(self.b_y_choices):
            raise ValueError(
                f"AspSelectionParams.b_y_choices = {self.b_y_choices!r} is invalid: every b_y "
                f"must be >= every a_y (max a_y = {max(self.a_y_choices)})"
            )
        if min(task_runtime_s(np.asarray(self.demand_choices), self.runtime_scale_s)) <= 0:
            raise ValueError(
                f"AspSelectionParams.demand_choices = {self.demand_choices!r} is invalid: "
                f"runtime(t) = (0.001 t^2 + 2.5 t - 14) * scale must be positive, i.e. t >= 6"
            )


PRESETS: dict[str, AspSelectionParams] = {
    "survey": AspSelectionParams(),
    "reference": AspSelectionParams(capacity_min=400, capacity_max=900, capacity_step=100,
                                    arrival_rate_per_s=0.001),
    "d2sac": AspSelectionParams(capacity_min=400, capacity_max=900, capacity_step=100,
                                arrival_rate_per_s=0.001, market="d2sac", arrivals="window",
                                window_s=1_000_000.0, tasks_per_episode=1300),
}


@dataclass(frozen=True)
class AspMarket:
    """The ASPs of one environment: capacities and hidden quality-curve parameters."""

    capacity: np.ndarray  # (I,) int
    a_x: np.ndarray
    a_y: np.ndarray
    b_x: np.ndarray
    b_y: np.ndarray
    #: quality[i, j] = q_i(demand_choices[j])
    quality: np.ndarray


def draw_market(params: AspSelectionParams) -> AspMarket:
    """The ASP market of ``params``: drawn from ``market_seed`` (independent of episode
    seeds), or the D2SAC code's (``market="d2sac"``)."""
    if params.market == "d2sac":
        capacity = np.asarray(D2SAC_MARKET["capacity"], dtype=np.int64)
        a_x, a_y, b_x, b_y = (np.asarray(D2SAC_MARKET[k], dtype=np.float64) for k in ("a_x", "a_y", "b_x", "b_y"))
    else:
        rng = np.random.default_rng(params.market_seed)
        capacities = np.arange(params.capacity_min, params.capacity_max + 1, params.capacity_step)
        n = params.num_asps
        capacity = rng.choice(capacities, size=n).astype(np.int64)
        a_x = rng.choice(np.asarray(params.a_x_choices, dtype=np.float64), size=n)
        a_y = rng.choice(np.asarray(params.a_y_choices, dtype=np.float64), size=n)
        b_x = rng.choice(np.asarray(params.b_x_choices, dtype=np.float64), size=n)
        b_y = rng.choice(np.asarray(params.b_y_choices, dtype=np.float64), size=n)
    demand = np.asarray(params.demand_choices, dtype=np.float64)
    quality = quality_curve(demand[None, :], a_x[:, None], a_y[:, None], b_x[:, None], b_y[:, None])
    return AspMarket(capacity, a_x, a_y, b_x, b_y, quality)


class AspSelectionKernel(BatchedKernel):
    """Batched ASP-selection dynamics (see the module docstring for the MDP).

    Each instance's episode (arrival times and demands) is drawn at reset from
    its own generator; the step is array code over the batch.  Running tasks
    are tracked per ASP by four aggregates -- used capacity, running count, and
    the sums of ``end/runtime`` and ``1/runtime`` that give the crash penalty's
    remaining-work term ``sum(1 - progress) = s1 - now * s2`` in closed form.
    Finished tasks are released in end-time order; a per-ASP crash epoch marks
    tasks killed by a crash so that their later release is ignored.
    """

    params_class = AspSelectionParams
    presets = PRESETS

    # Columns of the per-task record; DELTA is what a running task adds to its ASP.
    _ARRIVAL, _DEMAND, _ONE, _END_OVER_RUNTIME, _INV_RUNTIME, _END = range(6)
    _DELTA = slice(1, 5)
    # Columns of the per-ASP aggregates (same order as _DELTA).
    _USED, _RUNNING, _S1, _S2 = range(4)

    def __init__(self, params: AspSelectionParams | str | None = None, num_envs: int = 1):
        super().__init__(params, num_envs)
        p = self.params
        # About 200 bytes per task and instance: the task-major records and the reset's temporaries.
        check_memory(type(self).__name__, self.num_envs, 200.0 * (p.tasks_per_episode + 1) + 64.0 * p.num_asps,
                     {"tasks_per_episode": p.tasks_per_episode, "num_asps": p.num_asps})
        self.market = draw_market(p)
        self.capacity = self.market.capacity.astype(np.float64)
        self.demand_values = np.asarray(p.demand_choices, dtype=np.int64)
        self.runtime_values = task_runtime_s(self.demand_values, p.runtime_scale_s)
        self.demand_max = int(self.demand_values.max())
        self.runtime_max = float(self.runtime_values.max())
        B, I, N = self.num_envs, p.num_asps, p.tasks_per_episode
        # Episode draws, task-major: row n holds task n of every instance, so when
        # the instances of a batch are in step (equal episode lengths) each step
        # reads contiguous memory.  Row N is the "no task waiting" sentinel.
        self.task_record = np.zeros((N + 1, B, 6))
        self.task_demand_idx = np.zeros((N + 1, B), dtype=np.int64)
        self.task_obs = np.zeros((N + 1, B, 2), dtype=np.float32)
        # release_order[k, b]: the k-th task of instance b to end.
        self.release_order = np.zeros((N, B), dtype=np.int64)
        # release_count[n, b]: tasks of the episode that have ended by the arrival of task n.
        self.release_count = np.zeros((N + 1, B), dtype=np.int64)
        # Dynamic state.
        self.task = np.zeros(B, dtype=np.int64)  # index of the task awaiting assignment
        self.release_ptr = np.zeros(B, dtype=np.int64)
        # Assignments of each instance's episode (tasks_per_episode unless arrivals="window").
        self.episode_tasks = np.full(B, N, dtype=np.int64)
        # epoch * I + asp of each assigned task; -1 for tasks lost in a crash.  Row N
        # takes the write of a step past the episode's end (NEXT_STEP autoreset steps a
        # finished instance once before resetting it).
        self.assignment = np.full((N + 1, B), -1, dtype=np.int64)
        self.epoch = np.zeros((B, I), dtype=np.int64)
        self.aggregate = np.zeros((B, I, 4))
        # Episode counters (each crash drops exactly the arriving task).
        self.finished = np.zeros(B, dtype=np.int64)
        self.killed = np.zeros(B, dtype=np.int64)
        self.crashes = np.zeros(B, dtype=np.int64)
        self.utility = np.zeros(B)
        # Flat views: gathers by flat index (take) are the cheapest NumPy calls,
        # which matters at B = 1 where each call's fixed cost dominates.
        self._batch = np.arange(B)
        self._batch_offset = self._batch * I
        self._aggregate_flat = self.aggregate.reshape(B * I, 4)
        self._aggregate_1d = self.aggregate.reshape(-1)
        self._epoch_flat = self.epoch.reshape(B * I)
        self._inv_capacity = 1.0 / self.capacity
        self._n_demands = len(self.demand_values)
        self._quality_flat = self.market.quality.reshape(-1)
        self._task_record_flat = self.task_record.reshape((N + 1) * B, 6)
        self._task_demand_idx_flat = self.task_demand_idx.reshape(-1)
        self._task_obs_flat = self.task_obs.reshape((N + 1) * B, 2)
        self._release_count_flat = self.release_count.reshape(-1)
        self._release_order_flat = self.release_order.reshape(-1)
        self._assignment_flat = self.assignment.reshape(-1)
        self._delta_columns = np.arange(4)
        self._never = np.zeros(B, dtype=bool)
        self._obs = np.zeros((B, 2 * I + 2), dtype=np.float32)
        self._obs[:, :I] = self.capacity / p.capacity_max

    def _build_spaces(self):
        I = self.params.num_asps
        obs = spaces.Box(0.0, 1.0, shape=(2 * I + 2,), dtype=np.float32)
        return obs, spaces.Discrete(I)

    # -- reset -----------------------------------------------------------------
    def _reset_instances(self, idx: np.ndarray) -> None:
        p = self.params
        N = p.tasks_per_episode
        R = len(idx)
        arrival = np.empty((R, N))
        demand_idx = np.empty((R, N), dtype=np.int64)
        # The arrival that closes the episode: its releases are the last step's.
        closing = np.empty(R)
        for k, i in enumerate(idx):  # reset path: one generator per instance (see envs/core.py)
            rng = self.rngs[i]
            if p.arrivals == "window":
                # The D2SAC code's TaskGenerator.reset: 1 + K arrivals, whole seconds; the
                # last one ends the episode unassigned, so K assignments (at least one).
                count = int(rng.poisson(p.arrival_rate_per_s * p.window_s))
                times = np.floor(np.concatenate([[0.0], np.sort(rng.random(count) * p.window_s)]))
                length = min(max(count, 1), N)
                arrival[k, :length] = times[:length]
                closing[k] = times[min(length, count)]
                # Rows past the episode are never current; keep them after it, in order.
                arrival[k, length:] = closing[k] + 1.0 + np.arange(N - length)
                self.episode_tasks[i] = length
            else:
                arrival[k] = np.cumsum(rng.exponential(1.0 / p.arrival_rate_per_s, size=N))
                closing[k] = arrival[k, -1]
                self.episode_tasks[i] = N
            demand_idx[k] = rng.integers(0, self._n_demands, size=N)
        # Everything below is exact array work on the R drawn episodes at once.
        runtime = self.runtime_values[demand_idx]
        end = arrival + runtime
        order = np.argsort(end, axis=1, kind="stable")
        # Tasks ended by each arrival: merge the sorted end times with the arrival
        # times; a stable sort puts an end before an equal arrival (end <= arrival).
        merged = np.argsort(np.concatenate([np.take_along_axis(end, order, axis=1), arrival, closing[:, None]],
                                           axis=1), axis=1, kind="stable")
        is_end = merged < N
        ended = np.cumsum(is_end, axis=1)[~is_end].reshape(R, N + 1)

        record = self.task_record
        record[:N, idx, self._ARRIVAL] = arrival.T
        record[:N, idx, self._DEMAND] = self.demand_values[demand_idx].T
        record[:N, idx, self._ONE] = 1.0
        record[:N, idx, self._END_OVER_RUNTIME] = (end / runtime).T
        record[:N, idx, self._INV_RUNTIME] = (1.0 / runtime).T
        record[:N, idx, self._END] = end.T
        record[N, idx] = 0.0
        record[N, idx, self._ARRIVAL] = closing
        self.task_demand_idx[:N, idx] = demand_idx.T
        self.task_obs[:N, idx, 0] = (self.demand_values[demand_idx] / self.demand_max).T
        self.task_obs[:N, idx, 1] = (runtime / self.runtime_max).T
        self.task_obs[N, idx] = 0.0
        self.release_order[:, idx] = order.T
        self.release_count[:N, idx] = ended[:, :N].T
        # The last step releases what ended by the closing arrival (poisson: the last
        # task's own, so nothing more; window: the unassigned last arrival).
        self.release_count[N, idx] = ended[:, N]
        self.task[idx] = 0
        self.release_ptr[idx] = 0
        self.assignment[:, idx] = -1
        self.epoch[idx] = 0
        self.aggregate[idx] = 0.0
        self.finished[idx] = 0
        self.killed[idx] = 0
        self.crashes[idx] = 0
        self.utility[idx] = 0.0

    # -- observation -------------------------------------------------------------
    def free_capacity(self) -> np.ndarray:
        """Free capacity ``(B, I)`` of every ASP now."""
        return (self.capacity - self.aggregate[:, :, self._USED]).astype(np.int64)

    def running_tasks(self) -> np.ndarray:
        """Running tasks ``(B, I)`` per ASP."""
        return self.aggregate[:, :, self._RUNNING].astype(np.int64)

    def current_demand(self) -> np.ndarray:
        """Demand ``t`` of the waiting task per instance (0 after the last arrival)."""
        slot = self.task * self.num_envs + self._batch
        return self._task_record_flat[slot, self._DEMAND].astype(np.int64)

    def _observe(self) -> np.ndarray:
        I = self.params.num_asps
        obs = self._obs
        obs[:, I : 2 * I] = (self.capacity - self.aggregate[:, :, self._USED]) * self._inv_capacity
        obs[:, 2 * I :] = self._task_obs_flat.take(self.task * self.num_envs + self._batch, axis=0)
        return obs.copy()

    def action_masks(self) -> np.ndarray:
        feasible = self.free_capacity() >= self.current_demand()[:, None]
        none = ~feasible.any(axis=1)
        feasible[none] = True  # every choice crashes: all are equally allowed
        return feasible

    # -- step -----------------------------------------------------------------------
    def _step(self, actions: np.ndarray):
        # Written for few NumPy calls: at B = 1 (the single env) each call's fixed
        # cost dominates, so gathers use flat indices and masks multiply.
        p = self.params
        B, I = self.num_envs, p.num_asps
        asp = actions
        n = self.task
        slot = self._batch_offset + asp  # flat (instance, ASP) index
        task_slot = n * B + self._batch  # flat (task, instance) index
        record = self._task_record_flat.take(task_slot, axis=0)
        current = self._aggregate_flat.take(slot, axis=0)
        feasible = self.capacity.take(asp) - current[:, self._USED] >= record[:, self._DEMAND]
        crashed = ~feasible

        # Crash penalty: remaining work share of every killed task, sum(1 - progress).
        remaining = current[:, self._S1] - record[:, self._ARRIVAL] * current[:, self._S2]
        penalty = p.crash_base_penalty + p.crash_progress_penalty * np.maximum(remaining, 0.0)
        quality = self._quality_flat.take(asp * self._n_demands + self._task_demand_idx_flat.take(task_slot))
        quality *= feasible
        reward = quality - penalty * crashed
        killed_tasks = (current[:, self._RUNNING] * crashed).astype(np.int64)

        # A feasible task holds its demand until it ends; a crash empties the ASP
        # and starts a new epoch, so tasks of older epochs are never released.
        current += record[:, self._DELTA]
        current *= feasible[:, None]
        self._aggregate_flat[slot] = current
        epoch = self._epoch_flat.take(slot) + crashed
        self._epoch_flat[slot] = epoch
        # Lost tasks get code -1; assigned ones epoch * I + asp.
        self._assignment_flat[task_slot] = (epoch * I + asp + 1) * feasible - 1
        self.crashes += crashed
        self.killed += killed_tasks
        self.utility += quality

        # Advance to the next arrival and release the tasks that ended before it.
        # Past an episode's last task the sentinel row N is current (no task, no releases).
        self.task = np.where(n + 1 >= self.episode_tasks, p.tasks_per_episode, n + 1)
        self._release(self._release_count_flat.take(self.task * B + self._batch))

        info = {
            "quality": quality,
            "crashed": crashed,
            "killed_tasks": killed_tasks,
            "feasible": feasible,
            "arrived": np.minimum(n + 1, self.episode_tasks),
            "finished": self.finished.copy(),
            "killed": self.killed.copy(),
            "dropped": self.crashes.copy(),
            "running": self.aggregate[:, :, self._RUNNING].sum(axis=1).astype(np.int64),
        }
        return reward, self._never, self.task >= p.tasks_per_episode, info

    def _release(self, new_ptr: np.ndarray) -> None:
        """Release, per instance, the tasks at release positions ``[ptr, new_ptr)``."""
        count = new_ptr - self.release_ptr
        total = int(count.sum())
        if total:
            B, I = self.num_envs, self.params.num_asps
            rows = np.repeat(self._batch, count)
            offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
            task = self._release_order_flat.take((self.release_ptr.take(rows) + offset) * B + rows)
            task_slot = task * B + rows
            code = self._assignment_flat.take(task_slot)
            # code -1 (lost task) gives epoch -1, which never matches a live epoch.
            slot = rows * I + code % I
            alive = code // I == self._epoch_flat.take(slot)
            slot, rows, task_slot = slot[alive], rows[alive], task_slot[alive]
            delta = self._task_record_flat.take(task_slot, axis=0)[:, self._DELTA]
            # Scatter-subtract on the flat array (several tasks of one ASP may end together).
            np.subtract.at(self._aggregate_1d, (slot[:, None] * 4 + self._delta_columns).ravel(), delta.ravel())
            self.finished += np.bincount(rows, minlength=B)
            # Exact zeros when an ASP empties, so the float sums never drift.
            touched = self._aggregate_flat.take(slot, axis=0)
            touched[touched[:, self._RUNNING] == 0, self._S1 :] = 0.0
            self._aggregate_flat[slot] = touched
        self.release_ptr = new_ptr

    def _episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        length = np.maximum(self.episode_length[idx], 1)
        return {
            "utility": self.utility[idx].copy(),
            "crashes": self.crashes[idx].copy(),
            "crashed_tasks": self.killed[idx] + self.crashes[idx],
            "crash_rate": self.crashes[idx] / length,
            "finished": self.finished[idx].copy(),
            "killed": self.killed[idx].copy(),
            "dropped": self.crashes[idx].copy(),
            "running": self.aggregate[idx, :, self._RUNNING].sum(axis=1).astype(np.int64),
        }


class AspSelectionEnv(KernelEnv):
    __doc__ = __doc__
    kernel_class = AspSelectionKernel


class AspSelectionVectorEnv(KernelVectorEnv):
    __doc__ = __doc__
    kernel_class = AspSelectionKernel

