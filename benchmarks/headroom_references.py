"""How much room the hindsight references leave above the heuristics (issue 15).

ModelCaching-v0: system cost of cloud-only, LFU, LC and the Belady-style ``hindsight``
heuristic against the certified hindsight LP bound (``BOUND``), and each policy's share of
the bound's saving over cloud-only.  TaskOffloading-v0: return of greedy (and the one-slot
optimum on ``small``) and of the ``hindsight_rollout`` reference policy (greedy improved by
rollouts over the known episode; ``small`` and ``medium``) against the certified multi-slot
bounds (``fluid_lp`` = ``BOUND``, and the looser contention-free one).  Held-out evaluation seeds ``1_000_000 + i``; mean and
95 % t-interval over episodes.

    python benchmarks/headroom_references.py --episodes 16
    python benchmarks/headroom_references.py --families task_offloading --presets small medium --episodes 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

import gentwin  # noqa: F401
from gentwin.baselines import model_caching as mc
from gentwin.baselines import task_offloading as to
from gentwin.baselines.base import kernel_of
from gentwin.envs import make_sb3_vec_env
from gentwin.evaluation import EVAL_SEED, evaluate_policy


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


def task_offloading(n: int, presets: list[str]) -> None:
    env_id = "gentwin/TaskOffloading-v0"
    for preset in presets:
        kwargs = {"params": preset}
        t = time.perf_counter()
        kernel = reset_kernel(env_id, n, kwargs)
        fluid = to.BOUND.value(kernel)
        free = np.array([to.contention_free_bound(kernel, i) for i in range(n)])
        print(f"\n{env_id} `{preset}`, {n} held-out episodes; bounds computed in {time.perf_counter() - t:.1f} s")
        rows = {"greedy": returns(env_id, to.BASELINES["greedy"], n, kwargs)}
        if preset == "small":
            rows["one_slot_optimum"] = returns(env_id, to.OneSlotOptimumPolicy, n, kwargs)
        if kernel.params.num_devices <= to.HindsightRolloutPolicy.max_devices:
            t = time.perf_counter()
            rows["hindsight_rollout (reference)"] = returns(env_id, to.HindsightRolloutPolicy, n, kwargs)
            print(f"hindsight_rollout: {time.perf_counter() - t:.0f} s for {n} episodes")
        rows["all_cloud"] = returns(env_id, to.BASELINES["all_cloud"], n, kwargs)
        rows["fluid_lp (certified bound)"] = fluid
        rows["contention_free (certified)"] = free
        print(f"{'policy':30s} {'return':>20s} {'gap to fluid_lp':>20s}")
        for name, r in rows.items():
            print(f"{name:30s} {interval(r):>20s} {interval(fluid - r):>20s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "large"])
    parser.add_argument("--families", nargs="+", default=["model_caching", "task_offloading"],
                        choices=["model_caching", "task_offloading"])
    args = parser.parse_args()
    if "model_caching" in args.families:
        model_caching(args.episodes)
    if "task_offloading" in args.families:
        task_offloading(args.episodes, args.presets)


if __name__ == "__main__":
    main()
