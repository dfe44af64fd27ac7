"""Learning quality of the diffusion actor-critic at equal environment steps, several seeds.

Part ``power`` -- PowerAllocation-v0 (``tutorial`` preset, M = 10): the diffusion agent
without and with the expert (``bc_coef``, the tutorial's "expert database" mode) and
the MLP-actor ablation, as a share of the water-filling (optimal) sum rate, next to
the baselines.  Goal: diffusion >= 99 % of water-filling.

Part ``asp`` -- AspSelection-v0 (``reference`` preset): diffusion (D2SAC), the
MLP-actor ablation (discrete SAC), PPO, DQN and MaskablePPO, as a share of the
family's bound (``BOUND``, evaluated on the same held-out episodes), next to the baselines.

Every agent gets the same number of environment steps per seed and is evaluated
deterministically on held-out seeds (``gentwin.evaluation``).  Results are printed
as mean +- standard deviation over seeds, and each run is appended to
``--out`` (JSON lines) as soon as it finishes.

    python benchmarks/diffusion_learning.py --part power asp --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch as th

import gentwin  # noqa: F401
from gentwin.agents import get_algorithm
from gentwin.baselines.base import get_baselines
from gentwin.envs import make_sb3_vec_env
from gentwin.evaluation import evaluate_bound, evaluate_policy

POWER = "gentwin/PowerAllocation-v0"
ASP = "gentwin/AspSelection-v0"

# Small networks and batches keep the budget affordable on 2 shared cores; the agent's
# defaults (hidden 256, batch 512) are what benchmarks/diffusion_speed.py times.
DIFFUSION_POWER = dict(hidden_dim=64, batch_size=128, learning_rate=1e-3, learning_starts=256,
                       squash_penalty=1e-3)
DIFFUSION_ASP = dict(hidden_dim=64, batch_size=128, learning_rate=1e-3, learning_starts=2000, gamma=0.95)

AGENTS = {
    POWER: {
        "diffusion": ("diffusion", DIFFUSION_POWER),
        "diffusion+expert": ("diffusion", {**DIFFUSION_POWER, "bc_coef": 1.0}),
        "diffusion+expert bc_coef=10": ("diffusion", {**DIFFUSION_POWER, "bc_coef": 10.0}),
        "mlp (ablation)": ("diffusion", {**DIFFUSION_POWER, "actor": "mlp"}),
    },
    ASP: {
        "diffusion": ("diffusion", DIFFUSION_ASP),
        "mlp (ablation)": ("diffusion", {**DIFFUSION_ASP, "actor": "mlp"}),
        "ppo": ("ppo", {"n_steps": 256, "batch_size": 256}),
        "maskable_ppo": ("maskable_ppo", {"n_steps": 256, "batch_size": 256}),
        "dqn": ("dqn", {"learning_starts": 2000, "train_freq": 1, "gradient_steps": 1, "batch_size": 128,
                        "exploration_fraction": 0.3, "target_update_interval": 500, "gamma": 0.95}),
    },
}
ENV_KWARGS = {POWER: {"params": "tutorial"}, ASP: {"params": "reference"}}
METRIC = {POWER: "rate_ratio", ASP: "return"}


def run_agent(env_id, label, algo, kwargs, seed, timesteps, n_envs, eval_episodes):
    env_kwargs = ENV_KWARGS[env_id]
    venv = make_sb3_vec_env(env_id, num_envs=n_envs, seed=seed, **env_kwargs)
    cls = get_algorithm(algo)
    model = cls("MlpPolicy", venv, seed=seed, verbose=0, **kwargs)
    start = time.perf_counter()
    model.learn(timesteps)
    wall = time.perf_counter() - start
    result = evaluate_policy(model, env_id, n_episodes=eval_episodes, env_kwargs=env_kwargs)
    return {"env": env_id, "agent": label, "seed": seed, "timesteps": timesteps, "train_s": round(wall, 1),
            **{k: float(v) for k, v in result.summary().items()}}


def baseline_rows(env_id, eval_episodes):
    env_kwargs = ENV_KWARGS[env_id]
    venv = make_sb3_vec_env(env_id, num_envs=eval_episodes, **env_kwargs)
    rows = []
    for name, cls in get_baselines(env_id).items():
        result = evaluate_policy(cls(venv, seed=0), env_id, n_episodes=eval_episodes, env_kwargs=env_kwargs)
        rows.append({"env": env_id, "agent": f"baseline:{name}", "seed": None,
                     **{k: float(v) for k, v in result.summary().items()}})
    bound = evaluate_bound(env_id, eval_episodes, env_kwargs=env_kwargs)
    if bound is not None:
        rows.append({"env": env_id, "agent": f"bound:{bound.name}", "seed": None, "return": bound.mean(),
                     "kind": bound.kind})
    return rows


def report(rows, env_id):
    metric = METRIC[env_id]
    bounds = [r for r in rows if r["env"] == env_id and r["agent"].startswith("bound:")]
    ub = bounds[0]["return"] if bounds else float("nan")
    agents = []
    for r in rows:
        if r["env"] == env_id and r["agent"] not in agents and metric in r:
            agents.append(r["agent"])
    share = ("share of water-filling sum rate" if env_id == POWER else
             f"share of {bounds[0]['agent'][6:]} ({bounds[0]['kind']})" if bounds else "no bound: share n/a")
    print(f"\n{env_id} ({ENV_KWARGS[env_id]['params']}): {share}, mean +- std over seeds")
    extra = "crash_rate" if env_id == ASP else "sum_rate"
    print(f"{'agent':28s} {'seeds':>5s} {'steps':>7s} {metric:>10s} {'share':>16s} {extra:>12s}")
    for agent in agents:
        sel = [r for r in rows if r["env"] == env_id and r["agent"] == agent]
        values = np.array([r[metric] for r in sel])
        shares = values / ub if env_id == ASP else values
        steps = sel[0].get("timesteps", "-")
        spread = f"{shares.mean():.4f} +- {shares.std(ddof=1) if len(sel) > 1 else 0.0:.4f}"
        print(f"{agent:28s} {len(sel):5d} {steps!s:>7s} {values.mean():10.3f} {spread:>16s} "
              f"{np.mean([r[extra] for r in sel]):12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", nargs="+", choices=["power", "asp"], default=["power", "asp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--power-steps", type=int, default=4000)
    parser.add_argument("--asp-steps", type=int, default=20000)
    parser.add_argument("--agents", nargs="+", default=None, help="subset of agent labels")
    parser.add_argument("--out", default="diffusion_learning.jsonl")
    parser.add_argument("--report-only", action="store_true", help="print the table of --out")
    args = parser.parse_args()
    th.set_num_threads(1)

    rows = []
    if os.path.exists(args.out):
        with open(args.out) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    parts = {"power": (POWER, args.power_steps, 8, 256), "asp": (ASP, args.asp_steps, 16, 4)}
    if not args.report_only:
        print(f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
        for part in args.part:
            env_id, steps, n_envs, eval_episodes = parts[part]
            if not any(r["env"] == env_id and r["agent"].startswith("baseline:") for r in rows):
                new = baseline_rows(env_id, eval_episodes)
                rows += new
                with open(args.out, "a") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in new)
            for label, (algo, kwargs) in AGENTS[env_id].items():
                if args.agents and label not in args.agents:
                    continue
                for seed in args.seeds:
                    if any(r["env"] == env_id and r["agent"] == label and r["seed"] == seed
                           and r["timesteps"] == steps for r in rows):
                        continue
                    row = run_agent(env_id, label, algo, kwargs, seed, steps, n_envs, eval_episodes)
                    rows.append(row)
                    with open(args.out, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(f"{label} seed {seed}: {METRIC[env_id]} {row[METRIC[env_id]]:.4f} "
                          f"({row['train_s']} s)", flush=True)
        print(f"load average at end {os.getloadavg()[0]:.1f}")
    for part in args.part:
        env_id = parts[part][0]
        if any(r["env"] == env_id for r in rows):
            report([r for r in rows if r["env"] != env_id or r.get("timesteps") in (None, parts[part][1])], env_id)


if __name__ == "__main__":
    main()
