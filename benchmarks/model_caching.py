"""Table II of seed 002 paper 2 on ``gentwin/ModelCaching-v0``: baselines and learned agents.

Prints every cost component of the system cost (switching, accuracy, edge
inference latency, edge offloading latency, cloud cost) and the edge-execution
ratio, per policy, as mean +- std over seeds, with the accuracy cost both as
Table II defines it (edge-executed requests only, its average per
edge-executed request) and as ours (every request, the cloud's zero-shot
answers included, per arrived request); then checks each of Table II's
comparative claims on the run.  Baselines are evaluated on
``--eval-episodes`` held-out episodes per seed (evaluation seed
``EVAL_SEED + 1000 * seed``); agents are trained once per seed on the batched
kernel and evaluated the same way.

``--json FILE`` keeps the run record; ``--report FILE --write-docs
docs/model_caching.md`` rewrites the generated block of the docs from a record
(nothing in that block is typed by hand).

Agents: ``ppo`` (MultiDiscrete), ``maskable_ppo`` (with the action mask),
``diffusion`` (the diffusion actor-critic on ``action_mode="box"``) and ``sac``
(same box mode) where installed.  DQN does not fit: the joint action has
``3 ** 22`` values.

    python benchmarks/model_caching.py --seeds 0 1 2 --timesteps 100000
    python benchmarks/model_caching.py --algos --json /tmp/mc.json   # baselines only
    python benchmarks/model_caching.py --report /tmp/mc.json --write-docs docs/model_caching.md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import docblock  # benchmarks/docblock.py (scripts run from benchmarks/)
from docblock import begin_marker

import numpy as np

import gentwin  # noqa: F401
from gentwin.baselines.model_caching import BASELINES
from gentwin.envs.core import make_sb3_vec_env
from gentwin.evaluation import EVAL_SEED, evaluate_policy

ENV_ID = "gentwin/ModelCaching-v0"
ROWS = [
    ("System cost", "system_cost"),
    ("Switching cost", "switching_cost"),
    ("Total accuracy cost (Table II: edge-executed)", "edge_accuracy_cost"),
    ("Average accuracy cost (Table II: per edge-executed request)", "average_accuracy_cost"),
    ("Accuracy cost, all requests (ours, in the system cost)", "accuracy_cost"),
    ("Accuracy cost per arrived request (ours)", "accuracy_cost_per_request"),
    ("Inference latency", "inference_latency"),
    ("Offloading latency", "offloading_latency"),
    ("Cloud cost", "cloud_cost"),
    ("Edge execution ratio", "edge_execution_ratio"),
    ("Loads", "loads"),
]
#: Table II of seed 002 paper 2 (sed -n 1796,1807p): policy -> metric -> value.
TABLE_II = {
    "random": {"system_cost": 25.67, "switching_cost": 18.72, "edge_accuracy_cost": 0.13,
               "average_accuracy_cost": 0.0151, "cloud_cost": 6.63, "edge_execution_ratio": 0.098},
    "cloud_only": {"system_cost": 7.29, "switching_cost": 0.0, "edge_accuracy_cost": 0.0,
                   "average_accuracy_cost": 0.0, "cloud_cost": 7.29, "edge_execution_ratio": 0.0},
    "fifo": {"system_cost": 27.51, "switching_cost": 23.28, "edge_accuracy_cost": 0.52,
             "average_accuracy_cost": 0.0085, "cloud_cost": 2.05, "edge_execution_ratio": 0.707},
    "lfu": {"system_cost": 5.93, "switching_cost": 0.37, "edge_accuracy_cost": 0.36,
            "average_accuracy_cost": 0.0083, "cloud_cost": 3.63, "edge_execution_ratio": 0.494},
    "lc": {"system_cost": 4.88, "switching_cost": 0.32, "edge_accuracy_cost": 0.44,
           "average_accuracy_cost": 0.0076, "cloud_cost": 2.52, "edge_execution_ratio": 0.650},
}
#: Table II's comparative claims: (description, metric, smaller policy, larger policy).
#: "a < b" on ``metric``; each is checked on the run's mean over seeds.
CLAIMS = [
    ("LC has a lower system cost than LFU", "system_cost", "lc", "lfu"),
    ("LFU has a lower system cost than cloud-only", "system_cost", "lfu", "cloud_only"),
    ("cloud-only has a lower system cost than random", "system_cost", "cloud_only", "random"),
    ("random has a lower system cost than FIFO (25.67 < 27.51)", "system_cost", "random", "fifo"),
    ("LC has a lower switching cost than LFU", "switching_cost", "lc", "lfu"),
    ("random has a lower switching cost than FIFO (18.72 < 23.28)", "switching_cost", "random", "fifo"),
    ("LC has a lower average accuracy cost than LFU (0.0076 < 0.0083, per edge-executed request)",
     "average_accuracy_cost", "lc", "lfu"),
    ("LFU has a lower average accuracy cost than FIFO", "average_accuracy_cost", "lfu", "fifo"),
    ("FIFO has a lower average accuracy cost than random", "average_accuracy_cost", "fifo", "random"),
    ("LFU has a lower total accuracy cost than LC (0.36 < 0.44)", "edge_accuracy_cost", "lfu", "lc"),
    ("FIFO has a lower cloud cost than LC", "cloud_cost", "fifo", "lc"),
    ("LC has a lower cloud cost than LFU", "cloud_cost", "lc", "lfu"),
    ("LFU executes fewer requests at the edge than LC (49.4% < 65.0%)", "edge_execution_ratio", "lfu", "lc"),
    ("LC executes fewer requests at the edge than FIFO (65.0% < 70.7%)", "edge_execution_ratio", "lc", "fifo"),
    ("random executes fewer requests at the edge than LFU (9.8% < 49.4%)", "edge_execution_ratio", "random", "lfu"),
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
    parser.add_argument("--json", default=None, help="write the run record here")
    parser.add_argument("--report", default=None, help="only print/write the report of this run record")
    parser.add_argument("--write-docs", default=None, help="rewrite the generated block of this Markdown file")
    args = parser.parse_args(argv)
    if args.report:
        text = report(json.loads(Path(args.report).read_text()))
        print(text)
        if args.write_docs:
            write_docs(Path(args.write_docs), text)
        return

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
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/model_caching.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
        "seeds": args.seeds, "eval_episodes": args.eval_episodes, "load": os.getloadavg(),
        "results": results, "wall_s": wall,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    text = report(record)
    print(text)
    if args.write_docs:
        write_docs(Path(args.write_docs), text)


def _mean(record, name, key):
    return float(np.mean([r[key] for r in record["results"][name]]))


def report(record: dict) -> str:
    """The Markdown block of the docs: the table, the paper's values and the claims check."""
    results = record["results"]
    names = list(results)
    lines = [f"Run {record['date']}: `{record['command']}` (load average "
             f"{', '.join(f'{x:.1f}' for x in record['load'])}).", "",
             f"Mean ± std over seeds {record['seeds']}, {record['eval_episodes']} held-out episodes per "
             f"seed (100 slots each; costs are per episode).", ""]
    lines.append("| | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for label, key in ROWS:
        cells = []
        for n in names:
            values = np.array([r[key] for r in results[n]])
            if key == "edge_execution_ratio":
                cells.append(f"{100 * values.mean():.1f}% ± {100 * values.std():.1f}")
            elif key in ("average_accuracy_cost", "accuracy_cost_per_request"):
                cells.append(f"{values.mean():.4f}")
            else:
                cells.append(f"{values.mean():.2f} ± {values.std():.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ranking = sorted(names, key=lambda n: _mean(record, n, "system_cost"))
    lines += ["", "Order by system cost: " + " < ".join(ranking) + ".", ""]
    lines += ["Table II (its units are not stated, so compare orderings, not values):", "",
              "| | " + " | ".join(TABLE_II) + " |", "|---|" + "---:|" * len(TABLE_II)]
    for label, key in ROWS:
        if key not in TABLE_II["lc"]:
            continue
        cells = [f"{100 * v[key]:.1f}%" if key == "edge_execution_ratio" else f"{v[key]:g}"
                 for v in TABLE_II.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Table II's comparisons, checked on this run (means over seeds):", "",
              "| Table II says | ours | holds here |", "|---|---|:---:|"]
    for text, key, low, high in CLAIMS:
        if low not in results or high not in results:
            continue
        a, b = _mean(record, low, key), _mean(record, high, key)
        fmt = (lambda x: f"{100 * x:.1f}%") if key == "edge_execution_ratio" else (lambda x: f"{x:.4g}")
        verdict = "yes" if a < b else ("**no** (equal)" if a == b else "**no**")
        lines.append(f"| {text} | {low} {fmt(a)} vs {high} {fmt(b)} | {verdict} |")
    for algo, seconds in record["wall_s"].items():
        lines.append(f"\n{algo}: {seconds:.0f} s wall for {len(record['seeds'])} seed(s)")
    return "\n".join(lines) + "\n"


BEGIN, END = begin_marker("model_caching.py"), docblock.END


def write_docs(path: Path, text: str) -> None:
    """Replace the generated block of ``path`` (between the markers) with ``text``."""
    docblock.write_block(path, text, BEGIN, END)


if __name__ == "__main__":
    main()
