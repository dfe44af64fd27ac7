"""ModelCaching-v0 / ModelCaching-ma-v0: PFM caching and inference (seed 002 paper 2)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import gentwin  # noqa: F401  (registers the ids)
from gentwin.baselines.model_caching import (
    BASELINES,
    CloudOnlyPolicy,
    FifoPolicy,
    LeastContextPolicy,
    LfuPolicy,
    LruPolicy,
    MissPenaltyUtilityPolicy,
    RandomPolicy,
)
from gentwin.envs import InvalidActionError, make_parallel
from gentwin.envs.model_caching import (
    FITTED_ALPHA,
    TABLE_I,
    ModelCachingKernel,
    ModelCachingParallelEnv,
    ModelCachingParams,
    accuracy_curve,
    fit_alpha,
)

ENV_ID = "gentwin/ModelCaching-v0"
MA_ID = "gentwin/ModelCaching-ma-v0"


def _random_actions(kernel, rng):
    """Random options that respect the action mask (as MaskablePPO would)."""
    B, E, M = kernel.num_envs, kernel.num_edges, kernel.num_models
    options = np.where(kernel.fits, 3, 1)
    return (rng.integers(0, 3, size=(B, E, M)) % options).reshape(B, -1)


# ---------------------------------------------------------------------------
# API, seeding, spaces
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"action_mode": "box"}, {"num_edges": 2, "num_slots": 6},
                                    {"action_mode": "scores"}, {"action_mode": "scores", "num_edges": 2, "num_slots": 6}])
def test_check_env(kwargs):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(ENV_ID, **kwargs).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(ENV_ID, **kwargs).unwrapped, warn=False)


def test_vector_env_equals_sync_vector_env():
    B, kw = 3, {"num_slots": 4}
    native = gym.make_vec(ENV_ID, num_envs=B, **kw)
    sync = gym.vector.SyncVectorEnv(
        [lambda: gym.make(ENV_ID, **kw) for _ in range(B)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    o1, _ = native.reset(seed=7)
    o2, _ = sync.reset(seed=7)
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for _ in range(10):  # crosses two episode boundaries
        a = _random_actions(native.unwrapped.kernel, rng)
        r1 = native.step(a)
        r2 = sync.step(a)
        for x, y in zip(r1[:4], r2[:4]):
            np.testing.assert_array_equal(x, y)


def test_batch_size_invariance_and_reproducibility():
    batch = ModelCachingKernel("paper", num_envs=3)
    single = ModelCachingKernel("paper", num_envs=1)
    ob = batch.reset(seed=11)
    os_ = single.reset(seed=12)
    np.testing.assert_array_equal(ob[1], os_[0])
    np.testing.assert_array_equal(batch.arrivals[1], single.arrivals[0])
    rng = np.random.default_rng(1)
    for _ in range(30):
        a = _random_actions(batch, rng)
        ob, rb, *_ = batch.step(a)
        os_, rs, *_ = single.step(a[1:2])
        np.testing.assert_array_equal(ob[1], os_[0])
        assert rb[1] == rs[0]
    again = ModelCachingKernel("paper", num_envs=3)
    again.reset(seed=11)
    np.testing.assert_array_equal(again.arrivals, batch.arrivals)
    other = ModelCachingKernel("paper", num_envs=1)
    other.reset(seed=99)
    assert not np.array_equal(other.arrivals[0], single.arrivals[0])


@pytest.mark.parametrize("kwargs", [{}, {"num_edges": 3}, {"action_mode": "box"}, {"action_mode": "scores"},
                                    {"action_mode": "scores", "num_edges": 3, "gpu_memory_gb": 30.0}])
def test_observations_stay_in_space_and_memory_never_exceeded(kwargs):
    params = ModelCachingParams(num_slots=40, **kwargs)
    kernel = ModelCachingKernel(params, num_envs=8)
    obs = kernel.reset(seed=3)
    space = kernel.single_observation_space
    rng = np.random.default_rng(2)
    for t in range(120):
        if params.action_mode != "discrete":  # "scores": also positive for GPT3-175B, which never fits
            a = rng.uniform(-1, 1, size=(8, kernel.single_action_space.shape[0]))
        else:  # unmasked: also asks to cache GPT3-175B, which never fits
            a = rng.integers(0, 3, size=(8, kernel.single_action_space.shape[0]))
        obs, reward, term, trunc, info = kernel.step(a)
        assert all(space.contains(o) for o in obs)
        used = (kernel.cached * kernel.memory_gb).sum(axis=2)
        assert np.all(used <= params.gpu_memory_gb + 1e-9)
        np.testing.assert_allclose(info["memory_used_gb"], used)
        assert not kernel.cached[:, :, ~kernel.fits].any()
        # Every arrived request is served exactly once: at an edge or in the cloud.
        np.testing.assert_array_equal(info["arrived"], info["edge_requests"] + info["cloud_requests"])
        np.testing.assert_allclose(-reward, info["system_cost"])
        if trunc.any():
            kernel.reset(idx=np.flatnonzero(trunc))


def test_episode_accounting_and_summary():
    venv = gentwin.envs.make_sb3_vec_env(ENV_ID, num_envs=4, seed=5, num_slots=20)
    pol = LfuPolicy(venv)
    obs = venv.reset()
    arrived = np.zeros(4)
    for t in range(20):
        obs, reward, done, infos = venv.step(pol.predict(obs)[0])
        arrived += [i["arrived"] for i in infos]
    assert done.all()
    for i, info in enumerate(infos):
        ep = info["episode"]
        assert ep["arrived"] == arrived[i] == ep["edge_requests"] + ep["cloud_requests"]
        parts = ["switching_cost", "accuracy_cost", "inference_latency", "offloading_latency",
                 "backhaul_latency", "cloud_cost"]
        assert math.isclose(sum(ep[k] for k in parts), ep["system_cost"], rel_tol=1e-9)
        assert math.isclose(-ep["r"], ep["system_cost"], rel_tol=1e-6)
        assert math.isclose(ep["edge_execution_ratio"], ep["edge_requests"] / ep["arrived"])
        # Table II's average accuracy cost is per edge-executed request; ours per arrived request.
        assert math.isclose(ep["average_accuracy_cost"], ep["edge_accuracy_cost"] / ep["edge_requests"])
        assert math.isclose(ep["accuracy_cost_per_request"], ep["accuracy_cost"] / ep["arrived"])
        assert 0 < ep["edge_accuracy_cost"] < ep["accuracy_cost"]


def test_cloud_only_has_no_table_two_accuracy_cost_but_ours_charges_the_zero_shot_cloud():
    """Table II charges cloud-only no accuracy cost (edge-executed requests only)."""
    from gentwin.evaluation import evaluate_policy

    venv = gentwin.envs.make_sb3_vec_env(ENV_ID, num_envs=2, num_slots=10)
    res = evaluate_policy(BASELINES["cloud_only"](venv), ENV_ID, n_episodes=2, seed=3, venv=venv)
    for ep in res.episodes:
        assert ep["edge_requests"] == 0 and ep["edge_accuracy_cost"] == 0.0
        assert ep["average_accuracy_cost"] == 0.0 and ep["edge_execution_ratio"] == 0.0
        assert ep["accuracy_cost_per_request"] > 0 and ep["accuracy_cost"] > 0


# ---------------------------------------------------------------------------
# Accuracy curve and Age of Context
# ---------------------------------------------------------------------------
def test_accuracy_curve_reproduces_table_one():
    lfm = [row for row in TABLE_I if row.k_fewshot]
    assert len(lfm) == 6 and len(FITTED_ALPHA) == 6
    for row in lfm:
        a1, alpha = fit_alpha(row.zero_shot, row.one_shot, row.few_shot, row.k_fewshot)
        assert a1 == pytest.approx(row.one_shot - row.zero_shot)
        values = accuracy_curve(np.array([0.0, 1.0, row.k_fewshot]), row.zero_shot, a1, alpha)
        np.testing.assert_allclose(values, [row.zero_shot, row.one_shot, row.few_shot], atol=1e-9)
    # Hand-computed alpha for GPT3-13B translation: log2(2**(15.38/10.67) - 1) / 6.
    assert FITTED_ALPHA["gpt3-13b/translation"] == pytest.approx(0.12983, abs=1e-4)
    # Table I's GPT3-13B arithmetic few-shot is below one-shot: alpha < 0, accuracy falls.
    assert FITTED_ALPHA["gpt3-13b/arithmetic"] < 0
    # The caption's literal reading a1 = one-shot: a(1) = zero + one, not Table I's one-shot.
    a1, alpha = fit_alpha(15.45, 26.12, 30.83, 64, a1_reading="one_shot")
    assert a1 == 26.12
    assert accuracy_curve(1.0, 15.45, a1, alpha) == pytest.approx(15.45 + 26.12)
    assert accuracy_curve(64.0, 15.45, a1, alpha) == pytest.approx(30.83)
    with pytest.raises(ValueError, match="a1_reading"):
        fit_alpha(1, 2, 3, 4, a1_reading="half")


def test_kernel_accuracy_uses_fitted_curve_and_context_window():
    kernel = ModelCachingKernel("paper")
    m = kernel.model_names.index("gpt3-175b/arithmetic")
    ctx = np.zeros(kernel.num_models)
    ctx[m] = 50
    assert kernel.edge_accuracy(ctx)[m] == pytest.approx(0.4955)
    ctx[m] = 500  # beyond the context window (K = 50): capped
    assert kernel.edge_accuracy(ctx)[m] == pytest.approx(0.4955)
    v = kernel.model_names.index("clip-vit-h14/text-retrieval")
    assert kernel.edge_accuracy(ctx)[v] == pytest.approx(0.8604)  # no in-context learning


def _trace_kernel(models, gpu_memory_gb, trace, **kwargs):
    """A one-instance kernel whose arrivals are ``trace``: one {model: count} per slot."""
    params = ModelCachingParams(models=tuple(models), gpu_memory_gb=gpu_memory_gb,
                                num_slots=len(trace), **kwargs)
    kernel = ModelCachingKernel(params, num_envs=1)
    kernel.reset(seed=0)
    kernel.arrivals[:] = 0
    for t, slot in enumerate(trace):
        for m, count in slot.items():
            kernel.arrivals[0, t, 0, m] = count
    kernel.request_count[:] = 0
    kernel.last_request_slot[:] = -1
    kernel._note_arrivals()
    return kernel


def _run(kernel, policy_cls):
    policy = policy_cls(kernel, seed=0)
    caches, infos = [], []
    for _ in range(kernel.params.num_slots):
        action = policy.predict(kernel.observe())[0]
        *_, info = kernel.step(action)
        caches.append(set(np.flatnonzero(kernel.cached[0, 0])))
        infos.append(info)
    return caches, infos


def test_age_of_context_weights_are_non_increasing():
    gamma = 0.9
    trace = [{0: 3}, {}, {}, {0: 1}, {}, {}]
    kernel = _trace_kernel(["gpt3-13b/translation"], 48.0, trace, aoc_decay=gamma)
    seen = []
    for _ in trace:
        kernel.step(np.array([[1]]))
        seen.append(kernel.context[0, 0, 0])
    # K_{t+1} = gamma K_t + served_t: an example of age d weighs gamma**d.
    expected = [3.0, 3 * gamma, 3 * gamma**2, 3 * gamma**3 + 1, (3 * gamma**3 + 1) * gamma,
                (3 * gamma**3 + 1) * gamma**2]
    np.testing.assert_allclose(seen, expected)
    weights = gamma ** np.arange(10)
    assert np.all(np.diff(weights) <= 0)
    # Eviction empties the context; the context window caps it.
    kernel = _trace_kernel(["gpt3-13b/superglue"], 48.0, [{0: 40}, {0: 1}, {0: 1}], aoc_decay=1.0)
    kernel.step(np.array([[1]]))
    assert kernel.context[0, 0, 0] == 32  # Table I: K = 32 for SuperGLUE
    kernel.step(np.array([[0]]))
    assert kernel.context[0, 0, 0] == 0 and not kernel.cached.any()


def test_hand_computed_costs():
    kernel = _trace_kernel(["gpt3-13b/translation", "uniformer-b/video-cls"], 48.0,
                           [{0: 2, 1: 1}, {0: 1}])
    p = kernel.params
    # Slot 0: load GPT3-13B and serve its 2 requests at the edge; video goes to the cloud.
    _, reward, *_, info = kernel.step(np.array([[1, 0]]))
    mem = 12850e6 * 2 * 1.1 / 1e9
    load_s = mem / 2.0
    switch = 0.2 * load_s + 0.02 * 300 * load_s / 1000 + 0.2
    assert info["switching_cost"][0] == pytest.approx(switch)
    tflop_llm = 26.54 * 128 / 1000
    edge_infer = tflop_llm / 100.0
    tflop_video = 389 / 1000
    cloud_video = 8 * 2.0 / 100 + 0.1 + 8 * 2.0 / 100 + tflop_video / 1000 + 0.002 * tflop_video + 0.05
    assert info["inference_latency"][0] == pytest.approx(2 * edge_infer)
    assert info["offloading_latency"][0] == pytest.approx(2 * 8 * 0.01 / 100)
    assert info["cloud_cost"][0] == pytest.approx(cloud_video)
    acc = 0.5 * (2 * (1 - 0.1545) + (1 - 0.840))  # zero-shot at the edge, no context yet
    assert info["accuracy_cost"][0] == pytest.approx(acc)
    assert -reward[0] == pytest.approx(switch + 2 * edge_infer + 2 * 8e-4 + cloud_video + acc)
    # Slot 1: two examples in context now, K = 2 (one AoC step of age weighs 1 at age 0).
    _, reward, *_, info = kernel.step(np.array([[1, 0]]))
    assert kernel.context[0, 0, 0] == pytest.approx(p.aoc_decay * 2 + 1)
    a2 = (15.45 + 10.67 * math.log2(1 + 2 ** FITTED_ALPHA["gpt3-13b/translation"])) / 100
    assert info["accuracy_cost"][0] == pytest.approx(0.5 * (1 - a2))
    assert info["inference_latency"][0] == pytest.approx(
        26.54 * (128 + 0.02 * 32 * 2) / 1000 / 100.0)
    assert info["switching_cost"][0] == 0


def test_admission_rule_keeps_gpu_memory_and_prefers_demand():
    # Three GPT3-13B instances (28.3 GB each) and 60 GB: asking for all three loads the two
    # most requested ones.
    models = ["gpt3-13b/translation", "gpt3-13b/arithmetic", "gpt3-13b/superglue"]
    kernel = _trace_kernel(models, 60.0, [{0: 1, 1: 3, 2: 2}])
    *_, info = kernel.step(np.array([[1, 1, 1]]))
    assert set(np.flatnonzero(kernel.cached[0, 0])) == {1, 2}
    assert info["loads"][0] == 2 and info["rejected_loads"][0] == 1
    assert info["edge_requests"][0] == 5 and info["cloud_requests"][0] == 1


def test_option_two_keeps_model_but_offloads():
    kernel = _trace_kernel(["clip-vit-l14/classification"], 48.0, [{0: 1}, {0: 2}])
    *_, info = kernel.step(np.array([[2]]))
    assert kernel.cached[0, 0, 0] and info["cloud_requests"][0] == 1 and info["loads"][0] == 1
    *_, info = kernel.step(np.array([[1]]))
    assert info["edge_requests"][0] == 2 and info["loads"][0] == 0


def test_action_masks():
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    mask = env.unwrapped.action_masks().reshape(-1, 3)
    names = env.unwrapped.kernel.model_names
    for m, name in enumerate(names):
        assert mask[m, 0]
        assert mask[m, 1] == mask[m, 2] == (not name.startswith("gpt3-175b"))


# ---------------------------------------------------------------------------
# Baselines on hand-built traces
# ---------------------------------------------------------------------------
CLIP_H = ["clip-vit-h14/classification", "clip-vit-h14/image-retrieval", "clip-vit-h14/text-retrieval"]


def test_fifo_evicts_the_oldest_and_lru_the_least_recent():
    trace = [{0: 1}, {1: 1}, {0: 1}, {2: 1}]  # A, B, A, C with room for two
    caches, infos = _run(_trace_kernel(CLIP_H, 4.5, trace), FifoPolicy)
    assert caches == [{0}, {0, 1}, {0, 1}, {1, 2}]  # A was loaded first
    caches, _ = _run(_trace_kernel(CLIP_H, 4.5, trace), LruPolicy)
    assert caches == [{0}, {0, 1}, {0, 1}, {0, 2}]  # B was used least recently


def test_lfu_admits_only_over_less_frequent_models():
    trace = [{0: 1}, {1: 1}, {0: 1}, {2: 1}, {2: 1}, {2: 1}]
    caches, infos = _run(_trace_kernel(CLIP_H, 4.5, trace), LfuPolicy)
    # C (1 and then 2 requests) does not beat B (1 request) until its third request.
    assert caches == [{0}, {0, 1}, {0, 1}, {0, 1}, {0, 2}, {0, 2}]
    assert [i["cloud_requests"][0] for i in infos] == [0, 0, 0, 1, 0, 0]


def test_least_context_keeps_the_model_with_examples_in_context():
    # GPT3-13B translation (2 examples in context) and two CLIP-H models; room for the LFM
    # and one CLIP-H.  V2 becomes the most requested: LC evicts V1 (no context), LFU evicts
    # the LFM (ties with V1 at 2 requests, lower index).
    models = ["gpt3-13b/translation"] + CLIP_H[:2]
    trace = [{0: 2}, {1: 1}, {1: 1}, {2: 1}, {2: 1}, {2: 1}]
    caches, _ = _run(_trace_kernel(models, 31.0, trace), LeastContextPolicy)
    assert caches[-1] == {0, 2}
    caches, _ = _run(_trace_kernel(models, 31.0, trace), LfuPolicy)
    assert caches[-1] == {1, 2}


def test_least_context_blocks_loads_that_would_discard_context():
    models = ["gpt3-13b/translation", "gpt3-13b/superglue"]  # room for one
    trace = [{0: 1}, {0: 1}, {1: 1}, {1: 1}, {1: 1}]
    caches, infos = _run(_trace_kernel(models, 30.0, trace), LeastContextPolicy)
    assert caches == [{0}] * 5  # translation keeps >= 1 example in context throughout
    caches, _ = _run(_trace_kernel(models, 30.0, trace), LfuPolicy)
    assert caches[-1] == {1}  # SuperGLUE's third request outnumbers translation's two


def test_miss_penalty_utility_evicts_low_utility_large_model():
    # GPT3-13B (2 requests, 28.3 GB) and UniFormer-S (1 request, 0.05 GB) cached; another
    # GPT3-13B arrives 3 times.  Utility = requests x load cost / memory is lower for the
    # big model, so it goes first and the small one survives; LFU evicts the small one first
    # and then the big one as well.
    models = ["gpt3-13b/translation", "uniformer-s/image-cls", "gpt3-13b/superglue"]
    trace = [{0: 2, 1: 1}, {2: 3}]
    caches, _ = _run(_trace_kernel(models, 28.5, trace), MissPenaltyUtilityPolicy)
    assert caches == [{0, 1}, {1, 2}]
    caches, _ = _run(_trace_kernel(models, 28.5, trace), LfuPolicy)
    assert caches == [{0, 1}, {2}]


def test_cloud_only_and_random():
    kernel = ModelCachingKernel(ModelCachingParams(num_slots=30), num_envs=4)
    kernel.reset(seed=0)
    cloud = CloudOnlyPolicy(kernel)
    for _ in range(30):
        *_, info = kernel.step(cloud.predict(kernel.observe())[0])
        assert info["edge_requests"].sum() == 0 and info["loads"].sum() == 0
    kernel.reset(seed=0)
    rand = RandomPolicy(kernel, seed=0)
    actions = np.stack([rand.predict(kernel.observe())[0] for _ in range(50)]).reshape(50, 4, -1)
    assert not actions[:, :, ~kernel.fits].any()  # respects the mask
    counts = np.bincount(actions[:, :, kernel.fits].ravel(), minlength=3)
    assert counts.min() > 0.25 * counts.sum()  # all three options, roughly uniformly


def test_baseline_ordering_on_paper_preset():
    """Table II's ordering: LC < LFU < cloud-only < FIFO, random (8 episodes)."""
    from gentwin.evaluation import evaluate_policy

    cost = {}
    for name in ("lc", "lfu", "cloud_only", "fifo", "random"):
        venv = gentwin.envs.make_sb3_vec_env(ENV_ID, num_envs=8)
        cost[name] = -evaluate_policy(BASELINES[name](venv, seed=0), ENV_ID, n_episodes=8).mean()
    assert cost["lc"] < cost["lfu"] < cost["cloud_only"] < min(cost["fifo"], cost["random"])


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("gpu_memory_gb", 0.0), ("aoc_decay", 1.5), ("num_slots", 0), ("arrival_rate_per_slot", -1.0),
    ("bytes_per_param", (2.0, 2.0)), ("models", ("gpt-5",)), ("a1_reading", "half"),
    ("action_mode", "continuous"), ("family_request_share", (1.0, 0.0)), ("reward_sharing", 2.0),
])
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ModelCachingParams(**{field: value})


def test_bad_actions_raise():
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    M = env.unwrapped.kernel.num_models
    with pytest.raises(InvalidActionError):
        env.step(np.full(M, 3))
    with pytest.raises(InvalidActionError):
        env.step(np.zeros(M + 1, dtype=np.int64))
    with pytest.raises(InvalidActionError):
        env.step(np.full(M, np.nan))
    box = gym.make(ENV_ID, action_mode="box")
    box.reset(seed=0)
    with pytest.raises(InvalidActionError):
        box.step(np.full(M, 1.5, dtype=np.float32))


# ---------------------------------------------------------------------------
# Multi-agent (PettingZoo)
# ---------------------------------------------------------------------------
def test_parallel_api():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(make_parallel(MA_ID, num_slots=20), num_cycles=30)


def test_neighbour_serving_and_team_reward():
    models = ["gpt3-13b/translation", "clip-vit-l14/classification"]
    env = ModelCachingParallelEnv(models=tuple(models), num_slots=3, num_edges=2, gpu_memory_gb=48.0)
    env.reset(seed=0)
    k = env.kernel
    k.arrivals[:] = 0
    k.arrivals[0, :, 1, 0] = 2  # edge_1 gets GPT3-13B requests; edge_0 caches the model
    k.request_count[:] = 0
    k._note_arrivals()
    acts = {"edge_0": np.array([1, 0]), "edge_1": np.array([0, 0])}
    _, rewards, _, _, infos = env.step(acts)
    assert infos["edge_0"]["neighbour_requests"] == 2 and infos["edge_0"]["cloud_requests"] == 0
    assert infos["edge_0"]["backhaul_latency"] == pytest.approx(2 * (0.01 + 8 * 0.01 / 1000))
    assert k.context[0, 0, 0] == 2  # edge_0's instance learned from edge_1's requests
    # Team reward (reward_sharing = 1): every agent gets minus the mean cost.
    cost = infos["edge_0"]["system_cost"]
    assert rewards["edge_0"] == rewards["edge_1"] == pytest.approx(-cost / 2)
    # edge_1 pays for its requests, edge_0 for its load.
    assert infos["edge_1"]["agent_cost"] + infos["edge_0"]["agent_cost"] == pytest.approx(cost)
    # Option 2 at the neighbour: it does not serve others, requests go to the cloud.
    _, _, _, _, infos = env.step({"edge_0": np.array([2, 0]), "edge_1": np.array([0, 0])})
    assert infos["edge_0"]["neighbour_requests"] == 0 and infos["edge_0"]["cloud_requests"] == 2


def test_parallel_env_matches_single_agent_view():
    par = ModelCachingParallelEnv(num_slots=10)
    single = gym.make(ENV_ID, params="cooperative", num_slots=10).unwrapped
    obs_p, _ = par.reset(seed=4)
    obs_s, _ = single.reset(seed=4)
    np.testing.assert_array_equal(np.concatenate([obs_p[a] for a in par.possible_agents]), obs_s)
    rng = np.random.default_rng(0)
    for _ in range(10):
        joint = _random_actions(single.kernel, rng)[0]
        acts = {a: joint[k * 22:(k + 1) * 22] for k, a in enumerate(par.possible_agents)}
        obs_p, rew_p, *_ = par.step(acts)
        obs_s, rew_s, *_ = single.step(joint)
        np.testing.assert_array_equal(np.concatenate([obs_p[a] for a in par.possible_agents]), obs_s)
        assert sum(rew_p.values()) == pytest.approx(rew_s)


def test_supersuit_parameter_sharing_trains_with_sb3():
    import supersuit as ss
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = make_parallel(MA_ID, num_slots=20)
    venv = ss.pettingzoo_env_to_vec_env_v1(env)
    venv = ss.concat_vec_envs_v1(venv, 2, num_cpus=0, base_class="stable_baselines3")
    assert venv.num_envs == 6  # 2 copies x 3 edge servers share one policy
    # SuperSuit's SB3 wrapper has no working seed() (ConcatVecEnv lacks it), so PPO gets no
    # seed; the environments are seeded through the reset of the concatenated vector env.
    venv.venv.reset(seed=0)
    torch.manual_seed(0)
    model = PPO("MlpPolicy", venv, n_steps=48, batch_size=96, n_epochs=1, verbose=0)
    model.learn(288)
    assert model.num_timesteps >= 288
    action, _ = model.predict(venv.reset())
    assert action.shape == (6, 22)


# ---------------------------------------------------------------------------
# Hindsight references (issue 15)
# ---------------------------------------------------------------------------
def _run_episode(kernel, policy_cls, seed=0):
    """Return per instance of a baseline on an already reset kernel."""
    policy = policy_cls(kernel, seed=seed)
    total = np.zeros(kernel.num_envs)
    for _ in range(kernel.params.num_slots):
        actions, _ = policy.predict(kernel.observe())
        _, reward, _, _, _ = kernel.step(actions)
        total += reward
    return total


def test_edge_cost_lower_bound_is_below_every_context():
    from gentwin.baselines.model_caching import edge_cost_lower_bound

    k = ModelCachingKernel("paper", 1)
    lower = edge_cost_lower_bound(k)
    for K in np.linspace(0.0, 64.0, 513):
        infer, acc, uplink = k.edge_cost_per_request(np.full(k.num_models, K))
        assert np.all(infer + acc + uplink >= lower - 1e-12)


def test_hindsight_lp_bound_is_above_the_brute_force_optimum_on_a_tiny_instance():
    """3 models, 3 slots: the exact optimum over all 3^9 action sequences is never above the bound."""
    import itertools

    from gentwin.baselines.model_caching import hindsight_lp_bound

    params = ModelCachingParams(models=("gpt3-13b/translation", "uniformer-s/image-cls", "clip-vit-h14/classification"),
                                num_slots=3, gpu_memory_gb=30.0, arrival_rate_per_slot=6.0)
    for seed in range(3):
        one = ModelCachingKernel(params, 1)
        one.reset(seed=seed)
        bound = hindsight_lp_bound(one, 0)
        joint = np.array(list(itertools.product(range(3), repeat=9))).reshape(-1, 3, 3)  # (n, slot, model)
        k = ModelCachingKernel(params, len(joint))
        k.reset(seed=0)
        k.arrivals[:] = one.arrivals[0]
        total = np.zeros(len(joint))
        for t in range(3):
            _, reward, _, _, _ = k.step(joint[:, t])
            total += reward
        assert total.max() <= bound
        assert total.max() >= bound - 0.5 * abs(bound)  # and it is not vacuous


@pytest.mark.parametrize("preset, overrides", [("paper", {"num_slots": 20}), ("cooperative", {"num_slots": 10})])
def test_no_baseline_or_random_policy_beats_the_hindsight_bound(preset, overrides):
    from gentwin.baselines.model_caching import BOUND, hindsight_lp_bound

    import dataclasses

    from gentwin.envs.model_caching import PRESETS

    k = ModelCachingKernel(dataclasses.replace(PRESETS[preset], **overrides), 4)
    k.reset(seed=123)
    bound = np.array([hindsight_lp_bound(k, i) for i in range(4)])
    np.testing.assert_allclose(BOUND.value(k), bound)
    arrivals = k.arrivals.copy()
    best = np.full(4, -np.inf)
    for cls in BASELINES.values():  # hindsight included
        k.reset(seed=123)
        np.testing.assert_array_equal(k.arrivals, arrivals)
        ret = _run_episode(k, cls)
        assert np.all(ret <= bound), cls.name
        best = np.maximum(best, ret)
    for seed in range(8):  # random caching decisions (random search over the option space)
        k.reset(seed=123)
        assert np.all(_run_episode(k, RandomPolicy, seed=seed) <= bound)
    assert np.all(best >= bound - 0.2 * np.abs(bound))  # the bound is within 20 % of the best policy


# ---------------------------------------------------------------------------
# action_mode="scores": the passive caching rule with the agent's keep-priorities
# ---------------------------------------------------------------------------
def _dense_rank_action(values):
    """Per edge, monotone into (0, 1] by dense rank (ties kept): independent of scores_as_action."""
    from scipy.stats import rankdata

    B, E, M = values.shape
    out = np.empty((B, E, M))
    for b in range(B):
        for e in range(E):
            r = rankdata(values[b, e], method="dense")
            out[b, e] = r / r.max()
    return out.reshape(B, E * M).astype(np.float32)


def _lc_scores(k):
    """Least Context's keep-priority: (examples in context if >= 1, request count), lexicographic."""
    context = np.where(k.context >= 1.0, k.context, 0.0)
    return context * 1e9 + k.request_count


def _lfu_scores(k):
    return k.request_count.astype(np.float64)


@pytest.mark.parametrize("preset", ["paper", "cooperative"])
@pytest.mark.parametrize("name, scores", [("lc", _lc_scores), ("lfu", _lfu_scores)])
def test_scores_action_equal_to_a_baselines_scores_reproduces_its_episode(preset, name, scores):
    import dataclasses

    from gentwin.envs.model_caching import PRESETS

    params = dataclasses.replace(PRESETS[preset], num_slots=40)
    for seed in (0, 1, 2):
        ref = ModelCachingKernel(params, 4)
        ref.reset(seed=seed)
        expected = _run_episode(ref, BASELINES[name])
        k = ModelCachingKernel(dataclasses.replace(params, action_mode="scores"), 4)
        k.reset(seed=seed)
        np.testing.assert_array_equal(k.arrivals, ref.arrivals)
        total = np.zeros(4)
        for _ in range(params.num_slots):
            _, reward, _, _, _ = k.step(_dense_rank_action(scores(k)))
            total += reward
        np.testing.assert_array_equal(total, expected)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_act_in_box_and_scores_modes_and_reproduce_their_discrete_episodes(name):
    from gentwin.evaluation import evaluate_policy

    returns = {}
    for mode in ("discrete", "box", "scores"):
        venv = gentwin.envs.make_sb3_vec_env(ENV_ID, num_envs=4, num_slots=30, action_mode=mode)
        policy = BASELINES[name](venv, seed=0)
        returns[mode] = evaluate_policy(policy, ENV_ID, n_episodes=4, seed=77, venv=venv).metric("return")
    if name == "random":  # random options there, random scores here: both cost more than cloud-only
        venv = gentwin.envs.make_sb3_vec_env(ENV_ID, num_envs=4, num_slots=30)
        cloud = evaluate_policy(CloudOnlyPolicy(venv), ENV_ID, n_episodes=4, seed=77, venv=venv).metric("return")
        assert returns["scores"].mean() < cloud.mean() and returns["discrete"].mean() < cloud.mean()
    else:
        np.testing.assert_array_equal(returns["box"], returns["discrete"])
        np.testing.assert_array_equal(returns["scores"], returns["discrete"])


def test_scores_as_action_keeps_order_and_ties():
    from gentwin.envs.model_caching import scores_as_action

    values = np.array([[[3.0, -1.0, 3.0, np.inf, 0.5]], [[1.0, 1.0, 1.0, 1.0, 1.0]]])
    action = scores_as_action(values)
    np.testing.assert_allclose(action[0], [0.75, 0.25, 0.75, 1.0, 0.5])
    np.testing.assert_allclose(action[1], np.ones(5))
    assert np.all(action > 0) and np.all(action <= 1)


def test_scores_rule_on_a_hand_built_trace():
    # Two CLIP-H instances fit (4.5 GB, 2.17 GB each).  Scores (A, B, C) = (0.5, 0.2, 0.8).
    trace = [{0: 1}, {1: 1}, {2: 1}, {1: 1}, {0: 1, 1: 1}]
    k = _trace_kernel(CLIP_H, 4.5, trace, action_mode="scores")
    caches = []
    for _ in trace:
        *_, info = k.step(np.array([[0.5, 0.2, 0.8]], dtype=np.float32))
        caches.append(set(np.flatnonzero(k.cached[0, 0])))
        assert info["edge_requests"][0] == sum(trace[len(caches) - 1].get(m, 0) for m in caches[-1])
    # C evicts B (lowest-scored, unrequested); B (0.2) then displaces nobody; in the last
    # slot A is requested too and stays, B is not loaded (C scores higher).
    assert caches == [{0}, {0, 1}, {0, 2}, {0, 2}, {0, 2}]
    # A non-positive score never admits a missed model, even into free memory.
    k = _trace_kernel(CLIP_H, 48.0, trace, action_mode="scores")
    for _ in trace:
        *_, info = k.step(np.array([[0.5, 0.0, -0.3]], dtype=np.float32))
        assert not k.cached[0, 0, 1:].any()
    assert k.cached[0, 0, 0] and k.totals["loads"][0] == 1


def test_scores_mode_spaces_errors_and_pettingzoo_agents():
    from gymnasium import spaces
    from pettingzoo.test import parallel_api_test

    env = gym.make(ENV_ID, action_mode="scores")
    assert env.action_space == spaces.Box(-1.0, 1.0, (22,), np.float32)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError):
        env.step(np.full(22, 1.5, dtype=np.float32))
    with pytest.raises(AttributeError, match="discrete"):
        env.unwrapped.kernel.action_masks()
    with pytest.raises(ValueError, match="action_mode.*'discrete', 'box', 'scores'"):
        ModelCachingParams(action_mode="score")
    par = make_parallel(MA_ID, num_slots=20, action_mode="scores")
    assert all(par.action_space(a) == spaces.Box(-1.0, 1.0, (22,), np.float32) for a in par.possible_agents)
    parallel_api_test(par, num_cycles=30)


@pytest.mark.parametrize("preset, overrides", [("paper", {"num_slots": 20}), ("cooperative", {"num_slots": 10})])
def test_random_scores_never_beat_the_hindsight_bound(preset, overrides):
    import dataclasses

    from gentwin.baselines.model_caching import hindsight_lp_bound
    from gentwin.envs.model_caching import PRESETS

    k = ModelCachingKernel(dataclasses.replace(PRESETS[preset], action_mode="scores", **overrides), 8)
    k.reset(seed=321)
    bound = np.array([hindsight_lp_bound(k, i) for i in range(8)])
    best = np.full(8, -np.inf)
    for cls in BASELINES.values():  # every baseline is a point of this space (hindsight included)
        k.reset(seed=321)
        ret = _run_episode(k, cls)
        assert np.all(ret <= bound), cls.name
        best = np.maximum(best, ret)
    rng = np.random.default_rng(0)
    for trial in range(16):  # random search over the scores space: constant and per-slot random scores
        k.reset(seed=321)
        constant = rng.uniform(-1, 1, size=(8, k.single_action_space.shape[0]))
        total = np.zeros(8)
        for _ in range(k.params.num_slots):
            a = constant if trial % 2 else rng.uniform(-1, 1, size=constant.shape)
            _, reward, _, _, _ = k.step(a)
            total += reward
        assert np.all(total <= bound), trial
    assert np.all(best >= bound - 0.2 * np.abs(bound))  # the bound is within 20 % of the best point


# ---------------------------------------------------------------------------
# expert / expert_residual (scores mode): the passive baseline as expert, residual learning
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("expert", ["lc", "lfu"])
def test_expert_action_is_the_baselines_scores_action(expert):
    """expert=X reports, every step, the action baseline X plays in scores mode for the observed state."""
    plain = ModelCachingKernel(dict(action_mode="scores", num_slots=12), 3)
    with_expert = ModelCachingKernel(dict(action_mode="scores", num_slots=12, expert=expert), 3)
    plain.reset(seed=5)
    with_expert.reset(seed=5)
    baseline = BASELINES[expert](plain)
    for _ in range(12):
        action, _ = baseline.predict(plain.observe())
        np.testing.assert_array_equal(with_expert.observe(), plain.observe())  # no extra observation
        *_, info_plain = plain.step(action)
        *_, info = with_expert.step(action)
        np.testing.assert_array_equal(info["expert_action"], action)
        assert np.all(info["expert_action"] > 0) and np.all(info["expert_action"] <= 1)
        assert "expert_action" not in info_plain and "played_action" not in info


@pytest.mark.parametrize("num_edges", [1, 2])
def test_expert_residual_plays_the_expert_corrected_by_the_action(num_edges):
    """expert_residual=r: the env plays clip(expert + r a) (on its grid); a = 0 is the expert's episode;
    the expert's action ends each edge's observation, inside the observation space."""
    from gentwin.envs.model_caching import RESIDUAL_GRID

    options = dict(action_mode="scores", num_slots=10, num_edges=num_edges, expert="lc")
    residual = ModelCachingKernel(dict(expert_residual=0.5, **options), 4)
    lc_env = ModelCachingKernel(dict(action_mode="scores", num_slots=10, num_edges=num_edges), 4)
    zero = ModelCachingKernel(dict(expert_residual=1.0, **options), 4)
    for k in (residual, lc_env, zero):
        k.reset(seed=11)
    lc = BASELINES["lc"](lc_env)
    rng = np.random.default_rng(0)
    M, E = residual.num_models, num_edges
    total_zero = total_lc = 0.0
    for _ in range(10):
        obs = residual.observe()
        assert all(residual.single_observation_space.contains(o) for o in obs)
        expert = obs.reshape(4, E, -1)[:, :, -M:].reshape(4, E * M)
        np.testing.assert_allclose(expert, residual.expert_actions(), rtol=1e-6)
        a = rng.uniform(-1, 1, size=(4, E * M)).astype(np.float32)
        *_, info = residual.step(a)
        expected = np.clip(np.round((info["expert_action"] + 0.5 * a) * RESIDUAL_GRID) / RESIDUAL_GRID, -1, 1)
        np.testing.assert_array_equal(info["played_action"], expected)
        assert np.abs(info["played_action"] - np.clip(info["expert_action"] + 0.5 * a, -1, 1)).max() <= 1 / RESIDUAL_GRID
        total_zero += zero.step(np.zeros((4, E * M), dtype=np.float32))[1]
        total_lc += lc_env.step(lc.predict(lc_env.observe())[0])[1]
    np.testing.assert_array_equal(total_zero, total_lc)


@pytest.mark.parametrize("r", [1.0, 2.0])
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_under_expert_residual_play_their_own_episodes(name, r):
    """A baseline under expert_residual plays the correction that reproduces its scores-mode episode
    (exactly for r >= 1 except random, whose uniform scores need r = 2; ties survive the float32
    correction thanks to the grid)."""
    from gentwin.evaluation import evaluate_policy

    returns = {}
    for extra in ({}, dict(expert="lc", expert_residual=r)):
        venv = gentwin.envs.make_sb3_vec_env(ENV_ID, num_envs=4, num_slots=30, action_mode="scores", **extra)
        policy = BASELINES[name](venv, seed=0)
        returns[bool(extra)] = evaluate_policy(policy, ENV_ID, n_episodes=4, seed=77, venv=venv).metric("return")
    if name == "random" and r < 2:
        assert not np.array_equal(returns[True], returns[False])  # beyond reach: the nearest playable
    else:
        np.testing.assert_array_equal(returns[True], returns[False])


def test_random_corrections_never_beat_the_hindsight_bound():
    import dataclasses

    from gentwin.baselines.model_caching import hindsight_lp_bound
    from gentwin.envs.model_caching import PRESETS

    k = ModelCachingKernel(dataclasses.replace(PRESETS["paper"], num_slots=20, action_mode="scores", expert="lc",
                                               expert_residual=1.0), 8)
    k.reset(seed=321)
    bound = np.array([hindsight_lp_bound(k, i) for i in range(8)])
    rng = np.random.default_rng(1)
    for trial in range(8):
        k.reset(seed=321)
        total = np.zeros(8)
        constant = rng.uniform(-1, 1, size=(8, k.single_action_space.shape[0]))
        for _ in range(k.params.num_slots):
            a = constant if trial % 2 else rng.uniform(-1, 1, size=constant.shape)
            total += k.step(a)[1]
        assert np.all(total <= bound), trial


@pytest.mark.parametrize("kwargs", [dict(expert="lc"), dict(expert="lc", expert_residual=1.0),
                                    dict(expert="lfu", expert_residual=0.5, num_edges=2, num_slots=6)])
def test_check_env_with_expert(kwargs):
    from gymnasium.utils.env_checker import check_env
    from pettingzoo.test import parallel_api_test
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(ENV_ID, action_mode="scores", **kwargs).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(ENV_ID, action_mode="scores", **kwargs).unwrapped, warn=False)
    par = make_parallel(MA_ID, action_mode="scores", **{"num_slots": 10, **kwargs})
    M = len(TABLE_I)  # an agent observes 6 M + 2, the other edges' caching M, the expert's action M
    expected = 7 * M + 2 + (M if kwargs.get("expert_residual", 0) > 0 else 0)
    assert all(par.observation_space(a).shape == (expected,) for a in par.possible_agents)
    parallel_api_test(par, num_cycles=10)


def test_parallel_env_gives_each_edge_its_own_expert_and_played_action():
    # The expert's (and the played) action is laid out like the joint action; each edge must get
    # its own M scores, in its action space's shape, not the team's E * M (agents that clone the
    # expert store it in their action's shape).
    par = make_parallel(MA_ID, action_mode="scores", expert="lc", expert_residual=1.0, num_slots=6)
    single = gym.make(MA_ID.replace("-ma", ""), params="cooperative", action_mode="scores", expert="lc",
                      expert_residual=1.0, num_slots=6).unwrapped
    par.reset(seed=3)
    single.reset(seed=3)
    rng = np.random.default_rng(1)
    M = len(TABLE_I)
    for _ in range(6):
        joint = rng.uniform(-0.3, 0.3, size=single.action_space.shape).astype(np.float32)
        _, _, _, _, infos = par.step({a: joint[k * M:(k + 1) * M] for k, a in enumerate(par.possible_agents)})
        _, _, _, _, info = single.step(joint)
        for k, a in enumerate(par.possible_agents):
            for key in ("expert_action", "played_action"):
                assert infos[a][key].shape == par.action_space(a).shape, key
                np.testing.assert_array_equal(infos[a][key], info[key][k * M:(k + 1) * M])


@pytest.mark.parametrize("kwargs, match", [
    (dict(action_mode="scores", expert="belady"), "expert = 'belady' is invalid: must be one of 'none', 'fifo'"),
    (dict(expert="lc"), "expert = 'lc' is invalid with action_mode = 'discrete'"),
    (dict(action_mode="scores", expert_residual=1.0), "expert_residual = 1.0 is invalid with expert = 'none'"),
    (dict(action_mode="scores", expert="lc", expert_residual=2.5), "expert_residual = 2.5 is invalid"),
    (dict(action_mode="scores", expert="lc", expert_residual=-0.1), "expert_residual = -0.1 is invalid"),
])
def test_bad_expert_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelCachingParams(**kwargs)
