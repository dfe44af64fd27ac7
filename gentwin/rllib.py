"""Multi-agent PPO with RLlib on the PettingZoo environments (``python train.py rllib``).

The PettingZoo views of the multi-agent kernels (``gentwin/ModelCaching-ma-v0``,
``gentwin/TaskOffloading-ma-v0``, see :data:`gentwin.envs.PARALLEL_ENVIRONMENTS`)
are handed to RLlib through its own wrapper,
:class:`ray.rllib.env.wrappers.pettingzoo_env.ParallelPettingZooEnv`, and trained
with RLlib's PPO on its current API stack (RLModule, Learner, EnvRunner).  Two
ways to map agents to policies:

- ``shared`` (default): one RLModule shared by every agent (parameter sharing,
  the same setting as the SB3 + SuperSuit path of ``train.py``);
- ``independent``: one RLModule per agent.

A run writes the same layout as an SB3 run (see :mod:`gentwin.training`)::

    runs/<Env-id without "gentwin/">/rllib_ppo/seed<S>/
        events.out.tfevents.*   TensorBoard scalars, one point per PPO iteration:
                                rollout/ep_rew_mean (per-agent return), episode/<metric>
                                (domain metrics of finished episodes), train/<loss>
                                (per policy), time/..., and eval/ after the last one
        progress.csv            the same scalars as CSV (read back by load_metrics)
        config.yaml             the exact configuration
        checkpoint/             RLlib checkpoint of the trained algorithm
        eval.json               final greedy evaluation on held-out seeds

Returns are per agent, as in the SB3 + SuperSuit runs of the same ids (where
every agent is one slot of the vector env), so the two overlay in TensorBoard:
``return`` (tags ``rollout/ep_rew_mean``, ``eval/mean_return``) is the team
return divided by the number of agents; ``team_return`` (tags
``rollout/team_return``, ``eval/team_return``) is the sum over agents of one
episode's rewards (RLlib's ``episode_return_mean``).  Evaluation runs the
trained modules greedily on episodes seeded ``eval_seed + i`` (the held-out
seeds of :mod:`gentwin.evaluation`).

Ray is an optional extra: ``pip install -e ".[ray]"``.  This module is the
library (:func:`train_rllib` takes an :class:`RllibConfig`); the ``rllib``
flags and their parsing are in :mod:`gentwin.cli.rllib`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gentwin.envs import PARALLEL_ENVIRONMENTS, make_parallel
from gentwin.evaluation import EVAL_SEED

ALGO_NAME = "rllib_ppo"
POLICY_MODES = ("shared", "independent")
SHARED_POLICY = "shared"


@dataclass
class RllibConfig:
    """Everything that defines one RLlib multi-agent PPO run."""

    env_id: str = "gentwin/TaskOffloading-ma-v0"
    iterations: int = 20
    seed: int = 0
    env_kwargs: dict = field(default_factory=dict)
    #: "shared": one policy for all agents; "independent": one policy per agent
    policies: str = "shared"
    #: environment steps sampled per PPO iteration
    train_batch_size: int = 2000
    minibatch_size: int = 128
    num_epochs: int = 5
    lr: float = 3e-4
    gamma: float = 0.99
    #: 0 samples in the driver process; N > 0 uses N remote EnvRunner actors
    num_env_runners: int = 0
    log_root: str = "runs"
    eval_episodes: int = 8
    eval_seed: int = EVAL_SEED

    def __post_init__(self) -> None:
        if self.env_id not in PARALLEL_ENVIRONMENTS:
            raise ValueError(
                f"RllibConfig.env_id = {self.env_id!r} is invalid: RLlib multi-agent training needs a "
                f"PettingZoo id, allowed are {sorted(PARALLEL_ENVIRONMENTS)}"
            )
        for name, low in (("iterations", 1), ("train_batch_size", 1), ("minibatch_size", 1),
                          ("num_epochs", 1), ("num_env_runners", 0), ("eval_episodes", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"RllibConfig.{name} = {value!r} is invalid: must be an integer >= {low}")
        if self.policies not in POLICY_MODES:
            raise ValueError(f"RllibConfig.policies = {self.policies!r} is invalid: allowed are {POLICY_MODES}")
        if not (self.lr > 0):
            raise ValueError(f"RllibConfig.lr = {self.lr!r} is invalid: must be > 0")
        if not (0 < self.gamma <= 1):
            raise ValueError(f"RllibConfig.gamma = {self.gamma!r} is invalid: must be in (0, 1]")

    @property
    def run_dir(self) -> Path:
        from gentwin.training import env_dirname

        return Path(self.log_root) / env_dirname(self.env_id) / ALGO_NAME / f"seed{self.seed}"


@dataclass
class RllibResult:
    config: RllibConfig
    run_dir: Path
    checkpoint_dir: Path
    #: one dict of scalars per iteration (the rows of progress.csv)
    history: list[dict[str, float]]
    #: per-episode summaries of the final greedy evaluation
    eval_episodes: list[dict[str, float]]
    wall_time_s: float = 0.0

    def eval_summary(self) -> dict[str, float]:
        keys = sorted({k for ep in self.eval_episodes for k in ep})
        return {k: float(np.mean([ep[k] for ep in self.eval_episodes if k in ep])) for k in keys}


def _require_rllib():
    try:
        import ray  # noqa: F401
        from ray.rllib.algorithms.ppo import PPOConfig  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"RLlib is not usable ({exc}); install the Ray extra: pip install -e \".[ray]\""
        ) from exc


def _env_name(env_id: str) -> str:
    return "gentwin_rllib/" + env_id.split("/", 1)[-1]


def _register(env_id: str) -> str:
    """Register ``env_id`` with RLlib through its PettingZoo wrapper; returns the name."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    name = _env_name(env_id)

    def creator(env_config: dict) -> ParallelPettingZooEnv:
        return ParallelPettingZooEnv(make_parallel(env_id, **dict(env_config)))

    register_env(name, creator)
    return name


def _metrics_callback_class():
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class EpisodeSummaryCallback(RLlibCallback):
        """Log the kernel's end-of-episode summary (domain metrics) of every finished
        episode, so they appear as ``env_runners/episode_summary/<metric>``."""

        def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
            if metrics_logger is None:
                return
            last = episode.get_infos(-1)
            for info in last.values():
                summary = info.get("episode_summary") if isinstance(info, dict) else None
                if summary:
                    for key, value in summary.items():
                        if np.ndim(value) == 0:
                            metrics_logger.log_value(("episode_summary", key), float(value), reduce="mean")
                    # Every agent carries the same summary; log it once per episode.
                    break

    return EpisodeSummaryCallback


def build_algorithm(config: RllibConfig):
    """The RLlib PPO ``Algorithm`` of ``config`` (environment registered, Ray connected)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    probe = make_parallel(config.env_id, **config.env_kwargs)
    agents = list(probe.possible_agents)
    if config.policies == "shared":
        policies = {SHARED_POLICY}

        def mapping(agent_id, *args, **kwargs):
            return SHARED_POLICY
    else:
        policies = set(agents)

        def mapping(agent_id, *args, **kwargs):
            return agent_id

    ppo = (
        PPOConfig()
        .environment(_register(config.env_id), env_config=dict(config.env_kwargs))
        .multi_agent(policies=policies, policy_mapping_fn=mapping)
        .env_runners(num_env_runners=config.num_env_runners, rollout_fragment_length="auto")
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=config.train_batch_size,
            minibatch_size=min(config.minibatch_size, config.train_batch_size),
            num_epochs=config.num_epochs,
            lr=config.lr,
            gamma=config.gamma,
        )
        .callbacks(_metrics_callback_class())
        .debugging(seed=config.seed)
        .reporting(metrics_num_episodes_for_smoothing=20)
    )
    return ppo.build_algo()


def _flatten(result: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def iteration_scalars(result: dict, n_agents: int) -> dict[str, float]:
    """The scalars of one ``Algorithm.train()`` result worth logging, under tags that
    match the SB3 runs (``rollout/``, ``episode/``, ``train/``, ``time/``)."""
    flat = _flatten(result)
    scalars: dict[str, float] = {}

    def put(tag: str, key: str) -> None:
        value = flat.get(key)
        if isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
            scalars[tag] = float(value)

    put("rollout/team_return", "env_runners/episode_return_mean")
    put("rollout/ep_len_mean", "env_runners/episode_len_mean")
    if "rollout/team_return" in scalars:
        scalars["rollout/ep_rew_mean"] = scalars["rollout/team_return"] / n_agents
    put("time/iterations", "training_iteration")
    put("time/total_timesteps", "env_runners/num_env_steps_sampled_lifetime")
    put("time/time_elapsed", "time_total_s")
    for key in flat:
        if key.startswith("env_runners/episode_summary/"):
            put("episode/" + key.rsplit("/", 1)[-1], key)
        elif key.startswith("learners/") and not key.startswith("learners/__all_modules__"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss",
                                                  "total_loss", "vf_explained_var"):
                put(f"train/{parts[1]}/{parts[2]}", key)
    return scalars


def _greedy_actions(algo: Any, obs: dict[str, np.ndarray], mapping: dict[str, str]) -> dict[str, Any]:
    """Deterministic actions of the trained modules (one batched forward pass per module)."""
    import torch

    actions: dict[str, Any] = {}
    by_module: dict[str, list[str]] = {}
    for agent in obs:
        by_module.setdefault(mapping[agent], []).append(agent)
    for module_id, agents in by_module.items():
        module = algo.get_module(module_id)
        batch = torch.as_tensor(np.stack([obs[a] for a in agents]), dtype=torch.float32)
        with torch.no_grad():
            out = module.forward_inference({"obs": batch})
        dist = module.get_inference_action_dist_cls().from_logits(out["action_dist_inputs"])
        chosen = dist.to_deterministic().sample().cpu().numpy()
        for k, agent in enumerate(agents):
            actions[agent] = chosen[k]
    return actions


def evaluate_rllib(algo: Any, config: RllibConfig) -> list[dict[str, float]]:
    """Greedy episodes of the trained policies on seeds ``eval_seed + i``.

    Each episode's summary holds ``return`` (per agent: the team return divided
    by the number of agents), ``team_return`` (summed over agents), ``length``
    and the kernel's domain metrics.
    """
    episodes = []
    for i in range(config.eval_episodes):
        env = make_parallel(config.env_id, **config.env_kwargs)
        agents = list(env.possible_agents)
        mapping = {a: (SHARED_POLICY if config.policies == "shared" else a) for a in agents}
        obs, _ = env.reset(seed=config.eval_seed + i)
        team_return, length, summary = 0.0, 0, {}
        while env.agents:
            obs, rewards, terms, truncs, infos = env.step(_greedy_actions(algo, obs, mapping))
            team_return += float(sum(rewards.values()))
            length += 1
            for info in infos.values():
                if "episode_summary" in info:
                    summary = {k: float(v) for k, v in info["episode_summary"].items() if np.ndim(v) == 0}
                    break
        env.close()
        episodes.append({**summary, "return": team_return / len(agents), "team_return": team_return,
                         "length": float(length)})
    return episodes


def _train_loop(algo: Any, config: RllibConfig, verbose: bool) -> tuple[list[dict[str, float]], list[dict]]:
    """Iterations (logged to TensorBoard/CSV), checkpoint, final evaluation (logged under eval/)."""
    from stable_baselines3.common.logger import configure

    n_agents = len(make_parallel(config.env_id, **config.env_kwargs).possible_agents)
    logger = configure(str(config.run_dir), ["tensorboard", "csv"])
    history: list[dict[str, float]] = []
    try:
        step = 0
        for _ in range(config.iterations):
            scalars = iteration_scalars(algo.train(), n_agents)
            step = int(scalars.get("time/total_timesteps", step))
            for tag, value in scalars.items():
                logger.record(tag, value)
            logger.dump(step)
            history.append(scalars)
            if verbose:
                it = int(scalars.get("time/iterations", len(history)))
                ret = scalars.get("rollout/team_return", float("nan"))
                print(f"iteration {it}/{config.iterations}: {step} env steps, team return {ret:.4g}")
        algo.save_to_path(str((config.run_dir / "checkpoint").resolve()))
        episodes = evaluate_rllib(algo, config) if config.eval_episodes else []
        if episodes:
            for key in sorted({k for ep in episodes for k in ep}):
                values = [ep[key] for ep in episodes if key in ep]
                tag = {"return": "eval/mean_return", "length": "eval/mean_length"}.get(key, f"eval/{key}")
                logger.record(tag, float(np.mean(values)))
            logger.record("eval/std_return", float(np.std([ep["return"] for ep in episodes])))
            logger.dump(step)
    finally:
        logger.close()
    return history, episodes


def train_rllib(config: RllibConfig, ray_address: str | None = None, verbose: bool = True) -> RllibResult:
    """Train multi-agent PPO for ``config.iterations`` iterations, log, evaluate, save."""
    from gentwin.sweep import connect_ray

    started = connect_ray(ray_address)  # before anything imports ray (see connect_ray)
    try:
        _require_rllib()
        import torch

        start = time.perf_counter()
        run_dir = config.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "config.yaml", "w") as f:
            yaml.safe_dump({**dataclasses.asdict(config), "algo": ALGO_NAME}, f, sort_keys=False)
        torch.manual_seed(config.seed)
        algo = build_algorithm(config)
        try:
            history, episodes = _train_loop(algo, config, verbose)
        finally:
            algo.stop()
    finally:
        if started:
            import ray

            ray.shutdown()
    checkpoint_dir = run_dir / "checkpoint"
    result = RllibResult(config=config, run_dir=run_dir, checkpoint_dir=checkpoint_dir, history=history,
                         eval_episodes=episodes, wall_time_s=time.perf_counter() - start)
    with open(run_dir / "eval.json", "w") as f:
        json.dump({"env_id": config.env_id, "algo": ALGO_NAME, "seed": config.seed,
                   "iterations": config.iterations, "wall_time_s": result.wall_time_s,
                   "agent": episodes, "summary": result.eval_summary()}, f, indent=2)
    return result


def load_metrics(run_dir: str | os.PathLike) -> dict[str, list[float]]:
    """The per-iteration scalars of a run (its progress.csv) as tag -> list of values
    (NaN where a row lacks the tag)."""
    path = Path(run_dir) / "progress.csv"
    if not path.exists():
        raise ValueError(f"run_dir = {str(run_dir)!r} is invalid: no progress.csv in it")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    tags = list(rows[0]) if rows else []
    return {tag: [float(r[tag]) if r.get(tag) not in (None, "") else float("nan") for r in rows] for tag in tags}


def restore_algorithm(checkpoint_dir: str | os.PathLike):
    """Load an algorithm saved by :func:`train_rllib` (its environment re-registered)."""
    _require_rllib()
    from ray.rllib.algorithms.algorithm import Algorithm

    checkpoint_dir = Path(checkpoint_dir)
    config_file = checkpoint_dir.parent / "config.yaml"
    if config_file.exists():
        with open(config_file) as f:
            _register(yaml.safe_load(f)["env_id"])
    return Algorithm.from_checkpoint(str(checkpoint_dir.resolve()))
