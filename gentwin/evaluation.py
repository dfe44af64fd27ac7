"""One evaluation harness for trained agents and baselines alike.

``evaluate_policy`` runs ``n_episodes`` episodes, one per instance of a batched
kernel, on held-out seeds, and returns per-episode summaries (return plus the
family's domain metrics).  Agents (SB3 models) and baselines (``predict``) go
through the same code, so their numbers are directly comparable.

Seeds: instance ``i`` is seeded ``seed + i``.  Training uses small seeds
(``--seed S`` -> instances ``S .. S+B-1``); evaluation defaults to
``EVAL_SEED = 1_000_000`` so evaluation episodes are never training episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gentwin.envs.core import make_sb3_vec_env

EVAL_SEED = 1_000_000


@dataclass
class EvalResult:
    """Per-episode summaries of one policy on one environment."""

    episodes: list[dict[str, float]] = field(default_factory=list)

    def metric(self, key: str) -> np.ndarray:
        return np.asarray([float(ep[key]) for ep in self.episodes])

    @property
    def metrics(self) -> list[str]:
        keys = []
        for ep in self.episodes:
            for k, v in ep.items():
                if k not in keys and k not in ("r", "l", "t") and np.ndim(v) == 0:
                    keys.append(k)
        return keys

    def mean(self, key: str = "return") -> float:
        return float(self.metric(key).mean())

    def summary(self) -> dict[str, float]:
        return {k: self.mean(k) for k in self.metrics}


def _uses_action_masks(policy: Any) -> bool:
    try:
        from sb3_contrib import MaskablePPO
    except ImportError:  # pragma: no cover
        return False
    return isinstance(policy, MaskablePPO)


def evaluate_policy(
    policy: Any,
    env_id: str,
    n_episodes: int = 8,
    seed: int = EVAL_SEED,
    deterministic: bool = True,
    env_kwargs: dict | None = None,
    venv: Any = None,
) -> EvalResult:
    """Run ``n_episodes`` episodes of ``policy`` (anything with SB3's ``predict``).

    Baselines are attached to the evaluation environment first, so oracles read
    the true state of the very instances they act on.  ``venv`` may pass a
    ready SB3 VecEnv (e.g. a SuperSuit one for multi-agent ids); otherwise one
    batched kernel with ``n_episodes`` instances is built.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes = {n_episodes!r} is invalid: must be >= 1")
    if venv is None:
        venv = make_sb3_vec_env(env_id, num_envs=n_episodes, **(env_kwargs or {}))
    venv.seed(seed)
    obs = venv.reset()
    if hasattr(policy, "attach"):
        policy.attach(venv)
    if hasattr(policy, "reset"):
        policy.reset()
    masks = _uses_action_masks(policy)
    n = venv.num_envs
    summaries: list[dict | None] = [None] * n
    state = None
    episode_start = np.ones(n, dtype=bool)
    while any(s is None for s in summaries):
        kwargs = {"action_masks": np.stack(venv.env_method("action_masks"))} if masks else {}
        actions, state = policy.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic, **kwargs
        )
        obs, _, dones, infos = venv.step(actions)
        episode_start = dones
        for i in np.flatnonzero(dones):
            if summaries[i] is None and "episode" in infos[i]:
                ep = dict(infos[i]["episode"])
                ep.setdefault("return", float(ep["r"]))
                ep.setdefault("length", int(ep["l"]))
                summaries[i] = {k: v for k, v in ep.items() if np.ndim(v) == 0}
    return EvalResult(episodes=[s for s in summaries if s is not None][:n_episodes])
