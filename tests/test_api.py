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


#: Shorter episodes where the bound costs seconds per full episode (AspSelection's LP).
SHORT_EPISODES = {"gentwin/AspSelection-v0": {"tasks_per_episode": 200}}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_no_baseline_beats_the_declared_bound(env_id):
    """The share-of-bound reference: on every held-out episode, no baseline returns more than it."""
    env_kwargs = SHORT_EPISODES.get(env_id, {})
    bound = evaluate_bound(env_id, n_episodes=2, seed=321, env_kwargs=env_kwargs)
    if bound is None:
        return  # no exact optimum or certified bound for this id's default params
    assert len(bound.values) == 2 and np.all(np.isfinite(bound.values))
    for name, cls in get_baselines(env_id).items():
        venv = make_sb3_vec_env(env_id, num_envs=2, **env_kwargs)
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


# ---------------------------------------------------------------------------
# Autoreset modes, Gymnasium's vector wrappers, exact copies, the action rule
# ---------------------------------------------------------------------------
#: Field overrides that end episodes within a few steps (so autoresets happen often).
SHORT_EPISODES = {
    "gentwin/AspSelection-v0": {"tasks_per_episode": 7},
    "gentwin/ContractDesign-Dynamic-v0": {"periods_per_episode": 3},
    "gentwin/ModelCaching-v0": {"num_slots": 5},
    "gentwin/TaskOffloading-v0": {"episode_slots": 4},
    "gentwin/RisIsac-v0": {"episode_slots": 4},
    "gentwin/HdtStreaming-Dynamic-v0": {"horizon": 3},
}


def _assert_info_covers(native: dict, sync: dict, path: str = "info") -> None:
    """Everything SyncVectorEnv reports (where its masks are set) the native env reports equally.

    The native SAME_STEP env also keeps the finishing step's infos at the top level for
    finished instances (SyncVectorEnv has only the reset's empty info there).
    """
    assert set(sync) <= set(native), (path, sorted(set(sync) - set(native)))
    for key, value in sync.items():
        if key.startswith("_"):
            assert np.all(native[key] >= value), (path, key)
            continue
        mask = sync[f"_{key}"]
        if isinstance(value, dict):
            _assert_info_covers(native[key], value, f"{path}[{key!r}]")
        elif value.dtype == object:
            for i in np.flatnonzero(mask):
                np.testing.assert_array_equal(native[key][i], value[i], err_msg=f"{path}[{key!r}][{i}]")
        else:
            np.testing.assert_array_equal(np.asarray(native[key])[mask], value[mask], err_msg=f"{path}[{key!r}]")


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_native_vector_env_equals_sync_vector_env_in_every_autoreset_mode(env_id, mode):
    num_envs, kwargs = 3, SHORT_EPISODES.get(env_id, {})
    native = gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=mode, **kwargs)
    assert native.metadata["autoreset_mode"] == mode
    sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": mode}, **kwargs)
    obs_a, _ = native.reset(seed=11)
    obs_b, _ = sync.reset(seed=11)
    np.testing.assert_array_equal(obs_a, obs_b)
    native.action_space.seed(0)
    ended = 0
    for t in range(20):
        actions = native.action_space.sample()
        a, b = native.step(actions), sync.step(actions)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype
        _assert_info_covers(a[4], b[4])
        done = a[2] | a[3]
        ended += int(done.sum())
        if mode == AutoresetMode.DISABLED and done.any():
            with pytest.raises(RuntimeError, match="DISABLED"):
                native.step(actions)
            obs_a, _ = native.reset(seed=100 + t, options={"reset_mask": done.copy()})
            obs_b, _ = sync.reset(seed=100 + t, options={"reset_mask": done.copy()})
            np.testing.assert_array_equal(obs_a, obs_b)
    assert ended >= num_envs, f"{env_id}: too few episode ends ({ended}) to test autoreset"


def test_autoreset_mode_argument_is_checked():
    env_id = "gentwin/AspSelection-v0"
    assert gym.make_vec(env_id, num_envs=2).metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert gym.make_vec(env_id, num_envs=2, autoreset_mode="NextStep").metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    with pytest.raises(ValueError, match="autoreset_mode = 'next'"):
        gym.make_vec(env_id, num_envs=2, autoreset_mode="next")
    # a single env has no autoreset: the message says where the argument goes instead
    with pytest.raises(ValueError, match="vector_kwargs"):
        gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="no field 'num_asp'.*num_asps"):
        gym.make(env_id, num_asp=3)


def _vector_wrappers(venv) -> dict:
    from gymnasium.wrappers import vector as vw

    wrappers = {
        "NormalizeObservation": vw.NormalizeObservation,
        "NormalizeReward": vw.NormalizeReward,
        "RecordEpisodeStatistics": vw.RecordEpisodeStatistics,
        "ClipReward": lambda e: vw.ClipReward(e, -1.0, 1.0),
        "TransformReward": lambda e: vw.TransformReward(e, lambda r: 2.0 * r),
        "TransformObservation": lambda e: vw.TransformObservation(e, np.copy),
        "FlattenObservation": vw.FlattenObservation,
        "DtypeObservation": lambda e: vw.DtypeObservation(e, np.float64),
        "DictInfoToList": vw.DictInfoToList,
    }
    obs_space = venv.single_observation_space
    if np.all(np.isfinite(obs_space.low)) and np.all(np.isfinite(obs_space.high)):
        wrappers["RescaleObservation"] = lambda e: vw.RescaleObservation(e, -1.0, 1.0)
    if isinstance(venv.single_action_space, spaces.Box):
        wrappers["ClipAction"] = vw.ClipAction
        wrappers["RescaleAction"] = lambda e: vw.RescaleAction(e, -2.0, 2.0)
    return wrappers


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_vector_wrappers_run_on_every_id(env_id):
    """Gymnasium's own vector wrappers accept the native env (NEXT_STEP) and step through episode ends."""
    import warnings

    from gymnasium.wrappers import vector as vw

    kwargs = SHORT_EPISODES.get(env_id, {})

    def make(mode=AutoresetMode.NEXT_STEP):
        return gym.make_vec(env_id, num_envs=3, autoreset_mode=mode, **kwargs)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", module="gentwin")  # no warning from gentwin code
        for name, wrap in _vector_wrappers(make()).items():
            env = wrap(make())
            obs, _ = env.reset(seed=0)
            env.action_space.seed(0)
            for _ in range(8):
                obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
                assert np.all(np.isfinite(reward)), name
            if name != "DictInfoToList":
                assert env.observation_space.contains(np.asarray(obs, dtype=env.observation_space.dtype)), name
    # RecordEpisodeStatistics counts the same returns as the env's own summaries, in both modes.
    for mode in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        env = vw.RecordEpisodeStatistics(make(mode))
        env.reset(seed=1)
        env.action_space.seed(1)
        seen = 0
        for _ in range(12):
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            if "episode" in info:
                summary = info["episode_summary"] if mode == AutoresetMode.NEXT_STEP else info["final_info"]["episode_summary"]
                done = info["_episode"]
                np.testing.assert_allclose(info["episode"]["r"][done], summary["return"][done], rtol=1e-12)
                np.testing.assert_array_equal(info["episode"]["l"][done], summary["length"][done])
                seen += int(done.sum())
        assert seen > 0


def _replay(env, actions, vector: bool):
    trace = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        trace.append((np.copy(obs), np.copy(reward), np.copy(terminated), np.copy(truncated)))
        if not vector and (terminated or truncated):
            trace.append((env.reset()[0],))
    return trace


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_copy_and_pickle_mid_episode_continue_like_a_fresh_replay(env_id, vector):
    """deepcopy and pickle of a running env (single or vector) continue exactly as the original would."""
    import copy
    import pickle

    def make():
        return gym.make_vec(env_id, num_envs=3) if vector else gym.make(env_id)

    env = make()
    env.reset(seed=5)
    space = env.action_space
    space.seed(2)
    actions = [space.sample() for _ in range(45)]
    prefix, rest = actions[:15], actions[15:]
    _replay(env, prefix, vector)  # mid-episode (episodes are longer than 15 steps for most ids)
    copied = copy.deepcopy(env)
    pickled = pickle.loads(pickle.dumps(env))
    fresh = make()
    fresh.reset(seed=5)
    _replay(fresh, prefix, vector)
    expected = _replay(fresh, rest, vector)
    for clone in (env, copied, pickled):
        got = _replay(clone, rest, vector)
        assert len(got) == len(expected)
        for x, y in zip(got, expected):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)


def _single_action_cases(space: spaces.Space) -> tuple[list, list]:
    """(accepted, rejected) single actions of ``space`` under the documented rule."""
    if isinstance(space, spaces.Discrete):
        lo = int(space.start)
        accepted = [lo, np.int64(lo), np.int32(lo), np.array(lo), np.uint8(lo)]
        rejected = [float(lo), np.float32(lo), True, np.bool_(True), [lo], np.array([lo]), None, str(lo),
                    lo + int(space.n), lo - 1]
        return accepted, rejected
    if isinstance(space, spaces.MultiDiscrete):
        good = np.asarray(space.start, dtype=np.int64) + np.zeros(space.shape, dtype=np.int64)
        accepted = [good, good.astype(np.int32), good.tolist()]
        bad = good.copy()
        bad.flat[-1] = space.start.flat[-1] + space.nvec.flat[-1]
        rejected = [good.astype(np.float64), good.astype(bool), good[:-1], good[None], bad, None, int(good.flat[0])]
        return accepted, rejected
    if isinstance(space, spaces.Box):
        low = space.low.astype(np.float64)
        high = space.high.astype(np.float64)
        mid = np.where(np.isfinite(low) & np.isfinite(high), (low + high) / 2, 0.0)
        above = space.high.copy()
        above.flat[0] = np.nextafter(above.flat[0], np.float32(np.inf))  # one float32 step above high
        nan = mid.copy()
        nan.flat[0] = np.nan
        accepted = [mid.astype(np.float32), mid, mid.astype(np.float16).astype(np.float32), mid.tolist(),
                    space.high.astype(np.float64)]
        rejected = [mid.astype(np.int64), mid.astype(bool), above, nan, mid[:-1], mid[None], None, 0.5]
        return accepted, rejected
    raise TypeError(space)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_one_action_rule_per_space_kind_in_every_view(env_id):
    single = gym.make(env_id)
    single.reset(seed=0)
    space = single.action_space
    accepted, rejected = _single_action_cases(space)
    for action in accepted:
        single.step(action)
    for action in rejected:
        with pytest.raises(InvalidActionError) as err:
            single.step(action)
        message = str(err.value)
        assert "num_envs" not in message and "expected (1," not in message, message  # no batch shapes
    # The batch views apply the same rule per instance.
    venv = gym.make_vec(env_id, num_envs=2)
    venv.reset(seed=0)
    sb3 = make_sb3_vec_env(env_id, num_envs=2, seed=0)
    sb3.reset()
    for good in accepted:
        if isinstance(good, list):
            continue
        batch = np.stack([np.asarray(good)] * 2)
        venv.step(batch)
        sb3.step(batch)
    for bad in rejected:
        bad = np.asarray(bad)
        if bad.dtype == object or bad.dtype.kind == "U" or bad.shape != space.shape:
            continue
        good = np.asarray(accepted[0]).astype(bad.dtype)  # a bad dtype makes the whole batch bad
        for view in (venv, sb3):
            with pytest.raises(InvalidActionError):
                view.step(np.stack([good, bad]))
    with pytest.raises(InvalidActionError, match=r"actions have shape \(3,"):
        venv.step(np.stack([np.asarray(accepted[0])] * 3))


def test_pettingzoo_actions_follow_the_same_rule_and_name_the_agent():
    for env_id in PARALLEL_IDS:
        env = make_parallel(env_id)
        env.reset(seed=0)
        space = env.action_space(env.possible_agents[0])
        accepted, rejected = _single_action_cases(space)
        for action in accepted[:2]:
            env.step({a: action for a in env.agents})
        last = env.possible_agents[-1]
        for bad in rejected:
            actions = {a: accepted[0] for a in env.agents}
            actions[last] = bad
            with pytest.raises(InvalidActionError, match=f"agent '{last}'"):
                env.step(actions)


def test_numpy_integer_seeds_work_in_every_view():
    env_id = "gentwin/AspSelection-v0"
    obs_int, _ = gym.make(env_id).reset(seed=3)
    obs_np, _ = gym.make(env_id).reset(seed=np.int64(3))
    np.testing.assert_array_equal(obs_int, obs_np)
    vec, _ = gym.make_vec(env_id, num_envs=2).reset(seed=np.uint16(3))
    np.testing.assert_array_equal(vec[0], obs_int)
    sb3 = make_sb3_vec_env(env_id, num_envs=2, seed=np.int32(3))
    np.testing.assert_array_equal(sb3.reset()[0], obs_int)
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError, match="seed"):
            gym.make(env_id).reset(seed=bad)
        with pytest.raises(ValueError, match="seed"):
            gym.make_vec(env_id, num_envs=2).reset(seed=bad)


def test_reward_dtypes_follow_each_library():
    """Gymnasium views: float rewards (Python float, float64 arrays); SB3 view: float32 like DummyVecEnv."""
    env_id = "gentwin/PowerAllocation-v0"
    env = gym.make(env_id)
    env.reset(seed=0)
    assert type(env.step(env.action_space.sample())[1]) is float
    venv = gym.make_vec(env_id, num_envs=2)
    venv.reset(seed=0)
    assert venv.step(venv.action_space.sample())[1].dtype == np.float64
    sb3 = make_sb3_vec_env(env_id, num_envs=2, seed=0)
    sb3.reset()
    assert sb3.step(np.stack([sb3.action_space.sample()] * 2))[1].dtype == np.float32


def test_action_masks_through_gym_make_wrappers():
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks
    from sb3_contrib.common.wrappers import ActionMasker
    from stable_baselines3.common.vec_env import DummyVecEnv

    env_id = "gentwin/AspSelection-v0"
    env = gym.make(env_id, num_asps=4)
    env.reset(seed=0)
    expected = env.unwrapped.kernel.action_masks()[0]
    np.testing.assert_array_equal(env.get_wrapper_attr("action_masks")(), expected)
    masked = ActionMasker(gym.make(env_id, num_asps=4), lambda e: e.unwrapped.action_masks())
    masked.reset(seed=0)
    np.testing.assert_array_equal(masked.action_masks(), expected)
    # DummyVecEnv looks through the wrappers itself (get_wrapper_attr), so MaskablePPO trains on it.
    dummy = DummyVecEnv([lambda: gym.make(env_id, num_asps=4, tasks_per_episode=8)] * 2)
    dummy.seed(0)
    dummy.reset()
    assert get_action_masks(dummy).shape == (2, 4)
    MaskablePPO("MlpPolicy", dummy, n_steps=16, batch_size=16, n_epochs=1, seed=0).learn(32)


@pytest.mark.parametrize("module_name", ["model_caching_ma_v0", "task_offloading_ma_v0"])
def test_pettingzoo_module_convention(module_name):
    import importlib

    from pettingzoo.test import api_test, parallel_api_test

    module = importlib.import_module(f"gentwin.envs.{module_name}")
    env_id = {"model_caching_ma_v0": "gentwin/ModelCaching-ma-v0",
              "task_offloading_ma_v0": "gentwin/TaskOffloading-ma-v0"}[module_name]
    api_test(module.env(), num_cycles=60)
    parallel_api_test(module.parallel_env(), num_cycles=60)
    assert module.parallel_env().metadata["name"] == module_name
    assert type(module.parallel_env()) is type(make_parallel(env_id))
    # the AEC env runs the same dynamics as the parallel env
    aec = module.env()
    aec.reset(seed=4)
    par = module.parallel_env()
    par.reset(seed=4)
    actions = {a: par.action_space(a).sample() for a in par.agents}
    for agent in aec.agent_iter(len(par.possible_agents)):
        aec.step(actions[agent])
    _, rewards, *_ = par.step(actions)
    for agent in par.possible_agents:
        assert aec.rewards[agent] == pytest.approx(rewards[agent], rel=1e-12)


@pytest.mark.parametrize(
    "env_id, field, value, allowed",
    [
        ("gentwin/AspSelection-v0", "capacity_max", 10**12, r"\[600, 1000000\]"),
        ("gentwin/TaskOffloading-v0", "deadline_s", 1e12, r"\(0.0, 1000.0\]"),
        ("gentwin/ModelCaching-v0", "drift_swaps", 10**6, r"\[0, 1000\]"),
        ("gentwin/ModelCaching-v0", "drift_swaps", 10**12, r"\[0, 1000\]"),
        ("gentwin/AspSelection-v0", "demand_choices", 3, "sequence"),  # a tuple field given a number
    ],
)
def test_huge_or_misshapen_parameters_raise_a_value_error_at_once(env_id, field, value, allowed):
    import time

    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"{field} = {value!r} is invalid.*{allowed}"):
        gym.make(env_id, **{field: value})
    assert time.perf_counter() - start < 1.0


def test_memory_estimate_is_checked_before_allocating():
    with pytest.raises(ValueError, match=r"tasks_per_episode = 10000000.*num_envs = 1024 is invalid.*GiB"):
        gym.make_vec("gentwin/AspSelection-v0", num_envs=1024, tasks_per_episode=10_000_000)
    with pytest.raises(ValueError, match=r"episode_slots = 1000000.*at most \d+ instances fit"):
        gym.make_vec("gentwin/TaskOffloading-v0", num_envs=64, episode_slots=1_000_000)
    with pytest.raises(ValueError, match=r"drift_swaps = 100 is invalid.*popularity swaps"):
        gym.make("gentwin/ModelCaching-v0", num_slots=100_000, drift_period_slots=1, drift_swaps=100)
