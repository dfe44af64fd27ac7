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
  evaluation contexts / sum of the family's certified bound on them (``BOUND``
  of ``gentwin.baselines.hdt_streaming``: the LP relaxation of the penalised
  reward, evaluated by ``gentwin.evaluation.evaluate_bound`` on the same
  contexts).  ``rounded_relaxation`` is a heuristic policy, not the bound;
* total QoE (unpenalised) per context and the share of infeasible allocations.

Reward curves (Fig. 4 a) go to TensorBoard under
``runs/HdtStreaming-v0/<algo>_users<U>_seed<S>_1`` (``rollout/ep_rew_mean``)::

    tensorboard --logdir runs/HdtStreaming-v0

``--dynamic-episodes N`` adds the baselines and the bound on N episodes of the
multi-step preset ``dynamic``.  ``--write-docs FILE`` writes the printed tables
into the generated block of ``FILE``.  Run (the figures in docs/hdt_streaming.md)::

    nice -n 10 python benchmarks/hdt_streaming.py --users 5 10 20 40 --seeds 0 1 2 --timesteps 20000
    python benchmarks/hdt_streaming.py --users 5 10 20 40 --algos --dynamic-episodes 8 \
        --write-docs docs/hdt_streaming.md          # baselines and bound only

Timings depend on the machine; the table is the result, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import docblock  # benchmarks/docblock.py (scripts run from benchmarks/)
from docblock import begin_marker

import numpy as np
import torch

from gentwin.agents.registry import get_algorithm
from gentwin.baselines.hdt_streaming import BASELINES
from gentwin.envs import make_sb3_vec_env
from gentwin.evaluation import evaluate_bound, evaluate_policy

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
    """The certified bound of each held-out episode (episode i seeded EVAL_SEED + i)."""
    return np.asarray(evaluate_bound(ENV_ID, n_episodes=n_episodes, env_kwargs={"params": preset}).values)


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
    parser.add_argument("--algos", nargs="*", default=["diffusion", "sac", "td3", "ppo"])
    parser.add_argument("--dynamic-episodes", type=int, default=0,
                        help="also evaluate the baselines and the bound on this many 'dynamic' episodes")
    parser.add_argument("--write-docs", type=Path, default=None,
                        help="write the tables into the generated block of this Markdown file")
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
        rows.append({"policy": "bound (lp_relaxation, certified)", "users": users, "runs": 1, "share_mean": 1.0,
                     "share_std": 0.0, "return_mean": float(bound.mean()), "qoe_mean": float(bound.mean()),
                     "violation_mean": 0.0, "train_s": 0.0})
        print(f"U={users}: mean certified bound {bound.mean():.3f}", flush=True)
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

    dynamic = []
    if args.dynamic_episodes:
        n = args.dynamic_episodes
        bound = eval_bound("dynamic", n)
        dynamic.append(("bound (lp_relaxation, certified)", float(bound.mean()), 1.0, 0.0))
        for name, cls in BASELINES.items():
            res = evaluate_policy(cls(make_sb3_vec_env(ENV_ID, num_envs=1, params="dynamic")), ENV_ID,
                                  n_episodes=n, env_kwargs={"params": "dynamic"})
            ret = res.metric("return")
            dynamic.append((name, float(ret.mean()), float(ret.sum() / bound.sum()),
                            float(res.mean("violation_rate"))))

    lines = []
    out = lines.append
    out(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `python benchmarks/hdt_streaming.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}` (load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}).")
    out("")
    out(f"HdtStreaming-v0 (one-step), {args.timesteps if args.algos else 0} environment steps per run, "
        f"n_envs={args.n_envs}, seeds {args.seeds if args.algos else '-'}, {args.eval_episodes} held-out "
        f"contexts per user count; share = sum of rewards / sum of the certified bound")
    out("")
    out("| users | policy | runs | share of bound (mean ± std over seeds) | reward | total QoE | "
          "infeasible | train s/run |")
    out("|---|---|---|---|---|---|---|---|")
    for r in rows:
        out(f"| {r['users']} | {r['policy']} | {r['runs']} | {100 * r['share_mean']:.1f}% ± "
              f"{100 * r['share_std']:.1f} | {r['return_mean']:.2f} | {r['qoe_mean']:.2f} | "
              f"{100 * r['violation_mean']:.1f}% | {r['train_s']:.0f} |")
    # Fig. 4 b: reward (penalised total QoE) vs. number of users.
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for title, cell in (
        ("Reward (total QoE minus penalties) per context vs. number of users (Fig. 4 b):",
         lambda r: f"{r['return_mean']:.2f}"),
        ("Share of the certified bound vs. number of users:", lambda r: f"{100 * r['share_mean']:.2f}%"),
    ):
        out("")
        out(title)
        out("")
        out("| policy | " + " | ".join(f"U={u}" for u in args.users) + " |")
        out("|---|" + "---|" * len(args.users))
        for name in policies:
            cells = []
            for u in args.users:
                match = [r for r in rows if r["policy"] == name and r["users"] == u]
                cells.append(cell(match[0]) if match else "-")
            out(f"| {name} | " + " | ".join(cells) + " |")
    if dynamic:
        out("")
        out(f"Multi-step preset `dynamic`, {args.dynamic_episodes} held-out episodes of 50 steps (return = "
            f"total reward per episode):")
        out("")
        out("| policy | return | share of bound | infeasible steps |")
        out("|---|---|---|---|")
        for name, ret, share, viol in dynamic:
            out(f"| {name} | {ret:.1f} | {100 * share:.2f}% | {100 * viol:.1f}% |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.write_docs:
        write_docs(args.write_docs, text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


BEGIN, END = begin_marker("hdt_streaming.py"), docblock.END


def write_docs(path: Path, text: str) -> None:
    """Replace the generated block of ``path`` (between the markers) with ``text``."""
    docblock.write_block(path, text, BEGIN, END)


if __name__ == "__main__":
    main()
