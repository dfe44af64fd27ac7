"""Property-based robustness of every registered id (hypothesis).

Random valid and invalid parameters, actions, resets and copies, on every
Gymnasium id.  What must hold:

* a parameter value either gives a working environment or a ``ValueError`` that
  names a field (never another exception type, never a hang);
* an action is accepted exactly when the documented rule (``check_actions`` in
  ``envs/core.py``) says so, and a rejected one raises ``InvalidActionError``
  without changing the environment;
* along any sequence of steps, resets, deep copies and pickles: observations stay
  in the space, rewards are finite, and the family's invariants hold (capacity
  never exceeded, budgets, probabilities, task and request accounting).

Examples are few and episodes short, so the file runs in well under a minute.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gentwin  # noqa: F401
from gentwin.envs import ENVIRONMENTS, InvalidActionError

ENV_IDS = [entry[0] for entry in ENVIRONMENTS]

#: Few, deterministic examples; no example database written into the repository.
FAST = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Field overrides that end episodes within a few steps.
SHORT_EPISODES = {
    "gentwin/AspSelection-v0": {"tasks_per_episode": 6},
    "gentwin/ContractDesign-Dynamic-v0": {"periods_per_episode": 3},
    "gentwin/ModelCaching-v0": {"num_slots": 4},
    "gentwin/TaskOffloading-v0": {"episode_slots": 3},
    "gentwin/RisIsac-v0": {"episode_slots": 3},
    "gentwin/HdtStreaming-Dynamic-v0": {"horizon": 3},
}


def _params_fields(env_id: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(gym.make(env_id).unwrapped.kernel.params))


#: Boundary and nonsense values for any field, plus small numbers.
PARAM_VALUES = st.one_of(
    st.sampled_from([0, 1, -1, 2, 64, 10**12, -(10**12), 0.5, -0.5, 1e-12, 1e300, -1e300,
                     float("nan"), float("inf"), float("-inf"), True, None, "3", (), (1.0, 2.0)]),
    st.integers(-5, 100),
    st.floats(-1e3, 1e3, allow_nan=False),
)


def _random_action(space: spaces.Space, rng: np.random.Generator) -> np.ndarray:
    if isinstance(space, spaces.Discrete):
        return np.int64(rng.integers(space.start, space.start + space.n))
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(space.start, space.start + space.nvec)
    return rng.uniform(space.low, space.high).astype(space.dtype)


def _rule_accepts(space: spaces.Space, action: np.ndarray) -> bool:
    """The documented action rule, written independently of envs/core.py."""
    kind = action.dtype.kind
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        if kind not in "iu" or action.shape != space.shape:
            return False
        value = action.astype(np.int64)
        if isinstance(space, spaces.Discrete):
            return bool(space.start <= value < space.start + space.n)
        return bool(np.all((value >= space.start) & (value < space.start + space.nvec)))
    if kind != "f" or action.shape != space.shape or not np.all(np.isfinite(action)):
        return False
    rounded = action.astype(space.dtype)
    return bool(np.all((rounded >= space.low) & (rounded <= space.high)))


def _check_invariants(env_id: str, kernel, info: dict) -> None:
    """The family's invariants after a step (info of the vector view, arrays over instances)."""
    p = kernel.params
    if "AspSelection" in env_id:
        assert np.all(kernel.free_capacity() >= 0)  # a feasible assignment never overfills an ASP
        np.testing.assert_array_equal(
            info["arrived"], info["finished"] + info["killed"] + info["dropped"] + info["running"]
        )
    elif "PowerAllocation" in env_id:
        assert np.all(info["power_w"] >= 0)
        assert np.all(info["power_w"].sum(axis=1) <= p.total_power_w * (1 + 1e-9))
        assert np.all(info["sum_rate"] <= info["optimal_sum_rate"] * (1 + 1e-9))  # water-filling is optimal
    elif "ContractDesign" in env_id:
        np.testing.assert_allclose(kernel.prob.sum(axis=1), 1.0, rtol=1e-12)
        assert np.all(np.diff(kernel.theta, axis=1) >= 0)
        feasible = info["feasible"]
        gap = info["utility"][feasible] - info["optimal_utility"][feasible]
        assert np.all(gap <= 1e-6 * np.maximum(1.0, np.abs(info["optimal_utility"][feasible])))
    elif "ModelCaching" in env_id:
        assert np.all(info["memory_used_gb"] <= p.gpu_memory_gb * (1 + 1e-12))
        np.testing.assert_array_equal(
            info["arrived"], info["edge_requests"] + info["neighbour_requests"] + info["cloud_requests"]
        )
    elif "TaskOffloading" in env_id:
        assert not np.any(info["completed"] & info["dropped"])
        np.testing.assert_array_equal(info["has_task"], info["completed"] | info["dropped"])
        assert np.all(info["latency_s"] <= p.deadline_s * (1 + 1e-12))
    elif "RisIsac" in env_id:
        assert np.all(info["transmit_power_w"] <= p.max_transmit_power_w * (1 + 1e-9))
        assert np.all(info["user_rate_bps_hz"] >= 0)
    elif "HdtStreaming" in env_id:
        excess_bw = np.maximum(info["bandwidth_used_mhz"] - info["bandwidth_available_mhz"], 0.0)
        np.testing.assert_allclose(info["bandwidth_excess_mhz"], excess_bw, atol=1e-12)
        excess_cp = np.maximum(info["compute_used_tflops"] - info["compute_available_tflops"], 0.0)
        np.testing.assert_allclose(info["compute_excess_tflops"], excess_cp, atol=1e-12)
        assert not np.any(info["feasible"] & ((excess_bw > 0) | (excess_cp > 0)))


@pytest.mark.parametrize("env_id", ENV_IDS)
@FAST
@given(data=st.data())
def test_random_parameters_give_a_working_env_or_a_value_error(env_id, data):
    fields = _params_fields(env_id)
    names = [f.name for f in fields]
    overrides = {
        data.draw(st.sampled_from(names), label="field"): data.draw(PARAM_VALUES, label="value")
        for _ in range(data.draw(st.integers(1, 2), label="n_fields"))
    }
    try:
        env = gym.make_vec(env_id, num_envs=2, **overrides)
    except ValueError as err:
        assert any(name in str(err) for name in names), str(err)  # names the offending field
        return
    obs, _ = env.reset(seed=data.draw(st.integers(0, 2**31), label="seed"))
    rng = np.random.default_rng(0)
    for _ in range(3):
        assert all(env.single_observation_space.contains(o) for o in obs)
        actions = np.stack([_random_action(env.single_action_space, rng) for _ in range(2)])
        obs, reward, *_ = env.step(actions)
        assert np.all(np.isfinite(reward))


#: Actions of every kind: arrays of assorted dtypes and shapes, Python scalars, junk.
def _actions_for(space: spaces.Space) -> st.SearchStrategy:
    shapes = st.sampled_from([space.shape, (), (1,), (*space.shape, 1), (max(1, int(np.prod(space.shape)) - 1),)])
    dtypes = st.sampled_from([np.int8, np.int64, np.uint8, np.float16, np.float32, np.float64, np.bool_])
    if isinstance(space, spaces.Box):
        lo, hi = float(space.low.min()), float(space.high.max())
        lo, hi = (max(lo, -1e6), min(hi, 1e6))
        elements = st.floats(lo - 0.5, hi + 0.5, width=32)
    else:
        top = int(np.max(getattr(space, "nvec", getattr(space, "n", 2))))
        elements = st.integers(-2, top + 1)

    def array(dtype, shape):
        # Values drawn as numbers and cast (NaN kept for float dtypes), so every dtype sees them.
        return hnp.arrays(np.float64, shape, elements=elements | st.just(float("nan"))).map(
            lambda a: a if np.dtype(dtype).kind == "f" else np.nan_to_num(a).astype(dtype)
        ).map(lambda a: a.astype(dtype))

    arrays = st.tuples(dtypes, shapes).flatmap(lambda ds: array(*ds))
    junk = st.sampled_from([None, "3", True, False, 3.0, 3, [0], [[0]], {}])
    return st.one_of(arrays, junk)


@pytest.mark.parametrize("env_id", ENV_IDS)
@settings(FAST, max_examples=25)
@given(data=st.data())
def test_actions_are_accepted_exactly_by_the_documented_rule(env_id, data):
    env = gym.make(env_id, **SHORT_EPISODES.get(env_id, {})).unwrapped
    env.reset(seed=3)
    space = env.action_space
    action = data.draw(_actions_for(space), label="action")
    as_array = np.asarray(action)
    if isinstance(space, spaces.Box) and not isinstance(action, (np.ndarray, np.generic)) and as_array.dtype.kind in "iu":
        as_array = as_array.astype(np.float64)  # Python numbers count as floats for a Box
    expected = as_array.dtype != object and _rule_accepts(space, as_array)
    before = copy.deepcopy(env)
    try:
        env.step(action)
        accepted = True
    except InvalidActionError:
        accepted = False
    assert accepted == expected, (action, space)
    if not accepted:
        # a rejected action leaves the environment as it was
        rng = np.random.default_rng(1)
        good = _random_action(space, rng)
        a, b = env.step(good), before.step(good)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 2**16)),
        st.tuples(st.just("reset"), st.one_of(st.none(), st.integers(0, 2**31))),
        st.tuples(st.just("copy"), st.just(0)),
        st.tuples(st.just("pickle"), st.just(0)),
    ),
    min_size=4,
    max_size=14,
)


@pytest.mark.parametrize("env_id", ENV_IDS)
@FAST
@given(ops=OPS, mode=st.sampled_from([AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP]),
       seed=st.integers(0, 2**31))
def test_steps_resets_and_copies_keep_the_invariants(env_id, ops, mode, seed):
    env = gym.make_vec(env_id, num_envs=2, autoreset_mode=mode, **SHORT_EPISODES.get(env_id, {}))
    obs, _ = env.reset(seed=seed)
    space = env.single_observation_space
    for op, arg in ops:
        if op == "step":
            rng = np.random.default_rng(arg)
            actions = np.stack([_random_action(env.single_action_space, rng) for _ in range(2)])
            obs, reward, terminated, truncated, info = env.step(actions)
            assert np.all(np.isfinite(reward)) and reward.dtype == np.float64
            # Top-level step infos: every instance in SAME_STEP, zeros for the ones
            # restarting in NEXT_STEP (the invariants hold for those too).
            _check_invariants(env_id, env.unwrapped.kernel, info)
            for i in np.flatnonzero(info.get("_final_obs", np.zeros(2, bool))):
                assert space.contains(info["final_obs"][i])
        elif op == "reset":
            obs, _ = env.reset(seed=arg)
        elif op == "copy":
            env = copy.deepcopy(env)
        else:
            env = pickle.loads(pickle.dumps(env))
        assert all(space.contains(o) for o in obs)
