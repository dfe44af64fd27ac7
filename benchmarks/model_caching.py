"""Table II of seed 002 paper 2 on ``gentwin/ModelCaching-v0``: baselines and learned agents.

Prints every cost component of the system cost (switching, total and average
accuracy cost, edge inference latency, edge offloading latency, cloud cost) and
the edge-execution ratio, per policy, as mean +- std over seeds.  Baselines are
evaluated on ``--eval-episodes`` held-out episodes per seed (evaluation seed
``EVAL_SEED + 1000 * seed``); agents are trained once per seed on the batched
kernel and evaluated the same way.

Agents: ``ppo`` (MultiDiscrete), ``maskable_ppo`` (with the action mask),
``diffusion`` (the diffusion actor-critic on ``action_mode="box"``) and ``sac``
(same box mode) where installed.  DQN does not fit: the joint action has
``3 ** 22`` values.

    python benchmarks/model_caching.py --seeds 0 1 2 --timesteps 100000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gentwin  # noqa: F401
from gentwin.baselines.model_caching import BASELINES
from gentwin.envs.core import make_sb3_vec_env
from gentwin.evaluation import EVAL_SEED, evaluate_policy

ENV_ID = "gentwin/ModelCaching-v0"
ROWS = [
    ("System cost", "system_cost"),
    ("Switching cost", "switching_cost"),
    ("Total accuracy cost", "accuracy_cost"),
    ("Average accuracy cost", "average_accuracy_cost"),
    ("Inference latency", "inference_latency"),
    ("Offloading latency", "offloading_latency"),
    ("Cloud cost", "cloud_cost"),
    ("Edge execution ratio", "edge_execution_ratio"),
    ("Loads", "loads"),
]
BOX_AGENTS = {"diffusion", "sac"}


def train_agent(algo: str, seed: int, timesteps: int, n_envs: int, env_kwargs: dict):
    import torch

    from gentwin.agents.registry import get_algorithm

    torch.set_num_threads(1)
    cls = get_algorithm(algo)
    venv = make_sb3_vec_env(ENV_ID, num_envs=n_envs, seed=seed, **env_kwargs)
    if algo in ("ppo", "maskable_ppo"):
        model = cls("MlpPolicy", _normalized_rewards(venv), n_steps=128, batch_size=512, n_epochs=10, learning_rate=3e-4,
                    gamma=0.99, ent_coef=0.0, seed=seed, verbose=0)
    elif algo == "diffusion":
        model = cls("MlpPolicy", venv, learning_starts=1000, batch_size=256, gamma=0.99, seed=seed,
                    train_freq=1, gradient_steps=1, verbose=0)
    else:
        model = cls("MlpPolicy", venv, learning_starts=1000, batch_size=256, gamma=0.99, seed=seed,
                    verbose=0)
    model.learn(timesteps)
    return model


def _normalized_rewards(venv):
    """Reward scaling for the on-policy agents (returns are ~-90 per episode)."""
    from stable_baselines3.common.vec_env import VecNormalize

    return VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=0.99)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--algos", nargs="*", default=["ppo", "maskable_ppo", "diffusion"])
    parser.add_argument("--ppo-timesteps", type=int, default=None,
                        help="budget of plain ppo (default: --timesteps)")
    parser.add_argument("--diffusion-timesteps", type=int, default=None,
                        help="budget of the off-policy box agents (default: --timesteps)")
    args = parser.parse_args(argv)

    results: dict[str, list[dict[str, float]]] = {}
    for name, cls in BASELINES.items():
        for seed in args.seeds:
            venv = make_sb3_vec_env(ENV_ID, num_envs=args.eval_episodes)
            res = evaluate_policy(cls(venv, seed=seed), ENV_ID, n_episodes=args.eval_episodes,
                                  seed=EVAL_SEED + 1000 * seed)
            results.setdefault(name, []).append(res.summary())
    wall = {}
    for algo in args.algos:
        try:
            from gentwin.agents.registry import get_algorithm

            get_algorithm(algo)
        except ImportError as err:  # an optional agent that is not there
            print(f"skipping {algo}: {err}")
            continue
        env_kwargs = {"action_mode": "box"} if algo in BOX_AGENTS else {}
        steps = args.timesteps
        if algo in BOX_AGENTS and args.diffusion_timesteps:
            steps = args.diffusion_timesteps
        if algo == "ppo" and args.ppo_timesteps:
            steps = args.ppo_timesteps
        start = time.perf_counter()
        for seed in args.seeds:
            model = train_agent(algo, seed, steps, args.n_envs, env_kwargs)
            res = evaluate_policy(model, ENV_ID, n_episodes=args.eval_episodes,
                                  seed=EVAL_SEED + 1000 * seed, env_kwargs=env_kwargs)
            results.setdefault(f"{algo}@{steps // 1000}k", []).append(res.summary())
        wall[algo] = time.perf_counter() - start
    names = list(results)
    width = max(13, max(len(n) for n in names) + 1)
    print(f"Table II on {ENV_ID} (paper preset), mean +- std over seeds {args.seeds}, "
          f"{args.eval_episodes} evaluation episodes per seed")
    print(f"{'':<23}" + "".join(f"{n:>{width}}" for n in names))
    for label, key in ROWS:
        cells = []
        for n in names:
            values = np.array([r[key] for r in results[n]])
            if key == "edge_execution_ratio":
                cells.append(f"{100 * values.mean():.1f}%+-{100 * values.std():.1f}")
            elif key == "average_accuracy_cost":
                cells.append(f"{values.mean():.4f}")
            else:
                cells.append(f"{values.mean():.2f}+-{values.std():.2f}")
        print(f"{label:<23}" + "".join(f"{c:>{width}}" for c in cells))
    ranking = sorted(names, key=lambda n: np.mean([r["system_cost"] for r in results[n]]))
    print("order by system cost: " + " < ".join(ranking))
    for algo, seconds in wall.items():
        print(f"{algo}: {seconds:.0f} s wall for {len(args.seeds)} seed(s)")


if __name__ == "__main__":
    main()
