"""The batched environment core shared by every gentwin environment family.

Each family writes its dynamics once, as a :class:`BatchedKernel`: NumPy array
code over a leading batch axis of ``B`` instances.  Everything a user touches is
a thin *view* of such a kernel, never a second copy of the dynamics:

============================  ==============================================
view                          what it is
============================  ==============================================
:class:`KernelEnv`            ``gymnasium.Env`` over a kernel with ``B = 1``
:class:`KernelVectorEnv`      native ``gymnasium.vector.VectorEnv`` (the
                              ``vector_entry_point`` of every registration)
:class:`KernelSB3VecEnv`      Stable-Baselines3 ``VecEnv``
:class:`KernelParallelEnv`    PettingZoo ``ParallelEnv`` (multi-agent kernels)
============================  ==============================================

Seeding
-------
Every instance owns its own ``numpy.random.Generator``.  Resetting a batch with
seed ``s`` seeds instance ``i`` with ``s + i`` -- the convention of Gymnasium's
``SyncVectorEnv`` and of SB3's ``VecEnv.seed``.  Hence instance ``i`` of a batch
seeded ``s`` produces exactly the trajectory of a single environment reset with
``seed=s + i``, whatever ``B`` is, and a native vector env is bit-identical to a
``SyncVectorEnv`` of single envs seeded the same way.  Later resets without a
seed continue the instance's own generator, as ``gymnasium.Env`` does.

All random draws happen in :meth:`BatchedKernel._reset_instances` (and, for
kernels that need fresh randomness during an episode, in per-instance blocks
drawn there).  That is the one place with a loop over instances: it runs once
per episode per instance, while :meth:`BatchedKernel.step` stays pure array code.

Autoreset
---------
The vector views reset finished instances within the same ``step`` call
(Gymnasium's ``AutoresetMode.SAME_STEP``, and what SB3 expects): the returned
observation is the first of the new episode; the last observation of the old
one is in ``info["final_obs"]`` (Gymnasium) or ``info["terminal_observation"]``
(SB3), and the episode summary in ``info["final_info"]["episode_summary"]``
(Gymnasium) or ``info["episode"]`` (SB3).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from pettingzoo import ParallelEnv
from stable_baselines3.common.vec_env import VecEnv as SB3VecEnv

__all__ = [
    "BatchedKernel",
    "InvalidActionError",
    "KernelEnv",
    "KernelParallelEnv",
    "KernelSB3VecEnv",
    "KernelVectorEnv",
    "check_choice",
    "check_field",
    "make_sb3_vec_env",
]


class InvalidActionError(ValueError):
    """An action outside the action space (wrong shape, dtype, NaN or range)."""


# ---------------------------------------------------------------------------
# Parameter validation helpers, used by every family's frozen Params dataclass.
# ---------------------------------------------------------------------------
def check_field(
    params: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``params.name``, its value and the allowed range.

    Works on scalars and on sequences (every element is checked).
    """
    value = getattr(params, name)
    owner = type(params).__name__
    values = np.atleast_1d(np.asarray(value))
    if values.size == 0:
        raise ValueError(f"{owner}.{name} = {value!r} is invalid: must not be empty")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be numeric")
    lo = "[" if low_inclusive else "("
    hi = "]" if high_inclusive else ")"
    allowed = (
        f"{'an integer' if integer else 'a number'} in "
        f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be {allowed}")
    if integer and not np.all(values == np.round(values)):
        raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be {allowed}")
    if low is not None and (
        np.any(values < low) or (not low_inclusive and np.any(values == low))
    ):
        raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be {allowed}")
    if high is not None and (
        np.any(values > high) or (not high_inclusive and np.any(values == high))
    ):
        raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be {allowed}")


def check_choice(params: Any, name: str, allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``params.name``, its value and the allowed names."""
    value = getattr(params, name)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"{type(params).__name__}.{name} = {value!r} is invalid: "
            f"must be one of {', '.join(repr(a) for a in allowed)}"
        )


def _check_num_envs(num_envs: Any) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs = {num_envs!r} is invalid: must be an integer >= 1")
    return int(num_envs)


# ---------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------
class BatchedKernel(abc.ABC):
    """Dynamics of one environment family over ``num_envs`` independent instances.

    Subclasses set :attr:`params_class` (a frozen dataclass) and :attr:`presets`
    (name -> params), build ``single_observation_space`` / ``single_action_space``
    in :meth:`_build_spaces`, and implement :meth:`_reset_instances`,
    :meth:`_observe` and :meth:`_step`.  Multi-agent kernels also set
    :attr:`possible_agents` and implement :meth:`_observe_agents` (see
    :class:`KernelParallelEnv`).

    The public methods (:meth:`reset`, :meth:`step`, :meth:`observe`) add what
    every family needs: action validation, episode return/length bookkeeping
    and per-instance seeding.  They do not autoreset; the views do.
    """

    params_class: type = None  # type: ignore[assignment]
    presets: dict[str, Any] = {}
    #: Names of the agents of a multi-agent kernel (``None`` for single-agent).
    possible_agents: list[str] | None = None

    def __init__(self, params: Any = None, num_envs: int = 1):
        self.num_envs = _check_num_envs(num_envs)
        self.params = self.resolve_params(params)
        self.single_observation_space, self.single_action_space = self._build_spaces()
        self.rngs: list[np.random.Generator] = [
            seeding.np_random(None)[0] for _ in range(self.num_envs)
        ]
        self.episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self.episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self.episode_start_time = np.full(self.num_envs, time.perf_counter())
        self._has_reset = False

    # -- configuration ------------------------------------------------------
    @classmethod
    def resolve_params(cls, params: Any = None, **overrides: Any) -> Any:
        """Accept a params instance, a preset name, a dict of fields, or ``None``.

        ``overrides`` replace individual fields (validated again).
        """
        if params is None:
            params = cls.params_class()
        elif isinstance(params, str):
            if params not in cls.presets:
                raise ValueError(
                    f"preset = {params!r} is invalid for {cls.__name__}: "
                    f"allowed presets are {sorted(cls.presets)}"
                )
            params = cls.presets[params]
        elif isinstance(params, dict):
            params = cls.params_class(**params)
        elif not isinstance(params, cls.params_class):
            raise ValueError(
                f"params = {params!r} is invalid: expected a {cls.params_class.__name__}, "
                f"a preset name in {sorted(cls.presets)} or a dict of fields"
            )
        if overrides:
            params = dataclasses.replace(params, **overrides)
        return params

    # -- to implement ---------------------------------------------------------
    @abc.abstractmethod
    def _build_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        """Return (single observation space, single action space)."""

    @abc.abstractmethod
    def _reset_instances(self, idx: np.ndarray) -> None:
        """Start a new episode in instances ``idx``, drawing from ``self.rngs[i]``."""

    @abc.abstractmethod
    def _observe(self) -> np.ndarray:
        """Observations of all instances, shape ``(B, *single_observation_space.shape)``."""

    @abc.abstractmethod
    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance every instance by one decision.

        Returns ``reward (B,)``, ``terminated (B,)``, ``truncated (B,)`` and an info
        dict whose values are arrays with leading axis ``B``.
        """

    def _episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Domain metrics of the episodes ending in instances ``idx`` (before reset)."""
        return {}

    def _observe_agents(self) -> np.ndarray:
        """Per-agent observations ``(B, n_agents, ...)`` of a multi-agent kernel."""
        raise NotImplementedError(f"{type(self).__name__} is not a multi-agent kernel")

    # -- public API -------------------------------------------------------------
    def reset(self, seed: int | None = None, idx: Iterable[int] | None = None) -> np.ndarray:
        """Reset instances ``idx`` (all by default) and return all observations.

        With ``seed`` given, the k-th listed instance is seeded ``seed + k`` (with
        ``idx=None`` that is instance ``i`` seeded ``seed + i``).
        """
        if idx is None:
            idx = np.arange(self.num_envs)
        idx = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx, dtype=np.int64)
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"seed = {seed!r} is invalid: must be a non-negative integer or None")
            for k, i in enumerate(idx):
                self.rngs[i] = seeding.np_random(int(seed) + k)[0]
        if idx.size:
            self._reset_instances(idx)
        self.episode_return[idx] = 0.0
        self.episode_length[idx] = 0
        self.episode_start_time[idx] = time.perf_counter()
        self._has_reset = True
        return self.observe()

    def observe(self) -> np.ndarray:
        return self._observe()

    def observe_agents(self) -> np.ndarray:
        return self._observe_agents()

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Validate ``actions`` (leading axis ``B``) and advance every instance."""
        if not self._has_reset:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset()")
        actions = self.validate_actions(actions)
        reward, terminated, truncated, info = self._step(actions)
        self.episode_return += reward
        self.episode_length += 1
        return self._observe(), reward, terminated, truncated, info

    def episode_summary(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Return/length plus the family's domain metrics for instances ``idx``."""
        summary = {
            "return": self.episode_return[idx].copy(),
            "length": self.episode_length[idx].copy(),
        }
        summary.update(self._episode_summary(idx))
        return summary

    def action_masks(self) -> np.ndarray:
        """Feasible actions per instance, shape ``(B, n)``; all True unless overridden."""
        space = self.single_action_space
        if isinstance(space, spaces.Discrete):
            return np.ones((self.num_envs, int(space.n)), dtype=bool)
        if isinstance(space, spaces.MultiDiscrete):
            return np.ones((self.num_envs, int(np.sum(space.nvec))), dtype=bool)
        raise AttributeError(f"{type(self).__name__} has no discrete action masks")

    # -- validation ------------------------------------------------------------
    def validate_actions(self, actions: Any) -> np.ndarray:
        """Return ``actions`` as an array of shape ``(B, *action_shape)``.

        Raises :class:`InvalidActionError` naming the first offending instance
        and its value.  Nothing is clipped or wrapped.
        """
        space = self.single_action_space
        name = type(self).__name__
        arr = np.asarray(actions)
        expected = (self.num_envs, *space.shape)
        if arr.shape != expected:
            # Accept the obvious (B,) <-> (B, 1) mismatch of Discrete actions from SB3.
            if isinstance(space, spaces.Discrete) and arr.shape == (self.num_envs, 1):
                arr = arr.reshape(self.num_envs)
            else:
                raise InvalidActionError(
                    f"{name}: actions have shape {arr.shape}, expected {expected} "
                    f"(num_envs={self.num_envs}, action space {space})"
                )
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
            if arr.dtype.kind == "f":
                finite = np.isfinite(arr)
                integral = finite & (arr == np.round(np.where(finite, arr, 0)))
                bad = ~integral.reshape(self.num_envs, -1).all(axis=1)
                if bad.any():
                    i = int(np.argmax(bad))
                    raise InvalidActionError(
                        f"{name}: action of instance {i} is {arr[i]!r}, expected integers "
                        f"in {space}"
                    )
                arr = arr.astype(np.int64)
            elif arr.dtype.kind not in "biu":
                raise InvalidActionError(
                    f"{name}: actions have dtype {arr.dtype}, expected integers for {space}"
                )
            arr = arr.astype(np.int64, copy=False)
            if isinstance(space, spaces.Discrete):
                lo, hi = int(space.start), int(space.start + space.n - 1)
                bad = (arr < lo) | (arr > hi)
            elif isinstance(space, spaces.MultiDiscrete):
                bad = ((arr < space.start) | (arr >= space.start + space.nvec)).reshape(
                    self.num_envs, -1
                ).any(axis=1)
            else:
                bad = ((arr != 0) & (arr != 1)).reshape(self.num_envs, -1).any(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise InvalidActionError(
                    f"{name}: action of instance {i} is {arr[i]!r}, outside {space}"
                )
            return arr
        if isinstance(space, spaces.Box):
            if arr.dtype.kind not in "biuf":
                raise InvalidActionError(
                    f"{name}: actions have dtype {arr.dtype}, expected a float array for {space}"
                )
            arr = arr.astype(np.float64, copy=False)
            flat = arr.reshape(self.num_envs, -1)
            nan = ~np.isfinite(flat).all(axis=1)
            if nan.any():
                i = int(np.argmax(nan))
                raise InvalidActionError(
                    f"{name}: action of instance {i} contains NaN or inf: {arr[i]!r}"
                )
            low = np.broadcast_to(space.low, space.shape).reshape(-1)
            high = np.broadcast_to(space.high, space.shape).reshape(-1)
            # float32 spaces: accept values that round into the bounds.
            tol = 1e-6 * np.maximum(1.0, np.abs(np.concatenate([low, high])).max())
            out = ((flat < low - tol) | (flat > high + tol)).any(axis=1)
            if out.any():
                i = int(np.argmax(out))
                raise InvalidActionError(
                    f"{name}: action of instance {i} is {arr[i]!r}, outside the bounds "
                    f"[{space.low.min()}, {space.high.max()}] of {space}"
                )
            return arr
        raise TypeError(f"{name}: unsupported action space {space}")


# ---------------------------------------------------------------------------
# Helpers for turning batch info arrays into per-instance dicts
# ---------------------------------------------------------------------------
def _scalar(value: np.ndarray) -> Any:
    value = np.asarray(value)
    if value.ndim == 0:
        return value.item()
    return value.copy()


def _instance_info(info: dict, i: int) -> dict:
    # .item(i) on 1-D arrays is the cheap path: it is what the single env pays per step.
    return {k: (v.item(i) if v.ndim == 1 else v[i].copy()) for k, v in info.items()}


def _instance_infos(info: dict, num_envs: int) -> list[dict]:
    """Per-instance info dicts for the whole batch (SB3's list-of-dicts format).

    Column-wise ``tolist`` is far cheaper than ``num_envs * len(info)`` item calls.
    """
    keys = list(info)
    columns = [v.tolist() if v.ndim == 1 else list(v) for v in info.values()]
    if not keys:
        return [{} for _ in range(num_envs)]
    return [dict(zip(keys, row)) for row in zip(*columns)]


def _make_kernel(kernel_class: type[BatchedKernel], params: Any, num_envs: int, overrides: dict):
    params = kernel_class.resolve_params(params, **overrides)
    return kernel_class(params, num_envs=num_envs)


# ---------------------------------------------------------------------------
# View 1: gymnasium.Env (B = 1)
# ---------------------------------------------------------------------------
class KernelEnv(gym.Env):
    """A single environment: the kernel with one instance.

    ``params`` is a params instance, a preset name or a dict; further keyword
    arguments override individual fields (``gym.make(id, num_asps=10)``).
    """

    kernel_class: type[BatchedKernel] = None  # type: ignore[assignment]
    metadata = {"render_modes": []}

    def __init__(self, params: Any = None, render_mode: str | None = None, **overrides: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode = {render_mode!r} is invalid: gentwin envs do not render")
        self.kernel = _make_kernel(self.kernel_class, params, 1, overrides)
        self.params = self.kernel.params
        self.observation_space = self.kernel.single_observation_space
        self.action_space = self.kernel.single_action_space
        self.render_mode = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.kernel.reset(seed=seed)
        elif not self.kernel._has_reset:
            # Unseeded first reset: share gymnasium's freshly drawn generator.
            self.kernel.rngs[0] = self.np_random
            self.kernel.reset()
        else:
            self.kernel.reset()
        self._np_random = self.kernel.rngs[0]
        return self.kernel.observe()[0], {}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.kernel.step(np.asarray(action)[None])
        out = _instance_info(info, 0)
        if terminated[0] or truncated[0]:
            out["episode_summary"] = _instance_info(self.kernel.episode_summary(np.array([0])), 0)
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), out

    def action_masks(self) -> np.ndarray:
        return self.kernel.action_masks()[0]


# ---------------------------------------------------------------------------
# View 2: native gymnasium VectorEnv
# ---------------------------------------------------------------------------
class KernelVectorEnv(VectorEnv):
    """Native batched ``gymnasium.vector.VectorEnv`` (``AutoresetMode.SAME_STEP``).

    Created by ``gym.make_vec(id, num_envs=B)``.  Infos are dicts of arrays with
    the usual ``_key`` masks; finished instances carry ``final_obs`` and
    ``final_info`` (whose ``episode_summary`` holds the episode's metrics).
    """

    kernel_class: type[BatchedKernel] = None  # type: ignore[assignment]
    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, params: Any = None, render_mode: str | None = None,
                 **overrides: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode = {render_mode!r} is invalid: gentwin envs do not render")
        self.kernel = _make_kernel(self.kernel_class, params, num_envs, overrides)
        self.params = self.kernel.params
        self.num_envs = self.kernel.num_envs
        self.single_observation_space = self.kernel.single_observation_space
        self.single_action_space = self.kernel.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self.metadata = dict(type(self).metadata)
        # Every step info is present for every instance: one shared read-only mask.
        self._all_present = np.ones(self.num_envs, dtype=bool)
        self._all_present.flags.writeable = False

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        if seed is None or isinstance(seed, (int, np.integer)):
            if seed is not None:
                self._np_random, self._np_random_seed = seeding.np_random(int(seed))
            obs = self.kernel.reset(seed=seed)
            return obs.copy(), {}
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(
                f"seed = {seed!r} is invalid: expected one integer (instance i gets seed + i), "
                f"None, or a list of {self.num_envs} seeds"
            )
        for i, s in enumerate(seeds):
            self.kernel.reset(seed=s, idx=[i])
        return self.kernel.observe().copy(), {}

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.kernel.step(actions)
        infos = {}
        for key, value in info.items():
            infos[key] = value
            infos[f"_{key}"] = self._all_present
        done = terminated | truncated
        if done.any():
            idx = np.flatnonzero(done)
            summary = self.kernel.episode_summary(idx)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in idx:
                final_obs[i] = obs[i].copy()
            final_info: dict[str, Any] = {}
            for key, value in info.items():
                final_info[key] = value
                final_info[f"_{key}"] = done.copy()
            final_info["episode_summary"] = {
                key: _scatter(value, idx, self.num_envs) for key, value in summary.items()
            }
            final_info["_episode_summary"] = done.copy()
            infos["final_obs"] = final_obs
            infos["_final_obs"] = done.copy()
            infos["final_info"] = final_info
            infos["_final_info"] = done.copy()
            obs = self.kernel.reset(idx=idx)
        return obs.copy(), reward.copy(), terminated.copy(), truncated.copy(), infos

    def action_masks(self) -> np.ndarray:
        return self.kernel.action_masks()


def _scatter(values: np.ndarray, idx: np.ndarray, num_envs: int) -> np.ndarray:
    values = np.asarray(values)
    out = np.zeros((num_envs, *values.shape[1:]), dtype=values.dtype)
    out[idx] = values
    return out


# ---------------------------------------------------------------------------
# View 3: Stable-Baselines3 VecEnv
# ---------------------------------------------------------------------------
class KernelSB3VecEnv(SB3VecEnv):
    """Stable-Baselines3 ``VecEnv`` over a kernel: SB3 trains on the batch directly.

    Finished instances are reset in the same step; their info carries
    ``terminal_observation``, ``TimeLimit.truncated`` and an ``episode`` dict with
    SB3's ``r``/``l``/``t`` plus the family's domain summary, so SB3's
    ``rollout/ep_rew_mean`` logging works without a ``VecMonitor``.
    """

    #: Methods whose value differs per instance and is computed for the batch.
    _batch_methods = ("action_masks",)

    def __init__(self, kernel: BatchedKernel):
        self.kernel = kernel
        self.render_mode = None
        super().__init__(kernel.num_envs, kernel.single_observation_space, kernel.single_action_space)
        self._actions: np.ndarray | None = None
        self._started = False

    # SB3 seeds via VecEnv.seed() -> self._seeds = [seed + i]; honour that mapping.
    def reset(self):
        seeds = self._seeds
        if all(s is None for s in seeds):
            obs = self.kernel.reset()
        else:
            first = seeds[0]
            if first is not None and all(s == first + i for i, s in enumerate(seeds)):
                obs = self.kernel.reset(seed=int(first))
            else:
                for i, s in enumerate(seeds):
                    self.kernel.reset(seed=s, idx=[i])
                obs = self.kernel.observe()
        self._reset_seeds()
        self._reset_options()
        self._started = True
        return obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        if not self._started:
            self.reset()
        obs, reward, terminated, truncated, info = self.kernel.step(self._actions)
        done = terminated | truncated
        infos = _instance_infos(info, self.num_envs)
        if done.any():
            idx = np.flatnonzero(done)
            summary = self.kernel.episode_summary(idx)
            now = time.perf_counter()
            for k, i in enumerate(idx):
                episode = {key: _scalar(value[k]) for key, value in summary.items()}
                episode["r"] = float(summary["return"][k])
                episode["l"] = int(summary["length"][k])
                episode["t"] = round(now - self.kernel.episode_start_time[i], 6)
                infos[i]["episode"] = episode
                infos[i]["terminal_observation"] = obs[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs = self.kernel.reset(idx=idx)
        return obs.copy(), reward.astype(np.float32), done.copy(), infos

    def close(self) -> None:
        pass

    def get_images(self):
        return [None] * self.num_envs

    def _indices(self, indices) -> list[int]:
        return list(self._get_indices(indices))

    def has_attr(self, attr_name: str) -> bool:
        return attr_name in self._batch_methods or hasattr(self.kernel, attr_name)

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        if attr_name == "render_mode":
            return [None] * len(self._indices(indices))
        value = getattr(self.kernel, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(
            f"set_attr({attr_name!r}) is not supported: kernel parameters are frozen; "
            f"create a new environment with different params instead"
        )

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        idx = self._indices(indices)
        if method_name in self._batch_methods:
            batch = getattr(self.kernel, method_name)(*method_args, **method_kwargs)
            return [batch[i] for i in idx]
        raise AttributeError(
            f"env_method({method_name!r}) is not supported by {type(self).__name__}: "
            f"per-instance methods available are {list(self._batch_methods)}"
        )

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def action_masks(self) -> np.ndarray:
        return self.kernel.action_masks()


def make_sb3_vec_env(env_id: str, num_envs: int = 1, seed: int | None = None, **kwargs: Any):
    """SB3 ``VecEnv`` for a registered gentwin id, over one batched kernel.

    ``kwargs`` go to the environment as in ``gym.make`` (``params=``, field overrides).
    """
    spec = gym.spec(env_id)
    entry = spec.vector_entry_point
    if isinstance(entry, str):
        from gymnasium.envs.registration import load_env_creator

        entry = load_env_creator(entry)
    kernel_class = getattr(entry, "kernel_class", None)
    if kernel_class is None:
        raise ValueError(f"env_id = {env_id!r} is not a gentwin kernel environment")
    merged = dict(spec.kwargs)
    merged.update(kwargs)
    params = merged.pop("params", None)
    venv = KernelSB3VecEnv(_make_kernel(kernel_class, params, num_envs, merged))
    if seed is not None:
        venv.seed(seed)
    return venv


# ---------------------------------------------------------------------------
# View 4: PettingZoo ParallelEnv (multi-agent kernels, B = 1)
# ---------------------------------------------------------------------------
class KernelParallelEnv(ParallelEnv):
    """PettingZoo ``ParallelEnv`` over a multi-agent kernel with one instance.

    The kernel must define ``possible_agents``, ``single_agent_observation_space``,
    ``single_agent_action_space`` and :meth:`BatchedKernel._observe_agents`; its
    joint action is the per-agent actions stacked in ``possible_agents`` order and
    laid out in the central view's action shape (the same action it takes), and its info carries
    ``agent_rewards`` of shape ``(B, n_agents)``.  Per-agent infos get every info
    entry whose second axis is the agent axis.
    """

    kernel_class: type[BatchedKernel] = None  # type: ignore[assignment]
    metadata = {"render_modes": [], "name": "gentwin_parallel_v0", "is_parallelizable": True}

    def __init__(self, params: Any = None, render_mode: str | None = None, **overrides: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode = {render_mode!r} is invalid: gentwin envs do not render")
        self.kernel = _make_kernel(self.kernel_class, params, 1, overrides)
        if self.kernel.possible_agents is None:
            raise TypeError(f"{self.kernel_class.__name__} is not a multi-agent kernel")
        self.params = self.kernel.params
        self.possible_agents = list(self.kernel.possible_agents)
        self.agents: list[str] = []
        self.render_mode = None
        self._obs_space = self.kernel.single_agent_observation_space
        self._act_space = self.kernel.single_agent_action_space
        self.state_space = self.kernel.single_observation_space
        self.observation_spaces = {a: self._obs_space for a in self.possible_agents}
        self.action_spaces = {a: self._act_space for a in self.possible_agents}

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def _agent_obs(self) -> dict[str, np.ndarray]:
        obs = self.kernel.observe_agents()[0]
        return {a: obs[k].copy() for k, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.kernel.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return self._agent_obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.possible_agents]
        if missing or unknown:
            raise InvalidActionError(
                f"actions must name every live agent exactly: missing {missing}, unknown {unknown}"
            )
        joint = np.stack([np.asarray(actions[a]) for a in self.possible_agents])
        expected = (len(self.possible_agents), *self._act_space.shape)
        if joint.shape != expected:
            raise InvalidActionError(
                f"per-agent actions stack to shape {joint.shape}, expected {expected} "
                f"({len(self.possible_agents)} agents, action space {self._act_space})"
            )
        # The joint action is the agents' actions in order, laid out as the central view's action.
        joint = joint.reshape(1, *self.kernel.single_action_space.shape)
        _, reward, terminated, truncated, info = self.kernel.step(joint)
        agent_rewards = info["agent_rewards"][0]
        n = len(self.possible_agents)
        obs = self._agent_obs()
        rewards = {a: float(agent_rewards[k]) for k, a in enumerate(self.possible_agents)}
        terms = {a: bool(terminated[0]) for a in self.possible_agents}
        truncs = {a: bool(truncated[0]) for a in self.possible_agents}
        infos: dict[str, dict] = {a: {} for a in self.possible_agents}
        for key, value in info.items():
            value = np.asarray(value)[0]
            for k, a in enumerate(self.possible_agents):
                if value.ndim >= 1 and value.shape[0] == n and key != "agent_rewards":
                    infos[a][key] = _scalar(value[k])
                elif key != "agent_rewards":
                    infos[a][key] = _scalar(value)
        if terminated[0] or truncated[0]:
            summary = _instance_info(self.kernel.episode_summary(np.array([0])), 0)
            for a in self.possible_agents:
                infos[a]["episode_summary"] = summary
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        return self.kernel.observe()[0].copy()

    def close(self) -> None:
        pass

