"""How close do RL agents get to the exact optimal contract?  (ContractDesign-v0)

Seed 002 paper 1 section V-A (lines 563-630) reports utilities of 189.1
(diffusion, 10 denoising steps), 185.9 (SAC) and 184.3 (PPO) for one state,
without the optimum.  This benchmark trains SAC, TD3, PPO and the diffusion
actor-critic (10 denoising steps) for the same number of environment steps and
several seeds, and evaluates every agent and baseline on the same held-out
states (``gentwin.evaluation.EVAL_SEED``), reporting

* share of optimal: sum of rewards / sum of exact optimal utilities over the
  evaluation episodes (infeasible menus count with their penalised reward),
* violation rate: share of evaluation contracts that break IR or IC.

Run (the figures in docs/contract_design.md)::

    nice -n 10 python benchmarks/contract_design.py --timesteps 20000 --seeds 0 1 2

Timings depend on the machine; the table is the result, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gentwin.agents.registry import get_algorithm
from gentwin.baselines import get_baselines
from gentwin.envs import make_sb3_vec_env
from gentwin.evaluation import evaluate_policy

ENV_ID = "gentwin/ContractDesign-v0"


def make_agent(algo: str, venv, seed: int):
    """An agent with the settings used in the table (SB3 defaults unless noted)."""
    if algo == "diffusion":
        cls = get_algorithm("diffusion")
        # The contract paper's chain length (survey line 573: "diffusion step to 10").
        return cls("MlpPolicy", venv, denoising_steps=10, learning_starts=1000, seed=seed, device="cpu")
    cls = get_algorithm(algo)
    if algo in ("sac", "td3"):
        return cls("MlpPolicy", venv, learning_starts=1000, seed=seed, device="cpu")
    if algo == "ppo":
        # One-step episodes: short rollouts give more updates for the same steps.
        return cls("MlpPolicy", venv, n_steps=256, batch_size=256, seed=seed, device="cpu")
    raise ValueError(f"algo = {algo!r} is not benchmarked here")


def row(name: str, results: list[dict]) -> dict:
    share = np.array([r["share_of_optimal"] for r in results])
    viol = np.array([r["violation_rate"] for r in results])
    utility = np.array([r["return"] for r in results])
    train_s = np.array([r.get("train_s", 0.0) for r in results])
    return {
        "name": name,
        "runs": len(results),
        "share_mean": float(share.mean()),
        "share_std": float(share.std()),
        "violation_mean": float(viol.mean()),
        "return_mean": float(utility.mean()),
        "train_s": float(train_s.mean()),
    }


def evaluate(policy, n_episodes: int, env_kwargs: dict) -> dict:
    res = evaluate_policy(policy, ENV_ID, n_episodes=n_episodes, env_kwargs=env_kwargs)
    returns = res.metric("return")
    optimal = res.metric("optimal_utility")
    return {
        "share_of_optimal": float(returns.sum() / optimal.sum()),
        "violation_rate": float(res.mean("violation_rate")),
        "return": float(returns.mean()),
        "optimal": float(optimal.mean()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algos", nargs="+", default=["sac", "td3", "ppo", "diffusion"])
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=1000)
    parser.add_argument("--num-types", type=int, default=None, help="override K (default 5)")
    parser.add_argument("--json", type=str, default=None, help="also write the rows here")
    parser.add_argument("--merge", nargs="+", default=None,
                        help="print one table from the --json files of earlier runs (no training)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.merge:
        rows, seen = [], set()
        for path in args.merge:
            with open(path) as fh:
                for r in json.load(fh):
                    if r["name"] not in seen:
                        seen.add(r["name"])
                        rows.append(r)
        print_table(rows)
        return

    env_kwargs = {} if args.num_types is None else {"num_types": args.num_types}
    rows = []
    for name, cls in get_baselines(ENV_ID).items():
        policy = cls(make_sb3_vec_env(ENV_ID, num_envs=1, **env_kwargs))
        rows.append(row(name, [evaluate(policy, args.eval_episodes, env_kwargs)]))
        print(f"baseline {name}: {rows[-1]}", flush=True)
    optimal_mean = None
    for algo in args.algos:
        results = []
        for seed in args.seeds:
            venv = make_sb3_vec_env(ENV_ID, num_envs=args.n_envs, seed=seed, **env_kwargs)
            agent = make_agent(algo, venv, seed)
            start = time.perf_counter()
            agent.learn(total_timesteps=args.timesteps)
            train_s = time.perf_counter() - start
            result = evaluate(agent, args.eval_episodes, env_kwargs)
            result["train_s"] = train_s
            optimal_mean = result["optimal"]
            results.append(result)
            print(f"{algo} seed {seed}: {result}", flush=True)
        rows.append(row(algo, results))

    for r in rows:
        r.update(timesteps=args.timesteps, n_envs=args.n_envs, seeds=args.seeds, num_types=args.num_types or 5,
                 eval_episodes=args.eval_episodes, optimal_mean=optimal_mean)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


def print_table(rows: list[dict]) -> None:
    agents = [r for r in rows if r.get("timesteps") and r["train_s"] > 0]
    print()
    if agents:
        a = agents[0]
        print(f"ContractDesign-v0 (K={a['num_types']}), {a['timesteps']} environment steps per run, n_envs={a['n_envs']}, "
              f"{a['eval_episodes']} held-out evaluation states (EVAL_SEED)")
    print("| policy | runs (seeds) | share of optimal (mean ± std over seeds) | violation rate | mean reward | train s/run |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['runs']} | {100 * r['share_mean']:.1f}% ± {100 * r['share_std']:.1f} | "
              f"{100 * r['violation_mean']:.1f}% | {r['return_mean']:.1f} | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
