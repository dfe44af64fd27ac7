"""Training and evaluation of SB3 agents on gentwin environments (the engine of train.py).

One run = one (environment, algorithm, seed).  It trains on the batched kernel
through its SB3 ``VecEnv`` view (or, for PettingZoo ids, SuperSuit parameter
sharing), evaluates periodically on held-out seeds with the same harness as the
baselines, and writes everything under one directory::

    runs/<Env-id without "gentwin/">/<algo>/seed<S>/
        events.out.tfevents.*     TensorBoard scalars (train/, rollout/, eval/, episode/)
        progress.csv              the same scalars as CSV
        model.zip                 the trained model (also written on Ctrl-C)
        config.yaml               the exact configuration of the run
        eval.json                 final evaluation: agent and baselines
    runs/<Env>/baseline_<name>/seed<S>/   the baselines as constant series,
                                          under the same eval/ tags

so TensorBoard (``tensorboard --logdir runs``) overlays agents and baselines in
one chart per tag.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import gentwin  # noqa: F401  (registers the environments)
from gentwin.agents.registry import algorithm_supports, get_algorithm
from gentwin.envs import PARALLEL_ENVIRONMENTS, make_parallel, make_sb3_vec_env
from gentwin.evaluation import EVAL_SEED, BoundResult, EvalResult, evaluate_bound, evaluate_policy, share_of_bound

HYPERPARAMS_DIR = Path(__file__).with_name("hyperparams")
#: keys of an RL-Zoo hyperparameter entry that configure the run, not the algorithm
_RUN_KEYS = ("n_timesteps", "n_envs", "policy", "env_kwargs", "normalize", "frame_stack")


@dataclass
class TrainConfig:
    """Everything that defines one training run."""

    env_id: str = "gentwin/AspSelection-v0"
    algo: str = "ppo"
    timesteps: int = 50_000
    n_envs: int = 8
    seed: int = 0
    env_kwargs: dict = field(default_factory=dict)
    #: algorithm constructor kwargs (merged over the packaged RL-Zoo defaults)
    hyperparams: dict = field(default_factory=dict)
    policy: str = "MlpPolicy"
    log_root: str = "runs"
    #: environment steps between evaluations (0: only the final one)
    eval_freq: int = 10_000
    eval_episodes: int = 8
    eval_seed: int = EVAL_SEED
    #: baseline names to evaluate and log next to the agent ("all" or a list)
    baselines: Any = "all"
    device: str = "auto"
    progress_bar: bool = True
    verbose: int = 0

    def __post_init__(self) -> None:
        for name, low in (("timesteps", 1), ("n_envs", 1), ("eval_episodes", 1), ("eval_freq", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"TrainConfig.{name} = {value!r} is invalid: must be an integer >= {low}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed = {self.seed!r} is invalid: must be an integer >= 0")

    @property
    def run_dir(self) -> Path:
        return Path(self.log_root) / env_dirname(self.env_id) / self.algo / f"seed{self.seed}"


@dataclass
class TrainResult:
    config: TrainConfig
    model_path: Path
    run_dir: Path
    agent: EvalResult
    baselines: dict[str, EvalResult]
    #: the family's bound on the evaluation episodes (None: it has none)
    bound: BoundResult | None
    interrupted: bool = False
    wall_time_s: float = 0.0

    def table_rows(self) -> list[dict[str, Any]]:
        """Rows of the agent-vs-baselines table (mean return, crash rate, share of the bound)."""
        return comparison_rows({self.config.algo: self.agent, **self.baselines}, self.bound)


def env_dirname(env_id: str) -> str:
    return env_id.split("/", 1)[-1] if env_id.startswith("gentwin/") else env_id.replace("/", "_")


def is_parallel_env(env_id: str) -> bool:
    return env_id in PARALLEL_ENVIRONMENTS


# ---------------------------------------------------------------------------
# Hyperparameters (RL-Zoo style YAML)
# ---------------------------------------------------------------------------
def load_hyperparams(algo: str, env_id: str, path: str | os.PathLike | None = None) -> dict:
    """Hyperparameters of ``algo`` on ``env_id`` from an RL-Zoo style YAML file.

    The file maps environment ids (or ``default``) to dicts of algorithm kwargs.
    RL-Zoo's run keys (``n_timesteps``, ``n_envs``, ``policy``, ``env_kwargs``, ...) are
    accepted so Zoo files load unchanged; ``train.py train`` takes ``n_timesteps``,
    ``n_envs`` and ``env_kwargs`` from them when no flag sets them
    (``gentwin.cli.resolve_run_keys``), the other keys are ignored.
    Without ``path`` the packaged ``gentwin/hyperparams/<algo>.yml`` is used
    (missing file or entry: SB3 defaults).  ``default`` entries apply to every
    id and are overridden by the id's own entry.
    """
    if path is None:
        path = HYPERPARAMS_DIR / f"{algo}.yml"
        if not path.exists():
            return {}
    path = Path(path)
    if not path.exists():
        raise ValueError(f"hyperparams = {str(path)!r} is invalid: no such file")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"hyperparams file {path}: expected a mapping of env ids to settings")
    merged = dict(data.get("default") or {})
    merged.update(data.get(env_id) or {})
    return merged


def split_hyperparams(hp: dict) -> tuple[dict, dict]:
    """(run settings, algorithm kwargs) of an RL-Zoo entry."""
    run = {k: hp[k] for k in _RUN_KEYS if k in hp}
    algo_kwargs = {k: v for k, v in hp.items() if k not in _RUN_KEYS}
    for key in ("policy_kwargs", "replay_buffer_kwargs"):
        if isinstance(algo_kwargs.get(key), str):
            # RL Zoo writes these as Python literals ("dict(net_arch=[64, 64])").
            algo_kwargs[key] = _literal_dict(algo_kwargs[key], key)
    if "train_freq" in algo_kwargs and isinstance(algo_kwargs["train_freq"], list):
        algo_kwargs["train_freq"] = tuple(algo_kwargs["train_freq"])
    return run, algo_kwargs


#: Algorithm kwargs that take RL Zoo's linear schedules (``lin_<initial value>``).
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")


def resolve_schedules(algo_kwargs: dict) -> dict:
    """``algo_kwargs`` with RL Zoo's ``"lin_<x>"`` values of :data:`SCHEDULE_KEYS` as schedules.

    ``learning_rate: lin_3e-4`` decays linearly from 3e-4 at the start of training to 0
    at its end, as in RL Zoo (SB3's ``LinearSchedule``: picklable, so models still save).
    Records keep the string, so a run's settings stay readable.  A plain number written as a
    string (YAML reads ``3e-4`` as one) is taken as that number.
    """
    from stable_baselines3.common.utils import LinearSchedule

    out = dict(algo_kwargs)
    for key in SCHEDULE_KEYS:
        value = out.get(key)
        if not isinstance(value, str):
            continue
        linear = value.startswith("lin_")
        try:
            # YAML 1.1 reads `3e-4` (no dot) as a string: take it as the number it spells.
            number = float(value[len("lin_"):] if linear else value)
        except ValueError:
            raise ValueError(f"{key} = {value!r} is invalid: expected a number or 'lin_<initial value>', "
                             "e.g. 'lin_3e-4'") from None
        if not linear:
            out[key] = number
            continue
        if not np.isfinite(number) or number <= 0:
            raise ValueError(f"{key} = {value!r} is invalid: the initial value must be finite and > 0")
        out[key] = LinearSchedule(start=number, end=0.0, end_fraction=1.0)
    return out


def _literal_dict(text: str, key: str) -> dict:
    import ast

    text = text.strip()
    try:
        if text.startswith("dict(") and text.endswith(")"):
            call = ast.parse(text, mode="eval").body
            return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        return dict(ast.literal_eval(text))
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"{key} = {text!r} is invalid: expected a dict literal") from exc


# ---------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------
def make_train_env(env_id: str, n_envs: int, seed: int, env_kwargs: dict | None = None):
    """SB3 VecEnv for training: the batched kernel, or SuperSuit for PettingZoo ids."""
    env_kwargs = dict(env_kwargs or {})
    if is_parallel_env(env_id):
        import supersuit as ss
        from stable_baselines3.common.vec_env import VecMonitor

        penv = make_parallel(env_id, **env_kwargs)
        venv = ss.pettingzoo_env_to_vec_env_v1(penv)
        venv = ss.concat_vec_envs_v1(venv, n_envs, num_cpus=0, base_class="stable_baselines3")
        venv = VecMonitor(_seedable_supersuit(venv))
        venv.seed(seed)
        return venv
    return make_sb3_vec_env(env_id, num_envs=n_envs, seed=seed, **env_kwargs)


def _seedable_supersuit(venv):
    """SuperSuit's SB3 vector env with SB3's seeding contract (``seed()``, then ``reset()``).

    SuperSuit's wrapper forwards ``seed()`` to a concat env that has none; here the
    seed is kept and passed to the next reset, where copy ``k`` of the PettingZoo env
    is seeded ``seed + k`` (every agent of a copy shares its environment's seed).
    """
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class SeedableSuperSuitVecEnv(VecEnvWrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self._pending_seed: int | None = None

        def seed(self, seed: int | None = None):
            self._pending_seed = seed
            return [None if seed is None else seed + i for i in range(self.num_envs)]

        def reset(self):
            if self._pending_seed is None:
                return self.venv.reset()
            observations, self.venv.reset_infos = self.venv.venv.reset(seed=self._pending_seed)
            self._pending_seed = None
            return observations

        def step_wait(self):
            return self.venv.step_wait()

        # Action masks, for MaskablePPO and the diffusion agent: SuperSuit's vector env has
        # neither has_attr nor env_method, so they are read here from the PettingZoo envs, in
        # SuperSuit's order (copy by copy, agents in possible_agents order within a copy).
        def _parallel_envs(self):
            return [markov.par_env for markov in self.venv.venv.vec_envs]

        def action_masks(self) -> np.ndarray:
            return np.concatenate([penv.agent_action_masks() for penv in self._parallel_envs()])

        def has_attr(self, attr_name: str) -> bool:
            if attr_name == "action_masks":
                try:
                    self.action_masks()
                except AttributeError:  # continuous actions: the kernel has no masks
                    return False
                return True
            return self.venv.has_attr(attr_name)

        def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
            if method_name == "action_masks":
                masks = self.action_masks()
                return [masks[i] for i in self._get_indices(indices)]
            return self.venv.env_method(method_name, *method_args, indices=indices, **method_kwargs)

    return SeedableSuperSuitVecEnv(venv)


def make_eval_env(env_id: str, n_episodes: int, env_kwargs: dict | None = None):
    """The evaluation VecEnv: the batched kernel, with ``n_episodes`` instances.

    A PettingZoo id is evaluated on its family's central view with the params the
    PettingZoo env resolves to (:func:`central_view`): its policies act there per agent
    through :class:`~gentwin.evaluation.SharedAgentPolicy`, next to the baselines.
    """
    env_id, env_kwargs = central_view(env_id, env_kwargs)
    return make_sb3_vec_env(env_id, num_envs=n_episodes, **(env_kwargs or {}))


def central_view(env_id: str, env_kwargs: dict | None = None) -> tuple[str, dict]:
    """``(id, kwargs)`` of the single-agent view on the same instances as ``env_id`` with ``env_kwargs``.

    For a PettingZoo id (``...-ma-v0``) the family's central id (``...-v0``) with the params the
    PettingZoo env resolves ``env_kwargs`` to (its own default preset included, e.g.
    ModelCaching's ``cooperative``); other ids are returned unchanged.
    """
    env_kwargs = dict(env_kwargs or {})
    if not is_parallel_env(env_id):
        return env_id, env_kwargs
    central = env_id.replace("-ma-v", "-v")
    return central, {"params": make_parallel(env_id, **env_kwargs).kernel.params}


def evaluate(policy: Any, config: TrainConfig) -> EvalResult:
    """Evaluate ``policy`` on the held-out seeds of ``config``.

    A model trained on a PettingZoo id acts on the central view, one shared model for every
    agent (:class:`~gentwin.evaluation.SharedAgentPolicy`): the return is the central reward's,
    the one the baselines get.
    """
    from gentwin.baselines.base import Baseline
    from gentwin.evaluation import SharedAgentPolicy

    env_id, env_kwargs = central_view(config.env_id, config.env_kwargs)
    if is_parallel_env(config.env_id) and not isinstance(policy, (Baseline, SharedAgentPolicy)):
        policy = SharedAgentPolicy(policy)
    venv = make_eval_env(env_id, config.eval_episodes, env_kwargs)
    try:
        return evaluate_policy(policy, env_id, n_episodes=config.eval_episodes, seed=config.eval_seed, venv=venv)
    finally:
        venv.close()


def evaluate_reference(config: TrainConfig) -> BoundResult | None:
    """The family's bound (exact optimum / certified upper bound) on the evaluation episodes."""
    env_id, env_kwargs = central_view(config.env_id, config.env_kwargs)
    return evaluate_bound(env_id, config.eval_episodes, config.eval_seed, env_kwargs)


def _without_interface_params(env_id: str, env_kwargs: dict) -> dict:
    """``env_kwargs`` less the family's ``ACTION_INTERFACE_KWARGS`` (also inside a ``params`` object)."""
    import dataclasses

    from gentwin.baselines.base import baseline_module

    interface = getattr(baseline_module(env_id), "ACTION_INTERFACE_KWARGS", ())
    out = {k: v for k, v in env_kwargs.items() if k not in interface}
    params = out.get("params")
    if dataclasses.is_dataclass(params) and interface:
        defaults = {f.name: f for f in dataclasses.fields(params) if f.name in interface}
        out["params"] = dataclasses.replace(params, **{
            name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for name, f in defaults.items()
        })
    return out


def evaluate_baselines(config: TrainConfig) -> tuple[dict[str, EvalResult], BoundResult | None]:
    """Every requested baseline, and the family's bound, on the evaluation seeds.

    For a PettingZoo id they act on the family's central view of the same instances
    (:func:`central_view`), where its agents are evaluated too.
    """
    bound = evaluate_reference(config)
    if not config.baselines:
        return {}, bound
    from gentwin.baselines import get_baselines

    env_id, env_kwargs = central_view(config.env_id, config.env_kwargs)
    available = get_baselines(env_id)
    names = list(available) if config.baselines == "all" else list(config.baselines)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"baselines = {unknown!r} are invalid for {config.env_id}: allowed are {sorted(available)}")
    # Params that only change how actions are given (a family's ACTION_INTERFACE_KWARGS) are left
    # out for its baselines: the same seeds give the same episodes without them.
    env_kwargs = _without_interface_params(env_id, env_kwargs)
    results = {}
    for name in names:
        venv = make_eval_env(env_id, config.eval_episodes, env_kwargs)
        policy = available[name](venv, seed=config.eval_seed)
        results[name] = evaluate_policy(
            policy, env_id, n_episodes=config.eval_episodes, seed=config.eval_seed, venv=venv
        )
    return results, bound


def comparison_rows(results: dict[str, EvalResult], bound: BoundResult | None) -> list[dict[str, Any]]:
    """Mean/std return, crash rate (where the env has one) and share of the bound.

    ``share_of_bound = mean return / mean bound`` over the same held-out episodes;
    the bound itself is the last row (policy ``bound: <name>``) when there is one.
    """
    rows = []
    for name, res in results.items():
        ret = res.metric("return")
        row = {"policy": name, "mean_return": float(ret.mean()), "std_return": float(ret.std())}
        if "crash_rate" in res.metrics:
            row["crash_rate"] = res.mean("crash_rate")
        share = share_of_bound(res.mean(res.objective_key), bound)
        if share is not None:
            row["share_of_bound"] = share
        rows.append(row)
    if bound is not None:
        values = np.asarray(bound.values)
        rows.append({"policy": f"bound: {bound.name}", "mean_return": float(values.mean()),
                     "std_return": float(values.std()), "share_of_bound": 1.0, "kind": bound.kind})
    return rows


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------
def _callbacks():
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeMetricsCallback(BaseCallback):
        """Log the domain metrics of finished training episodes as ``episode/<metric>``."""

        def __init__(self):
            super().__init__()
            self._values: dict[str, list[float]] = {}

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                episode = info.get("episode")
                if not episode:
                    continue
                for key, value in episode.items():
                    if key in ("r", "l", "t") or np.ndim(value) != 0:
                        continue
                    self._values.setdefault(key, []).append(float(value))
            return True

        def _on_rollout_end(self) -> None:
            for key, values in self._values.items():
                self.logger.record(f"episode/{key}", float(np.mean(values)))
            self._values = {}

    class PeriodicEvalCallback(BaseCallback):
        """Evaluate on held-out seeds every ``eval_freq`` environment steps."""

        def __init__(self, config: TrainConfig, bound_return: float | None):
            super().__init__()
            self.config = config
            self.bound_return = bound_return
            self._next = config.eval_freq

        def _on_step(self) -> bool:
            if self.config.eval_freq and self.num_timesteps >= self._next:
                self._next += self.config.eval_freq
                self.evaluate_now()
            return True

        def evaluate_now(self) -> EvalResult:
            return evaluate_and_record(self.model, self.config, self.bound_return)

    return EpisodeMetricsCallback, PeriodicEvalCallback


def evaluate_and_record(model: Any, config: TrainConfig, bound_return: float | None) -> EvalResult:
    """Evaluate ``model`` and write the result to its logger at its current step."""
    result = evaluate(model, config)
    record_eval(model.logger, result, bound_return)
    # SB3's CSV writer drops the step argument: keep it as a column for learning curves.
    model.logger.record("time/total_timesteps", model.num_timesteps)
    model.logger.dump(model.num_timesteps)
    return result


def record_eval(logger: Any, result: EvalResult, bound_return: float | None) -> None:
    """Record an evaluation under the tags shared by agents and baselines.

    ``eval/share_of_bound`` = mean return / ``bound_return`` (the bound's mean over
    the same held-out episodes), written only where the family has a bound.
    """
    ret = result.metric("return")
    logger.record("eval/mean_return", float(ret.mean()))
    logger.record("eval/std_return", float(ret.std()))
    for key in result.metrics:
        if key not in ("return", "length"):
            logger.record(f"eval/{key}", result.mean(key))
    logger.record("eval/mean_length", result.mean("length"))
    share = share_of_bound(result.mean(result.objective_key), bound_return)
    if share is not None:
        logger.record("eval/share_of_bound", share)


def log_baselines(config: TrainConfig, results: dict[str, EvalResult], bound: BoundResult | None) -> None:
    """Write each baseline as a constant series (first and last step) under eval/ tags."""
    from stable_baselines3.common.logger import configure

    ub = bound.mean() if bound is not None else None
    for name, res in results.items():
        run_dir = Path(config.log_root) / env_dirname(config.env_id) / f"baseline_{name}" / f"seed{config.seed}"
        # Several runs (algorithms) of one seed share this directory: replace, not append,
        # so TensorBoard shows one series per baseline.
        for old in run_dir.glob("events.out.tfevents.*"):
            old.unlink()
        logger = configure(str(run_dir), ["tensorboard", "csv"])
        for step in (0, config.timesteps):
            record_eval(logger, res, ub)
            logger.dump(step)
        logger.close()


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
def build_model(config: TrainConfig, venv: Any, hyperparams_file: str | None = None):
    """Instantiate the algorithm with packaged/RL-Zoo defaults overridden by config.hyperparams."""
    algo_cls = get_algorithm(config.algo)
    if not algorithm_supports(config.algo, venv.action_space):
        raise ValueError(
            f"algo = {config.algo!r} is invalid for {config.env_id}: it does not support the "
            f"action space {venv.action_space}"
        )
    _, defaults = split_hyperparams(load_hyperparams(config.algo, config.env_id, hyperparams_file))
    # Overrides (``--hp``) take the file's forms too: ``policy_kwargs="dict(net_arch=[64, 64])"``.
    _, overrides = split_hyperparams(dict(config.hyperparams))
    kwargs = resolve_schedules({**defaults, **overrides})
    return algo_cls(config.policy, venv, seed=config.seed, device=config.device, verbose=config.verbose, **kwargs)


def train(config: TrainConfig, hyperparams_file: str | None = None, callbacks: list | None = None) -> TrainResult:
    """Train, evaluate and save one run; Ctrl-C stops training and still saves.

    ``callbacks`` are extra SB3 callbacks (progress displays, early stopping, ...).
    """
    import torch
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.logger import configure

    start = time.perf_counter()
    torch.manual_seed(config.seed)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "config.yaml", "w") as f:
        yaml.safe_dump({**dataclasses.asdict(config), "hyperparams_file": hyperparams_file}, f, sort_keys=False)

    baselines, bound = evaluate_baselines(config)
    ub_return = bound.mean() if bound is not None else None
    if baselines:
        log_baselines(config, baselines, bound)

    venv = make_train_env(config.env_id, config.n_envs, config.seed, config.env_kwargs)
    model = build_model(config, venv, hyperparams_file)
    model.set_logger(configure(str(run_dir), ["tensorboard", "csv"]))
    episode_cb_cls, eval_cb_cls = _callbacks()
    eval_cb = eval_cb_cls(config, ub_return)
    interrupted = False
    try:
        model.learn(
            total_timesteps=config.timesteps,
            callback=CallbackList([episode_cb_cls(), eval_cb, *(callbacks or [])]),
            progress_bar=config.progress_bar,
        )
    except KeyboardInterrupt:
        interrupted = True
    model_path = run_dir / "model.zip"
    model.save(model_path)
    agent = evaluate_and_record(model, config, ub_return)
    model.logger.close()
    venv.close()
    result = TrainResult(
        config=config,
        model_path=model_path,
        run_dir=run_dir,
        agent=agent,
        baselines=baselines,
        bound=bound,
        interrupted=interrupted,
        wall_time_s=time.perf_counter() - start,
    )
    write_eval_json(run_dir / "eval.json", result)
    return result


def write_eval_json(path: Path, result: TrainResult) -> None:
    payload = {
        "env_id": result.config.env_id,
        "algo": result.config.algo,
        "seed": result.config.seed,
        "timesteps": result.config.timesteps,
        "interrupted": result.interrupted,
        "wall_time_s": result.wall_time_s,
        "bound": result.bound.to_json() if result.bound is not None else None,
        "agent": result.agent.episodes,
        "baselines": {k: v.episodes for k, v in result.baselines.items()},
        "table": result.table_rows(),
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=float)


def load_model(algo: str, path: str | os.PathLike, device: str = "auto"):
    """Load a model saved by :func:`train`."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model = {str(path)!r} is invalid: no such file")
    return get_algorithm(algo).load(path, device=device)
