"""How much room the hindsight references leave above the heuristics (issue 15).

ModelCaching-v0: system cost of cloud-only, LFU, LC and the Belady-style ``hindsight``
heuristic against the certified hindsight LP bound (``BOUND``), and each policy's share of
the bound's saving over cloud-only (printed).  TaskOffloading-v0: returns of greedy, of
``greedy_priced`` (greedy's list schedule with constant prices tuned on other episodes), of
the one-slot optimum (``small``) and of the two reference policies that know the episode
(``hindsight_rollout``: rollouts of greedy; ``hindsight_rollout_priced``: rollouts of
``greedy_priced``; ``U <= 20``) against the certified multi-slot bounds (``fluid_lp`` =
``BOUND``, and the looser contention-free one), recorded per preset in
``benchmarks/records/headroom_task_offloading.json``; ``--write-docs`` writes the table of
docs/task_offloading.md from that record.  Held-out evaluation seeds ``1_000_000 + i``;
mean and 95 % t-interval over episodes.

    python benchmarks/headroom_references.py --families model_caching --episodes 16
    python benchmarks/headroom_references.py --families task_offloading --presets small medium --episodes 8 \
        --write-docs docs/task_offloading.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

import gentwin  # noqa: F401
from gentwin.baselines import model_caching as mc
from gentwin.baselines import task_offloading as to
from gentwin.baselines.base import kernel_of
from gentwin.envs import make_sb3_vec_env
from gentwin.evaluation import EVAL_SEED, evaluate_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docblock  # noqa: E402
from learning import _git_commit  # noqa: E402  (one way to name the commit in records)


def interval(x: np.ndarray) -> str:
    x = np.asarray(x, dtype=float)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return f"{x.mean():9.3f} +- {half:6.3f}"


def reset_kernel(env_id: str, n: int, kwargs: dict):
    venv = make_sb3_vec_env(env_id, num_envs=n, **kwargs)
    venv.seed(EVAL_SEED)
    venv.reset()
    return kernel_of(venv)


def returns(env_id: str, cls, n: int, kwargs: dict) -> np.ndarray:
    venv = make_sb3_vec_env(env_id, num_envs=n, **kwargs)
    return evaluate_policy(cls(venv, seed=0), env_id, n_episodes=n, env_kwargs=kwargs).metric("return")


def model_caching(n: int) -> None:
    env_id = "gentwin/ModelCaching-v0"
    t = time.perf_counter()
    bound = -mc.BOUND.value(reset_kernel(env_id, n, {}))  # a cost: minus the return bound
    print(f"\n{env_id} (paper preset), {n} held-out episodes; bound computed in {time.perf_counter() - t:.1f} s")
    cost = {name: -returns(env_id, mc.BASELINES[name], n, {}) for name in ("cloud_only", "lfu", "lc", "hindsight")}
    print(f"{'policy':30s} {'system cost':>20s} {'share of the bound saving over cloud-only':>45s}")
    room = cost["cloud_only"] - bound
    for name, c in [*cost.items(), ("hindsight_lp (certified bound)", bound)]:
        share = (cost["cloud_only"] - c) / room
        print(f"{name:30s} {interval(c):>20s} {interval(share):>45s}")
    print(f"(share per episode; ratio of means: LC {((cost['cloud_only'] - cost['lc']).mean() / room.mean()):.3f})")


TO_RECORD = Path(__file__).resolve().parent / "records" / "headroom_task_offloading.json"
TO_BEGIN = docblock.begin_marker("headroom_references.py --families task_offloading")
#: Rows of the TaskOffloading record: the policies (and bounds) in report order.
TO_POLICIES = ("greedy", "greedy_priced", "one_slot_optimum", "hindsight_rollout", "hindsight_rollout_priced",
               "all_cloud")


def task_offloading(n: int, presets: list[str], record: Path) -> None:
    """Evaluate the TaskOffloading references on ``n`` held-out episodes per preset; print and record them."""
    env_id = "gentwin/TaskOffloading-v0"
    data = json.loads(record.read_text()) if record.exists() else {}
    for preset in presets:
        kwargs = {"params": preset}
        t = time.perf_counter()
        kernel = reset_kernel(env_id, n, kwargs)
        fluid = to.BOUND.value(kernel)
        free = np.array([to.contention_free_bound(kernel, i) for i in range(n)])
        print(f"\n{env_id} `{preset}`, {n} held-out episodes; bounds computed in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        prices, tuned = to.tune_prices(preset)
        print(f"greedy_priced prices (s, local / edges / cloud) {np.round(prices, 4).tolist()}, "
              f"tuned in {time.perf_counter() - t:.0f} s (return {tuned:.3f} on the tuning episodes)")
        classes = {"greedy": to.GreedyLatencyPolicy, "greedy_priced": to.PricedGreedyPolicy,
                   "all_cloud": to.AllCloudPolicy}
        if kernel.params.num_devices <= to.MAX_ENUMERATION_DEVICES:
            classes["one_slot_optimum"] = to.OneSlotOptimumPolicy
        if kernel.params.num_devices <= to.HindsightRolloutPolicy.max_devices:
            classes["hindsight_rollout"] = to.HindsightRolloutPolicy
            classes["hindsight_rollout_priced"] = to.PricedHindsightRolloutPolicy
        rows, seconds = {}, {}
        for name in TO_POLICIES:
            if name in classes:
                t = time.perf_counter()
                rows[name] = returns(env_id, classes[name], n, kwargs)
                seconds[name] = time.perf_counter() - t
        rows["fluid_lp (certified bound)"] = fluid
        rows["contention_free (certified)"] = free
        print(f"{'policy':30s} {'return':>20s} {'gap to fluid_lp':>20s} {'time s':>8s}")
        for name, r in rows.items():
            print(f"{name:30s} {interval(r):>20s} {interval(fluid - r):>20s} {seconds.get(name, 0.0):8.0f}")
        data[preset] = {
            "episodes": n, "eval_seed": EVAL_SEED, "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "git_commit": _git_commit(), "greedy_priced_prices_s": prices.tolist(),
            "returns": {name: np.asarray(r, dtype=float).tolist() for name, r in rows.items()},
            "seconds": seconds,
        }
        record.write_text(json.dumps(data, indent=1) + "\n")


def task_offloading_report(record: Path) -> str:
    """The docs block: every reference per preset, as returns and as cost reduction over greedy."""
    data = json.loads(record.read_text())
    names = [*TO_POLICIES, "fluid_lp (certified bound)", "contention_free (certified)"]
    lines = [
        "Generated from `benchmarks/records/headroom_task_offloading.json` by",
        "`python benchmarks/headroom_references.py --families task_offloading --report-only --write-docs "
        "docs/task_offloading.md`; measured with",
        f"`python benchmarks/headroom_references.py --families task_offloading --presets "
        f"{' '.join(data)} --episodes {next(iter(data.values()))['episodes']}`.",
        "Returns (= -cost) on the held-out episodes (`EVAL_SEED` onwards), mean ± 95 % t-interval over "
        "episodes; in brackets the cost reduction over greedy.",
        "",
        "| policy | kind | " + " | ".join(f"`{p}`" for p in data) + " |",
        "|---|---|" + "---:|" * len(data),
    ]
    kinds = {"greedy": "heuristic", "greedy_priced": "heuristic (prices tuned on other episodes)",
             "one_slot_optimum": "exact per slot, U <= 4", "hindsight_rollout": "oracle policy (knows the future)",
             "hindsight_rollout_priced": "oracle policy (knows the future)", "all_cloud": "heuristic",
             "fluid_lp (certified bound)": "certified upper bound", "contention_free (certified)": "certified upper bound"}
    for name in names:
        cells = []
        for entry in data.values():
            r = entry["returns"].get(name)
            if r is None:
                cells.append("—")
                continue
            greedy = np.mean(entry["returns"]["greedy"])
            reduction = (np.mean(r) - greedy) / -greedy
            x = np.array(r)
            half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
            cells.append(f"{x.mean():.3f} ± {half:.3f} ({reduction:+.1%})")
        label = name.split(" (")[0]
        lines.append(f"| `{label}` | {kinds[name]} | " + " | ".join(cells) + " |")
    lines.append("")
    times = ", ".join(f"`{p}` {e['seconds'].get('hindsight_rollout_priced', float('nan')):.0f} s"
                      for p, e in data.items() if "hindsight_rollout_priced" in e["seconds"])
    prices = "; ".join(f"`{p}` {np.round(e['greedy_priced_prices_s'], 4).tolist()}" for p, e in data.items())
    lines.append(f"`greedy_priced`'s tuned prices (seconds: local, edges, cloud): {prices}. "
                 f"Time of `hindsight_rollout_priced` for all episodes: {times}.")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--presets", nargs="+", default=["small", "medium"])
    parser.add_argument("--families", nargs="+", default=["model_caching", "task_offloading"],
                        choices=["model_caching", "task_offloading"])
    parser.add_argument("--record", type=Path, default=TO_RECORD, help="TaskOffloading record (JSON, per preset)")
    parser.add_argument("--report-only", action="store_true", help="TaskOffloading: only write the report")
    parser.add_argument("--write-docs", type=Path, help="TaskOffloading: rewrite the generated block of this page")
    args = parser.parse_args()
    if "model_caching" in args.families:
        model_caching(args.episodes)
    if "task_offloading" in args.families:
        if not args.report_only:
            task_offloading(args.episodes, args.presets, args.record)
        if args.write_docs:
            docblock.write_block(args.write_docs, task_offloading_report(args.record), TO_BEGIN)
            print(f"wrote the generated block of {args.write_docs}")


if __name__ == "__main__":
    main()
