"""The baseline-policy interface shared by every environment family.

A baseline answers ``predict(observation)`` exactly like a Stable-Baselines3
model, so train.py, the evaluation harness and user code treat trained agents
and baselines the same way.  Observations may be one observation or a batch.

Some baselines are *oracles*: the greedy oracle of ASP selection knows the hidden
quality curves, the perfect-CSI optimiser of RIS/ISAC knows the true channel.
They read what they need from the kernel they act on; :meth:`Baseline.attach`
binds them to an environment view (single env, vector env, SB3 VecEnv or the
kernel itself), and the evaluation harness does that for you.

Yardsticks: ``BOUND``
---------------------
"Share of the bound" is reported against an evaluation *reference value per
episode*, which need not be a policy.  Each ``gentwin.baselines.<family>``
module may declare ``BOUND = Bound(...)`` (or ``BOUND = None``: the family
reports no share):

* ``name``: what the reference is (``"water_filling"``, ``"lp_relaxation"``);
* ``kind``: ``"exact optimum"`` (a value some policy attains and none beats) or
  ``"certified upper bound"`` (provably at least the return of every policy,
  perhaps not attainable).  Nothing else may be declared: heuristics, however
  strong, are baselines, not bounds;
* how to get the value of one episode, one of

  - ``value(kernel) -> (B,)``: a function of the *freshly reset* evaluation
    kernel (every episode's randomness is drawn at reset, so the kernel holds
    the whole episode in hindsight), or
  - ``policy`` and ``metric``: the episode-summary ``metric`` of the episodes
    of the baseline ``policy`` (e.g. ContractDesign's ``optimal_utility``);

* ``applies(params) -> bool`` (optional): whether the claim holds for these
  params (e.g. only for one-period episodes); where it does not, no share.

The harness (:func:`gentwin.evaluation.evaluate_bound`) evaluates the bound on
exactly the held-out episodes of the agents and baselines (same seeds, same
params), and every report divides ``share = mean return / mean bound`` over
those episodes (a ratio of means, not a mean of per-episode ratios).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from gentwin.envs.core import BatchedKernel


def kernel_of(env: Any) -> BatchedKernel:
    """The batched kernel behind any gentwin view (also through Gymnasium wrappers)."""
    if isinstance(env, BatchedKernel):
        return env
    seen = env
    for _ in range(32):
        kernel = getattr(seen, "kernel", None)
        if isinstance(kernel, BatchedKernel):
            return kernel
        inner = getattr(seen, "env", None) or getattr(seen, "venv", None) or getattr(seen, "unwrapped", None)
        if inner is None or inner is seen:
            break
        seen = inner
    raise TypeError(f"{type(env).__name__} is not a gentwin environment (no batched kernel found)")


class Baseline:
    """A fixed policy with SB3's ``predict`` signature.

    Subclasses implement :meth:`act` on a batch of observations ``(B, ...)``.
    Oracles set ``requires_kernel = True`` and read ``self.kernel``; they must be
    attached to the environment whose observations they receive.
    """

    name: str = "baseline"
    requires_kernel: bool = False

    def __init__(self, env: Any, seed: int | None = None):
        self.kernel: BatchedKernel = kernel_of(env)
        self.params = self.kernel.params
        self.observation_space = self.kernel.single_observation_space
        self.action_space = self.kernel.single_action_space
        self.rng = np.random.default_rng(seed)

    def attach(self, env: Any) -> "Baseline":
        """Act on ``env`` from now on (oracles read its true state)."""
        kernel = kernel_of(env)
        if kernel.params != self.params:
            raise ValueError(
                f"{self.name}: cannot attach to an environment with different params "
                f"({kernel.params}) than it was built for ({self.params})"
            )
        self.kernel = kernel
        return self

    def act(self, observations: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget any per-episode memory (round-robin pointers and the like)."""

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, None]:
        obs = np.asarray(observation)
        single = obs.shape == self.observation_space.shape
        batch = obs[None] if single else obs
        if self.requires_kernel and batch.shape[0] != self.kernel.num_envs:
            raise ValueError(
                f"{self.name} is an oracle attached to {self.kernel.num_envs} instance(s) but got "
                f"{batch.shape[0]} observation(s): attach it to the environment it acts on"
            )
        actions = self.act(batch)
        return (actions[0] if single else actions), None


EXACT_OPTIMUM = "exact optimum"
CERTIFIED_UPPER_BOUND = "certified upper bound"
BOUND_KINDS = (EXACT_OPTIMUM, CERTIFIED_UPPER_BOUND)


@dataclass(frozen=True)
class Bound:
    """An evaluation reference value per episode (see the module docstring).

    Exactly one of ``value`` (a function of the freshly reset kernel returning
    one value per instance) and ``policy`` (a baseline name whose episodes'
    summary ``metric`` is the value) must be given.
    """

    name: str
    kind: str
    value: Callable[[BatchedKernel], np.ndarray] | None = None
    policy: str | None = None
    metric: str = "return"
    #: one line for reports: what the value is and why it is exact / a bound
    description: str = ""
    applies: Callable[[Any], bool] | None = None

    def __post_init__(self) -> None:
        if self.kind not in BOUND_KINDS:
            raise ValueError(f"Bound.kind = {self.kind!r} is invalid: allowed are {BOUND_KINDS}")
        if (self.value is None) == (self.policy is None):
            raise ValueError(
                f"Bound {self.name!r} is invalid: give exactly one of value (a function of the "
                f"reset kernel) and policy (a baseline name), got value={self.value!r}, policy={self.policy!r}"
            )

    def applies_to(self, params: Any) -> bool:
        return True if self.applies is None else bool(self.applies(params))


def baseline_module(env_id: str):
    """The ``gentwin.baselines`` module of the family behind ``env_id``.

    Convention: ``gentwin.envs.<family>`` has its baselines in
    ``gentwin.baselines.<family>``, which defines ``BASELINES`` (name -> class)
    and ``BOUND`` (a :class:`Bound`, or None where no exact optimum or certified
    bound is known).
    """
    import gentwin  # noqa: F401  (registers the ids)

    spec = gym.spec(env_id)
    entry = spec.entry_point if isinstance(spec.entry_point, str) else spec.entry_point.__module__
    family = entry.split(":")[0].rsplit(".", 1)[-1]
    return importlib.import_module(f"gentwin.baselines.{family}")


def get_baselines(env_id: str) -> dict[str, type[Baseline]]:
    """Baseline classes of ``env_id`` by name."""
    return dict(baseline_module(env_id).BASELINES)


def get_bound(env_id: str, params: Any = None) -> Bound | None:
    """The :class:`Bound` of ``env_id`` (None: none declared, or it does not apply to ``params``)."""
    bound = getattr(baseline_module(env_id), "BOUND", None)
    if bound is None:
        return None
    if not isinstance(bound, Bound):
        raise TypeError(f"BOUND of {env_id} must be a gentwin.baselines.base.Bound, got {type(bound).__name__}")
    if params is not None and not bound.applies_to(params):
        return None
    return bound
