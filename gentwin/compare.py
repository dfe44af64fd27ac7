"""Compare agents and baselines in one command (``python train.py compare ...``).

    python train.py compare --env gentwin/AspSelection-v0 --algos ppo,maskable_ppo,diffusion \\
        --baselines all --seeds 0,1,2 --timesteps 100000 --n-envs 8

trains every algorithm on every seed with :func:`gentwin.training.train` (one
TensorBoard run per directory ``runs/<Env>/<algo>/seed<S>/``, baselines as
constant series under ``runs/<Env>/baseline_<name>/seed<S>/``, all under the
same ``eval/`` tags), evaluates agents and baselines with the same harness on
the same held-out seeds (``TrainConfig.eval_seed`` .. ``+ eval_episodes - 1``),
and writes ``results/<Env>/<timestamp>/``::

    report.md                the tables, the command and the package versions
    summary.json             the same numbers, machine-readable
    learning_curves.png      eval/mean_return vs. environment steps, mean over
                             seeds with a 95 % band, baselines as lines
    final_performance.png    final mean return with 95 % intervals

Statistics
----------
An agent's number for one seed is the mean over the evaluation episodes of its
final evaluation (``eval.json``).  The report gives the mean over seeds and the
half-width of the two-sided 95 % Student-t interval over seeds
(``t_{0.975, n-1} * s / sqrt(n)``; no interval with one seed).  Baselines do
not learn: with the same evaluation seeds every training seed reproduces the
same baseline episodes, so their interval is taken over the evaluation
episodes instead (if different training seeds did give different baseline
numbers, over seeds).  The column ``n`` says which.  The share of the bound
is ``mean return / mean bound``, where the bound is the family's ``BOUND`` (an
exact optimum or a certified upper bound per episode, see
:mod:`gentwin.baselines.base`) evaluated on the same held-out episodes and
stored in ``eval.json``; families without one get no share.  For cost-type
returns (negative) a share above 1 means a higher cost than the bound.

Resuming
--------
A run is *finished* when its ``eval.json`` exists, was written after its
``config.yaml``, was not interrupted, and ``config.yaml`` matches the requested
configuration (:func:`is_finished`).  Rerunning the same command trains only
the runs that are not finished, then rewrites the report from every run.

Reuse
-----
The sweep (:mod:`gentwin.sweep`) uses :func:`plan_runs`, :func:`is_finished`,
:func:`load_record` and :func:`write_report`; a :class:`RunRecord` may carry a
``label`` (e.g. a trial name) that replaces the algorithm name in the tables.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from gentwin.evaluation import BoundResult, EvalResult
from gentwin.training import TrainConfig, env_dirname, train

__all__ = [
    "CompareResult",
    "RunRecord",
    "Stat",
    "compare",
    "is_finished",
    "load_record",
    "plan_runs",
    "t_interval",
    "write_report",
]

#: config fields that define a run's result (the rest only affect how it is shown)
MATCH_FIELDS = (
    "env_id", "algo", "timesteps", "n_envs", "seed", "env_kwargs", "hyperparams", "policy",
    "eval_freq", "eval_episodes", "eval_seed", "baselines",
)
#: per-episode keys that are not domain metrics (SB3 Monitor's r/l/t duplicates)
_SKIP_KEYS = ("r", "l", "t")
#: packages whose versions go into the report
REPORT_PACKAGES = (
    "gentwin", "numpy", "scipy", "gymnasium", "pettingzoo", "stable-baselines3", "sb3-contrib",
    "torch", "matplotlib", "tensorboard",
)


# ---------------------------------------------------------------------------
# Records of finished runs
# ---------------------------------------------------------------------------
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


def _read_progress_csv(path: Path) -> list[dict[str, str]]:
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
    rows = [r for r in _read_progress_csv(run_dir / "progress.csv") if r.get("eval/mean_return", "") != ""]
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


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """Mean and 95 % t-interval half-width of ``n`` samples (``half_width`` NaN when n < 2)."""

    mean: float
    half_width: float
    n: int

    def fmt(self, digits: int = 4) -> str:
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {self.half_width:.{digits}g}"


def t_quantile(p: float, dof: int) -> float:
    """Quantile of Student's t (``scipy.special.stdtrit``: much lighter to import than scipy.stats)."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, p))


def t_interval(samples: Iterable[float], confidence: float = 0.95) -> Stat:
    """Mean and half-width of the two-sided Student-t interval of ``samples``."""
    x = np.asarray(list(samples), dtype=np.float64)
    if x.size == 0:
        raise ValueError("samples = [] is invalid: need at least one value")
    if x.size < 2:
        return Stat(float(x.mean()), float("nan"), int(x.size))
    sem = x.std(ddof=1) / math.sqrt(x.size)
    half = float(t_quantile(0.5 + confidence / 2, x.size - 1) * sem)
    return Stat(float(x.mean()), half, int(x.size))


def _metric_names(results: Iterable[EvalResult]) -> list[str]:
    names: list[str] = []
    for res in results:
        for key in res.metrics:
            if key not in names and key not in _SKIP_KEYS:
                names.append(key)
    if "return" in names:
        names.remove("return")
    return ["return", *names]


def _episodes_key(res: EvalResult) -> str:
    """Identity of an evaluation's numbers (wall-clock ``t`` and its r/l copies left out)."""
    eps = [{k: v for k, v in ep.items() if k not in _SKIP_KEYS} for ep in res.episodes]
    return json.dumps(eps, sort_keys=True, default=float)


@dataclass
class PolicySummary:
    """Statistics of one policy (agent group or baseline) in the report."""

    name: str
    kind: str  # "agent" or "baseline"
    over: str  # "seeds" or "episodes"
    stats: dict[str, Stat]
    #: agents: one entry per run (its seed and run directory, and the episode means of every metric)
    runs: list[dict[str, Any]] = field(default_factory=list)
    share_of_bound: Stat | None = None


def summarise(records: Sequence[RunRecord]) -> tuple[list[PolicySummary], list[str]]:
    """Per-policy statistics of ``records``: (summaries, metric names)."""
    if not records:
        raise ValueError("records = [] is invalid: need at least one finished run")
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(rec.name, []).append(rec)
    baseline_names: list[str] = []
    for rec in records:
        for b in rec.baselines:
            if b not in baseline_names:
                baseline_names.append(b)
    metrics = _metric_names([r.agent for r in records] + [b for r in records for b in r.baselines.values()])

    summaries: list[PolicySummary] = []
    for name, recs in groups.items():
        runs = [{"seed": r.config.seed, "run_dir": str(r.run_dir),
                 "steps": int(r.curve_steps[-1]) if r.curve_steps.size else None,
                 **{m: r.agent.mean(m) for m in metrics if m in r.agent.metrics}} for r in recs]
        stats = {m: t_interval([run[m] for run in runs]) for m in metrics if all(m in run for run in runs)}
        summaries.append(PolicySummary(name, "agent", "seeds", stats, runs))
    for name in baseline_names:
        by_seed: dict[int, EvalResult] = {}
        for r in records:
            if name in r.baselines:
                by_seed.setdefault(r.config.seed, r.baselines[name])
        results = list(by_seed.values())
        distinct = {_episodes_key(res): res for res in results}
        if len(distinct) == 1:
            res = results[0]
            stats = {m: t_interval(res.metric(m)) for m in metrics if m in res.metrics}
            summaries.append(PolicySummary(name, "baseline", "episodes", stats))
        else:
            uniq = list(distinct.values())
            stats = {m: t_interval([r.mean(m) for r in uniq]) for m in metrics if all(m in r.metrics for r in uniq)}
            summaries.append(PolicySummary(name, "baseline", "seeds", stats))
    return summaries, metrics


def records_bound(records: Sequence[RunRecord]) -> BoundResult | None:
    """The bound of ``records`` (the first record that has one; all share the evaluation episodes)."""
    return next((r.bound for r in records if r.bound is not None), None)


def _attach_shares(summaries: Sequence[PolicySummary], bound: BoundResult | None) -> float | None:
    """Set every summary's share of ``bound`` (mean return / mean bound); returns the mean bound."""
    if bound is None:
        return None
    ub = bound.mean()
    if ub == 0 or not np.isfinite(ub):
        return None
    for s in summaries:
        # The paper's units: unscaled_return where a reward option scaled the training reward.
        key = "unscaled_return" if "unscaled_return" in s.stats else "return"
        if s.kind == "agent":
            s.share_of_bound = t_interval([run[key] / ub for run in s.runs])
        else:
            st = s.stats[key]
            s.share_of_bound = Stat(st.mean / ub, st.half_width / abs(ub), st.n)
    return ub


# ---------------------------------------------------------------------------
# Report and plots
# ---------------------------------------------------------------------------
def package_versions(packages: Sequence[str] = REPORT_PACKAGES) -> dict[str, str]:
    """Installed versions (``"not installed"`` where missing), plus Python's."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_commit() -> str | None:
    import subprocess

    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def _aligned_curves(records: Sequence[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Curves of several seeds on one step grid: (steps (K,), returns (S, K))."""
    curves = [(r.curve_steps, r.curve_returns) for r in records if r.curve_steps.size]
    if not curves:
        return np.zeros(0), np.zeros((0, 0))
    first = curves[0][0]
    if all(c[0].shape == first.shape and np.array_equal(c[0], first) for c in curves):
        return first.astype(np.float64), np.stack([c[1] for c in curves])
    # Different grids (e.g. different n_envs): interpolate on the union inside the common range.
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)].astype(np.float64)
    return grid, np.stack([np.interp(grid, c[0], c[1]) for c in curves])


def _limit_y(ax, values: Sequence[float], margin: float = 0.25) -> None:
    """Show the means (and baselines) with a margin: with few seeds the t-bands can be so wide
    that they would flatten every curve; they are clipped at the plot's edge instead."""
    if not values:
        return
    lo, hi = float(min(values)), float(max(values))
    pad = margin * (hi - lo) if hi > lo else max(1.0, 0.1 * abs(hi))
    cur_lo, cur_hi = ax.get_ylim()
    ax.set_ylim(max(cur_lo, lo - pad), min(cur_hi, hi + pad))


def plot_learning_curves(path: Path, env_id: str, records: Sequence[RunRecord],
                         summaries: Sequence[PolicySummary]) -> Path:
    """Mean eval/mean_return over seeds with a 95 % t-band; baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    shown: list[float] = []  # curve means and baseline levels: the y range to show
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.name, []).append(r)
    for i, (name, recs) in enumerate(groups.items()):
        steps, returns = _aligned_curves(recs)
        if steps.size == 0:
            continue
        color = f"C{i % 10}"
        mean = returns.mean(axis=0)
        shown += [float(mean.min()), float(mean.max())]
        ax.plot(steps, mean, color=color, marker="o", markersize=3, label=f"{name} (n={returns.shape[0]})")
        if returns.shape[0] > 1:
            half = t_quantile(0.975, returns.shape[0] - 1) * returns.std(axis=0, ddof=1) / math.sqrt(returns.shape[0])
            ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))]
    for j, s in enumerate(x for x in summaries if x.kind == "baseline"):
        ax.axhline(s.stats["return"].mean, color=f"C{(len(groups) + j) % 10}", linestyle=styles[j % len(styles)],
                   linewidth=1.4, label=f"baseline: {s.name}")
        shown.append(s.stats["return"].mean)
    _limit_y(ax, shown)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean over held-out episodes)")
    ax.set_title(f"{env_id}: learning curves\nmean over seeds, 95% t-band (clipped to the plot)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_final_performance(path: Path, env_id: str, summaries: Sequence[PolicySummary]) -> Path:
    """Bar chart of the final mean return with 95 % intervals (agents first, then baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in summaries]
    means = np.array([s.stats["return"].mean for s in summaries])
    halves = np.array([s.stats["return"].half_width for s in summaries])
    halves = np.where(np.isnan(halves), 0.0, halves)
    colors = [f"C{i % 10}" if s.kind == "agent" else "0.6" for i, s in enumerate(summaries)]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4.5))
    ax.bar(np.arange(len(names)), means, yerr=halves, capsize=4, color=colors, edgecolor="black", linewidth=0.6)
    for x, m in enumerate(means):
        ax.annotate(f"{m:.4g}", (x, m), textcoords="offset points", xytext=(0, 3 if m >= 0 else -10),
                    ha="center", fontsize=7)
    _limit_y(ax, [*means.tolist(), 0.0])
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("final evaluation return")
    ax.set_title(f"{env_id}: final performance\nagents coloured, baselines grey; 95% intervals", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _config_lines(records: Sequence[RunRecord]) -> list[str]:
    c = records[0].config
    same = lambda f: all(getattr(r.config, f) == getattr(c, f) for r in records)  # noqa: E731
    lines = []
    for f in ("timesteps", "n_envs", "eval_freq", "eval_episodes", "eval_seed", "env_kwargs", "hyperparams", "policy"):
        value = getattr(c, f) if same(f) else "varies per run"
        lines.append(f"- `{f}`: {value}")
    return lines


def write_report(out_dir: str | os.PathLike, env_id: str, records: Sequence[RunRecord], command: str,
                 bound: BoundResult | None = None) -> Path:
    """Write ``report.md``, ``summary.json`` and the two PNG plots into ``out_dir``.

    ``records`` are finished runs (:func:`load_record`), grouped by
    ``record.name``; the baselines are read from their ``eval.json``
    ``baselines`` entries.  ``bound`` is the reference of the share column
    (``None``: the records' own bound, if any).
    ``command`` is printed verbatim.  Returns the path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    summaries, metrics = summarise(records)
    if bound is None:
        bound = records_bound(records)
    ub = _attach_shares(summaries, bound)
    curves_png = plot_learning_curves(out_dir / "learning_curves.png", env_id, records, summaries)
    bars_png = plot_final_performance(out_dir / "final_performance.png", env_id, summaries)
    versions = package_versions()

    def share(s: PolicySummary) -> str:
        return s.share_of_bound.fmt(3) if s.share_of_bound is not None else "–"

    L: list[str] = [f"# {env_id}: agents vs. baselines", ""]
    L += [f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}.", ""]
    L += ["Mean ± half-width of the 95 % Student-t interval. Agents: over training seeds (each seed's "
          "value is the mean over the held-out evaluation episodes of its final evaluation). Baselines "
          "do not train; they are evaluated on the same held-out episodes, and their interval is over "
          "those episodes (column *n over*).", ""]
    if ub is not None:
        values = np.asarray(bound.values)
        L += [f"Bound: `{bound.name}`, {bound.kind}"
              + (f" ({bound.description})" if bound.description else "") + ".", "",
              f"Share of bound = mean return / mean bound over the same {len(values)} held-out episodes "
              f"(mean bound {ub:.6g}, per episode {values.min():.6g} .. {values.max():.6g}).", ""]
    else:
        L += ["No share of a bound: this environment has no exact optimum or certified upper bound.", ""]
    L += ["## Final performance", ""]
    L += ["| policy | kind | return | share of bound | n over |", "|---|---|---|---|---|"]
    for s in summaries:
        L.append(f"| {s.name} | {s.kind} | {s.stats['return'].fmt()} | {share(s)} | {s.stats['return'].n} {s.over} |")
    L += ["", "## Domain metrics (per episode)", ""]
    shown = [m for m in metrics if m != "return"]
    if shown:
        L += ["| policy | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for s in summaries:
            L.append(f"| {s.name} | " + " | ".join(s.stats[m].fmt() if m in s.stats else "–" for m in shown) + " |")
    L += ["", "## Per-run evaluations (agents)", ""]
    L += ["*steps*: environment steps actually trained (the step of the final evaluation; on-policy "
          "algorithms finish their last rollout, so it can exceed the budget).", ""]
    L += ["| policy | seed | steps | " + " | ".join(metrics) + " | run directory |",
          "|---" * (len(metrics) + 4) + "|"]
    for s in (x for x in summaries if x.kind == "agent"):
        for run in sorted(s.runs, key=lambda r: (r["seed"], r["run_dir"])):
            steps = "–" if run["steps"] is None else str(run["steps"])
            L.append(f"| {s.name} | {run['seed']} | {steps} | "
                     + " | ".join(f"{run[m]:.6g}" if m in run else "–" for m in metrics) + f" | `{run['run_dir']}` |")
    L += ["", "## Plots", "", f"![learning curves]({curves_png.name})", "", f"![final performance]({bars_png.name})", ""]
    L += ["## Setup", "", f"- environment: `{env_id}`"]
    L += _config_lines(records)
    L += [f"- total training wall time: {sum(r.wall_time_s for r in records):.1f} s over {len(records)} runs"]
    commit = _git_commit()
    if commit:
        L.append(f"- gentwin commit: {commit}")
    L += ["", "Command:", "", "```", command, "```", "", "Versions:", ""]
    L += [f"- {k} {v}" for k, v in versions.items()]
    L.append("")
    report = out_dir / "report.md"
    report.write_text("\n".join(L))

    summary = {
        "env_id": env_id,
        "command": command,
        "bound": bound.to_json() if bound is not None else None,
        "bound_mean": ub,
        "versions": versions,
        "policies": [
            {
                "name": s.name,
                "kind": s.kind,
                "over": s.over,
                "stats": {m: dataclasses.asdict(st) for m, st in s.stats.items()},
                "share_of_bound": dataclasses.asdict(s.share_of_bound) if s.share_of_bound else None,
                "runs": s.runs,
            }
            for s in summaries
        ],
        "runs": [str(r.run_dir) for r in records],
    }
    with open(out_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2, default=float, allow_nan=True)
    return report


# ---------------------------------------------------------------------------
# Progress display
# ---------------------------------------------------------------------------
class _Progress:
    """Rich progress over the whole comparison: one bar for all steps, one for the current run.

    ``train`` takes no callback, so a background thread follows the current
    run's ``progress.csv`` (``time/total_timesteps``, written at every SB3 dump).
    """

    def __init__(self, total_steps: int, n_runs: int, n_skipped: int, enabled: bool = True):
        self.enabled = enabled
        self.total_steps = total_steps
        self.n_runs = n_runs
        self.n_skipped = n_skipped
        self._done_steps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        skipped = f", {n_skipped} finished run(s) skipped" if n_skipped else ""
        self.overall = self.progress.add_task(f"all {n_runs} run(s){skipped}", total=max(total_steps, 1))
        self.current = None

    def __enter__(self):
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        self._stop_thread()
        if self.enabled:
            self.progress.stop()
        return False

    def start_run(self, index: int, label: str, config: TrainConfig) -> None:
        if not self.enabled:
            return
        desc = f"run {index}/{self.n_runs}: {label} seed {config.seed}"
        if self.current is None:
            self.current = self.progress.add_task(desc, total=config.timesteps)
        else:
            self.progress.reset(self.current, description=desc, total=config.timesteps)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(config,), daemon=True)
        self._thread.start()

    def _follow(self, config: TrainConfig) -> None:
        import time

        path = config.run_dir / "progress.csv"
        started_ns = time.time_ns() - 10**9
        while not self._stop.wait(0.5):
            try:
                if path.stat().st_mtime_ns < started_ns:
                    continue  # still the file of an earlier run in this directory
                rows = _read_progress_csv(path)
            except (OSError, csv.Error, UnicodeDecodeError, ValueError):
                continue  # the file is being rewritten; try again
            steps = [r.get("time/total_timesteps") or "" for r in rows]
            steps = [int(float(s)) for s in steps if s.strip()]
            if steps:
                self._set(config, min(max(steps), config.timesteps))

    def _set(self, config: TrainConfig, steps: int) -> None:
        self.progress.update(self.current, completed=steps)
        self.progress.update(self.overall, completed=min(self._done_steps + steps, self.total_steps))

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def skip_run(self, config: TrainConfig) -> None:
        """A planned run turned out finished (by another process): drop its steps from the total."""
        self.total_steps -= config.timesteps
        if self.enabled:
            self.progress.update(self.overall, total=max(self.total_steps, 1))

    def end_run(self, config: TrainConfig) -> None:
        self._stop_thread()
        self._done_steps += config.timesteps
        if self.enabled:
            self._set(config, config.timesteps)


# ---------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------
@dataclass
class CompareResult:
    report: Path
    out_dir: Path
    records: list[RunRecord]
    trained: list[TrainConfig]
    skipped: list[TrainConfig]


def check_algorithms(env_id: str, algos: Sequence[str], env_kwargs: dict | None = None) -> None:
    """Raise ``ValueError`` before any training if an algorithm cannot act in ``env_id``."""
    from gentwin.agents.registry import ALGORITHMS, algorithm_supports
    from gentwin.training import is_parallel_env, make_train_env

    if is_parallel_env(env_id):
        venv = make_train_env(env_id, 1, 0, env_kwargs)
    else:
        from gentwin.envs import make_sb3_vec_env

        venv = make_sb3_vec_env(env_id, num_envs=1, **(env_kwargs or {}))
    try:
        space = venv.action_space
    finally:
        venv.close()
    bad = [a for a in algos if a in ALGORITHMS and not algorithm_supports(a, space)]
    if bad:
        ok = [a for a in ALGORITHMS if algorithm_supports(a, space)]
        raise ValueError(f"algos = {bad!r} are invalid for {env_id} (action space {space}): allowed are {ok}")


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


def compare(
    env_id: str,
    algos: Sequence[str],
    seeds: Sequence[int],
    base_config: TrainConfig | None = None,
    *,
    baselines: Any = "all",
    algo_hyperparams: dict[str, dict] | None = None,
    results_root: str | os.PathLike = "results",
    command: str | None = None,
    hyperparams_file: str | None = None,
    force: bool = False,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    report_only: bool = False,
) -> CompareResult:
    """Train every algorithm on every seed (skipping finished runs) and write the report.

    ``algos`` entries are registry names or ``label=algo`` variants (see
    :func:`plan_variants`; ``algo_hyperparams`` maps a label or algorithm to
    its own hyperparameters).  ``base_config`` supplies everything but env,
    algorithm and seed (timesteps, n_envs, evaluation settings, env_kwargs,
    hyperparams, log_root).  ``baselines`` is ``"all"``, a list of names, or
    ``[]``.  ``force`` retrains finished runs.  ``report_only`` trains nothing
    and reports the runs finished so far (the missing ones are listed at the end
    of the report).  The report goes to ``out_dir`` or
    ``<results_root>/<Env>/<UTC timestamp>/``.
    """
    base = dataclasses.replace(base_config or TrainConfig(), baselines=baselines, progress_bar=False)
    planned = plan_variants(env_id, algos, seeds, base, algo_hyperparams)
    configs = [c for _, c in planned]
    labels = [lab for lab, _ in planned]
    check_algorithms(env_id, sorted({c.algo for c in configs}), base.env_kwargs)
    todo = [i for i, c in enumerate(configs) if force or not is_finished(c, hyperparams_file)]
    skipped = [i for i in range(len(configs)) if i not in todo]
    if command is None:
        command = (f"compare(env_id={env_id!r}, algos={list(algos)!r}, seeds={list(seeds)!r}, "
                   f"baselines={baselines!r}, algo_hyperparams={algo_hyperparams!r})")

    missing = list(todo) if report_only else []
    if report_only:
        todo = []
    if len(missing) == len(configs):
        raise ValueError(f"report_only = True is invalid here: none of the {len(configs)} runs is finished")
    enabled = progress and bool(todo)
    with _Progress(sum(configs[i].timesteps for i in todo), len(todo), len(skipped), enabled=enabled) as bar:
        if enabled:
            for i in skipped:
                bar.progress.console.print(f"skip {labels[i]} seed {configs[i].seed}: finished run in "
                                           f"{configs[i].run_dir}")
        for k, i in enumerate(list(todo), 1):
            config = configs[i]
            if not force and is_finished(config, hyperparams_file):
                # another process (a parallel compare or sweep worker) finished it meanwhile
                todo.remove(i)
                skipped.append(i)
                bar.skip_run(config)
                continue
            bar.start_run(k, labels[i], config)
            result = train(config, hyperparams_file=hyperparams_file)
            bar.end_run(config)
            if result.interrupted:
                raise KeyboardInterrupt(f"interrupted during {config.run_dir}; rerun the command to resume")

    records = [load_record(c, label=lab if lab != c.algo else None)
               for k, (lab, c) in enumerate(planned) if k not in missing]
    if out_dir is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out_dir = Path(results_root) / env_dirname(env_id) / stamp
    report = write_report(out_dir, env_id, records, command)
    if missing:
        with open(report, "a") as f:
            f.write("\n## Unfinished runs (not in the tables)\n\n")
            f.writelines(f"- {labels[i]} seed {configs[i].seed}: `{configs[i].run_dir}`\n" for i in missing)
    return CompareResult(report=report, out_dir=Path(out_dir), records=records,
                         trained=[configs[i] for i in todo], skipped=[configs[i] for i in skipped])


# ---------------------------------------------------------------------------
# Command line (registered in gentwin.cli.COMMANDS as "compare")
# ---------------------------------------------------------------------------
def _split_list(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SystemExit(f"{flag} {text!r} is invalid: expected a comma-separated list")
    return items


def _canonical_command(args, seeds: list[int], algos: list[str]) -> str:
    """The compare command with every option explicit (reproduces the run whatever the defaults)."""
    import shlex

    parts = ["python", "train.py", "compare", "--env", args.env, "--algos", ",".join(algos),
             "--baselines", args.baselines, "--seeds", ",".join(map(str, seeds)),
             "--timesteps", str(args.timesteps), "--n-envs", str(args.n_envs),
             "--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes),
             "--log-root", args.log_root, "--results-root", args.results_root, "--device", args.device]
    for kv in args.env_kwarg or []:
        parts += ["--env-kwarg", kv]
    for kv in args.hp or []:
        parts += ["--hp", kv]
    for kv in args.algo_hp or []:
        parts += ["--algo-hp", kv]
    if args.hyperparams:
        parts += ["--hyperparams", args.hyperparams]
    return " ".join(shlex.quote(p) for p in parts)


def print_summary(records: Sequence[RunRecord], title: str) -> None:
    """Rich table of the comparison: return (mean ± 95 % half-width), share of the bound, crash rate."""
    from rich.console import Console
    from rich.table import Table

    summaries, metrics = summarise(records)
    ub = _attach_shares(summaries, records_bound(records))
    # min_width: a narrow table (no share column) must not wrap its title
    table = Table(title=title, min_width=min(len(title), 116) + 4)
    for col in ("policy", "kind", "return (95% CI)", *(["crash rate"] if "crash_rate" in metrics else []),
                *(["share of bound"] if ub is not None else [])):
        table.add_column(col, justify="left" if col in ("policy", "kind") else "right")
    for s in summaries:
        cells = [s.name, s.kind, s.stats["return"].fmt()]
        if "crash_rate" in metrics:
            cells.append(s.stats["crash_rate"].fmt(3) if "crash_rate" in s.stats else "–")
        if ub is not None:
            cells.append(s.share_of_bound.fmt(3) if s.share_of_bound is not None else "–")
        table.add_row(*cells)
    Console(width=120).print(table)


def cmd_compare(args) -> int:
    import torch

    from gentwin.cli import _config_from_args, _parse_kv

    torch.set_num_threads(1)  # small MLPs: one thread is fastest and leaves the other cores alone
    try:
        seeds = [int(s) for s in _split_list(args.seeds, "--seeds")]
    except ValueError:
        raise SystemExit(f"--seeds {args.seeds!r} is invalid: expected comma-separated integers") from None
    algos = _split_list(args.algos, "--algos")
    if args.baselines.strip().lower() == "all":
        baselines: Any = "all"
    elif args.baselines.strip().lower() == "none":
        baselines = []
    else:
        baselines = _split_list(args.baselines, "--baselines")
    algo_hp: dict[str, dict] = {}
    for item in args.algo_hp or []:
        label, sep, kv = item.partition(":")
        if not sep or "=" not in kv:
            raise SystemExit(f"--algo-hp {item!r} is invalid: expected LABEL:KEY=VALUE")
        algo_hp.setdefault(label, {}).update(_parse_kv([kv], "--algo-hp"))
    base = _config_from_args(args, parse_algo_spec(algos[0])[1], seeds[0])
    command = _canonical_command(args, seeds, algos)
    try:
        result = compare(
            args.env, algos, seeds, base, baselines=baselines, algo_hyperparams=algo_hp,
            results_root=args.results_root, command=command,
            hyperparams_file=args.hyperparams, force=args.force, progress=not args.no_progress,
            report_only=args.report_only,
        )
    except KeyboardInterrupt as exc:
        print(f"stopped: {exc}")
        return 130
    print_summary(result.records, f"{args.env}: {len(result.trained)} run(s) trained, "
                                  f"{len(result.skipped)} finished run(s) reused")
    print(f"report: {result.report}\nTensorBoard: tensorboard --logdir {args.log_root}")
    return 0


def build_compare_parser(sub) -> None:
    """Add the ``compare`` subcommand to the ``train.py`` parser."""
    from gentwin.cli import add_run_arguments

    p = sub.add_parser("compare", help="train several algorithms on several seeds and compare them with the baselines")
    add_run_arguments(p)
    p.add_argument("--algos", default="ppo,maskable_ppo",
                   help="comma-separated algorithms or LABEL=ALGO variants (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: %(default)s)")
    p.add_argument("--baselines", default="all", help="'all', 'none' or comma-separated baseline names")
    p.add_argument("--results-root", default="results", help="report root (default: %(default)s)")
    p.add_argument("--algo-hp", action="append", metavar="LABEL:KEY=VALUE",
                   help="hyperparameter of one entry of --algos (e.g. sac:actor=mlp); repeatable")
    p.add_argument("--force", action="store_true", help="retrain runs that are already finished")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing; report the runs finished so far and list the missing ones")
    p.set_defaults(func=cmd_compare)
