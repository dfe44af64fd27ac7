"""Reference points of ModelCaching's ``action_mode="scores"`` on the learning runs' evaluation episodes.

Every caching baseline is a point of the scores space (the environment applies their
passive rule); this script prints their system cost on the held-out episodes that
``benchmarks/learning.py`` evaluates agents on (``EVAL_SEED``, ``--eval-episodes``),
next to two fixed score actions that no baseline takes -- Least Context that never
admits a GPT3-13B instance (their scores set to -1) and the constant action "vision and
multimodal models +1, LFMs -1" -- and the certified ``hindsight_lp`` bound, with each
one's share of the bound's saving over cloud-only.  The "LC without LFMs" point is the
measured reason the scores mode has an admission threshold (a positive score admits).

    python benchmarks/model_caching_learning.py --eval-episodes 32
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

ENV_ID = "gentwin/ModelCaching-v0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-episodes", type=int, default=32)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import gentwin  # noqa: F401
    from gentwin.baselines.model_caching import BASELINES, LeastContextPolicy
    from gentwin.envs import make_sb3_vec_env
    from gentwin.evaluation import EVAL_SEED, evaluate_bound, evaluate_policy

    kwargs = {"action_mode": "scores"}

    class LcWithoutLfm(LeastContextPolicy):
        """LC's scores, but no GPT3 instance is ever admitted (score -1)."""

        name = "lc_without_lfm"

        def act(self, obs):
            action = super().act(obs).reshape(self.kernel.cached.shape)
            action[..., self.kernel.icl] = -1.0
            return action.reshape(action.shape[0], -1)

    class NoLfmConstant(LeastContextPolicy):
        """The constant action: +1 for vision and multimodal models, -1 for LFMs."""

        name = "constant_no_lfm"

        def act(self, obs):
            k = self.kernel
            action = np.where(k.icl, -1.0, 1.0) * np.ones(k.cached.shape)
            return action.reshape(k.num_envs, -1).astype(np.float32)

    start = time.perf_counter()
    n = args.eval_episodes
    bound = evaluate_bound(ENV_ID, n_episodes=n, seed=EVAL_SEED, env_kwargs=kwargs)
    cost = {}
    for name, cls in {**BASELINES, "lc_without_lfm": LcWithoutLfm, "constant_no_lfm": NoLfmConstant}.items():
        venv = make_sb3_vec_env(ENV_ID, num_envs=n, **kwargs)
        result = evaluate_policy(cls(venv, seed=0), ENV_ID, n_episodes=n, seed=EVAL_SEED, venv=venv)
        cost[name] = -result.mean("return")
    cost["bound: hindsight_lp"] = -bound.mean()
    cloud, best = cost["cloud_only"], cost["bound: hindsight_lp"]
    print(f"{ENV_ID} action_mode=scores, {n} held-out episodes (seeds {EVAL_SEED}..{EVAL_SEED + n - 1})")
    print(f"{'policy':22s} {'system cost':>11s} {'share of bound saving':>22s}")
    for name, value in sorted(cost.items(), key=lambda kv: kv[1]):
        print(f"{name:22s} {value:11.3f} {(cloud - value) / (cloud - best):22.3f}")
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
