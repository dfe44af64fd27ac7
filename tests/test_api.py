"""API conformance of every registered gentwin environment, through every view."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import gentwin  # noqa: F401
from gentwin.baselines import BOUND_KINDS, get_baselines, get_bound
from gentwin.envs import ENVIRONMENTS, PARALLEL_ENVIRONMENTS, InvalidActionError, make_parallel, make_sb3_vec_env
from gentwin.envs.core import KernelVectorEnv
from gentwin.evaluation import evaluate_bound, evaluate_policy

ENV_IDS = [entry[0] for entry in ENVIRONMENTS]
PARALLEL_IDS = sorted(PARALLEL_ENVIRONMENTS)


def _random_actions(space: spaces.Space, rng: np.random.Generator, n: int) -> np.ndarray:
    """Valid random actions for a batch (independent of the space's own RNG)."""
    if isinstance(space, spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=n)
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(space.start, space.start + space.nvec, size=(n, *space.shape))
    if isinstance(space, spaces.MultiBinary):
        return rng.integers(0, 2, size=(n, *space.shape))
    if isinstance(space, spaces.Box):
        return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)
    raise TypeError(space)


def test_every_issue_environment_is_registered():
    assert set(ENV_IDS) >= {
        "gentwin/AspSelection-v0",
        "gentwin/PowerAllocation-v0",
        "gentwin/ContractDesign-v0",
        "gentwin/ModelCaching-v0",
        "gentwin/TaskOffloading-v0",
        "gentwin/RisIsac-v0",
        "gentwin/HdtStreaming-v0",
    }
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str)


def test_make_with_module_prefix_in_fresh_interpreter():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('gentwin:gentwin/AspSelection-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(42,)"


def test_installed_package_does_not_shadow_generic_names(tmp_path):
    """Installing gentwin must not create top-level `envs`, `agents` or `baselines` packages."""
    code = (
        "import importlib.util\n"
        "print([n for n in ('envs', 'agents', 'baselines') if importlib.util.find_spec(n)])\n"
        "import gentwin.envs, gentwin.agents, gentwin.baselines\n"
        "print(gentwin.envs.__name__, gentwin.agents.__name__, gentwin.baselines.__name__)\n"
        "import importlib.metadata\n"
        "files = importlib.metadata.files('gentwin') or []\n"
        "print(sorted({str(f).split('/')[0] for f in files} & {'envs', 'agents', 'baselines'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "gentwin.envs gentwin.agents gentwin.baselines"
    assert lines[2] == "[]"  # nothing installed under those top-level names


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id):
    env = gym.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make(env_id).unwrapped, warn=True, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_vec_is_native_and_equals_sync_vector_env(env_id):
    num_envs, steps = 3, 60
    native = gym.make_vec(env_id, num_envs=num_envs)
    assert isinstance(native.unwrapped, KernelVectorEnv)
    assert native.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    sync = SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
    obs_a, _ = native.reset(seed=123)
    obs_b, _ = sync.reset(seed=123)
    np.testing.assert_array_equal(obs_a, obs_b)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        actions = _random_actions(native.single_action_space, rng, num_envs)
        a = native.step(actions)
        b = sync.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        if "final_obs" in b[4]:
            for i in np.flatnonzero(b[4]["_final_obs"]):
                np.testing.assert_array_equal(a[4]["final_obs"][i], b[4]["final_obs"][i])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_batch_size_invariance(env_id):
    """Instance i of a batch seeded s behaves like a single env seeded s + i, whatever B is."""
    seed, steps = 40, 50
    rng = np.random.default_rng(1)
    space = gym.spec(env_id) and gym.make(env_id).action_space
    actions = _random_actions(space, rng, steps * 5).reshape(steps, 5, *space.shape)
    big = make_sb3_vec_env(env_id, num_envs=5)
    big.seed(seed)
    small = make_sb3_vec_env(env_id, num_envs=2)
    small.seed(seed + 3)  # instances 3 and 4 of the big batch
    single = gym.make(env_id)
    obs_big, obs_small = big.reset(), small.reset()
    obs_single, _ = single.reset(seed=seed + 4)
    np.testing.assert_array_equal(obs_big[3:], obs_small)
    np.testing.assert_array_equal(obs_big[4], obs_single)
    for t in range(steps):
        obs_big, r_big, d_big, _ = big.step(actions[t])
        obs_small, r_small, d_small, _ = small.step(actions[t, 3:])
        obs_single, r_single, term, trunc, _ = single.step(actions[t, 4])
        np.testing.assert_array_equal(obs_big[3:], obs_small)
        np.testing.assert_array_equal(r_big[3:], r_small)
        assert r_big[4] == np.float32(r_single)
        if term or trunc:
            obs_single, _ = single.reset()
        np.testing.assert_array_equal(obs_big[4], obs_single)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_numbers(env_id):
    def rollout():
        venv = gym.make_vec(env_id, num_envs=4)
        obs, _ = venv.reset(seed=7)
        rng = np.random.default_rng(3)
        trace = [obs]
        for _ in range(30):
            obs, reward, *_ = venv.step(_random_actions(venv.single_action_space, rng, 4))
            trace += [obs, reward]
        return trace

    for x, y in zip(rollout(), rollout()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observations_stay_in_space_over_long_run(env_id):
    venv = gym.make_vec(env_id, num_envs=8)
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(2)
    space = venv.single_observation_space
    for _ in range(300):
        assert all(space.contains(o) for o in obs)
        obs, _, _, _, info = venv.step(_random_actions(venv.single_action_space, rng, 8))
        if "final_obs" in info:
            assert all(space.contains(info["final_obs"][i]) for i in np.flatnonzero(info["_final_obs"]))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_vec_env_episode_info(env_id):
    """Finished instances report terminal_observation, TimeLimit.truncated and an episode summary."""
    venv = make_sb3_vec_env(env_id, num_envs=2, seed=0)
    obs = venv.reset()
    rng = np.random.default_rng(0)
    returns = np.zeros(2)
    for _ in range(5000):
        obs, reward, done, infos = venv.step(_random_actions(venv.action_space, rng, 2))
        returns += reward
        if done.any():
            i = int(np.flatnonzero(done)[0])
            episode = infos[i]["episode"]
            assert {"r", "l", "t", "return", "length"} <= set(episode)
            assert episode["r"] == pytest.approx(returns[i], rel=1e-4, abs=1e-3)
            assert venv.observation_space.contains(infos[i]["terminal_observation"].astype(venv.observation_space.dtype))
            assert "TimeLimit.truncated" in infos[i]
            return
    pytest.fail(f"{env_id}: no episode ended within 5000 steps")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_wrong_action_shape_and_bad_params_raise(env_id):
    venv = gym.make_vec(env_id, num_envs=2)
    venv.reset(seed=0)
    space = venv.single_action_space
    with pytest.raises(InvalidActionError, match="shape"):
        venv.step(np.zeros((3, *space.shape), dtype=space.dtype))
    if isinstance(space, spaces.Box):
        bad = _random_actions(space, np.random.default_rng(0), 2)
        bad[1].flat[0] = np.nan
        with pytest.raises(InvalidActionError, match="instance 1"):
            venv.step(bad)
        bad = _random_actions(space, np.random.default_rng(0), 2)
        bad[1].flat[0] = space.high.flat[0] + 1.0
        with pytest.raises(InvalidActionError, match="instance 1"):
            venv.step(bad)
    with pytest.raises(ValueError, match="preset"):
        gym.make(env_id, params="no-such-preset")
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(env_id, num_envs=0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_baselines_follow_the_predict_interface(env_id):
    baselines = get_baselines(env_id)
    assert baselines, f"{env_id} has no baselines"
    bound = get_bound(env_id)
    assert bound is None or bound.kind in BOUND_KINDS
    assert bound is None or bound.policy is None or bound.policy in baselines
    venv = make_sb3_vec_env(env_id, num_envs=3, seed=0)
    obs = venv.reset()
    for name, cls in baselines.items():
        policy = cls(venv, seed=0)
        actions, state = policy.predict(obs)
        assert state is None
        assert actions.shape == (3, *venv.action_space.shape), name
        assert all(venv.action_space.contains(np.asarray(a, dtype=venv.action_space.dtype)) for a in actions), name


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_no_baseline_beats_the_declared_bound(env_id):
    """The share-of-bound reference: on every held-out episode, no baseline returns more than it."""
    bound = evaluate_bound(env_id, n_episodes=2, seed=321)
    if bound is None:
        return  # no exact optimum or certified bound for this id's default params
    assert len(bound.values) == 2 and np.all(np.isfinite(bound.values))
    for name, cls in get_baselines(env_id).items():
        venv = make_sb3_vec_env(env_id, num_envs=2)
        returns = evaluate_policy(cls(venv, seed=0), env_id, n_episodes=2, seed=321, venv=venv).metric("return")
        slack = 1e-6 * np.abs(bound.values) + 1e-9
        assert np.all(returns <= np.asarray(bound.values) + slack), (name, returns, bound.values)


@pytest.mark.parametrize("env_id", PARALLEL_IDS)
def test_pettingzoo_parallel_api(env_id):
    from pettingzoo.test import parallel_api_test

    parallel_api_test(make_parallel(env_id), num_cycles=200)


def test_vector_reset_accepts_a_list_of_seeds():
    env_id = "gentwin/AspSelection-v0"
    a = gym.make_vec(env_id, num_envs=3)
    b = gym.make_vec(env_id, num_envs=3)
    obs_a, _ = a.reset(seed=[5, 6, 7])
    obs_b, _ = b.reset(seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)
    with pytest.raises(ValueError, match="seed"):
        a.reset(seed=[1, 2])
