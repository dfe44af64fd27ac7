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
``SyncVectorEnv`` of single envs seeded the same way in the same ``autoreset_mode``.
Later resets without a seed continue the instance's own generator, as
``gymnasium.Env`` does.  Seeds are Python or NumPy non-negative integers in every view.

All random draws happen in :meth:`BatchedKernel._reset_instances` (and, for
kernels that need fresh randomness during an episode, in per-instance blocks
drawn there).  That is the one place with a loop over instances: it runs once
per episode per instance, while :meth:`BatchedKernel.step` stays pure array code.

Autoreset
---------
The native vector env takes ``autoreset_mode`` (``gym.make_vec(id, num_envs=B,
autoreset_mode=AutoresetMode.NEXT_STEP)``, the way Gymnasium passes arguments to a
``vector_entry_point``) and declares it in ``metadata["autoreset_mode"]``:
``SAME_STEP`` (the default, and the only mode of the SB3 view, which is what SB3
expects), ``NEXT_STEP`` (Gymnasium's default, which its vector observation
wrappers require) or ``DISABLED``.  In ``SAME_STEP`` the returned observation is
the first of the new episode; the last one of the old episode is in
``info["final_obs"]`` (Gymnasium) or ``info["terminal_observation"]`` (SB3), and
the episode summary in ``info["final_info"]["episode_summary"]`` (Gymnasium) or
``info["episode"]`` (SB3).  In ``NEXT_STEP`` and ``DISABLED`` the summary is in
``info["episode_summary"]`` of the finishing step.  See :class:`KernelVectorEnv`.

A kernel's ``_step`` must accept instances whose episode has ended (``NEXT_STEP``
steps them once with the batch, discards the result and resets them) and must
draw no randomness.

Copies
------
``copy.deepcopy`` and ``pickle`` of every view are exact, mid-episode included:
array attributes that share memory (flat views used for cheap gathers) are
restored as views of one buffer (:class:`ExactCopy`).

Actions
-------
One rule per space kind, the same in every view (:func:`check_actions`): integers
only for ``Discrete``/``MultiDiscrete``/``MultiBinary``, float arrays for ``Box``,
exactly the space's shape, every value in the space; anything else raises
:class:`InvalidActionError` naming the action (or instance, or agent) and its value.
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
    "check_actions",
    "check_choice",
    "check_field",
    "check_memory",
    "check_seed",
    "make_sb3_vec_env",
]


class InvalidActionError(ValueError):
    """An action outside the action space (wrong shape, dtype, NaN or range)."""


# ---------------------------------------------------------------------------
# Parameter validation helpers, used by every family's frozen Params dataclass.
# ---------------------------------------------------------------------------
def _declared_default(params: Any, name: str) -> Any:
    """The dataclass default of field ``name`` (``None`` if it has none)."""
    if not dataclasses.is_dataclass(params):
        return None
    for field in dataclasses.fields(params):
        if field.name == name:
            if field.default is not dataclasses.MISSING:
                return field.default
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
    return None


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
    # A field declared with a tuple default takes a sequence, any other a single number:
    # a scalar where a sequence belongs (or the reverse) would fail later in a TypeError.
    declared = _declared_default(params, name)
    if declared is not None:
        if isinstance(declared, (tuple, list)) and not isinstance(value, (tuple, list, np.ndarray)):
            raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be a sequence of numbers")
        if not isinstance(declared, (tuple, list)) and np.ndim(value) != 0:
            raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be a single number")
    values = np.atleast_1d(np.asarray(value))
    if values.dtype.kind == "b" and not isinstance(declared, (bool, np.bool_)):
        raise ValueError(f"{owner}.{name} = {value!r} is invalid: must be a number, not a bool")
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


#: Most memory a kernel may take for the state of all its instances.  Beyond it,
#: construction raises ``ValueError`` instead of failing in a deep ``MemoryError``
#: (or swapping) when the arrays are allocated.
MAX_STATE_BYTES = 8 * 2**30


def check_memory(owner: str, num_envs: int, bytes_per_instance: float, fields: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``num_envs`` instances would need more than :data:`MAX_STATE_BYTES`.

    ``bytes_per_instance`` is the family's estimate of one instance's arrays (state,
    episode draws and the reset's temporaries); ``fields`` are the size-like
    parameters it depends on, named in the message.
    """
    total = float(bytes_per_instance) * num_envs
    if total > MAX_STATE_BYTES:
        named = ", ".join(f"{key} = {value!r}" for key, value in fields.items())
        fit = int(MAX_STATE_BYTES // max(float(bytes_per_instance), 1.0))
        raise ValueError(
            f"{owner}: {named} with num_envs = {num_envs} is invalid: the episode state would take "
            f"{total / 2**30:.1f} GiB, more than the {MAX_STATE_BYTES / 2**30:.0f} GiB allowed "
            f"(gentwin.envs.core.MAX_STATE_BYTES); with these parameters at most {fit} instances fit"
        )


def check_seed(seed: Any) -> int | None:
    """``None`` or the seed as a Python int; every view accepts Python and NumPy integers."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed = {seed!r} is invalid: must be a non-negative integer (Python or NumPy) or None")
    return int(seed)


def _check_num_envs(num_envs: Any) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs = {num_envs!r} is invalid: must be an integer >= 1")
    return int(num_envs)


# ---------------------------------------------------------------------------
# Exact copies: arrays that share memory keep sharing it
# ---------------------------------------------------------------------------
def _memory_owner(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class ExactCopy:
    """``copy.deepcopy`` and ``pickle`` that keep the memory layout of array attributes.

    NumPy copies and pickles every array on its own, so two attributes that are
    views of one buffer (a kernel's state and a flat view of it used for cheap
    gathers) come back as independent arrays: writes through one no longer reach
    the other and the copy silently runs different dynamics.  Here every group of
    array attributes sharing a buffer is stored as that buffer once plus each
    member's offset, shape and strides, and rebuilt as views of the restored buffer.
    Read-only flags are restored too.
    """

    _SHARED = "__gentwin_shared_arrays__"
    _READONLY = "__gentwin_readonly_arrays__"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        groups: dict[int, list[str]] = {}
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                groups.setdefault(id(_memory_owner(value)), []).append(key)
        shared = []
        for keys in groups.values():
            if len(keys) < 2:
                continue
            owner = _memory_owner(state[keys[0]])
            if not (owner.flags.c_contiguous or owner.flags.f_contiguous):
                raise TypeError(
                    f"{type(self).__name__}: attributes {keys} share a non-contiguous buffer "
                    f"that cannot be copied exactly"
                )
            start = owner.__array_interface__["data"][0]
            members = []
            for key in keys:
                a = state.pop(key)
                offset = a.__array_interface__["data"][0] - start
                members.append((key, offset, a.shape, a.strides, a.dtype, bool(a.flags.writeable)))
            shared.append((owner, members))
        state[self._SHARED] = shared
        state[self._READONLY] = [
            key for key, value in state.items() if isinstance(value, np.ndarray) and not value.flags.writeable
        ]
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        shared = state.pop(self._SHARED, [])
        readonly = state.pop(self._READONLY, [])
        self.__dict__.update(state)
        for key in readonly:
            self.__dict__[key].flags.writeable = False
        for owner, members in shared:
            # An F-ordered buffer is the C-ordered buffer of its transpose.
            buffer = owner if owner.flags.c_contiguous else owner.T
            for key, offset, shape, strides, dtype, writeable in members:
                view = np.ndarray(shape, dtype, buffer=buffer, offset=offset, strides=strides)
                view.flags.writeable = writeable
                self.__dict__[key] = view


# ---------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------
class BatchedKernel(ExactCopy, abc.ABC):
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
            cls._check_field_names(params)
            params = cls.params_class(**params)
        elif not isinstance(params, cls.params_class):
            raise ValueError(
                f"params = {params!r} is invalid: expected a {cls.params_class.__name__}, "
                f"a preset name in {sorted(cls.presets)} or a dict of fields"
            )
        if overrides:
            cls._check_field_names(overrides)
            params = dataclasses.replace(params, **overrides)
        return params

    @classmethod
    def _check_field_names(cls, fields: dict) -> None:
        names = [f.name for f in dataclasses.fields(cls.params_class)]
        unknown = [k for k in fields if k not in names]
        if unknown:
            raise ValueError(
                f"{cls.params_class.__name__} has no field {unknown[0]!r}: allowed fields are {names}"
            )

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
        seed = check_seed(seed)
        if seed is not None:
            for k, i in enumerate(idx):
                self.rngs[i] = seeding.np_random(seed + k)[0]
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
        return self.step_checked(self.validate_actions(actions))

    def step_checked(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Advance every instance by actions already checked by :func:`check_actions`.

        The views check actions themselves (so errors speak of the user's action) and
        call this.
        """
        if not self._has_reset:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset()")
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

        Applies the rule of :func:`check_actions`; raises :class:`InvalidActionError`
        naming the first offending instance and its value.  Nothing is clipped or wrapped.
        """
        return check_actions(self.single_action_space, actions, self.num_envs, type(self).__name__)


# ---------------------------------------------------------------------------
# The action rule, one per space kind, shared by every view
# ---------------------------------------------------------------------------
def _allowed(space: spaces.Space) -> str:
    """What a valid action of ``space`` is, in words (for error messages)."""
    if isinstance(space, spaces.Discrete):
        lo = int(space.start)
        return f"an integer in [{lo}, {lo + int(space.n) - 1}] (a Python or NumPy integer, not a float or bool)"
    if isinstance(space, spaces.MultiDiscrete):
        return f"an integer array of shape {space.shape} with entry k in [start_k, start_k + nvec_k - 1]"
    if isinstance(space, spaces.MultiBinary):
        return f"an integer array of shape {space.shape} with entries 0 or 1"
    if isinstance(space, spaces.Box):
        return (
            f"a float array of shape {space.shape}, finite and inside [low, high] once rounded to "
            f"{np.dtype(space.dtype).name} (integer and bool arrays are rejected)"
        )
    return str(space)


def check_actions(
    space: spaces.Space, actions: Any, num_envs: int | None, who: str, label: str | None = None
) -> np.ndarray:
    """The action rule of every gentwin view; returns the kernel's ``(B, *shape)`` array.

    ``num_envs=None`` checks one action (single env, one PettingZoo agent) and
    returns it with a leading batch axis of 1; otherwise ``actions`` holds one
    action per instance.  What is accepted, per space kind:

    * ``Discrete``: integers only -- a Python int, a NumPy integer or a 0-d integer
      array for one action, an integer array of shape ``(B,)`` (or SB3's ``(B, 1)``)
      for a batch.  Floats (even ``3.0``), bools, strings, ``None`` and ``[3]`` raise.
    * ``MultiDiscrete`` / ``MultiBinary``: integer arrays (or nested lists of
      ints) of exactly the space's shape (with the batch axis in front for a batch),
      every entry in range.  Float and bool arrays raise.
    * ``Box``: float arrays (float16/32/64) or nested lists of Python numbers, of
      exactly the space's shape, finite, and inside ``[low, high]`` after rounding to
      the space's dtype (so a float64 value that rounds onto a float32 bound is
      accepted, a float32 value above ``high`` is not).  Integer and bool *arrays*
      raise (as Gymnasium's ``Box.contains`` rejects them).  The kernel receives the
      values as given, in float64.

    Errors are :class:`InvalidActionError` and speak of the user's action: its shape
    against the expected one, its dtype, or the offending instance (``label``, by
    default ``instance i``) and its value.
    """
    single = num_envs is None
    is_box = isinstance(space, spaces.Box)
    if not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise TypeError(f"{who}: unsupported action space {space}")
    noun = f"action of {label}" if label else ("action" if single else "actions")
    given = actions
    arr = np.asarray(actions)
    if is_box and arr.dtype.kind in "iu" and not isinstance(given, (np.ndarray, np.generic)):
        # Python numbers (e.g. a list [0, 1]) are read as floats, as Gymnasium does.
        arr = arr.astype(np.float64)
    kind = arr.dtype.kind
    if (is_box and kind != "f") or (not is_box and kind not in "iu"):
        expected = "a float array" if is_box else "integers"
        raise InvalidActionError(
            f"{who}: {noun} {given!r} {'has' if single else 'have'} dtype {arr.dtype}, "
            f"expected {expected} for {space}: {_allowed(space)}"
        )
    shape = space.shape
    n = 1 if single else num_envs
    expected_shape = shape if single else (num_envs, *shape)
    if arr.shape != expected_shape:
        if not single and isinstance(space, spaces.Discrete) and arr.shape == (num_envs, 1):
            arr = arr.reshape(num_envs)  # SB3 sometimes hands Discrete actions as (B, 1)
        elif single:
            raise InvalidActionError(
                f"{who}: {noun} has shape {arr.shape}, expected {shape} for {space}: {_allowed(space)}"
            )
        else:
            raise InvalidActionError(
                f"{who}: actions have shape {arr.shape}, expected {expected_shape}: one action of "
                f"shape {shape} per instance (num_envs={num_envs}, action space {space})"
            )
    arr = arr.reshape(n, *shape)
    if is_box:
        flat = arr.reshape(n, -1)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidActionError(
                f"{who}: action of {label or f'instance {i}'} contains NaN or inf: {arr[i]!r}"
            )
        rounded = flat.astype(space.dtype, copy=False)
        low = space.low.reshape(-1)
        high = space.high.reshape(-1)
        bad = ((rounded < low) | (rounded > high)).any(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidActionError(
                f"{who}: action of {label or f'instance {i}'} is {arr[i]!r}, outside the bounds "
                f"[{space.low.min()}, {space.high.max()}] of {space}"
            )
        return arr.astype(np.float64, copy=False)
    arr = arr.astype(np.int64, copy=False)
    if isinstance(space, spaces.Discrete):
        lo = int(space.start)
        bad = (arr < lo) | (arr > lo + int(space.n) - 1)
    elif isinstance(space, spaces.MultiDiscrete):
        bad = ((arr < space.start) | (arr >= space.start + space.nvec)).reshape(n, -1).any(axis=1)
    else:
        bad = ((arr != 0) & (arr != 1)).reshape(n, -1).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        value = arr[i] if not single else (given if np.ndim(given) == 0 else arr[0])
        raise InvalidActionError(
            f"{who}: action of {label or f'instance {i}'} is {value!r}, outside {space}: {_allowed(space)}"
        )
    return arr


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
class KernelEnv(ExactCopy, gym.Env):
    """A single environment: the kernel with one instance.

    ``params`` is a params instance, a preset name or a dict; further keyword
    arguments override individual fields (``gym.make(id, num_asps=10)``).
    """

    kernel_class: type[BatchedKernel] = None  # type: ignore[assignment]
    metadata = {"render_modes": []}

    def __init__(self, params: Any = None, render_mode: str | None = None, **overrides: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode = {render_mode!r} is invalid: gentwin envs do not render")
        if "autoreset_mode" in overrides:
            raise ValueError(
                f"autoreset_mode = {overrides['autoreset_mode']!r} is invalid here: a single env does not "
                f"autoreset; for gym.make_vec(..., vectorization_mode='sync' or 'async') pass "
                f"vector_kwargs={{'autoreset_mode': ...}}, for the native vector env autoreset_mode=..."
            )
        self.kernel = _make_kernel(self.kernel_class, params, 1, overrides)
        self.params = self.kernel.params
        self.observation_space = self.kernel.single_observation_space
        self.action_space = self.kernel.single_action_space
        self.render_mode = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = check_seed(seed)  # NumPy integers too, as the vector views accept them
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
        batch = check_actions(self.action_space, action, None, type(self).__name__)
        obs, reward, terminated, truncated, info = self.kernel.step_checked(batch)
        out = _instance_info(info, 0)
        if terminated[0] or truncated[0]:
            out["episode_summary"] = _instance_info(self.kernel.episode_summary(np.array([0])), 0)
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), out

    def action_masks(self) -> np.ndarray:
        return self.kernel.action_masks()[0]


# ---------------------------------------------------------------------------
# View 2: native gymnasium VectorEnv
# ---------------------------------------------------------------------------
def _check_autoreset_mode(mode: Any) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    try:
        return AutoresetMode(mode)
    except ValueError:
        raise ValueError(
            f"autoreset_mode = {mode!r} is invalid: allowed are AutoresetMode.SAME_STEP, "
            f"AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED or their values "
            f"{[m.value for m in AutoresetMode]}"
        ) from None


class KernelVectorEnv(ExactCopy, VectorEnv):
    """Native batched ``gymnasium.vector.VectorEnv`` of a kernel.

    Created by ``gym.make_vec(id, num_envs=B)``; ``autoreset_mode`` (an
    ``AutoresetMode`` or its value) selects how finished instances restart, and is
    declared in ``metadata["autoreset_mode"]``:

    * ``SAME_STEP`` (default, what SB3 expects): the finishing step returns the
      first observation of the new episode; the last one is in
      ``info["final_obs"]``, the finished step's infos and the episode summary in
      ``info["final_info"]`` (``final_info["episode_summary"]``).
    * ``NEXT_STEP`` (Gymnasium's default, required by ``NormalizeObservation`` and
      the other vector observation wrappers): the finishing step returns the last
      observation and ``info["episode_summary"]`` (masked by
      ``_episode_summary``); the next ``step`` resets those instances, ignores
      their actions (they are still checked) and returns reward 0, not terminated,
      not truncated, with their step infos masked out.
    * ``DISABLED``: no autoreset; stepping an instance whose episode has ended
      raises until it is reset with ``reset(options={"reset_mask": mask})``.

    In every mode the env equals a ``SyncVectorEnv`` of single envs with the same
    ``autoreset_mode`` and seeds, bit for bit: observations, rewards, flags,
    ``final_obs`` and every info entry the ``SyncVectorEnv`` reports (in
    ``SAME_STEP`` the finishing step's infos also stay at the top level for the
    finished instances, where ``SyncVectorEnv`` has the reset's empty info).  Infos
    are dicts of arrays with the usual ``_key`` masks.  ``reset(options={"reset_mask": mask})`` resets only the
    masked instances (instance ``i`` seeded ``seed + i`` if a seed is given).
    """

    kernel_class: type[BatchedKernel] = None  # type: ignore[assignment]
    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, params: Any = None, render_mode: str | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP, **overrides: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode = {render_mode!r} is invalid: gentwin envs do not render")
        self.autoreset_mode = _check_autoreset_mode(autoreset_mode)
        self.kernel = _make_kernel(self.kernel_class, params, num_envs, overrides)
        self.params = self.kernel.params
        self.num_envs = self.kernel.num_envs
        self.single_observation_space = self.kernel.single_observation_space
        self.single_action_space = self.kernel.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self.metadata = dict(type(self).metadata)
        self.metadata["autoreset_mode"] = self.autoreset_mode
        # Every step info is present for every instance: one shared read-only mask.
        self._all_present = np.ones(self.num_envs, dtype=bool)
        self._all_present.flags.writeable = False
        # Instances whose episode ended in the last step (NEXT_STEP resets them next
        # step; DISABLED refuses to step them until they are reset).
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            if not isinstance(mask, np.ndarray) or mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] = {mask!r} is invalid: expected a bool array of shape "
                    f"({self.num_envs},)"
                )
            if not mask.any():
                raise ValueError("options['reset_mask'] is invalid: it must select at least one instance")
        if seed is None or isinstance(seed, (int, np.integer)):
            seed = check_seed(seed)
            if mask is None:
                if seed is not None:
                    self._np_random, self._np_random_seed = seeding.np_random(seed)
                self.kernel.reset(seed=seed)
                self._ended[:] = False
                return self.kernel.observe().copy(), {}
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            if not isinstance(seed, (Sequence, np.ndarray)) or isinstance(seed, str):
                raise ValueError(
                    f"seed = {seed!r} is invalid: expected a non-negative integer (instance i gets "
                    f"seed + i), None, or a list of {self.num_envs} seeds"
                )
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(
                    f"seed = {seed!r} is invalid: expected one integer (instance i gets seed + i), "
                    f"None, or a list of {self.num_envs} seeds"
                )
        selected = range(self.num_envs) if mask is None else np.flatnonzero(mask)
        for i in selected:
            self.kernel.reset(seed=check_seed(seeds[i]), idx=[i])
            self._ended[i] = False
        return self.kernel.observe().copy(), {}

    def step(self, actions: Any):
        actions = check_actions(self.single_action_space, actions, self.num_envs, type(self).__name__)
        mode = self.autoreset_mode
        restart = None
        if self._ended.any():
            if mode == AutoresetMode.DISABLED:
                raise RuntimeError(
                    f"{type(self).__name__}: instances {np.flatnonzero(self._ended).tolist()} have finished "
                    f"their episodes and autoreset_mode is DISABLED: reset them first with "
                    f"reset(options={{'reset_mask': mask}})"
                )
            if mode == AutoresetMode.NEXT_STEP:
                restart = np.flatnonzero(self._ended)
        # NEXT_STEP: instances to restart are stepped once more with the batch (their
        # results are discarded) and then reset, which is what SyncVectorEnv does to a
        # single env in this mode: reset, no step.  Kernels draw no randomness in step.
        obs, reward, terminated, truncated, info = self.kernel.step_checked(actions)
        done = terminated | truncated
        if restart is not None or (done.any() and mode == AutoresetMode.SAME_STEP):
            # Info arrays may be the kernel's own state, which a reset overwrites.
            info = {key: value.copy() for key, value in info.items()}
        if restart is not None:
            obs = self.kernel.reset(idx=restart)
            reward, terminated, truncated = reward.copy(), terminated.copy(), truncated.copy()
            reward[restart] = 0.0
            terminated[restart] = False
            truncated[restart] = False
            done = terminated | truncated
            present = ~self._ended
        else:
            present = self._all_present
        infos: dict[str, Any] = {}
        for key, value in info.items():
            if restart is not None:
                value[restart] = 0
            infos[key] = value
            infos[f"_{key}"] = present
        if mode == AutoresetMode.SAME_STEP:
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
                final_info["episode_summary"] = _summary_info(summary, idx, done)
                final_info["_episode_summary"] = done.copy()
                infos["final_obs"] = final_obs
                infos["_final_obs"] = done.copy()
                infos["final_info"] = final_info
                infos["_final_info"] = done.copy()
                obs = self.kernel.reset(idx=idx)
        else:
            if done.any():
                idx = np.flatnonzero(done)
                summary = self.kernel.episode_summary(idx)
                infos["episode_summary"] = _summary_info(summary, idx, done)
                infos["_episode_summary"] = done.copy()
            self._ended = done.copy()
        return obs.copy(), reward.copy(), terminated.copy(), truncated.copy(), infos

    def action_masks(self) -> np.ndarray:
        return self.kernel.action_masks()


def _summary_info(summary: dict, idx: np.ndarray, done: np.ndarray) -> dict:
    """Episode summaries of instances ``idx`` as a vector info dict with ``_key`` masks."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        out[key] = _scatter(value, idx, len(done))
        out[f"_{key}"] = done.copy()
    return out


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
    entry whose second axis is the agent axis; the action-shaped entries
    (:attr:`action_info_keys`, laid out like the joint action) are split the way the joint
    action is assembled, so each agent gets its own part in its action space's shape.
    """

    #: Info entries laid out as the central view's action (the expert's action, the played one).
    action_info_keys: tuple[str, ...] = ("expert_action", "played_action")

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
        # Each agent's action is checked on its own (the rule of check_actions), so an
        # error names the agent and its action.
        name = type(self).__name__
        joint = np.concatenate([
            check_actions(self._act_space, actions[a], None, name, f"agent {a!r}")
            for a in self.possible_agents
        ])
        # The joint action is the agents' actions in order, laid out as the central view's action.
        joint = joint.reshape(1, *self.kernel.single_action_space.shape)
        _, reward, terminated, truncated, info = self.kernel.step_checked(joint)
        agent_rewards = info["agent_rewards"][0]
        n = len(self.possible_agents)
        obs = self._agent_obs()
        rewards = {a: float(agent_rewards[k]) for k, a in enumerate(self.possible_agents)}
        terms = {a: bool(terminated[0]) for a in self.possible_agents}
        truncs = {a: bool(truncated[0]) for a in self.possible_agents}
        infos: dict[str, dict] = {a: {} for a in self.possible_agents}
        agent_size = int(np.prod(self._act_space.shape))
        for key, value in info.items():
            value = np.asarray(value)[0]
            if key in self.action_info_keys and value.size == n * agent_size:
                # The inverse of the joint action's layout: agent k's part is the k-th block.
                parts = value.reshape(n, *self._act_space.shape)
                for k, a in enumerate(self.possible_agents):
                    infos[a][key] = parts[k].copy()
                continue
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

    def agent_action_masks(self) -> np.ndarray:
        """Every agent's allowed options now, ``(n_agents, n_1 + .. + n_D)`` in ``possible_agents`` order.

        The kernel's ``action_masks()`` are laid out like the joint action, so agent ``k``'s
        are its ``k``-th block (flat bool, as sb3-contrib expects); raises ``AttributeError``
        where the kernel has no masks (continuous actions).
        """
        return self.kernel.action_masks()[0].reshape(len(self.possible_agents), -1).copy()

    def action_mask(self, agent: str) -> np.ndarray:
        """The allowed options of ``agent`` now: its row of :meth:`agent_action_masks`."""
        if agent not in self.possible_agents:
            raise ValueError(f"agent = {agent!r} is invalid: allowed are {self.possible_agents}")
        return self.agent_action_masks()[self.possible_agents.index(agent)]

    def state(self) -> np.ndarray:
        return self.kernel.observe()[0].copy()

    def close(self) -> None:
        pass

