"""One evaluation harness for trained agents and baselines alike.

``evaluate_policy`` runs ``n_episodes`` episodes, one per instance of a batched
kernel, on held-out seeds, and returns per-episode summaries (return plus the
family's domain metrics).  Agents (SB3 models) and baselines (``predict``) go
through the same code, so their numbers are directly comparable.

``evaluate_bound`` evaluates a family's yardstick (its ``BOUND``: an exact
optimum or a certified upper bound per episode, see
:mod:`gentwin.baselines.base`) on exactly the same held-out episodes, and
:func:`share_of_bound` divides: ``share = mean return / mean bound`` over those
episodes.

Seeds: instance ``i`` is seeded ``seed + i``.  Training uses small seeds
(``--seed S`` -> instances ``S .. S+B-1``); evaluation defaults to
``EVAL_SEED = 1_000_000`` so evaluation episodes are never training episodes.
"""

from __future__ import annotations

import dataclasses
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

    @property
    def objective_key(self) -> str:
        """The metric in the paper's units that shares are computed from.

        ``"unscaled_return"`` where the environment trained with a reward option
        (a scaled reward, e.g. ContractDesign's ``reward_scale``) reports it, else
        ``"return"``: a share of the bound must not change with the training reward.
        """
        return "unscaled_return" if any("unscaled_return" in ep for ep in self.episodes) else "return"

    def summary(self) -> dict[str, float]:
        return {k: self.mean(k) for k in self.metrics}


class SharedAgentPolicy:
    """A model trained on a PettingZoo view (one model shared by all agents) acting on the central view.

    Each step it reads every agent's observation of the very instances it acts on
    (``kernel.observe_agents()``, ``(B, agents, d)``), asks the model for each agent's action
    and lays the joint action out as the central view's action (agents stacked in
    ``possible_agents`` order, the PettingZoo views' own rule).  So a parameter-shared policy
    is scored by the central reward, on the episodes the baselines get.
    """

    def __init__(self, model: Any):
        self.model = model
        self.kernel = None

    @property
    def uses_action_masks(self) -> bool:
        """Whether the shared model takes action masks (then the central masks are split per agent)."""
        return _uses_action_masks(self.model)

    def attach(self, env: Any) -> "SharedAgentPolicy":
        from gentwin.baselines.base import kernel_of

        self.kernel = kernel_of(env)
        return self

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None, **_):
        if self.kernel is None:
            raise ValueError("SharedAgentPolicy: attach it to the central environment it acts on first")
        agent_obs = self.kernel.observe_agents()
        B, A, d = agent_obs.shape
        kwargs = {}
        if action_masks is not None:
            # The central masks are laid out like the joint action (agents in order): agent k's
            # are the k-th block of each instance's row.
            kwargs["action_masks"] = np.asarray(action_masks).reshape(B * A, -1)
        actions, _ = self.model.predict(agent_obs.reshape(B * A, d), deterministic=deterministic, **kwargs)
        return np.asarray(actions).reshape(B, *self.kernel.single_action_space.shape), None


def _uses_action_masks(policy: Any) -> bool:
    if getattr(policy, "uses_action_masks", False) is True:  # the diffusion agent, unless use_masks=False
        return True
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


@dataclass
class BoundResult:
    """A bound's value on each held-out episode (episode ``i``: seed ``seed + i``)."""

    name: str
    kind: str
    values: list[float]
    description: str = ""

    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def label(self) -> str:
        """``name (kind)`` for report headers."""
        return f"{self.name} ({self.kind})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "values": [float(v) for v in self.values]}

    @classmethod
    def from_json(cls, payload: dict[str, Any] | None) -> "BoundResult | None":
        if not payload:
            return None
        return cls(payload["name"], payload["kind"], [float(v) for v in payload["values"]],
                   payload.get("description", ""))


def share_of_bound(mean_return: float, bound: "BoundResult | float | None") -> float | None:
    """``mean return / mean bound`` (None without a bound or when the bound's mean is 0)."""
    if bound is None:
        return None
    ub = bound.mean() if isinstance(bound, BoundResult) else float(bound)
    if ub == 0 or not np.isfinite(ub):
        return None
    return float(mean_return / ub)


#: Bounds already evaluated in this process: a bound is a function of the episodes
#: alone, and compare/sweep evaluate the same held-out episodes before every run.
_BOUND_CACHE: dict[tuple, "BoundResult | None"] = {}


def evaluate_bound(
    env_id: str,
    n_episodes: int = 8,
    seed: int = EVAL_SEED,
    env_kwargs: dict | None = None,
    bound: Any = "declared",
) -> BoundResult | None:
    """The family's ``BOUND`` on the held-out episodes ``seed .. seed + n_episodes - 1``.

    The evaluation kernel is built and reset exactly as in :func:`evaluate_policy`
    (same params, instance ``i`` seeded ``seed + i``), so value ``i`` belongs to
    the episode every policy plays as its episode ``i``.  ``bound``: a
    :class:`gentwin.baselines.base.Bound`, or ``"declared"`` for the family's own.
    Returns None when the family declares none or it does not apply to the params.
    Declared bounds are cached per (id, params, episodes) for the process.
    """
    from gentwin.baselines.base import get_baselines, kernel_of

    if n_episodes < 1:
        raise ValueError(f"n_episodes = {n_episodes!r} is invalid: must be >= 1")
    if isinstance(bound, str) and bound == "declared":
        key = (env_id, repr(sorted((env_kwargs or {}).items())), int(n_episodes), int(seed))
        if key not in _BOUND_CACHE:
            _BOUND_CACHE[key] = evaluate_bound(env_id, n_episodes, seed, env_kwargs, bound=_declared(env_id, env_kwargs))
        cached = _BOUND_CACHE[key]
        return None if cached is None else dataclasses.replace(cached, values=list(cached.values))
    venv = make_sb3_vec_env(env_id, num_envs=n_episodes, **(env_kwargs or {}))
    try:
        kernel = kernel_of(venv)
        if bound is None or not bound.applies_to(kernel.params):
            return None
        if bound.value is not None:
            venv.seed(seed)
            venv.reset()
            values = np.asarray(bound.value(kernel), dtype=np.float64).reshape(-1)
            if values.shape != (n_episodes,):
                raise ValueError(f"bound {bound.name!r} returned shape {values.shape}, expected ({n_episodes},)")
        else:
            policy = get_baselines(env_id)[bound.policy](venv, seed=seed)
            values = evaluate_policy(policy, env_id, n_episodes, seed=seed, venv=venv).metric(bound.metric)
    finally:
        venv.close()
    return BoundResult(bound.name, bound.kind, [float(v) for v in values], bound.description)


def _declared(env_id: str, env_kwargs: dict | None):
    """The family's declared bound, or None (also where it does not apply to these params)."""
    from gentwin.baselines.base import get_bound, kernel_of

    venv = make_sb3_vec_env(env_id, num_envs=1, **(env_kwargs or {}))
    try:
        return get_bound(env_id, kernel_of(venv).params)
    finally:
        venv.close()
