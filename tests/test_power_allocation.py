"""PowerAllocation-v0: API conformance, seeding, the rate model and the water-filling optimum."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import gentwin  # noqa: F401  (registers the ids)
from gentwin.baselines.base import EXACT_OPTIMUM, get_baselines, get_bound
from gentwin.baselines.power_allocation import BASELINES
from gentwin.evaluation import evaluate_bound
from gentwin.envs import InvalidActionError, make_sb3_vec_env
from gentwin.envs.power_allocation import (
    PRESETS,
    PowerAllocationKernel,
    PowerAllocationParams,
    sum_rate,
    water_filling,
)
from gentwin.evaluation import evaluate_policy

ENV_ID = "gentwin/PowerAllocation-v0"


def test_env_checkers():
    gym_check_env(gym.make(ENV_ID).unwrapped, skip_render_check=True)
    with pytest.warns(UserWarning, match="symmetric"):  # the [0, 1] weight box is intended
        sb3_check_env(gym.make(ENV_ID).unwrapped)
    gym_check_env(gym.make(ENV_ID, params="deep_fade").unwrapped, skip_render_check=True)


def test_vector_env_equals_sync_vector_env():
    n, seed = 5, 11
    native = gym.make_vec(ENV_ID, num_envs=n)
    sync = SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(n)], autoreset_mode=AutoresetMode.SAME_STEP)
    obs_a, _ = native.reset(seed=seed)
    obs_b, _ = sync.reset(seed=seed)
    np.testing.assert_array_equal(obs_a, obs_b)
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = rng.uniform(0, 1, size=(n, 10)).astype(np.float32)
        out_a = native.step(actions)
        out_b = sync.step(actions)
        for a, b in zip(out_a[:4], out_b[:4]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(out_a[4]["final_obs"][0], out_b[4]["final_obs"][0])


def test_batch_size_invariance():
    seed, batch = 3, 4
    kernel = PowerAllocationKernel(num_envs=batch)
    obs = kernel.reset(seed=seed)
    for i in range(batch):
        single = PowerAllocationKernel(num_envs=1)
        np.testing.assert_array_equal(single.reset(seed=seed + i)[0], obs[i])
    # and after autoresets (one-step episodes draw new gains every step)
    venv = gym.make_vec(ENV_ID, num_envs=batch)
    venv.reset(seed=seed)
    env = gym.make(ENV_ID)
    env.reset(seed=seed + 2)
    for _ in range(5):
        action = np.full((batch, 10), 0.5, dtype=np.float32)
        obs_b, rew_b, *_ = venv.step(action)
        _, rew_s, *_ = env.step(action[2])
        assert rew_b[2] == rew_s
        obs_s, _ = env.reset()
        np.testing.assert_array_equal(obs_b[2], obs_s)


def test_observations_in_space_and_gain_ranges():
    for preset, params in PRESETS.items():
        venv = gym.make_vec(ENV_ID, num_envs=64, params=preset)
        obs, _ = venv.reset(seed=0)
        rng = np.random.default_rng(1)
        good, bad = params.good_gain_range, params.bad_gain_range
        g = params.num_good_channels
        for _ in range(30):
            assert venv.single_observation_space.contains(obs[0])
            assert obs.shape == (64, params.num_channels)
            assert np.all((obs[:, :g] >= good[0]) & (obs[:, :g] <= good[1]))
            assert np.all((obs[:, g:] >= bad[0]) & (obs[:, g:] <= bad[1]))
            obs, *_ = venv.step(rng.uniform(0, 1, size=(64, params.num_channels)).astype(np.float32))


def test_presets_match_the_tutorial():
    tutorial = PRESETS["tutorial"]
    assert (tutorial.num_channels, tutorial.num_good_channels) == (10, 5)
    assert tutorial.good_gain_range == (1.0, 2.0) and tutorial.bad_gain_range == (0.0, 1.0)
    assert tutorial.total_power_w == 3.0 and tutorial.noise_power_w == 1.0
    fade = PRESETS["deep_fade"]
    assert (fade.num_channels, fade.num_good_channels) == (100, 50)
    assert fade.good_gain_range == (13.0, 14.0) and fade.bad_gain_range == (0.0, 0.1)


def test_reward_hand_computed():
    env = gym.make(ENV_ID, num_channels=2, num_good_channels=1, total_power_w=3.0)
    env.reset(seed=0)
    kernel = env.unwrapped.kernel
    kernel.gains[0] = [2.0, 0.5]
    # weights (2, 1) -> powers (2, 1): log2(1 + 4) + log2(1 + 0.5)
    _, reward, terminated, truncated, info = env.step(np.array([1.0, 0.5], dtype=np.float32))
    assert reward == pytest.approx(np.log2(5.0) + np.log2(1.5), rel=1e-12)
    assert terminated and not truncated
    np.testing.assert_allclose(info["power_w"], [2.0, 1.0])
    # water-filling: floors 0.5 and 2 -> mu = (3 + 2.5)/2 = 2.75 > 2: p = (2.25, 0.75)
    np.testing.assert_allclose(info["expert_action"], [0.75, 0.25])
    assert info["optimal_sum_rate"] == pytest.approx(np.log2(1 + 4.5) + np.log2(1 + 0.375), rel=1e-12)
    assert info["rate_ratio"] == pytest.approx(reward / info["optimal_sum_rate"])
    assert info["episode_summary"]["sum_rate"] == pytest.approx(reward)


def test_zero_weights_mean_equal_split():
    kernel = PowerAllocationKernel(num_envs=2)
    kernel.reset(seed=0)
    _, reward, *_ , info = kernel.step(np.zeros((2, 10), dtype=np.float32))
    np.testing.assert_allclose(info["power_w"], 0.3)
    np.testing.assert_allclose(reward, sum_rate(kernel.gains, np.full((2, 10), 0.3)))


def _brute_force(gains, total, noise, resolution):
    """Best allocation on a simplex grid of step total/resolution (every grid point evaluated)."""
    m = len(gains)
    grid = np.array(list(itertools.product(range(resolution + 1), repeat=m - 1)), dtype=np.float64)
    grid = grid[grid.sum(axis=1) <= resolution]
    units = np.concatenate([grid, resolution - grid.sum(axis=1, keepdims=True)], axis=1)
    return float(sum_rate(gains[None, :], units * total / resolution, noise).max())


@pytest.mark.parametrize("m", [2, 3])
def test_water_filling_matches_brute_force(m):
    rng = np.random.default_rng(m)
    for _ in range(5):
        gains = rng.uniform(0.05, 2.0, size=m)
        power = water_filling(gains, 3.0, 1.0)
        assert power.sum() == pytest.approx(3.0)
        assert np.all(power >= 0)
        optimum = float(sum_rate(gains, power))
        brute = _brute_force(gains, 3.0, 1.0, 300)
        # the grid optimum is never better, and within the grid's resolution
        assert brute <= optimum + 1e-12
        assert optimum - brute < 1e-3


def test_water_filling_kkt_and_dominance():
    rng = np.random.default_rng(7)
    gains = np.concatenate([rng.uniform(1, 2, (200, 5)), rng.uniform(0, 1, (200, 5))], axis=1)
    power = water_filling(gains, 3.0, 1.0)
    np.testing.assert_allclose(power.sum(axis=1), 3.0)
    # KKT: equal water level mu = p + N0/g on active channels, floor >= mu on idle ones
    level = power + 1.0 / gains
    for row_p, row_level in zip(power, level):
        active = row_p > 0
        assert np.ptp(row_level[active]) < 1e-9
        assert np.all(row_level[~active] >= row_level[active].max() - 1e-9)
    # no random allocation beats it
    best = sum_rate(gains, power)
    for _ in range(20):
        w = rng.uniform(0, 1, gains.shape)
        assert np.all(sum_rate(gains, 3.0 * w / w.sum(axis=1, keepdims=True)) <= best + 1e-12)
    # a zero-gain channel never gets power
    assert water_filling(np.array([0.0, 1.0]), 3.0)[0] == 0.0


def test_expert_action_attains_optimum():
    venv = gym.make_vec(ENV_ID, num_envs=8, params="deep_fade")
    venv.reset(seed=5)
    kernel = venv.unwrapped.kernel if hasattr(venv, "unwrapped") else venv.kernel
    expert = water_filling(kernel.gains, 3.0, 1.0) / 3.0
    _, reward, *_, info = venv.step(expert.astype(np.float32))
    np.testing.assert_allclose(info["final_info"]["expert_action"], expert)
    np.testing.assert_allclose(reward, info["final_info"]["optimal_sum_rate"], rtol=1e-6)
    # deep fade: every watt goes to the 50 good channels
    assert np.all(expert[:, 50:] == 0)


def test_baselines_ordering():
    bound = get_bound(ENV_ID)
    assert (bound.name, bound.kind) == ("water_filling", EXACT_OPTIMUM)
    assert set(get_baselines(ENV_ID)) == set(BASELINES)
    venv = make_sb3_vec_env(ENV_ID, num_envs=128)
    ratio = {}
    for name, cls in BASELINES.items():
        result = evaluate_policy(cls(venv, seed=0), ENV_ID, n_episodes=128)
        ratio[name] = result.mean("rate_ratio")
    assert ratio["water_filling"] == pytest.approx(1.0, abs=1e-6)
    # The bound is the optimal sum rate of exactly the evaluated episodes.
    optimal = evaluate_bound(ENV_ID, n_episodes=128).values
    wf = evaluate_policy(BASELINES["water_filling"](venv), ENV_ID, n_episodes=128, venv=venv)
    np.testing.assert_allclose(wf.metric("optimal_sum_rate"), optimal, rtol=1e-12)
    assert ratio["water_filling"] > ratio["equal_split"] > ratio["random"] > ratio["best_channel"]


def test_bad_params_and_actions():
    with pytest.raises(ValueError, match="num_channels"):
        PowerAllocationParams(num_channels=0)
    with pytest.raises(ValueError, match="num_good_channels"):
        PowerAllocationParams(num_channels=4, num_good_channels=5)
    with pytest.raises(ValueError, match="total_power_w"):
        PowerAllocationParams(total_power_w=0.0)
    with pytest.raises(ValueError, match="noise_power_w"):
        PowerAllocationParams(noise_power_w=-1.0)
    with pytest.raises(ValueError, match="good_gain_range"):
        PowerAllocationParams(good_gain_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="bad_gain_range"):
        PowerAllocationParams(bad_gain_range=(-1.0, 1.0))
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="instance 0"):
        env.step(np.full(10, -0.5, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="NaN"):
        env.step(np.full(10, np.nan, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.ones(9, dtype=np.float32))


# ---------------------------------------------------------------------------
# Learnability option: zero_weight_below
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.1, 0.25, 0.5])
def test_zero_weight_below_switches_channels_off_and_keeps_every_split(threshold):
    kernel = PowerAllocationKernel(PowerAllocationParams(zero_weight_below=threshold), num_envs=300)
    kernel.reset(seed=61)
    rng = np.random.default_rng(8)
    actions = rng.uniform(0, 1, (300, 10))
    power = kernel.allocation(actions)
    np.testing.assert_allclose(power.sum(axis=1), 3.0, rtol=1e-12)
    assert np.all(power >= 0)
    off = actions <= threshold
    assert np.all(power[off & ~np.all(off, axis=1, keepdims=True)] == 0.0)
    assert np.all(power[np.all(off, axis=1)] == 0.3)  # all weights zero: equal split
    # Every split of the budget is still an action (the problem is unchanged).
    splits = rng.dirichlet(np.full(10, 0.5), 300) * 3.0
    splits[:, ::3] = 0.0
    splits *= 3.0 / splits.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(kernel.allocation(kernel.power_to_action(splits).astype(np.float32)), splits,
                               rtol=1e-6, atol=1e-6)  # float32 actions: absolute error ~ P_T 6e-8 / (1 - t)


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5])
def test_zero_weight_below_keeps_water_filling_the_reward_maximiser(threshold):
    env = gym.make_vec(ENV_ID, num_envs=64, zero_weight_below=threshold)
    env.reset(seed=62)
    kernel = env.unwrapped.kernel if hasattr(env, "unwrapped") else env.kernel
    optimum = sum_rate(kernel.gains, water_filling(kernel.gains, 3.0))
    expert = kernel.power_to_action(water_filling(kernel.gains, 3.0))
    assert np.all((expert >= 0) & (expert <= 1))
    if threshold > 0:
        assert np.all((expert > threshold) == (water_filling(kernel.gains, 3.0) > 0))
    # The expert action of the info and the water-filling baseline attain the optimum.
    rewards = kernel.step(expert.astype(np.float32))[1]
    np.testing.assert_allclose(rewards, optimum, rtol=1e-6)
    kernel.reset(seed=62)
    info = kernel.step(expert)[4]
    np.testing.assert_allclose(info["expert_action"], expert)
    baseline = BASELINES["water_filling"](make_sb3_vec_env(ENV_ID, num_envs=64, zero_weight_below=threshold))
    kernel.reset(seed=62)
    np.testing.assert_allclose(kernel.step(baseline.predict(kernel.observe())[0])[1], optimum, rtol=1e-6)
    # Random and local search never beat it.
    rng = np.random.default_rng(9)
    kernel.reset(seed=62)
    for _ in range(50):
        assert np.all(sum_rate(kernel.gains, kernel.allocation(rng.uniform(0, 1, (64, 10)))) <= optimum + 1e-12)
    action, value = expert.copy(), sum_rate(kernel.gains, kernel.allocation(expert))
    for sigma in (0.1, 0.01, 1e-3, 1e-5):
        for _ in range(40):
            trial = np.clip(action + rng.normal(0, sigma, action.shape), 0, 1)
            rate = sum_rate(kernel.gains, kernel.allocation(trial))
            better = rate > value
            action[better], value[better] = trial[better], rate[better]
    assert np.all(value <= optimum * (1 + 1e-12))


def test_zero_weight_below_passes_the_checkers_and_rejects_bad_values():
    gym_check_env(gym.make(ENV_ID, zero_weight_below=0.25).unwrapped, skip_render_check=True)
    with pytest.warns(UserWarning, match="symmetric"):
        sb3_check_env(gym.make(ENV_ID, zero_weight_below=0.25).unwrapped)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"zero_weight_below = .* is invalid: must be a number in \[0.0, 1.0\)"):
            gym.make(ENV_ID, zero_weight_below=bad)
    from gentwin.envs import power_allocation

    doc = power_allocation.__doc__
    assert "zero_weight_below" in doc.split("Action Space\n------------")[1].split("Observation Space")[0]
    assert "zero_weight_below" in doc.split("Arguments\n---------")[1]
