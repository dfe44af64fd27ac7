"""ContractDesign-v0 / ContractDesign-Dynamic-v0: API, link model, exact optimum, baselines."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from scipy.optimize import minimize
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import gentwin  # noqa: F401  (registers the ids)
from gentwin.baselines import EXACT_OPTIMUM, get_baselines, get_bound
from gentwin.evaluation import evaluate_bound
from gentwin.envs import InvalidActionError
from gentwin.envs.contract_design import (
    ContractDesignKernel,
    ContractDesignParams,
    capacity_kbit,
    evaluate_menu,
    ironed_virtual_costs,
    link_gain_per_w,
    optimal_contract,
    semantic_energy_mj,
    semantic_valuation,
)
from gentwin.evaluation import evaluate_policy

STATIC = "gentwin/ContractDesign-v0"
DYNAMIC = "gentwin/ContractDesign-Dynamic-v0"


def _kernel(num_envs, seed=0, **fields):
    kernel = ContractDesignKernel(ContractDesignParams(**fields), num_envs=num_envs)
    kernel.reset(seed=seed)
    return kernel


def _tile(kernel, reps):
    """The kernel's states repeated ``reps`` times (state b at rows b*reps .. b*reps+reps-1)."""
    return (
        np.repeat(kernel.theta, reps, axis=0),
        np.repeat(kernel.prob, reps, axis=0),
        np.repeat(kernel.users, reps),
        np.repeat(kernel.gain_per_w, reps),
        np.repeat(kernel.capacity_kbit, reps),
    )


def _binding_payments(params, theta, q, gain, extra=None):
    """Payments of a monotone ``q`` with IR_1 and downward IC binding, plus rent ``extra``."""
    psi = params.energy_price_per_mj / theta
    energy = semantic_energy_mj(params, q, gain[:, None])
    inc = np.diff(energy, axis=1, prepend=0.0) * psi
    if extra is not None:
        inc = inc + extra
    return params.utility_threshold + np.cumsum(inc, axis=1)


# ---------------------------------------------------------------------------
# API: checkers, vector == sync, batch-size invariance, spaces
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", [STATIC, DYNAMIC])
def test_checkers(env_id):
    gym_check_env(gym.make(env_id).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id).unwrapped, warn=False)


def _sync_info(info, key, num_envs):
    """``key`` per instance from a SAME_STEP SyncVectorEnv info (finished ones in final_info)."""
    values = np.full(num_envs, np.nan)
    if key in info:
        values = np.where(info[f"_{key}"], info[key], values)
    final = info.get("final_info", {})
    if key in final:
        values = np.where(final[f"_{key}"], final[key], values)
    return values


@pytest.mark.parametrize("env_id", [STATIC, DYNAMIC])
def test_native_vector_env_equals_sync_vector_env(env_id):
    B, steps = 3, 25
    native = gym.make_vec(env_id, num_envs=B)
    sync = SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(B)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    obs_n, _ = native.reset(seed=11)
    obs_s, _ = sync.reset(seed=11)
    np.testing.assert_array_equal(obs_n, obs_s)
    space = native.action_space
    space.seed(5)
    for _ in range(steps):
        action = space.sample()
        out_n = native.step(action)
        out_s = sync.step(action)
        for a, b in zip(out_n[:4], out_s[:4]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(out_n[4]["optimal_utility"], _sync_info(out_s[4], "optimal_utility", B))


@pytest.mark.parametrize("env_id", [STATIC, DYNAMIC])
def test_batch_size_invariance(env_id):
    B, seed, steps = 4, 100, 6
    vec = gym.make_vec(env_id, num_envs=B)
    obs_v, _ = vec.reset(seed=seed)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, B, vec.single_action_space.shape[0])).astype(np.float32)
    rewards_v = []
    for t in range(steps):
        rewards_v.append(vec.step(actions[t])[1])
    for i in range(B):
        single = gym.make(env_id)
        obs, _ = single.reset(seed=seed + i)
        np.testing.assert_array_equal(obs, obs_v[i])
        for t in range(steps):
            obs, reward, term, trunc, _ = single.step(actions[t, i])
            assert reward == rewards_v[t][i]
            if term or trunc:
                obs, _ = single.reset()


@pytest.mark.parametrize("env_id", [STATIC, DYNAMIC])
def test_observations_stay_in_space_and_seeding_reproduces(env_id):
    vec = gym.make_vec(env_id, num_envs=64)
    space = vec.single_observation_space
    vec.action_space.seed(3)
    obs, _ = vec.reset(seed=7)
    first = obs.copy()
    for _ in range(150):
        assert np.all(obs >= space.low) and np.all(obs <= space.high) and obs.dtype == np.float32
        obs, *_ = vec.step(vec.action_space.sample())
    again, _ = gym.make_vec(env_id, num_envs=64).reset(seed=7)
    np.testing.assert_array_equal(first, again)


# ---------------------------------------------------------------------------
# Link and cost model, by hand
# ---------------------------------------------------------------------------
def test_full_duplex_rate_and_energy_by_hand():
    p = ContractDesignParams()
    # d = 10 m, unit fading and SI gains: G = 1e-4 * 10^-3, RSI = 0.1 W * 1e-11.
    noise_w = 10 ** (-20.4) * 1e6
    sinr_per_w = 1e-7 / (noise_w + 1e-12)
    gamma = link_gain_per_w(p, 10.0, 1.0, 1.0)
    assert gamma == pytest.approx(sinr_per_w, rel=1e-12)
    # q_cap = W T log2(1 + P_max gamma) / 1000 = 10 kbit per bit/s/Hz.
    assert capacity_kbit(p, gamma) == pytest.approx(10.0 * np.log2(1 + 0.1 * sinr_per_w), rel=1e-12)
    assert capacity_kbit(p, gamma) == pytest.approx(132.82, abs=0.01)
    # Residual SI dominates thermal noise here: 30 dB less SI cancellation costs rate.
    weaker = ContractDesignParams(si_cancellation_db=80.0)
    assert capacity_kbit(weaker, link_gain_per_w(weaker, 10.0, 1.0, 1.0)) < capacity_kbit(p, gamma) - 40
    # E(q) at q = Q = 10 kbit (one bit/s/Hz): 1000 T (2 - 1) / gamma + e_x Q mJ.
    assert semantic_energy_mj(p, 10.0, gamma) == pytest.approx(10.0 / sinr_per_w + 0.05, rel=1e-12)
    # Delivering q_cap needs exactly P_max for T seconds (plus extraction).
    cap = capacity_kbit(p, gamma)
    assert semantic_energy_mj(p, cap, gamma) == pytest.approx(0.1 * 0.01 * 1000 + 0.005 * cap, rel=1e-9)
    assert semantic_valuation(p, 10.0) == pytest.approx(5.0 * np.log(2.0))


@pytest.mark.parametrize("m", [1, 3])
def test_nakagami_fading_statistics(m):
    n = 6000
    kernel = _kernel(n, seed=1, nakagami_m_min=m, nakagami_m_max=m,
                     fading_gain_min_db=-100.0, fading_gain_max_db=100.0)
    gain = kernel.fading_gain
    # Gamma(m, 1/m): mean 1, variance 1/m, central 4th moment 3 (m + 2) / m^3;
    # tolerances are 4 standard errors of the estimates.
    var, mu4 = 1.0 / m, 3.0 * (m + 2) / m**3
    assert gain.mean() == pytest.approx(1.0, abs=4 * np.sqrt(var / n))
    assert gain.var() == pytest.approx(var, abs=4 * np.sqrt((mu4 - var**2) / n))
    if m == 1:  # Rayleigh: exponential power, P(|h|^2 < 0.5) = 1 - e^-0.5.
        prob = 1 - np.exp(-0.5)
        assert np.mean(gain < 0.5) == pytest.approx(prob, abs=4 * np.sqrt(prob * (1 - prob) / n))
    # The residual SI channel is Rayleigh whatever m is.
    assert kernel.si_gain.mean() == pytest.approx(1.0, abs=4 * np.sqrt(1.0 / n))


def test_dynamic_fading_follows_the_gauss_markov_correlation():
    kernel = _kernel(4000, seed=2, periods_per_episode=2, nakagami_m_min=1, nakagami_m_max=1,
                     fading_gain_min_db=-100.0, fading_gain_max_db=100.0)
    before = kernel.fading_gain.copy()
    kernel.step(np.zeros((4000, 10)))
    after = kernel.fading_gain
    # Gauss-Markov components with rho: corr(|h_t|^2, |h_t+1|^2) = rho^2 for Rayleigh.
    assert np.corrcoef(before, after)[0, 1] == pytest.approx(0.81, abs=0.04)


# ---------------------------------------------------------------------------
# The exact optimum
# ---------------------------------------------------------------------------
def test_optimum_is_feasible_and_beats_random_menus():
    kernel = _kernel(150, seed=3)
    p = kernel.params
    K, reps = p.num_types, 400
    ev = kernel.evaluate(kernel.optimal_q, kernel.optimal_payment)
    assert ev["feasible"].all()
    assert np.abs(ev["provider_utility"][:, 0] - p.utility_threshold).max() < 1e-9  # IR_1 binds
    np.testing.assert_allclose(ev["utility"], kernel.optimal_utility, rtol=1e-12)
    theta, prob, users, gain, cap = _tile(kernel, reps)
    best = np.repeat(kernel.optimal_utility, reps)
    rng = np.random.default_rng(0)
    # (a) feasible random menus: monotone amounts, payments between downward and
    #     upward local IC (so all IC hold), random extra rent for type 1.
    q = np.sort(rng.uniform(0, 1, (len(users), K)), axis=1) * cap[:, None]
    psi = p.energy_price_per_mj / theta
    d_energy = np.diff(semantic_energy_mj(p, q, gain[:, None]), axis=1, prepend=0.0)
    upward = np.concatenate([np.zeros((len(users), 1)), (psi[:, :-1] - psi[:, 1:]) * d_energy[:, 1:]], axis=1)
    extra = rng.uniform(0, 1, upward.shape) * upward
    extra[:, 0] = rng.exponential(0.5, len(users))
    payment = _binding_payments(p, theta, q, gain, extra)
    res = evaluate_menu(p, theta, prob, users, gain, q, payment)
    assert res["feasible"].all()
    assert np.all(res["utility"] <= best + 1e-9 * np.abs(best))
    # (b) the optimum's own amounts perturbed, payments re-bound: still never better.
    q2 = np.repeat(kernel.optimal_q, reps, axis=0) * rng.uniform(0.9, 1.1, (len(users), K))
    q2 = np.clip(np.maximum.accumulate(q2, axis=1), 0, cap[:, None])
    res2 = evaluate_menu(p, theta, prob, users, gain, q2, _binding_payments(p, theta, q2, gain))
    assert res2["feasible"].all()
    assert np.all(res2["utility"] <= best + 1e-9 * np.abs(best))
    # (c) uniformly random menus through the action box: no reward beats the optimum's.
    big = _kernel(3000, seed=30)
    actions = rng.uniform(-1, 1, (3000, 2 * K))
    reward, result = big.reward_of(*big.action_to_menu(actions))
    assert np.all(reward <= big.optimal_utility + 1e-9)
    infeasible = ~result["feasible"]
    assert infeasible.mean() > 0.9  # random menus are almost never incentive compatible


def _brute_force_two_types(p, theta, prob, users, gain, cap, n_grid=301):
    """max over a (q1, q2) grid of the exact best payments, by enumerating LP vertices.

    For fixed amounts the principal minimises p1 R1 + p2 R2 over the polygon cut
    by IR_1, IR_2, IC_12, IC_21; the minimum is at an intersection of two
    constraint lines, so all six pairs are solved and the feasible ones compared.
    Nothing here assumes which constraints bind or that q is monotone.
    """
    grid = np.linspace(0.0, cap, n_grid)
    q1, q2 = np.meshgrid(grid, grid, indexing="ij")
    q1, q2 = q1.ravel(), q2.ravel()
    psi = p.energy_price_per_mj / theta
    e1, e2 = semantic_energy_mj(p, q1, gain), semantic_energy_mj(p, q2, gain)
    u = p.utility_threshold
    # Constraints as a1 R1 + a2 R2 >= b.
    rows = [
        (1.0, 0.0, u + psi[0] * e1),                 # IR_1
        (0.0, 1.0, u + psi[1] * e2),                 # IR_2
        (1.0, -1.0, psi[0] * (e1 - e2)),             # IC_1: R1 - c1(q1) >= R2 - c1(q2)
        (-1.0, 1.0, psi[1] * (e2 - e1)),             # IC_2
    ]
    best = np.full(q1.shape, np.inf)
    for i in range(4):
        for j in range(i + 1, 4):
            a1, a2, b1 = rows[i]
            c1, c2, b2 = rows[j]
            det = a1 * c2 - a2 * c1
            if det == 0:
                continue
            r1 = (b1 * c2 - a2 * b2) / det
            r2 = (a1 * b2 - b1 * c1) / det
            ok = np.ones(q1.shape, dtype=bool)
            for a, c, b in rows:
                ok &= a * r1 + c * r2 >= b - 1e-9
            cost = prob[0] * r1 + prob[1] * r2
            best = np.where(ok, np.minimum(best, cost), best)
    value = users * (prob[0] * semantic_valuation(p, q1) + prob[1] * semantic_valuation(p, q2) - best)
    return value.max()


def test_two_types_match_brute_force():
    kernel = _kernel(6, seed=4, num_types=2)
    p = kernel.params
    for b in range(kernel.num_envs):
        brute = _brute_force_two_types(
            p, kernel.theta[b], kernel.prob[b], kernel.users[b], kernel.gain_per_w[b], kernel.capacity_kbit[b]
        )
        exact = kernel.optimal_utility[b]
        assert brute <= exact + 1e-9 * abs(exact)
        assert brute == pytest.approx(exact, rel=2e-4)


def test_ironing_pools_types_and_matches_a_generic_solver():
    p = ContractDesignParams(num_types=3)
    # A rare middle type: its virtual cost exceeds type 1's, so types 1 and 2 pool.
    theta = np.array([[1.0, 2.0, 4.0]])
    prob = np.array([[0.45, 0.02, 0.53]])
    users = np.array([30])
    gain = link_gain_per_w(p, np.array([20.0]), np.array([1.0]), np.array([1.0]))
    cap = capacity_kbit(p, gain)
    psi = p.energy_price_per_mj / theta
    raw_c = psi + (psi - np.append(psi[:, 1:], psi[:, -1:], axis=1)) * (1 - np.cumsum(prob)) / prob
    assert raw_c[0, 1] > raw_c[0, 0]  # monotonicity would fail without ironing
    c_hat = ironed_virtual_costs(prob, psi)
    pooled = (prob[0, 0] * raw_c[0, 0] + prob[0, 1] * raw_c[0, 1]) / (prob[0, 0] + prob[0, 1])
    np.testing.assert_allclose(c_hat[0, :2], pooled, rtol=1e-12)
    np.testing.assert_allclose(c_hat[0, 2], raw_c[0, 2], rtol=1e-12)
    q, payment, utility = optimal_contract(p, theta, prob, users, gain, cap)
    assert q[0, 0] == pytest.approx(q[0, 1], rel=1e-12) and q[0, 2] > q[0, 1]
    assert evaluate_menu(p, theta, prob, users, gain, q, payment)["feasible"].all()

    # Generic check: maximise the principal utility over monotone amounts with
    # payments from the binding constraints, by SLSQP from several starts.
    def neg_utility(x):
        qq = x[None, :]
        r = _binding_payments(p, theta, qq, gain)
        return -float(users[0] * np.sum(prob * (semantic_valuation(p, qq) - r)))

    cons = [{"type": "ineq", "fun": lambda x, k=k: x[k + 1] - x[k]} for k in range(2)]
    best = -np.inf
    for start in ([10.0, 20.0, 30.0], [50.0, 50.0, 50.0], [1.0, 60.0, 120.0]):
        res = minimize(neg_utility, np.array(start), bounds=[(0.0, float(cap[0]))] * 3,
                       constraints=cons, method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
        best = max(best, -res.fun)
    assert best <= utility[0] + 1e-7 * abs(utility[0])
    assert best == pytest.approx(utility[0], rel=1e-6)


# ---------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------
def test_reward_is_utility_when_feasible_and_lower_and_decreasing_otherwise():
    env = gym.make(STATIC)
    kernel = env.unwrapped.kernel
    for seed in range(5):
        env.reset(seed=seed)
        action = kernel.menu_to_action(kernel.optimal_q, kernel.optimal_payment)[0]
        _, reward, terminated, _, info = env.step(action)
        assert terminated and info["feasible"]
        assert reward == info["utility"]
        assert reward == pytest.approx(info["optimal_utility"], rel=1e-5)
        np.testing.assert_array_equal(info["expert_action"], action)
    kernel = _kernel(8, seed=9)
    previous = None
    for cut in (0.0, 0.05, 0.2, 1.0):  # underpay type 1 by `cut`: IR_1 fails by `cut`
        payment = kernel.optimal_payment.copy()
        payment[:, 0] -= cut
        reward, result = kernel.reward_of(kernel.optimal_q, payment)
        if cut == 0.0:
            assert result["feasible"].all()
            np.testing.assert_array_equal(reward, result["utility"])
        else:
            assert not result["feasible"].any()
            np.testing.assert_allclose(result["ir_violation"][:, 0], cut, rtol=1e-9)
            assert np.all(reward < result["utility"])
            # Underpaying raises utility, but the reward falls: penalty > gain.
            assert np.all(result["utility"] > kernel.optimal_utility)
            assert np.all(reward < previous)
        previous = reward


def test_violation_info_names_the_broken_constraints():
    kernel = _kernel(4, seed=12)
    q, payment = kernel.optimal_q.copy(), kernel.optimal_payment.copy()
    # Item 0 now pays more than item K-1 for less work: type K prefers it (IC_K0).
    payment[:, 0] = payment[:, -1] + 1.0
    result = kernel.evaluate(q, payment)
    ic = result["ic_violation"]
    assert np.all(ic[:, -1, 0] > 0)  # type K strictly prefers item 0 now
    assert np.all(ic[:, np.arange(5), np.arange(5)] == 0)
    expected = ic.sum(axis=(1, 2)) + result["ir_violation"].sum(axis=1)
    np.testing.assert_allclose(result["total_violation"], expected)


# ---------------------------------------------------------------------------
# Multi-period variant
# ---------------------------------------------------------------------------
def test_dynamic_episode_and_users_leave_after_ir_violations():
    env = gym.make(DYNAMIC)
    kernel = env.unwrapped.kernel
    env.reset(seed=21)
    horizon = kernel.params.periods_per_episode
    for t in range(horizon):
        action = kernel.menu_to_action(kernel.optimal_q, kernel.optimal_payment)[0]
        _, reward, terminated, truncated, info = env.step(action)
        assert info["feasible"] and not truncated
        assert terminated == (t == horizon - 1)
    summary = info["episode_summary"]
    assert summary["length"] == horizon and summary["users_lost"] == 0
    assert summary["share_of_optimal"] == pytest.approx(1.0, rel=1e-6)
    assert summary["violation_rate"] == 0.0
    # Now pay nothing: every type's IR fails and the whole population walks away.
    env.reset(seed=21)
    users = int(kernel.users[0])
    _, _, _, _, info = env.step(-np.ones(env.action_space.shape, dtype=np.float32))
    assert np.all(info["ir_violation"] > 0)
    assert kernel.users_lost[0] == users and kernel.users[0] == 1


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------
def test_baselines_order_and_feasibility():
    assert get_bound(STATIC).kind == EXACT_OPTIMUM
    baselines = get_baselines(STATIC)
    results = {}
    for name, cls in baselines.items():
        policy = cls(gym.make(STATIC))
        results[name] = evaluate_policy(policy, STATIC, n_episodes=200, seed=777)
    share = {n: r.metric("return").sum() / r.metric("optimal_utility").sum() for n, r in results.items()}
    # The bound is the optimal utility of exactly the evaluated episodes.
    bound = evaluate_bound(STATIC, n_episodes=200, seed=777)
    np.testing.assert_allclose(bound.values, results["optimal"].metric("optimal_utility"), rtol=1e-12)
    assert share["optimal"] == pytest.approx(1.0, rel=1e-6)
    assert results["optimal"].mean("violation_rate") == 0.0
    assert results["linear_price"].mean("violation_rate") == 0.0  # best responses: IC by design
    assert 0.3 < share["linear_price"] < 0.99
    # Designing for the average type ignores the less efficient types' IR.
    assert results["average_type"].mean("violation_rate") == 1.0
    assert share["average_type"] < share["linear_price"]


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("num_types", 0),
        ("users_max", 5),  # below users_min = 10
        ("type_min", 0.0),
        ("penalty_base", 0.5),  # must exceed utility_threshold = 0.5
        ("fading_correlation", 1.5),
        ("nakagami_m_min", 0),
        ("type_probability_concentration", 1.5),
    ],
)
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        gym.make(STATIC, **{field: value})


def test_bad_actions_raise():
    env = gym.make(STATIC)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="NaN"):
        env.step(np.full(10, np.nan, dtype=np.float32))
    with pytest.raises(InvalidActionError, match="outside"):
        env.step(np.full(10, 1.5, dtype=np.float32))


# ---------------------------------------------------------------------------
# Learnability options: action_mode="feasible", penalty="smooth", reward_scale
# ---------------------------------------------------------------------------
def _deficits(kernel, q, payment):
    """Largest IR and IC deficits of menus, without any tolerance."""
    p = kernel.params
    psi = kernel.cost_per_mj
    energy = semantic_energy_mj(p, q, kernel.gain_per_w[:, None])
    provider = payment[:, None, :] - psi[:, :, None] * energy[:, None, :]
    own = np.diagonal(provider, axis1=1, axis2=2)
    return (p.utility_threshold - own).max(), (provider - own[:, :, None]).max()


@pytest.mark.parametrize("num_types", [1, 2, 5, 8])
def test_feasible_action_mode_gives_a_feasible_menu_for_every_action(num_types):
    kernel = _kernel(400, seed=11, num_types=num_types, action_mode="feasible")
    K = num_types
    rng = np.random.default_rng(num_types)
    batches = [
        rng.uniform(-1, 1, (400, 2 * K)),
        rng.choice([-1.0, 1.0], (400, 2 * K)),  # corners: zero shares, full shares
        np.clip(rng.choice([-1.0, 1.0], (400, 2 * K)) + rng.normal(0, 1e-3, (400, 2 * K)), -1, 1),
        np.tanh(rng.normal(0, 3, (400, 2 * K))),  # what a squashed Gaussian policy plays
    ]
    for actions in batches:
        q, payment = kernel.action_to_menu(actions)
        assert np.all(np.diff(q, axis=1) >= 0.0)
        assert np.all(q >= 0.0) and np.all(q <= kernel.capacity_kbit[:, None])
        assert kernel.evaluate(q, payment)["feasible"].all()
        ir, ic = _deficits(kernel, q, payment)
        assert ir <= 1e-9 and ic <= 1e-9  # feasible without the tolerance, up to rounding
        reward, result = kernel.reward_of(q, payment)
        np.testing.assert_array_equal(reward, result["utility"])
        assert np.all(reward <= kernel.optimal_utility + 1e-9 * np.abs(kernel.optimal_utility))


def test_feasible_action_mode_reaches_the_optimum_and_inverts_feasible_menus():
    kernel = _kernel(500, seed=12, action_mode="feasible")
    K = kernel.params.num_types
    # The optimum maps to an action and back (float64 round trip) ...
    action = kernel.menu_to_action(kernel.optimal_q, kernel.optimal_payment, dtype=np.float64)
    q, payment = kernel.action_to_menu(action)
    np.testing.assert_allclose(q, kernel.optimal_q, rtol=1e-6, atol=1e-9 * kernel.capacity_kbit.max())
    np.testing.assert_allclose(payment, kernel.optimal_payment, rtol=1e-6)
    # ... its payment shares are zero (IR_1 and downward IC bind) ...
    np.testing.assert_allclose(action[:, K:], -1.0, atol=1e-9)
    # ... and the float32 expert action earns the optimum.
    expert = kernel.menu_to_action(kernel.optimal_q, kernel.optimal_payment)
    assert expert.dtype == np.float32
    reward, result = kernel.reward_of(*kernel.action_to_menu(expert))
    assert result["feasible"].all()
    np.testing.assert_allclose(reward, kernel.optimal_utility, rtol=1e-6)
    # Every menu of the map is recovered from its own action.
    rng = np.random.default_rng(1)
    z = rng.uniform(-1, 1, (500, 2 * K))
    q, payment = kernel.action_to_menu(z)
    np.testing.assert_allclose(kernel.action_to_menu(kernel.menu_to_action(q, payment, dtype=np.float64))[1],
                               payment, rtol=1e-9)
    # An infeasible menu (raw random) maps to some feasible menu.
    raw = _kernel(500, seed=12)
    q_raw, payment_raw = raw.action_to_menu(z)
    assert not raw.evaluate(q_raw, payment_raw)["feasible"].all()
    assert kernel.evaluate(*kernel.action_to_menu(kernel.menu_to_action(q_raw, payment_raw)))["feasible"].all()


def test_feasible_action_mode_env_steps_the_expert_to_the_optimum():
    env = gym.make(STATIC, action_mode="feasible")
    kernel = env.unwrapped.kernel
    for seed in range(5):
        env.reset(seed=seed)
        expert = kernel.menu_to_action(kernel.optimal_q, kernel.optimal_payment)[0]
        _, reward, terminated, _, info = env.step(expert)
        assert terminated and info["feasible"]
        np.testing.assert_array_equal(info["expert_action"], expert)
        assert reward == pytest.approx(info["optimal_utility"], rel=1e-6)
        env.reset(seed=seed)
        _, reward, _, _, info = env.step(env.action_space.sample())
        assert info["feasible"] and reward <= info["optimal_utility"]


def test_feasible_action_mode_local_search_never_beats_the_optimum():
    """Hill climbing from the optimum's action (and random restarts) in the action box."""
    kernel = _kernel(64, seed=13, action_mode="feasible")
    K = kernel.params.num_types
    rng = np.random.default_rng(2)
    best_action = kernel.menu_to_action(kernel.optimal_q, kernel.optimal_payment, dtype=np.float64)
    best = kernel.reward_of(*kernel.action_to_menu(best_action))[0]
    np.testing.assert_allclose(best, kernel.optimal_utility, rtol=1e-9)
    starts = [best_action, rng.uniform(-1, 1, best_action.shape)]
    for start in starts:
        action, value = start.copy(), kernel.reward_of(*kernel.action_to_menu(start))[0]
        for sigma in (0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4):
            for _ in range(40):
                trial = np.clip(action + rng.normal(0, sigma, action.shape), -1, 1)
                r = kernel.reward_of(*kernel.action_to_menu(trial))[0]
                better = r > value
                action[better], value[better] = trial[better], r[better]
        assert np.all(value <= kernel.optimal_utility + 1e-9 * np.abs(kernel.optimal_utility))
    assert value.mean() > 0.5 * kernel.optimal_utility.mean()  # the search does climb


def test_smooth_penalty_keeps_the_optimum_the_reward_maximiser_and_is_continuous():
    kernel = _kernel(3000, seed=14, penalty="smooth")
    cliff = _kernel(3000, seed=14)
    K = kernel.params.num_types
    opt = kernel.optimal_utility
    rng = np.random.default_rng(3)
    # Random menus through the raw box: none beats the optimum, infeasible ones stay below it.
    reward, result = kernel.reward_of(*kernel.action_to_menu(rng.uniform(-1, 1, (3000, 2 * K))))
    infeasible = ~result["feasible"]
    assert infeasible.mean() > 0.9
    assert np.all(reward[infeasible] < opt[infeasible])
    assert np.all(reward <= opt + 1e-9 * np.abs(opt))
    # Local search around the optimal menu (amounts and payments perturbed, often
    # underpaying, which raises the utility above U*): never above the optimum.
    for scale in (1e-1, 1e-2, 1e-3, 1e-5):
        q = np.clip(kernel.optimal_q * (1 + rng.normal(0, scale, (3000, K))), 0, kernel.capacity_kbit[:, None])
        payment = kernel.optimal_payment * (1 + rng.normal(0, scale, (3000, K)))
        reward, result = kernel.reward_of(q, payment)
        assert np.all(reward <= opt)  # even menus the tolerance lets pass above U*
        bad = ~result["feasible"]
        assert bad.any() and np.all(reward[bad] < opt[bad])
    # Continuous at the feasible boundary: underpaying type 1 by `cut` raises U above
    # U* and breaks IR_1 (and type 1's IC towards items pooled with its own) by `cut`
    # each, so the reward is U* - N V with V <= K cut, unlike the cliff.
    for cut in (1e-3, 1e-2, 1e-1):
        payment = kernel.optimal_payment.copy()
        payment[:, 0] -= cut
        reward, result = kernel.reward_of(kernel.optimal_q, payment)
        assert not result["feasible"].any() and np.all(result["utility"] > opt)
        np.testing.assert_allclose(reward, opt - kernel.users * result["total_violation"], rtol=1e-12)
        assert np.all(result["total_violation"] <= K * cut * (1 + 1e-9))
        assert np.all(reward < opt)
        cliff_reward, _ = cliff.reward_of(kernel.optimal_q, payment)
        assert np.all(cliff_reward <= -kernel.users * cliff.params.penalty_base)
    # The penalty grows with the violation.
    previous = None
    for cut in (0.1, 0.5, 2.0):
        payment = kernel.optimal_payment - cut
        reward, _ = kernel.reward_of(kernel.optimal_q, payment)
        if previous is not None:
            assert np.all(reward < previous)
        previous = reward


@pytest.mark.parametrize("penalty", ["cliff", "smooth"])
@pytest.mark.parametrize("reward_scale", ["per_user", "optimum"])
def test_reward_scale_divides_by_a_positive_state_constant(reward_scale, penalty):
    scaled = _kernel(2000, seed=15, reward_scale=reward_scale, penalty=penalty)
    plain = _kernel(2000, seed=15, penalty=penalty)
    K = scaled.params.num_types
    divisor = scaled.reward_divisor
    assert np.all(divisor > 0)
    rng = np.random.default_rng(4)
    menus = [scaled.action_to_menu(rng.uniform(-1, 1, (2000, 2 * K))) for _ in range(5)]
    menus.append((scaled.optimal_q, scaled.optimal_payment))
    rewards = []
    for q, payment in menus:
        r, result = scaled.reward_of(q, payment)
        r_plain, _ = plain.reward_of(q, payment)
        np.testing.assert_allclose(r * divisor, r_plain, rtol=1e-12)
        np.testing.assert_array_equal(result["unscaled_reward"], r_plain)
        rewards.append(r)
    rewards = np.array(rewards)
    assert np.all(rewards.argmax(axis=0) == len(menus) - 1)  # the optimum ranks first
    if reward_scale == "optimum":
        served = scaled.optimal_utility >= scaled.users * scaled.params.utility_threshold
        assert served.mean() > 0.99
        np.testing.assert_allclose(rewards[-1][served], 1.0, rtol=1e-12)
        assert np.all(np.abs(rewards[-1]) <= 1.0 + 1e-12)
    else:
        np.testing.assert_allclose(rewards[-1], scaled.optimal_utility / scaled.users, rtol=1e-12)


def test_episode_share_of_optimal_is_in_unscaled_units():
    shares = {}
    for scale in ("none", "optimum"):
        env = gym.make(STATIC, reward_scale=scale, action_mode="feasible")
        env.reset(seed=21)
        action = np.full(env.action_space.shape, -0.5, dtype=np.float32)
        _, reward, _, _, info = env.step(action)
        summary = info["episode_summary"]
        assert summary["unscaled_return"] == pytest.approx(info["unscaled_reward"])
        assert summary["share_of_optimal"] == pytest.approx(info["unscaled_reward"] / info["optimal_utility"])
        shares[scale] = summary["share_of_optimal"]
    assert shares["none"] == pytest.approx(shares["optimum"], rel=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"action_mode": "feasible"},
        {"penalty": "smooth"},
        {"reward_scale": "per_user"},
        {"action_mode": "feasible", "penalty": "smooth", "reward_scale": "optimum"},
    ],
)
def test_checkers_with_options(options):
    for env_id in (STATIC, DYNAMIC):
        gym_check_env(gym.make(env_id, **options).unwrapped, skip_render_check=True)
        sb3_check_env(gym.make(env_id, **options).unwrapped, warn=False)


@pytest.mark.parametrize(
    "field, value",
    [("action_mode", "feasable"), ("penalty", "soft"), ("reward_scale", "optimal"), ("reward_scale", 1.0)],
)
def test_bad_option_values_name_the_field_and_the_choices(field, value):
    with pytest.raises(ValueError, match=f"{field} = {value!r} is invalid: must be one of"):
        gym.make(STATIC, **{field: value})
    with pytest.raises(ValueError, match="utility_threshold"):
        gym.make(STATIC, reward_scale="optimum", utility_threshold=0.0)


def test_options_appear_in_the_docstring():
    from gentwin.envs import contract_design

    doc = contract_design.__doc__
    arguments = doc.split("Arguments\n---------")[1]
    for name in ("action_mode", "penalty", "reward_scale", '"feasible"', '"smooth"', '"per_user"', '"optimum"'):
        assert name in arguments
    assert 'action_mode="feasible"' in doc.split("Action Space\n------------")[1].split("Observation Space")[0]
    rewards = doc.split("Rewards\n-------")[1].split("Starting State")[0]
    assert 'penalty="smooth"' in rewards and "reward_scale" in rewards


@pytest.mark.parametrize("threshold", [0.25, 0.5])
def test_zero_share_below_keeps_the_map_feasible_and_the_optimum_reachable(threshold):
    kernel = _kernel(400, seed=16, action_mode="feasible", zero_share_below=threshold)
    plain = _kernel(400, seed=16, action_mode="feasible")
    K = kernel.params.num_types
    rng = np.random.default_rng(5)
    a = rng.uniform(-1, 1, (400, 2 * K))
    q, payment = kernel.action_to_menu(a)
    assert kernel.evaluate(q, payment)["feasible"].all()
    # The same menus as the plain map with the shares squeezed: z <= t means 0.
    z = np.maximum((a + 1) / 2 - threshold, 0) / (1 - threshold)
    q0, payment0 = plain.action_to_menu(2 * z - 1)
    np.testing.assert_allclose(q, q0, rtol=1e-12)
    np.testing.assert_allclose(payment, payment0, rtol=1e-12)
    # The optimum: its zero shares sit in the middle of the dead zone, and a whole
    # neighbourhood of that action plays exactly the optimal payments.
    expert = kernel.menu_to_action(kernel.optimal_q, kernel.optimal_payment)
    np.testing.assert_allclose(expert[:, K:], threshold - 1.0, atol=1e-7)  # z = t / 2
    reward = kernel.reward_of(*kernel.action_to_menu(expert))[0]
    np.testing.assert_allclose(reward, kernel.optimal_utility, rtol=1e-6)
    nudged = expert.astype(np.float64)
    nudged[:, K:] += rng.uniform(-0.4, 0.4, (400, K)) * threshold
    np.testing.assert_allclose(kernel.reward_of(*kernel.action_to_menu(nudged))[0], reward, rtol=1e-12)
    # Random search still never beats it.
    for _ in range(5):
        r = kernel.reward_of(*kernel.action_to_menu(rng.uniform(-1, 1, (400, 2 * K))))[0]
        assert np.all(r <= kernel.optimal_utility + 1e-9 * np.abs(kernel.optimal_utility))


def test_zero_share_below_rejects_bad_values_and_the_raw_mode():
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"zero_share_below = .* is invalid: must be a number in \[0.0, 1.0\)"):
            gym.make(STATIC, action_mode="feasible", zero_share_below=bad)
    with pytest.raises(ValueError, match="zero_share_below = 0.25 is invalid with action_mode='raw'"):
        gym.make(STATIC, zero_share_below=0.25)
    gym_check_env(gym.make(STATIC, action_mode="feasible", zero_share_below=0.25).unwrapped, skip_render_check=True)
    assert "zero_share_below" in __import__("gentwin.envs.contract_design", fromlist=["x"]).__doc__.split(
        "Arguments\n---------")[1]
