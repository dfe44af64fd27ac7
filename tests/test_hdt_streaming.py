"""HdtStreaming-v0: hand-computed QoE and resources, penalties, the relaxation
bound against baselines and random feasible allocations, the multi-step
variant, seeding/equivalence and input validation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import gentwin  # noqa: F401
from gentwin.baselines import get_baselines
from gentwin.baselines.base import CERTIFIED_UPPER_BOUND
from gentwin.baselines.hdt_streaming import (
    BASELINES,
    BOUND,
    RoundedRelaxationPolicy,
    episode_reward_bound,
    greedy_allocation,
    relaxation_bound,
    reward_bound,
    solve_relaxation,
)
from gentwin.envs import InvalidActionError
from gentwin.envs.hdt_streaming import (
    PRESETS,
    HdtStreamingEnv,
    HdtStreamingKernel,
    HdtStreamingParams,
    action_to_allocation,
    allocation_metrics,
    allocation_to_action,
    fair_share_allocation,
    similarity,
)

ENV_ID = "gentwin/HdtStreaming-v0"
#: HiGHS's primal/dual feasibility tolerance is 1e-7: the bound is exact up to that.
LP_TOL = 1e-6


def metrics_of(kernel, resolution, steps):
    ctx = kernel.context()
    return allocation_metrics(
        kernel.params, resolution, steps, ctx["snr_db"], ctx["complexity"], ctx["threshold"],
        ctx["active"], ctx["bandwidth_mhz"], ctx["compute_tflops"],
    )


def independent_feasibility(p, ctx, r, s):
    """Constraint check written from the issue text, independent of allocation_metrics."""
    ok = []
    for b in range(r.shape[0]):
        bw = cp = 0.0
        fine = True
        for u in range(p.num_users):
            if not ctx["active"][b, u]:
                continue
            rate = r[b, u] * p.bitrate_max_mbps
            bw += rate / np.log2(1 + 10 ** (ctx["snr_db"][b, u] / 10))
            cp += s[b, u] * p.compute_per_step_tflops
            sim = 1 - np.exp(-s[b, u] / (ctx["complexity"][b, u] * p.step_scale))
            if p.qoe_weight_bitrate * rate + p.qoe_weight_similarity * sim < ctx["threshold"][b, u]:
                fine = False
        ok.append(fine and bw <= ctx["bandwidth_mhz"][b] and cp <= ctx["compute_tflops"][b])
    return np.array(ok)


def random_feasible_allocations(kernel, rng, n_draws):
    """Random allocations around the equal split, kept only if feasible: list of (r, s)."""
    p = kernel.params
    ctx = kernel.context()
    r0, s0 = fair_share_allocation(p, ctx["snr_db"], ctx["active"], ctx["bandwidth_mhz"], ctx["compute_tflops"])
    out = []
    for _ in range(n_draws):
        scale = rng.uniform(0.5, 1.4, size=r0.shape)
        r = np.clip(r0 * scale, p.resolution_min, p.resolution_max)
        s = np.clip(np.rint(s0 * rng.uniform(0.6, 1.35, size=s0.shape)), 1, p.max_steps).astype(np.int64)
        out.append((r, s, independent_feasibility(p, ctx, r, s)))
    return out


# ---------------------------------------------------------------------------
# API conformance and seeding
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["users10", "dynamic"])
def test_check_env_gymnasium_and_sb3(preset):
    gym_check_env(gym.make(ENV_ID, params=preset).unwrapped, skip_render_check=True)
    sb3_check_env(HdtStreamingEnv(params=preset), warn=False)


@pytest.mark.parametrize("preset,steps", [("users5", 70), ("dynamic", 60)])
def test_native_vector_env_equals_sync_vector_env(preset, steps):
    """70 one-step episodes cross the 32-context block redraw; 60 steps cross truncation."""
    B = 3
    native = gym.make_vec(ENV_ID, num_envs=B, params=preset)
    sync = SyncVectorEnv(
        [lambda: gym.make(ENV_ID, params=preset) for _ in range(B)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    o1, _ = native.reset(seed=7)
    o2, _ = sync.reset(seed=7)
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        a = rng.uniform(-1, 1, size=native.action_space.shape).astype(np.float32)
        r1 = native.step(a)
        r2 = sync.step(a)
        for x, y in zip(r1[:4], r2[:4]):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("preset", ["users10", "dynamic"])
def test_instance_i_of_batch_equals_single_env_seeded_s_plus_i(preset):
    B, seed, i = 5, 11, 3
    venv = gym.make_vec(ENV_ID, num_envs=B, params=preset)
    env = gym.make(ENV_ID, params=preset)
    obs_b, _ = venv.reset(seed=seed)
    obs_1, _ = env.reset(seed=seed + i)
    np.testing.assert_array_equal(obs_b[i], obs_1)
    rng = np.random.default_rng(1)
    for _ in range(60):
        a = rng.uniform(-1, 1, size=venv.action_space.shape).astype(np.float32)
        obs_b, rew_b, term_b, trunc_b, _ = venv.step(a)
        obs_1, rew_1, term_1, trunc_1, _ = env.step(a[i])
        assert rew_b[i] == rew_1 and term_b[i] == term_1 and trunc_b[i] == trunc_1
        if term_1 or trunc_1:
            obs_1, _ = env.reset()
        np.testing.assert_array_equal(obs_b[i], obs_1)


def test_seeded_reset_replays_and_block_redraw_continues_the_stream():
    env = HdtStreamingEnv(params=HdtStreamingParams(num_users=3, bandwidth_mhz=6, compute_tflops=30,
                                                    context_block=4))
    first = [env.reset(seed=5)[0]] + [env.reset()[0] for _ in range(9)]
    again = [env.reset(seed=5)[0]] + [env.reset()[0] for _ in range(9)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    # Ten consecutive contexts (spanning 3 blocks of 4) are all different draws.
    assert len({o.tobytes() for o in first}) == 10


@pytest.mark.parametrize("preset", ["users40", "dynamic"])
def test_observations_stay_in_space_over_a_long_random_run(preset):
    venv = gym.make_vec(ENV_ID, num_envs=16, params=preset)
    space = venv.single_observation_space
    obs, _ = venv.reset(seed=3)
    rng = np.random.default_rng(2)
    for _ in range(150):
        assert all(space.contains(o) for o in obs)
        obs, *_ = venv.step(rng.uniform(-1, 1, size=venv.action_space.shape).astype(np.float32))


# ---------------------------------------------------------------------------
# The model: hand computations
# ---------------------------------------------------------------------------
def test_qoe_and_resource_use_match_a_hand_computation():
    p = HdtStreamingParams(num_users=2, bandwidth_mhz=10.0, compute_tflops=20.0)
    kernel = HdtStreamingKernel(p, num_envs=1)
    kernel.reset(seed=0)
    # Context written by hand into the tape and loaded.
    kernel.tape_pos[:] = 0
    kernel.tape_snr_db[0, 0] = [10.0, 0.0]
    kernel.tape_complexity[0, 0] = [2.0, 1.0]
    kernel.tape_service_level[0, 0] = [0.8, 0.5]
    kernel.tape_active[0, 0] = True
    kernel.tape_avail_bw[0, 0] = 0.8
    kernel.tape_avail_compute[0, 0] = 0.75
    kernel._load_context(np.array([0]))
    # B = 8 MHz, C = 15 TFLOPS.  Equal split: 4 MHz each; steps floor(7.5 / 0.5) = 15.
    # user 0: eta = log2(11) = 3.459432; rate 13.837726 Mbps -> r = 0.6918864
    #         QoE = 0.05 * 13.837726 + (1 - exp(-15 / 10)) = 0.6918864 + 0.7768698 = 1.4687562
    # user 1: eta = log2(2) = 1; rate 4 Mbps; QoE = 0.2 + (1 - exp(-3)) = 0.2 + 0.9502129 = 1.1502129
    np.testing.assert_allclose(kernel.bandwidth_available_mhz, [8.0])
    np.testing.assert_allclose(kernel.compute_available_tflops, [15.0])
    np.testing.assert_allclose(kernel.threshold[0], [0.8 * 1.4687562, 0.5 * 1.1502129], rtol=1e-6)
    # Allocation: user 0 r = 0.5, 10 steps; user 1 r = 0.1, 4 steps.
    action = allocation_to_action(p, np.array([[0.5, 0.1]]), np.array([[10, 4]]))
    _, reward, terminated, _, info = kernel.step(action)
    # user 0: 10 Mbps, 10 / 3.459432 = 2.890649 MHz, m = 1 - exp(-1) = 0.6321206, QoE = 1.1321206
    # user 1: 2 Mbps, 2 MHz, m = 1 - exp(-0.8) = 0.5506710, QoE = 0.1 + 0.5506710 = 0.6506710
    np.testing.assert_allclose(info["bitrate_mbps"][0], [10.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(info["similarity"][0], [0.6321206, 0.5506710], rtol=1e-6)
    np.testing.assert_allclose(info["qoe"][0], [1.1321206, 0.6506710], rtol=1e-6)
    np.testing.assert_allclose(info["bandwidth_used_mhz"], [4.890649], rtol=1e-6)
    np.testing.assert_allclose(info["compute_used_tflops"], [7.0])
    np.testing.assert_array_equal(info["steps"][0], [10, 4])
    # Thresholds 1.1750050 and 0.5751065: user 0 falls 0.0428844 short (penalty 5 per unit).
    np.testing.assert_allclose(info["threshold_shortfall"][0], [0.0428844, 0.0], atol=1e-6)
    assert info["threshold_violations"][0] == 1 and not info["feasible"][0]
    np.testing.assert_allclose(reward, [1.1321206 + 0.6506710 - 5 * 0.0428844], rtol=1e-5)
    assert terminated[0]


def test_resource_overuse_penalty_is_the_documented_linear_charge():
    p = HdtStreamingParams(num_users=2, bandwidth_mhz=10.0, compute_tflops=20.0, threshold_min=0.0,
                           threshold_max=0.0)
    ctx = dict(snr_db=np.array([0.0, 0.0]), complexity=np.array([1.0, 1.0]), threshold=np.zeros(2),
               active=np.array([True, True]), bandwidth_mhz=10.0, compute_tflops=20.0)
    # 2 x 10 Mbps at eta = 1 -> 20 MHz (10 over); 2 x 30 steps x 0.5 -> 30 TFLOPS (10 over).
    m = allocation_metrics(p, np.array([0.5, 0.5]), np.array([30, 30]), **ctx)
    np.testing.assert_allclose(m["bandwidth_excess_mhz"], 10.0)
    np.testing.assert_allclose(m["compute_excess_tflops"], 10.0)
    np.testing.assert_allclose(m["penalty"], 1.0 * 10 + 1.0 * 10)
    np.testing.assert_allclose(m["reward"], m["total_qoe"] - 20.0)
    # Exactly at the budgets: no penalty.
    m = allocation_metrics(p, np.array([0.25, 0.25]), np.array([20, 20]), **ctx)
    assert m["penalty"] == 0.0 and m["feasible"]


def test_similarity_shapes_increase_saturate_and_slow_down_with_motion_complexity():
    for shape in ("exponential", "rational"):
        p = HdtStreamingParams(similarity_shape=shape)
        s = np.arange(1, 51)
        easy, hard = similarity(p, s, 1.0), similarity(p, s, 3.0)
        assert np.all(np.diff(easy) > 0) and np.all(np.diff(np.diff(easy)) < 0)
        assert np.all(hard < easy) and easy[-1] <= p.similarity_max
    # rational: m = s / (s + kappa * 5): 10 steps at kappa 2 -> 0.5
    np.testing.assert_allclose(similarity(HdtStreamingParams(similarity_shape="rational"), 10, 2.0), 0.5)


def test_action_mapping_round_trips_and_covers_the_ranges():
    p = PRESETS["users10"]
    r = np.linspace(p.resolution_min, p.resolution_max, 10)
    s = np.arange(1, 51, 5)
    r2, s2 = action_to_allocation(p, allocation_to_action(p, r, s))
    np.testing.assert_allclose(r2, r, rtol=1e-6)
    np.testing.assert_array_equal(s2, s)
    r_lo, s_lo = action_to_allocation(p, -np.ones(20))
    r_hi, s_hi = action_to_allocation(p, np.ones(20))
    assert np.all(r_lo == p.resolution_min) and np.all(s_lo == 1)
    assert np.allclose(r_hi, p.resolution_max) and np.all(s_hi == p.max_steps)


# ---------------------------------------------------------------------------
# Feasibility, baselines and the relaxation bound
# ---------------------------------------------------------------------------
def test_feasible_allocations_have_no_penalty():
    kernel = HdtStreamingKernel("users10", num_envs=24)
    kernel.reset(seed=21)
    rng = np.random.default_rng(4)
    n_feasible = n_infeasible = 0
    for r, s, feasible in random_feasible_allocations(kernel, rng, 60):
        # Through the env's own action path (float32 actions).
        k2 = HdtStreamingKernel("users10", num_envs=24)
        k2.reset(seed=21)
        _, reward, _, _, info = k2.step(allocation_to_action(kernel.params, r, s))
        np.testing.assert_array_equal(info["feasible"], feasible)
        assert np.all(info["penalty"][feasible] == 0.0)
        np.testing.assert_array_equal(reward[feasible], info["total_qoe"][feasible])
        assert np.all(info["penalty"][~feasible] > 0)
        n_feasible += feasible.sum()
        n_infeasible += (~feasible).sum()
    assert n_feasible > 50 and n_infeasible > 50  # both cases were exercised


@pytest.mark.parametrize("preset,n_states,n_random", [("users5", 40, 150), ("users20", 8, 60), ("dynamic", 16, 60)])
def test_relaxation_bound_dominates_baselines_and_random_feasible_allocations(preset, n_states, n_random):
    kernel = HdtStreamingKernel(preset, num_envs=n_states)
    kernel.reset(seed=100)
    if preset == "dynamic":  # states in the middle of episodes, with users gone and joined
        for _ in range(20):
            kernel.step(np.zeros((n_states, 2 * kernel.params.num_users)))
    bound = relaxation_bound(kernel)
    assert np.all(np.isfinite(bound))
    rewards = {}
    for name, cls in BASELINES.items():
        action = cls(kernel).predict(kernel.observe())[0]
        m = metrics_of(kernel, *action_to_allocation(kernel.params, action))
        assert np.all(m["feasible"]), name
        rewards[name] = m["reward"]
        assert np.all(m["reward"] <= bound * (1 + LP_TOL) + LP_TOL), name
    best_random = np.full(n_states, -np.inf)
    rng = np.random.default_rng(5)
    for r, s, feasible in random_feasible_allocations(kernel, rng, n_random):
        qoe = metrics_of(kernel, r, s)["total_qoe"]
        best_random = np.where(feasible, np.maximum(best_random, qoe), best_random)
    assert np.isfinite(best_random).mean() > 0.5
    assert np.all(best_random <= bound * (1 + LP_TOL))
    # The ordering the baselines are built for, and the bound is not loose.
    assert np.all(rewards["equal_split"] < bound * 0.999)
    assert rewards["greedy"].mean() > rewards["equal_split"].mean()
    assert rewards["rounded_relaxation"].mean() > rewards["equal_split"].mean()
    assert np.all(rewards["rounded_relaxation"] >= 0.99 * bound)


def test_relaxation_matches_brute_force_on_two_users():
    """Enumerate integer steps and a fine resolution grid: bound >= every point, and close.

    Full availability makes the compute budget a whole number of steps (16), so
    the relaxation has no fractional step to exploit and must be nearly tight.
    """
    p = HdtStreamingParams(num_users=2, bandwidth_mhz=4.0, compute_tflops=8.0, max_steps=12,
                           availability_min=1.0, availability_max=1.0)
    kernel = HdtStreamingKernel(p, num_envs=6)
    kernel.reset(seed=9)
    ctx = kernel.context()
    bound = relaxation_bound(kernel)
    grid = np.linspace(p.resolution_min, p.resolution_max, 801)
    s1, s2 = np.meshgrid(np.arange(1, p.max_steps + 1), np.arange(1, p.max_steps + 1), indexing="ij")
    steps = np.stack([s1.ravel(), s2.ravel()], axis=1)[:, None, :]  # (144, 1, 2)
    for b in range(6):
        eta = np.log2(1 + 10 ** (ctx["snr_db"][b] / 10))
        # For r1 on the grid, give user 2 all the bandwidth left (capped): optimal for fixed r1.
        left = ctx["bandwidth_mhz"][b] - grid * p.bitrate_max_mbps / eta[0]
        r2 = np.minimum(left * eta[1] / p.bitrate_max_mbps, p.resolution_max)
        r = np.broadcast_to(np.stack([grid, r2], axis=1)[None], (steps.shape[0], grid.size, 2))
        m = allocation_metrics(p, r, np.broadcast_to(steps, r.shape), ctx["snr_db"][b], ctx["complexity"][b],
                               ctx["threshold"][b], ctx["active"][b], ctx["bandwidth_mhz"][b],
                               ctx["compute_tflops"][b])
        ok = (r[..., 1] >= p.resolution_min) & m["feasible"]
        assert ok.any()
        best = m["total_qoe"][ok].max()
        assert best <= bound[b] * (1 + LP_TOL)
        assert bound[b] - best < 2e-3 * bound[b]


def test_rounded_relaxation_policy_rounds_to_a_feasible_allocation_near_the_bound():
    kernel = HdtStreamingKernel("users10", num_envs=16)
    kernel.reset(seed=33)
    policy = RoundedRelaxationPolicy(kernel)
    action = policy.predict(kernel.observe())[0]
    _, reward, _, _, info = kernel.step(action)
    assert np.all(info["feasible"]) and not policy.last_fallback.any()
    assert np.all(reward <= policy.last_bound * (1 + LP_TOL))
    assert np.all(reward >= 0.995 * policy.last_bound)
    # The relaxed optimum itself uses the whole bandwidth (bitrate always adds QoE).
    ctx = {k: v[0] for k, v in kernel.context().items()}
    sol = solve_relaxation(kernel.params, ctx)
    bw = np.sum(sol.resolution * kernel.params.bitrate_max_mbps / np.log2(1 + 10 ** (ctx["snr_db"] / 10)))
    np.testing.assert_allclose(bw, ctx["bandwidth_mhz"], rtol=1e-6)


def test_greedy_meets_thresholds_and_prefers_good_channels():
    p = HdtStreamingParams(num_users=3, bandwidth_mhz=6.0, compute_tflops=30.0)
    ctx = dict(snr_db=np.array([20.0, 10.0, 0.0]), complexity=np.array([2.0, 2.0, 2.0]),
               threshold=np.array([0.3, 0.3, 0.9]), active=np.ones(3, bool), bandwidth_mhz=5.0,
               compute_tflops=24.0)
    r, s = greedy_allocation(p, ctx)
    m = allocation_metrics(p, r, s, **ctx)
    assert m["feasible"]
    # Users 1 and 2 get exactly what they need for their thresholds, the best
    # channel (user 0) all the rest; all compute is spent.
    assert r[0] > r[1] and m["bandwidth_used_mhz"] == pytest.approx(5.0)
    assert m["compute_used_tflops"] > 24.0 - p.compute_per_step_tflops


def test_registry_names_the_policies_honestly():
    assert set(get_baselines(ENV_ID)) == {"equal_split", "greedy", "rounded_relaxation"}
    # Shares divide by the relaxation value itself, not by the rounded policy's return.
    assert BOUND.kind == CERTIFIED_UPPER_BOUND and BOUND.value is episode_reward_bound


@pytest.mark.parametrize("preset", ["users5", "users20"])
def test_reward_bound_dominates_every_action_feasible_or_not(preset):
    """The penalised LP bounds the env's reward of any action: random actions over the whole
    box (mostly infeasible), actions that exploit the forgiven tolerance, the baselines."""
    n = 12
    kernel = HdtStreamingKernel(preset, num_envs=n)
    kernel.reset(seed=41)
    p = kernel.params
    bound = reward_bound(kernel)
    relaxed = relaxation_bound(kernel)
    # It can only be above the feasible-allocation relaxation, and here only by the tolerance.
    assert np.all(bound >= relaxed * (1 - LP_TOL))
    assert np.all(bound <= relaxed * (1 + 10 * p.feasibility_tol) + LP_TOL)
    rng = np.random.default_rng(3)
    actions = [rng.uniform(-1, 1, (n, 2 * p.num_users)) for _ in range(200)]
    for cls in BASELINES.values():
        a = cls(kernel).predict(kernel.observe())[0]
        actions.append(a)
        # Over-spend the rounded policy's bandwidth by just under the forgiven tolerance.
        r, steps = action_to_allocation(p, a)
        actions.append(allocation_to_action(p, np.minimum(r * (1 + 0.9 * p.feasibility_tol), 1.0), steps))
        actions.extend(np.clip(a + 0.05 * rng.standard_normal(a.shape), -1, 1) for _ in range(20))
    infeasible = 0
    for a in actions:
        m = metrics_of(kernel, *action_to_allocation(p, a))
        assert np.all(m["reward"] <= bound * (1 + LP_TOL) + LP_TOL)
        infeasible += (~m["feasible"]).sum()
    assert infeasible > 100 * n  # the infeasible case was exercised


def test_episode_reward_bound_sums_the_contexts_and_dominates_the_baselines():
    import dataclasses

    short = dataclasses.replace(PRESETS["dynamic"], horizon=8)  # users still join and leave
    kernel = HdtStreamingKernel(short, num_envs=3)
    kernel.reset(seed=8)
    observed = kernel.observe().copy()
    bound = episode_reward_bound(kernel)
    np.testing.assert_array_equal(kernel.observe(), observed)  # the kernel itself is not touched
    for name, cls in BASELINES.items():
        k = HdtStreamingKernel(short, num_envs=3)
        obs = k.reset(seed=8)
        policy = cls(k)
        total, per_context = np.zeros(3), np.zeros(3)
        for _ in range(k.params.horizon):
            per_context += reward_bound(k)
            obs, reward, *_ = k.step(policy.predict(obs)[0])
            total += reward
        np.testing.assert_allclose(per_context, bound, rtol=1e-12)
        assert np.all(total <= bound * (1 + LP_TOL)), name


# ---------------------------------------------------------------------------
# Multi-step variant
# ---------------------------------------------------------------------------
def test_dynamic_variant_users_join_and_leave_and_resources_fluctuate():
    kernel = HdtStreamingKernel("dynamic", num_envs=8)
    kernel.reset(seed=2)
    U = kernel.params.num_users
    active, bw, total = [], [], np.zeros(8)
    rng = np.random.default_rng(0)
    for t in range(kernel.params.horizon):
        active.append(kernel.active.copy())
        bw.append(kernel.bandwidth_available_mhz.copy())
        obs = kernel.observe()
        # Empty slots observe zeros, and their actions are ignored.
        assert np.all(obs[:, 3 + U :].reshape(8, 3, U)[~np.broadcast_to(kernel.active[:, None], (8, 3, U))] == 0)
        a = rng.uniform(-1, 1, size=(8, 2 * U))
        a_other = a.copy()
        a_other[:, :U][~kernel.active] = 1.0
        a_other[:, U:][~kernel.active] = 1.0
        r_other = metrics_of(kernel, *action_to_allocation(kernel.params, a_other))["reward"]
        _, reward, terminated, truncated, info = kernel.step(a)
        np.testing.assert_array_equal(reward, r_other)
        total += info["total_qoe"]
        assert not terminated.any()
        assert truncated.all() == (t == kernel.params.horizon - 1)
    active = np.stack(active)
    joined = (~active[:-1] & active[1:]).sum()
    left = (active[:-1] & ~active[1:]).sum()
    assert joined > 0 and left > 0
    assert np.ptp(np.stack(bw), axis=0).min() > 0
    summary = kernel.episode_summary(np.arange(8))
    np.testing.assert_allclose(summary["total_qoe"], total)
    np.testing.assert_allclose(summary["mean_total_qoe"], total / kernel.params.horizon)
    np.testing.assert_allclose(summary["mean_active_users"], active.sum(axis=2).mean(axis=0))


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value",
    [
        ("num_users", 0),
        ("bandwidth_mhz", 0.0),
        ("availability_min", 0.0),
        ("resolution_min", 0.5),  # the worst equal share cannot carry it
        ("max_steps", 0),
        ("similarity_shape", "linear"),
        ("threshold_max", 1.5),
        ("penalty_threshold_per_qoe", -1.0),
        ("compute_tflops", 1.0),  # less than one step per user
        ("horizon", 0),
        ("leave_prob", 2.0),
    ],
)
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        HdtStreamingParams(**{field: value})


def test_invalid_preset_and_actions():
    with pytest.raises(ValueError, match="preset"):
        HdtStreamingEnv(params="users7")
    env = HdtStreamingEnv()
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.zeros(19, dtype=np.float32))
    bad = np.zeros(20, dtype=np.float32)
    bad[3] = np.nan
    with pytest.raises(InvalidActionError, match="instance 0"):
        env.step(bad)
    bad[3] = 1.5
    with pytest.raises(InvalidActionError, match="instance 0"):
        env.step(bad)
    venv = gym.make_vec(ENV_ID, num_envs=3)
    venv.reset(seed=0)
    a = np.zeros((3, 20), dtype=np.float32)
    a[2, 0] = -1.01
    with pytest.raises(InvalidActionError, match="instance 2"):
        venv.step(a)


# ---------------------------------------------------------------------------
# Learnability options: action_mode="shares", reward_scale="per_user"
# ---------------------------------------------------------------------------
def _shares_kernel(preset, n, seed, **fields):
    import dataclasses

    kernel = HdtStreamingKernel(dataclasses.replace(PRESETS[preset], action_mode="shares", **fields), num_envs=n)
    kernel.reset(seed=seed)
    if kernel.params.horizon > 1:  # states in the middle of episodes, with users gone and joined
        for _ in range(10):
            kernel.step(np.zeros((n, 2 * kernel.params.num_users)))
    return kernel


def _share_action_batches(rng, n, U):
    return [
        rng.uniform(-1, 1, (n, 2 * U)),
        rng.choice([-1.0, 1.0], (n, 2 * U)),  # corners: all-or-nothing shares
        np.tanh(rng.normal(0, 3, (n, 2 * U))),  # what a squashed Gaussian policy plays
        np.full((n, 2 * U), -1.0),  # all shares zero
    ]


@pytest.mark.parametrize("preset", ["users5", "users10", "users40", "dynamic"])
def test_shares_mode_never_overspends_a_budget(preset):
    kernel = _shares_kernel(preset, 200, seed=41)
    p = kernel.params
    rng = np.random.default_rng(6)
    for action in _share_action_batches(rng, 200, p.num_users):
        r, s = kernel.action_to_allocation(action)
        m = metrics_of(kernel, r, s)
        # Without the tolerance, up to round-off.
        assert np.all(m["bandwidth_used_mhz"] <= kernel.bandwidth_available_mhz * (1 + 1e-12))
        assert np.all(m["compute_used_tflops"] <= kernel.compute_available_tflops * (1 + 1e-12))
        act = kernel.active
        assert np.all(r[act] >= p.resolution_min) and np.all(r[act] <= p.resolution_max)
        assert np.all(s[act] >= 1) and np.all(s[act] <= p.max_steps)
        # Budget is left unspent only where a user's share exceeds what it can use.
        bw_left = kernel.bandwidth_available_mhz - m["bandwidth_used_mhz"]
        capped = np.any(act & (r >= p.resolution_max), axis=1)
        assert np.all(capped | (bw_left <= 1e-9 * kernel.bandwidth_available_mhz))
        steps_left = np.floor(kernel.compute_available_tflops / p.compute_per_step_tflops + 1e-9) - s.sum(
            axis=1, where=act)
        assert np.all(np.any(act & (s >= p.max_steps), axis=1) | (steps_left == 0))


@pytest.mark.parametrize("preset", ["users5", "users10", "users40", "dynamic"])
def test_shares_mode_equal_shares_meet_every_threshold(preset):
    kernel = _shares_kernel(preset, 200, seed=42)
    p = kernel.params
    ctx = kernel.context()
    r0, s0 = fair_share_allocation(p, ctx["snr_db"], ctx["active"], ctx["bandwidth_mhz"], ctx["compute_tflops"])
    for level in (-0.5, 0.0, 0.7, 1.0):
        r, s = kernel.action_to_allocation(np.full((200, 2 * p.num_users), level))
        m = metrics_of(kernel, r, s)
        assert m["feasible"].all()
        act = ctx["active"]
        np.testing.assert_allclose(r[act], r0[act], rtol=1e-9)
        assert np.all(s[act] >= s0[act])


def test_shares_mode_reaches_the_baselines_and_the_rounded_relaxation():
    from gentwin.baselines.hdt_streaming import round_relaxed

    raw = HdtStreamingKernel("users10", num_envs=12)
    raw.reset(seed=43)
    kernel = _shares_kernel("users10", 12, seed=43)
    p = kernel.params
    bound = relaxation_bound(kernel)
    rows = [{k: v[b] for k, v in kernel.context().items()} for b in range(12)]
    allocations = {
        "rounded_relaxation": [round_relaxed(p, ctx, solve_relaxation(p, ctx)) for ctx in rows],
        "greedy": [greedy_allocation(p, ctx) for ctx in rows],
    }
    for name, alloc in allocations.items():
        r = np.stack([a[0] for a in alloc])
        s = np.stack([a[1] for a in alloc])
        action = kernel.allocation_to_action(r, s)
        assert action.dtype == np.float32 and np.all(np.abs(action) <= 1)
        r2, s2 = kernel.action_to_allocation(action)
        target = metrics_of(kernel, r, s)
        reached = metrics_of(kernel, r2, s2)
        # The same allocation, or one with at least its resources where it left some unspent.
        assert np.all(s2 >= s) and np.all(r2 >= r * (1 - 1e-6)), name
        assert np.all(reached["reward"] >= target["reward"] * (1 - 1e-6)), name
        assert reached["feasible"].all(), name
        assert np.all(reached["total_qoe"] <= bound * (1 + LP_TOL)), name
        if name == "rounded_relaxation":  # spends both budgets: reached exactly
            np.testing.assert_array_equal(s2, s)
            np.testing.assert_allclose(r2, r, rtol=1e-6)
            assert np.all(reached["reward"] >= 0.99 * bound)
    # Every baseline plays through the shares map and stays feasible and as good as in the raw mode.
    for name, cls in get_baselines(ENV_ID).items():
        reward_raw = metrics_of(raw, *raw.action_to_allocation(cls(raw).predict(raw.observe())[0]))["reward"]
        m = metrics_of(kernel, *kernel.action_to_allocation(cls(kernel).predict(kernel.observe())[0]))
        assert m["feasible"].all(), name
        assert np.all(m["reward"] >= reward_raw - 1e-6 * np.abs(reward_raw)), name


def test_shares_mode_random_and_local_search_stay_below_the_bound():
    kernel = _shares_kernel("users5", 24, seed=44)
    p = kernel.params
    bound = relaxation_bound(kernel)
    rng = np.random.default_rng(7)
    best = np.full(24, -np.inf)
    for action in _share_action_batches(rng, 24, p.num_users) * 25:
        m = metrics_of(kernel, *kernel.action_to_allocation(action))
        best = np.maximum(best, np.where(m["feasible"], m["total_qoe"], -np.inf))
    assert np.isfinite(best).all()
    assert np.all(best <= bound * (1 + LP_TOL))
    # Hill climbing in the share space from the equal split.
    action = np.zeros((24, 2 * p.num_users))
    value = metrics_of(kernel, *kernel.action_to_allocation(action))["reward"]
    for sigma in (0.5, 0.2, 0.05, 0.01):
        for _ in range(60):
            trial = np.clip(action + rng.normal(0, sigma, action.shape), -1, 1)
            reward = metrics_of(kernel, *kernel.action_to_allocation(trial))["reward"]
            better = reward > value
            action[better], value[better] = trial[better], reward[better]
    m = metrics_of(kernel, *kernel.action_to_allocation(action))
    assert np.all(m["total_qoe"][m["feasible"]] <= bound[m["feasible"]] * (1 + LP_TOL))
    assert np.all(value <= bound * (1 + LP_TOL))
    assert value.mean() > metrics_of(kernel, *kernel.action_to_allocation(np.zeros_like(action)))["reward"].mean()


@pytest.mark.parametrize("action_mode", ["raw", "shares"])
def test_reward_scale_per_user_divides_by_the_user_count(action_mode):
    rewards = {}
    for scale in ("none", "per_user"):
        env = gym.make(ENV_ID, reward_scale=scale, action_mode=action_mode)
        env.reset(seed=45)
        action = np.linspace(-1, 1, 20).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        assert info["unscaled_reward"] == pytest.approx(info["total_qoe"] - info["penalty"], rel=1e-12)
        assert info["episode_summary"]["unscaled_return"] == pytest.approx(info["unscaled_reward"])
        rewards[scale] = reward
    assert rewards["per_user"] == pytest.approx(rewards["none"] / 10, rel=1e-12)


@pytest.mark.parametrize(
    "options", [{"action_mode": "shares"}, {"reward_scale": "per_user"}, {"action_mode": "shares", "reward_scale": "per_user"}]
)
def test_check_env_with_options(options):
    for preset in ("users10", "dynamic"):
        gym_check_env(HdtStreamingEnv(params=preset, **options), skip_render_check=True)
        sb3_check_env(HdtStreamingEnv(params=preset, **options), warn=False)


@pytest.mark.parametrize("field, value", [("action_mode", "share"), ("reward_scale", "optimum"), ("action_mode", None)])
def test_bad_option_values_name_the_field_and_the_choices(field, value):
    with pytest.raises(ValueError, match=f"{field} = {value!r} is invalid: must be one of"):
        gym.make(ENV_ID, **{field: value})


def test_options_appear_in_the_docstring():
    from gentwin.envs import hdt_streaming

    doc = hdt_streaming.__doc__
    arguments = doc.split("Arguments\n---------")[1]
    for name in ("action_mode", "reward_scale", '"shares"', '"per_user"'):
        assert name in arguments
    assert 'action_mode="shares"' in doc.split("Action Space\n------------")[1].split("Observation Space")[0]
    assert 'reward_scale="per_user"' in doc.split("Rewards\n-------")[1].split("Starting State")[0]
