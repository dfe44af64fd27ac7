"""Total QoE of RL agents vs. the relaxation bound on HdtStreaming-v0 (seed 001, Fig. 4).

Seed 001 section IV-B (lines 167-178) trains a conditional diffusion actor-critic
(CODI) against SAC and PPO and plots the reward during training (Fig. 4 a) and
the total QoE against the number of users (Fig. 4 b), without an optimum.  This
benchmark trains the diffusion actor-critic in the CODI configuration (diffusion
actor with 10 denoising steps from a standard Gaussian, as in its ref. [14],
the AI-generated contract paper; double-Q critics), SAC, TD3 and PPO for the
same number of environment steps over several seeds and user counts (presets
``users5`` .. ``users40``), and evaluates them and the baselines on the same
held-out contexts (``gentwin.evaluation.EVAL_SEED``).  Reported per policy:

* share of bound: sum of rewards (total QoE minus penalties) over the
  evaluation contexts / sum of the continuous-relaxation optima (the upper
  bound of ``gentwin.baselines.hdt_streaming``);
* total QoE (unpenalised) per context and the share of infeasible allocations.

Reward curves (Fig. 4 a) go to TensorBoard under
``runs/HdtStreaming-v0/<algo>_users<U>_seed<S>_1`` (``rollout/ep_rew_mean``)::

    tensorboard --logdir runs/HdtStreaming-v0

Run (the figures in docs/hdt_streaming.md)::

    nice -n 10 python benchmarks/hdt_streaming.py --users 5 10 20 40 --seeds 0 1 2 --timesteps 20000

Timings depend on the machine; the table is the result, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gentwin.agents.registry import get_algorithm
from gentwin.baselines.hdt_streaming import BASELINES, relaxation_bound
from gentwin.envs import make_sb3_vec_env
from gentwin.envs.hdt_streaming import HdtStreamingKernel
from gentwin.evaluation import EVAL_SEED, evaluate_policy

ENV_ID = "gentwin/HdtStreaming-v0"
LOG_DIR = "runs/HdtStreaming-v0"


def make_agent(algo: str, venv, seed: int, tensorboard: bool):
    """An agent with the settings used in the table (SB3 defaults unless noted)."""
    log = LOG_DIR if tensorboard else None
    if algo == "diffusion":
        # CODI: conditional diffusion actor, 10 denoising steps (ref. [14] of seed 001,
        # the contract paper: "diffusion step to 10"), twin (double-Q) critics.
        return get_algorithm("diffusion")(
            "MlpPolicy", venv, denoising_steps=10, n_critics=2, learning_starts=1000, batch_size=256,
            seed=seed, device="cpu", tensorboard_log=log,
        )
    cls = get_algorithm(algo)
    if algo in ("sac", "td3"):
        return cls("MlpPolicy", venv, learning_starts=1000, seed=seed, device="cpu", tensorboard_log=log)
    if algo == "ppo":
        # One-step episodes: short rollouts give more updates for the same steps.
        return cls("MlpPolicy", venv, n_steps=256, batch_size=256, seed=seed, device="cpu",
                   tensorboard_log=log)
    raise ValueError(f"algo = {algo!r} is not benchmarked here")


def eval_bound(preset: str, n_episodes: int) -> np.ndarray:
    """Relaxation optimum of each held-out context (instance i seeded EVAL_SEED + i)."""
    kernel = HdtStreamingKernel(preset, num_envs=n_episodes)
    kernel.reset(seed=EVAL_SEED)
    return relaxation_bound(kernel)


def evaluate(policy, preset: str, n_episodes: int, bound: np.ndarray) -> dict:
    res = evaluate_policy(policy, ENV_ID, n_episodes=n_episodes, env_kwargs={"params": preset})
    returns = res.metric("return")
    return {
        "share_of_bound": float(returns.sum() / bound.sum()),
        "return": float(returns.mean()),
        "total_qoe": float(res.mean("total_qoe")),
        "violation_rate": float(res.mean("violation_rate")),
    }


def summarise(name: str, users: int, results: list[dict]) -> dict:
    share = np.array([r["share_of_bound"] for r in results])
    return {
        "policy": name,
        "users": users,
        "runs": len(results),
        "share_mean": float(share.mean()),
        "share_std": float(share.std()),
        "return_mean": float(np.mean([r["return"] for r in results])),
        "qoe_mean": float(np.mean([r["total_qoe"] for r in results])),
        "violation_mean": float(np.mean([r["violation_rate"] for r in results])),
        "train_s": float(np.mean([r.get("train_s", 0.0) for r in results])),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--timesteps", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algos", nargs="+", default=["diffusion", "sac", "td3", "ppo"])
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=200)
    parser.add_argument("--no-tensorboard", action="store_true")
    parser.add_argument("--json", type=str, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    rows = []
    for users in args.users:
        preset = f"users{users}"
        bound = eval_bound(preset, args.eval_episodes)
        rows.append({"policy": "relaxation bound", "users": users, "runs": 1, "share_mean": 1.0,
                     "share_std": 0.0, "return_mean": float(bound.mean()), "qoe_mean": float(bound.mean()),
                     "violation_mean": 0.0, "train_s": 0.0})
        print(f"U={users}: mean relaxation bound {bound.mean():.3f}", flush=True)
        for name, cls in BASELINES.items():
            policy = cls(make_sb3_vec_env(ENV_ID, num_envs=1, params=preset))
            rows.append(summarise(name, users, [evaluate(policy, preset, args.eval_episodes, bound)]))
            print(f"  baseline {name}: {rows[-1]}", flush=True)
        for algo in args.algos:
            results = []
            for seed in args.seeds:
                venv = make_sb3_vec_env(ENV_ID, num_envs=args.n_envs, seed=seed, params=preset)
                agent = make_agent(algo, venv, seed, not args.no_tensorboard)
                start = time.perf_counter()
                agent.learn(total_timesteps=args.timesteps, tb_log_name=f"{algo}_users{users}_seed{seed}")
                result = evaluate(agent, preset, args.eval_episodes, bound)
                result["train_s"] = time.perf_counter() - start
                results.append(result)
                print(f"  {algo} seed {seed}: {result}", flush=True)
            rows.append(summarise(algo, users, results))

    print()
    print(f"HdtStreaming-v0 (one-step), {args.timesteps} environment steps per run, n_envs={args.n_envs}, "
          f"seeds {args.seeds}, {args.eval_episodes} held-out contexts per user count")
    print("| users | policy | runs | share of bound (mean ± std over seeds) | reward | total QoE | "
          "infeasible | train s/run |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['users']} | {r['policy']} | {r['runs']} | {100 * r['share_mean']:.1f}% ± "
              f"{100 * r['share_std']:.1f} | {r['return_mean']:.2f} | {r['qoe_mean']:.2f} | "
              f"{100 * r['violation_mean']:.1f}% | {r['train_s']:.0f} |")
    # Fig. 4 b: reward (penalised total QoE) vs. number of users.
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    print()
    print("Reward (total QoE minus penalties) per context vs. number of users (Fig. 4 b):")
    print("| policy | " + " | ".join(f"U={u}" for u in args.users) + " |")
    print("|---|" + "---|" * len(args.users))
    for name in policies:
        cells = []
        for u in args.users:
            match = [r for r in rows if r["policy"] == name and r["users"] == u]
            cells.append(f"{match[0]['return_mean']:.2f}" if match else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
