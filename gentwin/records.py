"""Planning runs and reading what finished runs left on disk.

Used by :mod:`gentwin.compare` and :mod:`gentwin.sweep`.  Planning: one
:class:`~gentwin.training.TrainConfig` per (algorithm, seed)
(:func:`plan_runs`), or per ``label=algo`` variant (:func:`plan_variants`).
Records: a run is *finished* when its ``eval.json`` exists, was written after
its ``config.yaml``, was not interrupted, and ``config.yaml`` matches the
requested configuration on :data:`MATCH_FIELDS` (:func:`is_finished`);
:func:`load_record` reads its final evaluation and learning curve into a
:class:`RunRecord`.  A record may carry a ``label`` (e.g. a variant or trial
name) that replaces the algorithm name in the tables.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from gentwin.evaluation import BoundResult, EvalResult
from gentwin.training import TrainConfig

__all__ = [
    "MATCH_FIELDS",
    "RunRecord",
    "is_finished",
    "load_record",
    "parse_algo_spec",
    "plan_runs",
    "plan_variants",
    "read_eval_curve",
    "read_progress_csv",
]

#: config fields that define a run's result (the rest only affect how it is shown)
MATCH_FIELDS = (
    "env_id", "algo", "timesteps", "n_envs", "seed", "env_kwargs", "hyperparams", "policy",
    "eval_freq", "eval_episodes", "eval_seed", "baselines",
)


@dataclass
class RunRecord:
    """What one finished run left on disk: its final evaluation and its learning curve.

    ``agent`` and ``baselines`` are the per-episode summaries of ``eval.json``;
    ``curve_steps``/``curve_returns`` are the periodic evaluations
    (``eval/mean_return`` of ``progress.csv`` at the environment steps logged to
    TensorBoard).  ``label`` groups records in the report (default: the algorithm).
    """

    config: TrainConfig
    run_dir: Path
    agent: EvalResult
    baselines: dict[str, EvalResult]
    #: the family's bound on the evaluation episodes (None: none, or a run from before bounds)
    bound: BoundResult | None
    curve_steps: np.ndarray
    curve_returns: np.ndarray
    wall_time_s: float = 0.0
    interrupted: bool = False
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.config.algo


def plan_runs(env_id: str, algos: Sequence[str], seeds: Sequence[int], base_config: TrainConfig) -> list[TrainConfig]:
    """One :class:`TrainConfig` per (algorithm, seed), copied from ``base_config``.

    Order: algorithm-major (all seeds of the first algorithm first).  Raises
    ``ValueError`` for an empty list, an unknown algorithm or a repeated entry.
    """
    from gentwin.agents.registry import ALGORITHMS

    algos = [a.strip().lower().replace("-", "_") for a in algos]
    seeds = [int(s) for s in seeds]
    if not algos:
        raise ValueError("algos = [] is invalid: give at least one algorithm")
    if not seeds:
        raise ValueError("seeds = [] is invalid: give at least one seed")
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown:
        raise ValueError(f"algos = {unknown!r} are invalid: allowed are {sorted(ALGORITHMS)}")
    for name, values in (("algos", algos), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} = {values!r} is invalid: entries must be distinct")
    return [dataclasses.replace(base_config, env_id=env_id, algo=a, seed=s) for a in algos for s in seeds]


def parse_algo_spec(spec: str) -> tuple[str, str]:
    """``"algo"`` -> ``(algo, algo)``; ``"label=algo"`` -> ``(label, algo)`` (a variant of an algorithm)."""
    label, _, algo = spec.strip().rpartition("=")
    algo = algo.strip().lower().replace("-", "_")
    label = label.strip() or algo
    if not algo or any(c in label for c in "/\\ "):
        raise ValueError(f"algos entry {spec!r} is invalid: expected ALGO or LABEL=ALGO (label without '/', spaces)")
    return label, algo


def plan_variants(
    env_id: str,
    algos: Sequence[str],
    seeds: Sequence[int],
    base_config: TrainConfig,
    algo_hyperparams: dict[str, dict] | None = None,
) -> list[tuple[str, TrainConfig]]:
    """(label, config) of every run, for entries ``algo`` or ``label=algo``.

    ``algo_hyperparams[label]`` (or ``[algo]``) is merged over
    ``base_config.hyperparams`` for that entry.  A labelled variant
    (``label != algo``) logs under ``<log_root>/<label>/`` so that two variants
    of one algorithm (e.g. ``d2sac=diffusion`` and ``sac=diffusion`` with
    ``actor=mlp``) keep separate run directories.
    """
    algo_hyperparams = dict(algo_hyperparams or {})
    specs = [parse_algo_spec(a) for a in algos]
    labels = [label for label, _ in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"algos = {list(algos)!r} is invalid: labels must be distinct")
    unknown = [k for k in algo_hyperparams if k not in labels and k not in {a for _, a in specs}]
    if unknown:
        raise ValueError(f"algo_hyperparams keys {unknown!r} are invalid: allowed are {labels}")
    out = []
    for label, algo in specs:
        hp = {**base_config.hyperparams, **algo_hyperparams.get(algo, {}), **algo_hyperparams.get(label, {})}
        log_root = base_config.log_root if label == algo else str(Path(base_config.log_root) / label)
        base = dataclasses.replace(base_config, hyperparams=hp, log_root=log_root)
        out += [(label, c) for c in plan_runs(env_id, [algo], seeds, base)]
    return out


def _normalise(value: Any) -> Any:
    """Config values as YAML gives them back (tuples -> lists, numpy -> Python)."""
    return yaml.safe_load(yaml.safe_dump(value))


def is_finished(config: TrainConfig, hyperparams_file: str | None = None) -> bool:
    """Whether ``config.run_dir`` holds a finished run of exactly this configuration.

    True when ``eval.json`` exists, is not older than ``config.yaml`` (a run
    restarted over an old one rewrites ``config.yaml`` first), records no
    interruption, and ``config.yaml`` agrees with ``config`` on every field of
    :data:`MATCH_FIELDS` and on the hyperparameter file.
    """
    run_dir = config.run_dir
    eval_path, config_path = run_dir / "eval.json", run_dir / "config.yaml"
    if not (eval_path.exists() and config_path.exists()):
        return False
    if eval_path.stat().st_mtime_ns < config_path.stat().st_mtime_ns:
        return False
    try:
        with open(eval_path) as f:
            payload = json.load(f)
        with open(config_path) as f:
            saved = yaml.safe_load(f) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return False
    if payload.get("interrupted", True):
        return False
    wanted = _normalise(dataclasses.asdict(config))
    if any(saved.get(k) != wanted[k] for k in MATCH_FIELDS):
        return False
    return saved.get("hyperparams_file") == (None if hyperparams_file is None else str(hyperparams_file))


def read_progress_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tensorboard_steps(run_dir: Path, tag: str) -> list[int] | None:
    """Steps of ``tag`` in the newest TensorBoard event file of ``run_dir``."""
    files = sorted(run_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
    if not files:
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(files[-1]), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return None
    return [int(e.step) for e in acc.Scalars(tag)]


def read_eval_curve(run_dir: Path, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Periodic evaluations of a run: (environment steps, eval/mean_return).

    Values come from ``progress.csv`` (full precision).  SB3's CSV writer drops
    the step of a dump, so the steps are taken from the row's
    ``time/total_timesteps`` where present, else from the same tag in the
    TensorBoard events, else inferred from ``eval_freq`` (last = timesteps).
    Repeated steps keep the last evaluation.
    """
    rows = [r for r in read_progress_csv(run_dir / "progress.csv") if r.get("eval/mean_return", "") != ""]
    values = [float(r["eval/mean_return"]) for r in rows]
    if not values:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if all(r.get("time/total_timesteps", "") != "" for r in rows):
        steps = [int(float(r["time/total_timesteps"])) for r in rows]
    else:
        tb_steps = _tensorboard_steps(run_dir, "eval/mean_return")
        if tb_steps is not None and len(tb_steps) == len(values):
            steps = tb_steps
        else:
            steps = [(k + 1) * max(config.eval_freq, 1) for k in range(len(values))]
            steps[-1] = config.timesteps
    by_step: dict[int, float] = {}
    for s, v in zip(steps, values):
        by_step[s] = v  # the last evaluation at a step wins (the final one repeats it)
    order = sorted(by_step)
    return np.asarray(order, dtype=np.int64), np.asarray([by_step[s] for s in order])


def load_record(config: TrainConfig, label: str | None = None) -> RunRecord:
    """The :class:`RunRecord` of a finished run (``eval.json`` + ``progress.csv``).

    Raises ``ValueError`` naming the path when ``eval.json`` is missing.
    """
    run_dir = config.run_dir
    eval_path = run_dir / "eval.json"
    if not eval_path.exists():
        raise ValueError(f"run = {str(run_dir)!r} is not finished: no eval.json")
    with open(eval_path) as f:
        payload = json.load(f)
    steps, returns = read_eval_curve(run_dir, config)
    return RunRecord(
        config=config,
        run_dir=run_dir,
        agent=EvalResult(episodes=list(payload["agent"])),
        baselines={k: EvalResult(episodes=list(v)) for k, v in (payload.get("baselines") or {}).items()},
        bound=BoundResult.from_json(payload.get("bound")),
        curve_steps=steps,
        curve_returns=returns,
        wall_time_s=float(payload.get("wall_time_s", 0.0)),
        interrupted=bool(payload.get("interrupted", False)),
        label=label,
    )
