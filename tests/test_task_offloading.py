"""TaskOffloading-v0 / -ma-v0: hand-computed scenario, queue checks against a plain
per-task FIFO reference, twin age, single- vs multi-agent dynamics, baselines,
SuperSuit training and input validation."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import gentwin  # noqa: F401
from gentwin.baselines.task_offloading import (
    BASELINES,
    BOUND,
    EXACT_BASELINES,
    GreedyLatencyPolicy,
    OneSlotOptimumPolicy,
)
from gentwin.envs import InvalidActionError, make_parallel, make_sb3_vec_env
from gentwin.envs.task_offloading import (
    PRESETS,
    TaskOffloadingEnv,
    TaskOffloadingKernel,
    TaskOffloadingParams,
    edge_positions,
)
from gentwin.evaluation import evaluate_policy

ENV_ID = "gentwin/TaskOffloading-v0"
MA_ID = "gentwin/TaskOffloading-ma-v0"


def random_masked_actions(kernel: TaskOffloadingKernel, rng: np.random.Generator, respect_mask=True):
    p = kernel.params
    if not respect_mask:
        return rng.integers(0, p.num_choices, size=(kernel.num_envs, p.num_devices))
    mask = kernel.action_masks().reshape(kernel.num_envs, p.num_devices, -1)
    return np.argmax(np.where(mask, rng.random(mask.shape), -1.0), axis=2)


# ---------------------------------------------------------------------------
# API, seeding, spaces
# ---------------------------------------------------------------------------
def test_check_env_gymnasium_and_sb3():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(ENV_ID, params="small").unwrapped, skip_render_check=True)
    sb3_check_env(TaskOffloadingEnv(params="small"), warn=True)


def test_native_vector_env_equals_sync_vector_env():
    B, seed = 3, 11
    native = gym.make_vec(ENV_ID, num_envs=B, params="small", episode_slots=7)
    sync = gym.vector.SyncVectorEnv(
        [lambda: gym.make(ENV_ID, params="small", episode_slots=7) for _ in range(B)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    o1, _ = native.reset(seed=seed)
    o2, _ = sync.reset(seed=seed)
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for _ in range(20):  # crosses two autoresets
        a = rng.integers(0, 4, size=(B, 4))
        r1 = native.step(a)
        r2 = sync.step(a)
        for x, y in zip(r1[:4], r2[:4]):
            np.testing.assert_array_equal(x, y)


def test_batch_instance_equals_single_env_seeded_s_plus_i():
    kernel = TaskOffloadingKernel("small", num_envs=4)
    single = TaskOffloadingKernel("small", num_envs=1)
    kernel.reset(seed=100)
    single.reset(seed=102)
    rng = np.random.default_rng(1)
    for _ in range(30):
        a = rng.integers(0, 4, size=(4, 4))
        o, r, _, _, info = kernel.step(a)
        o1, r1, _, _, info1 = single.step(a[2:3])
        np.testing.assert_array_equal(o[2], o1[0])
        assert r[2] == r1[0]
        np.testing.assert_array_equal(info["latency_s"][2], info1["latency_s"][0])


def test_observations_stay_in_space_over_long_random_run():
    # A heavily loaded variant drives the edge backlogs to their bound: work is cut at
    # the deadline, so a backlog never exceeds (deadline - slot) / deadline.
    kernel = TaskOffloadingKernel(TaskOffloadingParams(num_devices=6, num_edges=2, edge_cpu_hz=2e9,
                                                        episode_slots=40), num_envs=4)
    space = kernel.single_observation_space
    agent_space = kernel.single_agent_observation_space
    obs = kernel.reset(seed=3)
    rng = np.random.default_rng(3)
    bound = 1.0 - kernel.params.slot_s / kernel.params.deadline_s
    highest = 0.0
    for t in range(120):
        assert all(space.contains(o) for o in obs)
        agents = kernel.observe_agents()
        assert all(agent_space.contains(o) for o in agents.reshape(-1, agents.shape[-1]))
        assert (kernel.edge_backlog() <= bound + 1e-12).all()
        highest = max(highest, float(kernel.edge_backlog().max()))
        obs, _, _, trunc, _ = kernel.step(random_masked_actions(kernel, rng, respect_mask=False))
        if trunc.any():
            obs = kernel.reset(idx=np.flatnonzero(trunc))
    assert highest > bound - 0.05


def test_same_seed_same_numbers():
    results = []
    for _ in range(2):
        kernel = TaskOffloadingKernel("medium", num_envs=2)
        kernel.reset(seed=5)
        rng = np.random.default_rng(5)
        rewards = [kernel.step(rng.integers(0, 5, size=(2, 20)))[1] for _ in range(20)]
        results.append(np.asarray(rewards))
    np.testing.assert_array_equal(results[0], results[1])


# ---------------------------------------------------------------------------
# Hand-computed scenario
# ---------------------------------------------------------------------------
def _rate_bps(bandwidth_hz, distance_m):
    """Shannon rate written out from the docstring's numbers (not the module's helpers)."""
    loss_db = 128.1 + 37.6 * math.log10(distance_m / 1000.0)
    gain = 10 ** (-loss_db / 10)
    power_w = 10 ** ((23 - 30) / 10)
    noise_w = 10 ** ((-174 - 30) / 10) * bandwidth_hz
    return bandwidth_hz * math.log2(1 + power_w * gain / noise_w)


def _scripted_kernel():
    """1 edge at the centre (250, 250); devices at 100, 100 and 200 m; no fading, no motion."""
    params = TaskOffloadingParams(num_devices=3, num_edges=1, episode_slots=4, rayleigh_fading=False,
                                  coverage_radius_m=300.0, speed_min_mps=0.0, speed_max_mps=0.0)
    kernel = TaskOffloadingKernel(params, num_envs=1)
    kernel.reset(seed=0)
    assert np.allclose(edge_positions(params), [[250.0, 250.0]])
    kernel.position_m[0] = np.array([[250.0, 350.0], [250.0, 150.0], [450.0, 250.0]], dtype=np.float32)
    kernel.task_present[0] = False
    kernel.task_update[0] = False

    def task(slot, u, bits, cycles, update=False):
        kernel.task_present[0, slot, u] = True
        kernel.task_bits[0, slot, u] = bits
        kernel.task_cycles[0, slot, u] = cycles
        kernel.task_update[0, slot, u] = update

    task(0, 0, 3e6, 9e8, update=True)   # -> edge
    task(0, 1, 4e6, 1.2e9)              # -> edge, queues behind device 0
    task(0, 2, 2e6, 6e8)                # -> local
    task(1, 0, 2e6, 3e8, update=True)   # -> edge, waits for device 1's task
    task(1, 2, 1e6, 3e9)                # -> local, misses its deadline
    task(2, 1, 3e6, 1e9)                # -> cloud
    kernel._link = None
    return kernel


def test_scripted_scenario_latency_energy_drops_and_age_by_hand():
    kernel = _scripted_kernel()
    power_w = 10 ** ((23 - 30) / 10)
    kappa_f2 = 1e-28 * 2.5e9**2

    # Slot 0: devices 0 and 1 share the 20 MHz band (10 MHz each) at 100 m.
    _, r0, _, _, info = kernel.step(np.array([[1, 1, 0]]))
    rate = _rate_bps(10e6, 100.0)
    up0, up1 = 3e6 / rate, 4e6 / rate
    fin0 = up0 + 9e8 / 15e9                       # edge idle when device 0 arrives
    fin1 = max(up1, fin0) + 1.2e9 / 15e9          # device 1 waits for device 0
    fin2 = 6e8 / 2.5e9
    assert up1 < fin0  # device 1 really waits
    np.testing.assert_allclose(info["latency_s"][0], [fin0, fin1, fin2], rtol=1e-9)
    np.testing.assert_allclose(info["energy_j"][0], [power_w * up0, power_w * up1, kappa_f2 * 6e8], rtol=1e-9)
    np.testing.assert_allclose(info["service_start_s"][0], [up0, fin0, 0.0], rtol=1e-9, atol=1e-12)
    assert info["completed"][0].all() and not info["dropped"][0].any()
    # Every twin is 0.1 s old at the end of slot 0 (update generated at 0 counts as age 0.1).
    np.testing.assert_allclose(info["twin_age_s"][0], [0.1, 0.1, 0.1])
    cost = np.array([fin0, fin1, fin2]) + 0.2 * info["energy_j"][0] + 0.1 * 0.1
    np.testing.assert_allclose(info["cost"][0], cost, rtol=1e-9)
    assert r0[0] == pytest.approx(-cost.mean(), rel=1e-12)

    # Slot 1 (now = 0.1 s): device 0 alone on the band; device 2's local task is too big.
    _, r1, _, _, info = kernel.step(np.array([[1, 0, 0]]))
    up = 2e6 / _rate_bps(20e6, 100.0)
    fin = max(0.1 + up, fin1) + 3e8 / 15e9
    start2 = max(0.1, fin2)
    deadline = 0.1 + 1.0
    assert start2 + 3e9 / 2.5e9 > deadline
    np.testing.assert_allclose(info["latency_s"][0], [fin - 0.1, 0.0, 0.0], rtol=1e-9, atol=1e-12)
    assert info["dropped"][0].tolist() == [False, False, True]
    assert info["has_task"][0].tolist() == [True, False, True]
    # The dropped task ran from its start to the deadline: that work and energy are spent.
    np.testing.assert_allclose(info["cycles_executed"][0, 2], 2.5e9 * (deadline - start2), rtol=1e-9)
    np.testing.assert_allclose(info["energy_j"][0, 2], kappa_f2 * 2.5e9 * (deadline - start2), rtol=1e-9)
    np.testing.assert_allclose(info["service_end_s"][0, 2], deadline, rtol=1e-12)
    # Device 0's update (generated at 0.1) lands at fin < 0.2: its twin is 0.1 s old.
    assert fin < 0.2
    np.testing.assert_allclose(info["twin_age_s"][0], [0.1, 0.2, 0.2], rtol=1e-9)
    expected = np.array([fin - 0.1, 0.0, 0.0]) + 0.2 * info["energy_j"][0] + [0.0, 0.0, 2.0] \
        + 0.1 * np.array([0.1, 0.2, 0.2])
    np.testing.assert_allclose(info["cost"][0], expected, rtol=1e-9)
    assert r1[0] == pytest.approx(-expected.mean(), rel=1e-12)
    # The local CPU of device 2 is busy exactly until the deadline.
    assert kernel.local_free_s[0, 2] == pytest.approx(deadline)

    # Slot 2 (now = 0.2 s): device 1 to the cloud through the (only) edge.
    _, _, _, _, info = kernel.step(np.array([[0, 2, 0]]))
    up = 3e6 / _rate_bps(20e6, 100.0)
    np.testing.assert_allclose(info["latency_s"][0, 1], up + 0.3 + 1e9 / 100e9, rtol=1e-9)
    np.testing.assert_allclose(info["energy_j"][0, 1], power_w * up, rtol=1e-9)
    assert info["placement"][0].tolist() == [-1, 2, -1]


def test_unreachable_edge_drops_the_task_and_is_masked():
    params = TaskOffloadingParams(num_devices=2, num_edges=2, episode_slots=3, rayleigh_fading=False,
                                  speed_min_mps=0.0, speed_max_mps=0.0, coverage_radius_m=50.0,
                                  task_arrival_prob=1.0)
    kernel = TaskOffloadingKernel(params, num_envs=1)
    kernel.reset(seed=0)
    east, west = edge_positions(params)
    kernel.position_m[0, :, 0] = east + [10.0, 0.0]  # device 0 next to edge 0 only
    kernel.position_m[0, :, 1] = west + [0.0, 10.0]  # device 1 next to edge 1 only
    kernel._link = None
    mask = kernel.action_masks().reshape(2, 4)
    assert mask.tolist() == [[True, True, False, True], [True, False, True, True]]
    _, _, _, _, info = kernel.step(np.array([[2, 2]]))  # device 0 picks the unreachable edge 1
    assert info["dropped"][0].tolist() == [True, False]
    assert info["energy_j"][0, 0] == 0.0 and info["uplink_end_s"][0, 0] == -1.0


# ---------------------------------------------------------------------------
# Queues against a plain FIFO reference: work conservation, drops, twin age
# ---------------------------------------------------------------------------
def _run_episode(params, seed, n_envs=2, respect_mask=False):
    kernel = TaskOffloadingKernel(params, num_envs=n_envs)
    kernel.reset(seed=seed)
    rng = np.random.default_rng(seed)
    steps = []
    for t in range(params.episode_slots):
        a = random_masked_actions(kernel, rng, respect_mask)
        _, reward, _, trunc, info = kernel.step(a)
        steps.append({k: np.asarray(v).copy() for k, v in info.items()} | {"reward": reward.copy()})
    assert trunc.all()
    return kernel, steps


LOADED = TaskOffloadingParams(num_devices=8, num_edges=2, episode_slots=40, edge_cpu_hz=6e9,
                              edge_bandwidth_hz=5e6, coverage_radius_m=250.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_queues_are_fifo_work_conserving_and_drop_exactly_late_tasks(seed):
    p = LOADED
    kernel, steps = _run_episode(p, seed)
    E = p.num_edges
    for b in range(kernel.num_envs):
        edge_free = np.zeros(E)
        local_free = np.zeros(p.num_devices)
        arrived = executed = discarded = 0.0
        n_drops = 0
        for t, s in enumerate(steps):
            now, deadline = t * p.slot_s, t * p.slot_s + p.deadline_s
            place = s["placement"][b]
            n_drops += int(s["dropped"][b].sum())
            assert (s["dropped"][b] == (s["has_task"][b] & ~s["completed"][b])).all()
            # Edge queues: this slot's tasks in order of arrival, each edge a FIFO with the cut at D.
            at_edge = [u for u in range(p.num_devices) if 1 <= place[u] <= E
                       and s["queue_arrival_s"][b, u] >= 0]
            for u in sorted(at_edge, key=lambda u: s["queue_arrival_s"][b, u]):
                j = place[u] - 1
                arrival = s["queue_arrival_s"][b, u]
                assert arrival == s["uplink_end_s"][b, u] and arrival <= deadline
                start = max(arrival, edge_free[j])
                need = s["cycles"][b, u] / p.edge_cpu_hz
                if start >= deadline:  # discarded unserved
                    assert s["service_start_s"][b, u] == -1.0 and s["dropped"][b, u]
                    assert s["cycles_executed"][b, u] == 0.0
                    continue
                assert s["service_start_s"][b, u] == pytest.approx(start, abs=1e-12)
                end = min(start + need, deadline)
                assert s["service_end_s"][b, u] == pytest.approx(end, abs=1e-12)
                # Dropped exactly when the task would finish after its deadline.
                assert bool(s["dropped"][b, u]) == (start + need > deadline + 1e-12)
                if not s["dropped"][b, u]:
                    assert s["latency_s"][b, u] == pytest.approx(start + need - now, abs=1e-12)
                assert s["cycles_executed"][b, u] == pytest.approx(p.edge_cpu_hz * (end - start), rel=1e-9)
                edge_free[j] = end
                arrived += s["cycles"][b, u]
                executed += s["cycles_executed"][b, u]
                discarded += s["cycles"][b, u] - p.edge_cpu_hz * (end - start)
            # Local CPUs: one FIFO per device.
            for u in np.flatnonzero(place == 0):
                start = max(now, local_free[u])
                need = s["cycles"][b, u] / p.device_cpu_hz
                assert s["service_start_s"][b, u] == pytest.approx(start, abs=1e-12)
                assert bool(s["dropped"][b, u]) == (start + need > deadline)
                local_free[u] = min(start + need, deadline)
            # Offloads whose upload misses the deadline never reach a CPU and are dropped.
            late_upload = (place >= 1) & (s["uplink_end_s"][b] > deadline)
            assert s["dropped"][b][late_upload].all()
            assert (s["queue_arrival_s"][b][late_upload] == -1.0).all()
        np.testing.assert_allclose(kernel.edge_free_s[b], edge_free, atol=1e-12)
        np.testing.assert_allclose(kernel.local_free_s[b], local_free, atol=1e-12)
        # Work conservation at the edges: arrived = executed + discarded at the deadline cut.
        assert arrived == pytest.approx(executed + discarded, rel=1e-12)
        assert kernel.n_dropped[b] == n_drops
    # The loaded variant really exercises the queues and drops.
    assert sum(int(s["dropped"].sum()) for s in steps) > 10


def test_twin_age_matches_newest_delivered_update():
    p = LOADED
    kernel, steps = _run_episode(p, seed=7, respect_mask=True)
    for b in range(kernel.num_envs):
        delivered = [[] for _ in range(p.num_devices)]  # (completion time, generation time)
        for t, s in enumerate(steps):
            now = t * p.slot_s
            for u in range(p.num_devices):
                if s["is_update"][b, u] and s["completed"][b, u]:
                    delivered[u].append((now + s["latency_s"][b, u], now))
            end = now + p.slot_s
            for u in range(p.num_devices):
                newest = max([g for c, g in delivered[u] if c <= end + 1e-12], default=0.0)
                assert s["twin_age_s"][b, u] == pytest.approx(end - newest, abs=1e-9)
    # Ages must actually reset: some device's twin is fresher than the clock.
    assert any((s["twin_age_s"] < (t + 1) * p.slot_s - 1e-9).any() for t, s in enumerate(steps))


def test_rewards_are_minus_mean_cost_and_agent_rewards_average_to_it():
    kernel, steps = _run_episode(PRESETS["small"], seed=2)
    for s in steps:
        np.testing.assert_allclose(s["reward"], -s["cost"].mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(s["agent_rewards"].mean(axis=1), s["reward"], rtol=1e-12)
        beta = PRESETS["small"].shared_reward_weight
        np.testing.assert_allclose(
            s["agent_rewards"], -((1 - beta) * s["cost"] + beta * s["cost"].mean(axis=1, keepdims=True)),
            rtol=1e-12,
        )


# ---------------------------------------------------------------------------
# Multi-agent view
# ---------------------------------------------------------------------------
def test_parallel_api_test():
    from pettingzoo.test import parallel_api_test

    parallel_api_test(make_parallel(MA_ID, params="small", episode_slots=30), num_cycles=70)


def test_single_and_multi_agent_views_have_identical_dynamics():
    central = gym.make(ENV_ID, params="small").unwrapped
    par = make_parallel(MA_ID, params="small")
    obs, _ = central.reset(seed=21)
    agent_obs, _ = par.reset(seed=21)
    E = central.params.num_edges
    width = 9 + E
    rng = np.random.default_rng(21)
    for t in range(central.params.episode_slots):
        np.testing.assert_array_equal(par.state(), obs)
        for u, agent in enumerate(par.possible_agents):
            np.testing.assert_array_equal(agent_obs[agent][:width], obs[u * width:(u + 1) * width])
            np.testing.assert_array_equal(agent_obs[agent][-1], obs[-1])
        joint = rng.integers(0, E + 2, size=4)
        obs, reward, term, trunc, info = central.step(joint)
        agent_obs, rewards, terms, truncs, infos = par.step({a: int(joint[u]) for u, a in enumerate(par.possible_agents)})
        assert np.mean(list(rewards.values())) == pytest.approx(reward, rel=1e-12)
        for u, agent in enumerate(par.possible_agents):
            assert infos[agent]["latency_s"] == info["latency_s"][u]
            assert infos[agent]["dropped"] == info["dropped"][u]
            assert truncs[agent] == trunc
    assert trunc and par.agents == []


def test_supersuit_parameter_sharing_trains_with_sb3():
    import supersuit as ss
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecMonitor

    torch.set_num_threads(1)
    penv = make_parallel(MA_ID, params="small", episode_slots=25)
    venv = ss.pettingzoo_env_to_vec_env_v1(penv)
    venv = ss.concat_vec_envs_v1(venv, 2, num_cpus=0, base_class="stable_baselines3")
    # SuperSuit's ConcatVecEnv has no seed(): seed its reset (copy k gets seed + k).
    venv.venv.reset(seed=0)
    venv = VecMonitor(venv)
    assert venv.num_envs == 8  # 2 copies x 4 devices, one shared policy
    set_random_seed(0)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=2, verbose=0)
    model.learn(300)
    assert model.num_timesteps >= 300
    assert len(model.ep_info_buffer) > 0  # episodes of 25 slots finished through SuperSuit
    actions, _ = model.predict(venv.reset())
    assert actions.shape == (8,) and ((actions >= 0) & (actions < 4)).all()


def test_multi_agent_action_masks_reach_maskable_ppo_and_its_evaluation():
    # Each device's mask is its block of the central masks; SuperSuit's vector env (which has no
    # env_method) offers them for MaskablePPO, and the shared policy acting on the central view
    # gets each device's block: an untrained, sampling MaskablePPO never picks an unreachable
    # edge, which it would without the masks (the uniform-ish initial policy picks every option).
    from sb3_contrib import MaskablePPO

    from gentwin.evaluation import SharedAgentPolicy
    from gentwin.training import make_train_env

    torch.set_num_threads(1)
    par = make_parallel(MA_ID, params="small", episode_slots=25)
    par.reset(seed=2)
    central = par.kernel.action_masks()[0].reshape(len(par.possible_agents), -1)
    for k, agent in enumerate(par.possible_agents):
        np.testing.assert_array_equal(par.action_mask(agent), central[k])
    with pytest.raises(ValueError, match="agent = 'device_99' is invalid"):
        par.action_mask("device_99")

    venv = make_train_env(MA_ID, 2, 0, dict(params="small", episode_slots=25))
    venv.reset()
    assert venv.has_attr("action_masks")
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (8, 4) and not masks.all()  # 2 copies x 4 devices, E + 2 = 4 choices each
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, verbose=0)
    model.learn(256)

    policy = SharedAgentPolicy(model)
    assert policy.uses_action_masks
    evalenv = make_sb3_vec_env(ENV_ID, num_envs=4, params="small", episode_slots=25, seed=5)
    evalenv.reset()
    policy.attach(evalenv)
    kernel = evalenv.kernel
    for _ in range(25):
        allowed = kernel.action_masks()
        actions, _ = policy.predict(None, deterministic=False, action_masks=allowed)
        chosen = np.take_along_axis(allowed.reshape(4, 4, -1), actions[..., None], axis=2)
        assert chosen.all()
        evalenv.step(actions)

    # Continuous per-device actions have no masks: the vector env says so instead of failing.
    assert not make_train_env(MA_ID, 1, 0, dict(params="small", action_mode="device_prices")).has_attr("action_masks")


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------
def test_baselines_respect_masks_and_their_rules():
    venv = make_sb3_vec_env(ENV_ID, num_envs=3, params="medium", seed=4)
    obs = venv.reset()
    kernel = venv.kernel
    for name, cls in BASELINES.items():
        policy = cls(venv, seed=0)
        a, _ = policy.predict(obs)
        mask = kernel.action_masks().reshape(3, 20, -1)
        has = kernel.current_tasks()["present"]
        chosen = np.take_along_axis(mask, a[..., None], axis=2)[..., 0]
        assert chosen[has].all(), name
    link = kernel.link_state()
    assert (BASELINES["all_local"](venv).predict(obs)[0] == 0).all()
    assert (BASELINES["all_cloud"](venv).predict(obs)[0] == 4).all()
    assert (BASELINES["all_nearest_edge"](venv).predict(obs)[0] == link["nearest"] + 1).all()
    # the enumeration does not fit the default preset; the episode's reference is the fluid LP bound
    assert BOUND.name == "fluid_lp" and BOUND.kind == "certified upper bound"


def test_greedy_beats_fixed_rules_over_seeds():
    costs = {}
    for name in ("greedy", "all_local", "all_nearest_edge", "random", "all_cloud"):
        venv = make_sb3_vec_env(ENV_ID, num_envs=4, params="medium", episode_slots=40)
        policy = BASELINES[name](venv, seed=0)
        costs[name] = evaluate_policy(policy, ENV_ID, n_episodes=4, seed=500, venv=venv).metric("cost")
    for other in ("all_local", "all_nearest_edge", "random", "all_cloud"):
        assert (costs["greedy"] < costs[other]).all(), (other, costs)
    assert (costs["all_cloud"] < costs["all_local"]).all()


def test_one_slot_optimum_is_exact_and_beats_every_rule_in_its_slot():
    kernel = TaskOffloadingKernel(PRESETS["small"], num_envs=1)
    kernel.reset(seed=8)
    optimum = OneSlotOptimumPolicy(kernel)
    rules = {name: BASELINES[name](kernel, seed=0) for name in ("greedy", "all_cloud", "all_nearest_edge", "random")}
    rng = np.random.default_rng(8)
    for t in range(6):
        rewards = optimum.slot_rewards(0)
        best = optimum.act(kernel.observe())
        # The chosen joint action's reward, checked on an independent clone.
        _, r_best, _, _, _ = kernel.clone_instance(0, 1).step(best)
        assert r_best[0] == pytest.approx(rewards.max(), rel=1e-12)
        for name, rule in rules.items():
            _, r_rule, _, _, _ = kernel.clone_instance(0, 1).step(rule.act(kernel.observe()))
            assert r_best[0] >= r_rule[0] - 1e-12, name
        kernel.step(random_masked_actions(kernel, rng))
    with pytest.raises(ValueError, match="num_devices"):
        OneSlotOptimumPolicy(TaskOffloadingKernel("medium"))
    assert set(EXACT_BASELINES) == {"one_slot_optimum"}


def test_greedy_estimate_is_exact_for_a_single_task():
    # With one task in the system, greedy's estimate is the true latency of its choice.
    params = TaskOffloadingParams(num_devices=1, num_edges=3, episode_slots=5, task_arrival_prob=1.0)
    kernel = TaskOffloadingKernel(params, num_envs=1)
    kernel.reset(seed=9)
    greedy = GreedyLatencyPolicy(kernel)
    choice = greedy.act(kernel.observe())
    latencies = []
    for a in range(params.num_choices):
        _, _, _, _, info = kernel.clone_instance(0, 1).step(np.array([[a]]))
        latencies.append(info["latency_s"][0, 0] if info["completed"][0, 0] else np.inf)
    assert latencies[choice[0, 0]] == min(latencies)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [("num_devices", 0), ("num_edges", 1.5), ("task_arrival_prob", 1.2), ("deadline_s", 0.0),
     ("task_bits_max", 1e3), ("shared_reward_weight", -0.1), ("edge_cpu_hz", float("nan"))],
)
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"TaskOffloadingParams.{field}"):
        TaskOffloadingParams(**{field: value})
    with pytest.raises(ValueError, match="preset"):
        TaskOffloadingKernel("huge")


def test_bad_actions_raise():
    kernel = TaskOffloadingKernel("small", num_envs=2)
    kernel.reset(seed=0)
    with pytest.raises(InvalidActionError, match="instance 1"):
        kernel.step(np.array([[0, 0, 0, 0], [0, 4, 0, 0]]))
    with pytest.raises(InvalidActionError, match="shape"):
        kernel.step(np.zeros((2, 3), dtype=int))
    with pytest.raises(InvalidActionError):
        kernel.step(np.full((2, 4), np.nan))
    par = make_parallel(MA_ID, params="small")
    par.reset(seed=0)
    with pytest.raises(InvalidActionError, match="missing"):
        par.step({"device_0": 0})


# ---------------------------------------------------------------------------
# Multi-slot references (issue 15)
# ---------------------------------------------------------------------------
def _episode_return(kernel, policy):
    total = np.zeros(kernel.num_envs)
    for _ in range(kernel.params.episode_slots):
        actions, _ = policy.predict(kernel.observe())
        _, reward, _, _, _ = kernel.step(actions)
        total += reward
    return total


def test_fluid_bound_is_above_the_brute_force_optimum_of_tiny_episodes():
    """U = 2 devices, E = 1 edge, 3 slots: every one of the 3^6 placement sequences (the episode
    is deterministic after reset, so open-loop sequences include the optimum)."""
    import itertools

    from gentwin.baselines.task_offloading import contention_free_bound, fluid_lp_bound

    params = TaskOffloadingParams(num_devices=2, num_edges=1, episode_slots=3, task_arrival_prob=0.9,
                                  area_m=300.0, edge_cpu_hz=4e9)
    joint = np.array(list(itertools.product(range(3), repeat=6))).reshape(-1, 3, 2)  # (n, slot, device)
    for seed in range(4):
        k = TaskOffloadingKernel(params, 1)
        k.reset(seed=seed)
        fluid, free = fluid_lp_bound(k, 0), contention_free_bound(k, 0)
        clone = k.clone_instance(0, len(joint))
        total = np.zeros(len(joint))
        for t in range(3):
            _, reward, _, _, _ = clone.step(joint[:, t])
            total += reward
        assert total.max() <= fluid <= free + 1e-9
        assert total.max() >= 1.5 * fluid  # not vacuous (returns are negative)


def test_hindsight_rollout_lies_between_greedy_and_the_brute_force_optimum():
    """The rollout reference is at least greedy's return and at most the exact episode optimum."""
    import itertools

    from gentwin.baselines.task_offloading import GreedyLatencyPolicy, HindsightRolloutPolicy

    params = TaskOffloadingParams(num_devices=2, num_edges=1, episode_slots=3, task_arrival_prob=0.9,
                                  area_m=300.0, edge_cpu_hz=4e9)
    joint = np.array(list(itertools.product(range(3), repeat=6))).reshape(-1, 3, 2)
    strictly = 0
    for seed in range(8):
        k = TaskOffloadingKernel(params, 1)
        k.reset(seed=seed)
        clone = k.clone_instance(0, len(joint))
        total = np.zeros(len(joint))
        for t in range(3):
            total += clone.step(joint[:, t])[1]
        rollout = _episode_return(k, HindsightRolloutPolicy(k))[0]
        k.reset(seed=seed)
        greedy = _episode_return(k, GreedyLatencyPolicy(k))[0]
        assert greedy <= rollout + 1e-12 and rollout <= total.max() + 1e-12
        strictly += rollout > greedy + 1e-9
    assert strictly >= 1  # it does improve on greedy somewhere


def test_hindsight_rollout_is_never_below_greedy_on_small_episodes():
    import dataclasses

    from gentwin.baselines.task_offloading import BOUND, GreedyLatencyPolicy, HindsightRolloutPolicy
    from gentwin.envs.task_offloading import PRESETS

    k = TaskOffloadingKernel(dataclasses.replace(PRESETS["small"], episode_slots=25), 3)
    k.reset(seed=11)
    fluid = BOUND.value(k)
    rollout = _episode_return(k, HindsightRolloutPolicy(k))
    k.reset(seed=11)
    greedy = _episode_return(k, GreedyLatencyPolicy(k))
    assert np.all(greedy <= rollout + 1e-12) and np.all(rollout <= fluid)
    with pytest.raises(ValueError, match="num_devices = 100 is too large for the rollout"):
        HindsightRolloutPolicy(TaskOffloadingKernel("large", 1))


@pytest.mark.parametrize("preset, overrides", [("small", {"episode_slots": 30}), ("medium", {"episode_slots": 20})])
def test_no_baseline_beats_the_multi_slot_bounds(preset, overrides):
    import dataclasses

    from gentwin.baselines.task_offloading import BASELINES, BOUND, EXACT_BASELINES, contention_free_bound
    from gentwin.envs.task_offloading import PRESETS

    k = TaskOffloadingKernel(dataclasses.replace(PRESETS[preset], **overrides), 3)
    k.reset(seed=7)
    fluid = BOUND.value(k)
    free = np.array([contention_free_bound(k, i) for i in range(3)])
    assert np.all(fluid <= free + 1e-9)
    policies = dict(BASELINES)
    if k.params.num_devices <= 4:
        policies.update(EXACT_BASELINES)
    for name, cls in policies.items():
        k.reset(seed=7)
        assert np.all(_episode_return(k, cls(k, seed=0)) <= fluid), name
    for seed in range(6):  # random search over feasible placements
        k.reset(seed=7)
        assert np.all(_episode_return(k, BASELINES["random"](k, seed=seed)) <= fluid)


# ---------------------------------------------------------------------------
# action_mode="prices": the agent prices the placements, the list scheduler places
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["small", "medium"])
def test_zero_prices_play_the_greedy_episode(preset):
    venv = make_sb3_vec_env(ENV_ID, num_envs=3, params=preset, episode_slots=30)
    greedy = evaluate_policy(GreedyLatencyPolicy(venv), ENV_ID, n_episodes=3, seed=9, venv=venv)
    prices = make_sb3_vec_env(ENV_ID, num_envs=3, params=preset, episode_slots=30, action_mode="prices")
    C = PRESETS[preset].num_choices

    class ZeroPrices:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros((obs.shape[0], C), dtype=np.float32), None

    played = evaluate_policy(ZeroPrices(), ENV_ID, n_episodes=3, seed=9, venv=prices)
    np.testing.assert_array_equal(played.metric("return"), greedy.metric("return"))
    assert prices.action_space == gym.spaces.Box(-1.0, 1.0, (C,), np.float32)


def test_prices_steer_the_scheduler_within_the_feasible_placements():
    """A dominant price sends every task to the cheapest-priced feasible placement; unreachable
    edges are never chosen however cheap; the step's placements are the scheduler's."""
    k = TaskOffloadingKernel(dict(action_mode="prices", price_scale_s=1000.0, coverage_radius_m=0.0,
                                  episode_slots=6), num_envs=4)
    k.reset(seed=3)
    E = k.params.num_edges
    for target in (0, E + 1, 1, 2):
        prices = np.ones((4, k.params.num_choices), dtype=np.float32)
        prices[:, target] = -1.0
        feasible = k.feasible_placements()
        has = k.current_tasks()["present"]
        expected = k.list_schedule(k.params.price_scale_s * prices.astype(np.float64))
        *_, info = k.step(prices)
        np.testing.assert_array_equal(np.where(has, info["placement"], -1), np.where(has, expected, -1))
        assert np.all(feasible[np.arange(4)[:, None], np.arange(k.params.num_devices), expected] | ~has)
        if target in (0, E + 1):  # local and cloud are always feasible
            assert np.all(expected[has] == target)
        else:  # an edge only where it is the serving cell (coverage radius 0)
            reachable = feasible[:, :, target] & has
            assert np.all(expected[reachable] == target)
            assert np.all(expected[has & ~reachable] != target)


def test_prices_mode_errors_baselines_and_harness():
    from gentwin.training import TrainConfig, evaluate_baselines

    with pytest.raises(ValueError, match="action_mode = 'bids' is invalid: must be one of 'placements', 'prices'"):
        TaskOffloadingParams(action_mode="bids")
    with pytest.raises(ValueError, match="price_scale_s"):
        TaskOffloadingParams(action_mode="prices", price_scale_s=0.0)
    with pytest.raises(ValueError, match="invalid for the multi-agent view"):
        make_parallel(MA_ID, action_mode="prices")
    venv = make_sb3_vec_env(ENV_ID, num_envs=2, action_mode="prices")
    with pytest.raises(ValueError, match="greedy: TaskOffloadingParams.action_mode = 'prices' is invalid"):
        GreedyLatencyPolicy(venv)
    with pytest.raises(AttributeError, match="placements"):
        TaskOffloadingKernel(dict(action_mode="prices")).action_masks()
    # The harness evaluates the baselines on the same episodes without the interface params.
    common = dict(env_id=ENV_ID, eval_episodes=2, baselines=["greedy", "all_cloud"])
    plain, _ = evaluate_baselines(TrainConfig(env_kwargs=dict(params="small", episode_slots=20), **common))
    priced, _ = evaluate_baselines(TrainConfig(env_kwargs=dict(params="small", episode_slots=20,
                                                               action_mode="prices", price_scale_s=2.0), **common))
    for name in ("greedy", "all_cloud"):
        np.testing.assert_array_equal(priced[name].metric("return"), plain[name].metric("return"))


def test_check_env_in_prices_mode():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(ENV_ID, action_mode="prices", params="small").unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(ENV_ID, action_mode="prices", params="small").unwrapped, warn=False)


def test_tune_prices_is_deterministic_and_never_worse_than_greedy_on_its_episodes():
    from gentwin.baselines.task_offloading import TUNING_SEED, list_schedule_returns, tune_prices

    params = dict(num_devices=6, num_edges=2, episode_slots=20)
    first = tune_prices(params, episodes=4, candidates=6, refinements=3)
    second = tune_prices(params, episodes=4, candidates=6, refinements=3)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]
    greedy = list_schedule_returns(TaskOffloadingKernel(params, 4), None, TUNING_SEED).mean()
    assert first[1] >= greedy
    assert first[0].shape == (4,)


def test_base_prices_make_the_zero_action_the_priced_greedy():
    """base_price_s = greedy_priced's prices: the zero action plays greedy_priced's episode."""
    from gentwin.baselines.task_offloading import PricedGreedyPolicy

    prices = (0.05, -0.02, 0.01, -0.1)
    options = dict(params="small", episode_slots=30)
    venv = make_sb3_vec_env(ENV_ID, num_envs=3, **options)
    expected = evaluate_policy(PricedGreedyPolicy(venv, price_s=prices), ENV_ID, n_episodes=3, seed=4, venv=venv)
    priced = make_sb3_vec_env(ENV_ID, num_envs=3, action_mode="prices", base_price_s=prices, **options)

    class Zero:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros((obs.shape[0], 4), dtype=np.float32), None

    played = evaluate_policy(Zero(), ENV_ID, n_episodes=3, seed=4, venv=priced)
    np.testing.assert_array_equal(played.metric("return"), expected.metric("return"))
    greedy = evaluate_policy(GreedyLatencyPolicy(venv), ENV_ID, n_episodes=3, seed=4, venv=venv)
    assert not np.array_equal(played.metric("return"), greedy.metric("return"))
    with pytest.raises(ValueError, match="base_price_s = \\(0.1,\\) is invalid: must be a tuple of 4 prices"):
        TaskOffloadingParams(num_devices=4, num_edges=2, action_mode="prices", base_price_s=(0.1,))
    with pytest.raises(ValueError, match="base prices apply to action_mode in \\('prices', 'device_prices'\\)"):
        TaskOffloadingParams(num_edges=2, base_price_s=(0.1, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="price_s has shape"):
        PricedGreedyPolicy(venv, price_s=(0.1, 0.2))


def test_priced_rollout_is_never_below_its_base_policy_nor_above_the_bound():
    import dataclasses

    from gentwin.baselines.task_offloading import BOUND, PricedGreedyPolicy, PricedHindsightRolloutPolicy
    from gentwin.envs.task_offloading import PRESETS

    prices = (0.1, -0.05, 0.0, -0.15)
    k = TaskOffloadingKernel(dataclasses.replace(PRESETS["small"], episode_slots=25), 3)
    k.reset(seed=13)
    fluid = BOUND.value(k)
    rollout = _episode_return(k, PricedHindsightRolloutPolicy(k, price_s=prices))
    k.reset(seed=13)
    base = _episode_return(k, PricedGreedyPolicy(k, price_s=prices))
    assert np.all(base <= rollout + 1e-12) and np.all(rollout <= fluid)


@pytest.mark.parametrize("preset, overrides", [("small", {"episode_slots": 30}), ("medium", {"episode_slots": 20})])
def test_random_prices_never_beat_the_fluid_bound(preset, overrides):
    import dataclasses

    from gentwin.baselines.task_offloading import BOUND
    from gentwin.envs.task_offloading import PRESETS

    k = TaskOffloadingKernel(dataclasses.replace(PRESETS[preset], action_mode="prices", **overrides), 3)
    k.reset(seed=7)
    fluid = BOUND.value(k)
    rng = np.random.default_rng(0)
    C = k.params.num_choices
    for trial in range(8):  # constant and per-slot random prices (the agents' whole space)
        k.reset(seed=7)
        constant = rng.uniform(-1, 1, size=(3, C)).astype(np.float32)
        total = np.zeros(3)
        for _ in range(k.params.episode_slots):
            a = constant if trial % 2 else rng.uniform(-1, 1, size=(3, C)).astype(np.float32)
            total += k.step(a)[1]
        assert np.all(total <= fluid), trial


def test_expert_action_plays_the_priced_greedy():
    """expert='greedy_priced': info['expert_action'] is the prices action that plays that baseline (its
    tuned prices, relative to base_price_s); the same for every state; playing it is its episode."""
    import dataclasses

    from gentwin.baselines.task_offloading import PricedGreedyPolicy, tune_prices

    options = dict(params="small", episode_slots=20)
    venv = make_sb3_vec_env(ENV_ID, num_envs=3, **options)
    expected = evaluate_policy(PricedGreedyPolicy(venv), ENV_ID, n_episodes=3, seed=8, venv=venv)
    base = (0.01, 0.0, 0.02, -0.03)
    priced = make_sb3_vec_env(ENV_ID, num_envs=3, action_mode="prices", expert="greedy_priced",
                              base_price_s=base, **options)
    kernel = priced.kernel
    prices, _ = tune_prices(dataclasses.replace(PRESETS["small"], episode_slots=20))
    np.testing.assert_allclose(kernel.expert_actions()[0], (prices - np.array(base)) / 0.5, rtol=1e-6)

    class Expert:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return kernel.expert_actions(), None

    played = evaluate_policy(Expert(), ENV_ID, n_episodes=3, seed=8, venv=priced)
    np.testing.assert_array_equal(played.metric("return"), expected.metric("return"))
    priced.reset()
    *_, infos = priced.step(np.zeros((3, 4), dtype=np.float32))
    assert all(np.array_equal(info["expert_action"], kernel.expert_actions()[0]) for info in infos)
    with pytest.raises(ValueError, match="expert = 'greedy_priced' is invalid with action_mode = 'placements'"):
        TaskOffloadingParams(expert="greedy_priced")
    with pytest.raises(ValueError, match="expert = 'oracle' is invalid"):
        TaskOffloadingParams(action_mode="prices", expert="oracle")


# ---------------------------------------------------------------------------
# action_mode="device_prices": one row of prices per device (per agent in -ma)
# ---------------------------------------------------------------------------
def test_equal_device_price_rows_play_the_prices_episode():
    """Every device given the same row is the prices action with that row, slot for slot (so the
    zero action is greedy); the central action is (U, E + 2), the agents' (E + 2)."""
    import dataclasses

    opts = dict(episode_slots=25, price_scale_s=0.3, base_price_s=(0.02, 0.0, -0.01, 0.03))
    shared = TaskOffloadingKernel(dataclasses.replace(PRESETS["small"], action_mode="prices", **opts), 3)
    rows = TaskOffloadingKernel(dataclasses.replace(PRESETS["small"], action_mode="device_prices", **opts), 3)
    U, C = rows.params.num_devices, rows.params.num_choices
    assert rows.single_action_space == gym.spaces.Box(-1.0, 1.0, (U, C), np.float32)
    assert rows.single_agent_action_space == gym.spaces.Box(-1.0, 1.0, (C,), np.float32)
    shared.reset(seed=5)
    rows.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(25):
        a = rng.uniform(-1, 1, size=(3, C)).astype(np.float32)
        obs_s, r_s, _, trunc_s, info_s = shared.step(a)
        obs_r, r_r, _, trunc_r, info_r = rows.step(np.repeat(a[:, None, :], U, axis=1))
        np.testing.assert_array_equal(info_r["placement"], info_s["placement"])
        np.testing.assert_array_equal(r_r, r_s)
        np.testing.assert_array_equal(obs_r, obs_s)
    assert trunc_r.all() and trunc_s.all()


def test_device_price_rows_steer_each_device_on_its_own():
    """A dominant price in row u sends device u's task there and no other device's."""
    import dataclasses

    k = TaskOffloadingKernel(dataclasses.replace(PRESETS["small"], action_mode="device_prices",
                                                 price_scale_s=1000.0, episode_slots=10), num_envs=4)
    k.reset(seed=11)
    U, C = k.params.num_devices, k.params.num_choices
    cloud = C - 1
    for _ in range(10):
        a = np.ones((4, U, C), dtype=np.float32)
        a[:, 0::2, 0] = -1.0  # even devices: local
        a[:, 1::2, cloud] = -1.0  # odd devices: cloud
        has = k.current_tasks()["present"]
        *_, info = k.step(a)
        placed = info["placement"]
        assert np.all(placed[:, 0::2][has[:, 0::2]] == 0)
        assert np.all(placed[:, 1::2][has[:, 1::2]] == cloud)


def test_device_prices_in_the_multi_agent_view():
    """PettingZoo's API test; each agent's row is its device's row of the central action, with the
    central rewards; the expert fills every row with greedy_priced's prices; errors name the mode."""
    import dataclasses

    from pettingzoo.test import parallel_api_test

    from gentwin.baselines.task_offloading import tune_prices

    parallel_api_test(make_parallel(MA_ID, params="small", episode_slots=30, action_mode="device_prices"),
                      num_cycles=70)
    central = gym.make(ENV_ID, params="small", action_mode="device_prices").unwrapped
    par = make_parallel(MA_ID, params="small", action_mode="device_prices")
    central.reset(seed=2)
    par.reset(seed=2)
    rng = np.random.default_rng(2)
    U, C = 4, 4
    for _ in range(central.params.episode_slots):
        joint = rng.uniform(-1, 1, size=(U, C)).astype(np.float32)
        _, reward, _, trunc, info = central.step(joint)
        _, rewards, _, truncs, infos = par.step({a: joint[u] for u, a in enumerate(par.possible_agents)})
        assert np.mean(list(rewards.values())) == pytest.approx(reward, rel=1e-12)
        assert [infos[a]["placement"] for a in par.possible_agents] == list(info["placement"])
    assert trunc and all(truncs.values())
    k = TaskOffloadingKernel(dataclasses.replace(PRESETS["small"], episode_slots=20, action_mode="device_prices",
                                                 expert="greedy_priced"), 2)
    prices, _ = tune_prices(dataclasses.replace(PRESETS["small"], episode_slots=20))
    expert = k.expert_actions()
    assert expert.shape == (2, U, C)
    np.testing.assert_allclose(expert, np.broadcast_to(prices / 0.5, (2, U, C)), rtol=1e-6)
    with pytest.raises(ValueError, match="'prices' is one action for all devices"):
        make_parallel(MA_ID, action_mode="prices")
    with pytest.raises(AttributeError, match="placements"):
        TaskOffloadingKernel(dict(action_mode="device_prices")).action_masks()


def test_check_env_in_device_prices_mode():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    check_env(gym.make(ENV_ID, action_mode="device_prices", params="small").unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(ENV_ID, action_mode="device_prices", params="small").unwrapped, warn=False)


def test_random_device_prices_never_beat_the_fluid_bound():
    import dataclasses

    from gentwin.baselines.task_offloading import BOUND

    k = TaskOffloadingKernel(dataclasses.replace(PRESETS["small"], action_mode="device_prices",
                                                 episode_slots=30), 3)
    U, C = k.params.num_devices, k.params.num_choices
    rng = np.random.default_rng(1)
    for trial in range(6):
        k.reset(seed=17)
        fluid = BOUND.value(k)
        total = np.zeros(3)
        for _ in range(k.params.episode_slots):
            total += k.step(rng.uniform(-1, 1, size=(3, U, C)).astype(np.float32))[1]
        assert np.all(total <= fluid), trial
