"""Benchmark of TaskOffloading-v0 / -ma-v0 (issue 6): learned agents vs baselines, and
kernel throughput.

For each preset (small, medium, large) and seed it trains

* ``ppo``: PPO with one central scheduler (``MultiDiscrete``) on the batched kernel,
* ``ppo_ma``: PPO with parameter sharing over the devices of the PettingZoo view,
  through SuperSuit (the way train.py trains ``gentwin/TaskOffloading-ma-v0``),
* ``diffusion_ma``: the diffusion actor-critic (D2SAC, Discrete actions) with
  parameter sharing, on the same SuperSuit env -- the diffusion agent supports
  ``Discrete`` and ``Box`` only, so it cannot drive the central ``MultiDiscrete``
  scheduler; per device the action is ``Discrete(E + 2)``, which it does support,

and evaluates them and every baseline on the same held-out seeds
(``gentwin.evaluation.EVAL_SEED``) of the central env: multi-agent policies act
per device on ``kernel.observe_agents()`` of the very same instances.  It prints
cost (= -return, per episode), drop rate and mean twin age, mean and standard
deviation over seeds, and the throughput of the batched kernel at the large
preset with B = 256.

Usage::

    nice -n 10 python benchmarks/task_offloading.py                 # defaults below
    python benchmarks/task_offloading.py --presets small --seeds 0 --ppo-steps 5000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gentwin.baselines.base import kernel_of
from gentwin.baselines.task_offloading import BASELINES, EXACT_BASELINES
from gentwin.envs import make_parallel, make_sb3_vec_env
from gentwin.envs.task_offloading import PRESETS, TaskOffloadingKernel
from gentwin.evaluation import EVAL_SEED, evaluate_policy

ENV_ID = "gentwin/TaskOffloading-v0"
MA_ID = "gentwin/TaskOffloading-ma-v0"


class SharedAgentPolicy:
    """A per-device policy (trained with parameter sharing) acting as the central scheduler."""

    def __init__(self, model):
        self.model = model
        self.kernel = None

    def attach(self, env):
        self.kernel = kernel_of(env)
        return self

    def predict(self, observation, state=None, episode_start=None, deterministic=True, **_):
        agent_obs = self.kernel.observe_agents()  # (B, U, d): same instances as `observation`
        B, U, d = agent_obs.shape
        actions, _ = self.model.predict(agent_obs.reshape(B * U, d), deterministic=deterministic)
        return np.asarray(actions).reshape(B, U), None


def supersuit_vec_env(preset: str, copies: int, seed: int):
    """SB3 VecEnv over ``copies`` PettingZoo envs, one entry per device (parameter sharing)."""
    import supersuit as ss
    from stable_baselines3.common.vec_env import VecMonitor

    venv = ss.pettingzoo_env_to_vec_env_v1(make_parallel(MA_ID, params=preset))
    venv = ss.concat_vec_envs_v1(venv, copies, num_cpus=0, base_class="stable_baselines3")
    venv.venv.reset(seed=seed)  # SuperSuit's ConcatVecEnv has no seed(); copy k gets seed + k
    return VecMonitor(venv)


def train_ppo_central(preset, seed, steps, n_envs):
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(seed)
    venv = make_sb3_vec_env(ENV_ID, num_envs=n_envs, seed=seed, params=preset)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=256, gamma=0.9, ent_coef=0.01,
                learning_rate=3e-4, seed=seed, verbose=0)
    model.learn(steps)
    return model


def train_ppo_ma(preset, seed, steps, copies):
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    set_random_seed(seed)
    venv = supersuit_vec_env(preset, copies, seed)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=512, gamma=0.9, ent_coef=0.01,
                learning_rate=3e-4, verbose=0)
    model.learn(steps)
    return SharedAgentPolicy(model)


def train_diffusion_ma(preset, seed, steps, copies):
    from stable_baselines3.common.utils import set_random_seed

    from gentwin.agents.diffusion import DiffusionActorCritic

    set_random_seed(seed)
    venv = supersuit_vec_env(preset, copies, seed)
    model = DiffusionActorCritic("MlpPolicy", venv, learning_starts=2000, batch_size=256, gamma=0.9,
                                 buffer_size=200_000, train_freq=1, gradient_steps=1, verbose=0)
    model.learn(steps)
    return SharedAgentPolicy(model)


def evaluate(policy, preset, episodes):
    venv = make_sb3_vec_env(ENV_ID, num_envs=episodes, params=preset)
    if isinstance(policy, type):
        policy = policy(venv, seed=0)
    res = evaluate_policy(policy, ENV_ID, n_episodes=episodes, seed=EVAL_SEED, venv=venv)
    return {k: res.mean(k) for k in ("cost", "drop_rate", "twin_age_s", "latency_s", "energy_j")}


def kernel_throughput(preset="large", num_envs=256, steps=200, seed=0):
    """Instance-steps per second of the kernel alone, resets of finished episodes included."""
    kernel = TaskOffloadingKernel(preset, num_envs=num_envs)
    kernel.reset(seed=seed)
    rng = np.random.default_rng(seed)
    p = kernel.params
    actions = [rng.integers(0, p.num_choices, size=(num_envs, p.num_devices)) for _ in range(8)]
    start = time.perf_counter()
    for t in range(steps):
        _, _, _, trunc, _ = kernel.step(actions[t % 8])
        if trunc.any():
            kernel.reset(idx=np.flatnonzero(trunc))
    return steps * num_envs / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "large"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--episodes", type=int, default=8, help="evaluation episodes per policy")
    parser.add_argument("--ppo-steps", type=int, default=20_000, help="central PPO env steps (x B instances)")
    parser.add_argument("--ppo-envs", type=int, default=8)
    parser.add_argument("--ma-steps", type=int, default=200_000, help="multi-agent PPO agent-steps")
    parser.add_argument("--ma-copies", type=int, default=2)
    parser.add_argument("--diffusion-steps", type=int, default=20_000, help="diffusion agent-steps")
    parser.add_argument("--agents", nargs="+", default=["ppo", "ppo_ma", "diffusion_ma"])
    parser.add_argument("--throughput-steps", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    rows = []
    for preset in args.presets:
        p = PRESETS[preset]
        policies = dict(BASELINES)
        if p.num_devices <= 4:
            policies.update(EXACT_BASELINES)
        for name, cls in policies.items():
            t0 = time.perf_counter()
            rows.append((preset, name, [evaluate(cls, preset, args.episodes)], time.perf_counter() - t0))
            print(f"  {preset} {name}: {rows[-1][2][0]['cost']:.2f} ({rows[-1][3]:.0f} s)", flush=True)
        trainers = {
            "ppo": lambda s: train_ppo_central(preset, s, args.ppo_steps, args.ppo_envs),
            "ppo_ma": lambda s: train_ppo_ma(preset, s, args.ma_steps, args.ma_copies),
            "diffusion_ma": lambda s: train_diffusion_ma(preset, s, args.diffusion_steps, args.ma_copies),
        }
        for agent in args.agents:
            results, t0 = [], time.perf_counter()
            for seed in args.seeds:
                results.append(evaluate(trainers[agent](seed), preset, args.episodes))
                print(f"  {preset} {agent} seed {seed}: {results[-1]['cost']:.2f}", flush=True)
            rows.append((preset, agent, results, time.perf_counter() - t0))

    print()
    print(f"TaskOffloading-v0, {args.episodes} evaluation episodes (seed {EVAL_SEED}); learned agents: "
          f"mean +- std over seeds {args.seeds}; ppo {args.ppo_steps} env steps (B={args.ppo_envs}), "
          f"ppo_ma {args.ma_steps} agent-steps, diffusion_ma {args.diffusion_steps} agent-steps")
    header = f"{'preset':8s} {'policy':18s} {'cost':>16s} {'drop rate':>9s} {'twin age s':>10s} " \
             f"{'latency s':>9s} {'energy J':>8s} {'vs greedy':>9s} {'time s':>7s}"
    print(header)
    print("-" * len(header))
    greedy = {r[0]: r[2][0]["cost"] for r in rows if r[1] == "greedy"}
    for preset, name, results, seconds in rows:
        cost = np.array([r["cost"] for r in results])
        mean = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
        spread = f"{cost.mean():8.2f} +- {cost.std():5.2f}" if len(results) > 1 else f"{cost.mean():8.2f}        "
        gain = (greedy[preset] - cost.mean()) / greedy[preset] if preset in greedy else float("nan")
        print(f"{preset:8s} {name:18s} {spread:>16s} {mean['drop_rate']:9.3f} {mean['twin_age_s']:10.3f} "
              f"{mean['latency_s']:9.3f} {mean['energy_j']:8.3f} {gain:+9.1%} {seconds:7.0f}")
    print()
    rate = kernel_throughput("large", 256, args.throughput_steps)
    print(f"kernel throughput, large preset (U=100, E=10), B=256: {rate:,.0f} instance-steps/s "
          f"({rate / 256:,.1f} batched steps/s), random actions, resets included")
    rate = kernel_throughput("medium", 256, args.throughput_steps)
    print(f"kernel throughput, medium preset (U=20, E=3), B=256: {rate:,.0f} instance-steps/s")


if __name__ == "__main__":
    main()
