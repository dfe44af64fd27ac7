"""Sweeps on Ray Tune: algorithms x seeds x presets x hyperparameters (``python train.py sweep``).

    python train.py sweep --env gentwin/AspSelection-v0 --algos ppo,a2c --seeds 0,1,2 \\
        --timesteps 100000 [--presets survey,reference] [--search-space space.yml] \\
        [--ray-address HOST:PORT] [--num-samples N] [--cpus-per-trial C]

Every (algorithm, seed, preset, hyperparameter configuration) is one Ray Tune
trial: a function trainable that calls :func:`gentwin.training.train` on its
:class:`~gentwin.training.TrainConfig` and reports the final evaluation
(``mean_return``, ``std_return``, every domain metric, ``share_of_bound``)
to Tune.  Each trial reserves ``--cpus-per-trial`` CPUs (and sets torch to as
many threads) and ``--gpus-per-trial`` GPUs; Tune runs as many trials at once
as the cluster's resources allow.

Where things go
---------------
- Runs: exactly where ``train``/``compare`` put them,
  ``<log-root>/<Env>/<algo>/seed<S>/`` (TensorBoard events, progress.csv,
  model.zip, config.yaml, eval.json, baselines as constant series).  A preset
  (``--presets``) or a hyperparameter configuration adds a level in front:
  ``<log-root>/<preset>/hp-<8 hex digits>/<Env>/<algo>/seed<S>/`` (the hex
  digits hash the configuration, which is in the run's config.yaml).  The
  log root is made absolute before the trials start, so on a cluster it must
  be a path every node can write and the driver can read (a shared file system).
- Report: ``<results-root>/<Env>/sweep-<UTC timestamp>/report.md`` (one per
  preset in ``<preset>/report.md`` when several), written by
  :func:`gentwin.report.write_report` (tables, plots, command, versions) with a
  "Sweep" section appended: every trial, its status, node and metrics, and every
  failed trial with its error.  ``sweep.json`` holds the same, machine-readable.
- Tune's own experiment state: ``<results-root>/<Env>/ray/<experiment>/``.

Failures and resuming
---------------------
A trial that raises is retried up to ``--max-failures`` times (Tune's
``FailureConfig``); if it still fails it is printed, listed in the report with
its error, and the command exits with status 1.  Nothing is dropped silently.
Rerunning the same command resumes: every trial whose run is already finished
(:func:`gentwin.records.is_finished`: eval.json newer than a matching
config.yaml) reports the stored evaluation instead of training again, so only
unfinished and failed trials train.  This also reuses runs made by ``compare``
or ``train`` with the same settings, and works on any cluster (no Tune
experiment state needs to survive).  Random search draws its configurations
from ``search_seed``, so a rerun asks for the same runs; an Optuna search
starts a new study, reusing every run whose configuration it proposes again.

Hyperparameter search
---------------------
``--search-space FILE`` (YAML) turns the sweep into a two-phase search:

1. *search*: for each (algorithm, preset), ``num_samples`` configurations are
   trained on the first seed and scored by ``metric``; configurations come from
   random sampling (``search: random``, reproducible from ``search_seed``) or
   from Optuna's TPE sampler through Tune (``search: optuna``,
   :class:`ray.tune.search.optuna.OptunaSearch`);
2. *evaluate*: the best configuration of each (algorithm, preset) is trained on
   every seed, and the report compares those.

The file format::

    search: optuna          # "random" (default) or "optuna"
    metric: mean_return     # any metric a trial reports (default mean_return)
    mode: max               # "max" (default) or "min"
    num_samples: 8          # configurations per (algorithm, preset); --num-samples overrides
    search_seed: 0          # seed of the sampler (default 0)
    space:
      default:              # applies to every algorithm ...
        learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
      ppo:                  # ... and is extended/overridden per algorithm
        n_steps: {choice: [64, 128, 256]}
        gamma: {uniform: [0.95, 0.999]}
        n_epochs: {randint: [3, 11]}        # integers 3..10 (upper bound excluded)
        ent_coef: 0.01                      # anything else is a constant
        policy_kwargs: {net_arch: [64, 64]}

Domains (one-key mappings, Tune's names): ``uniform: [low, high]``,
``loguniform: [low, high]``, ``quniform: [low, high, q]``,
``randint: [low, high]`` (high excluded), ``lograndint: [low, high]`` (high
excluded), ``choice: [v1, v2, ...]``.  Keys are the algorithm's constructor
arguments (as in the RL-Zoo YAML files and ``--hp``); sampled values override
``--hp`` and the packaged defaults.

Ray: without ``--ray-address`` an embedded local Ray is started with the
machine's cores (and stopped at the end); with it the sweep attaches to a
running cluster (``ray start --head`` ...; see docs/ray.md).

This module is the library (:func:`sweep` takes a
:class:`~gentwin.training.TrainConfig` and plain arguments); the ``sweep``
flags and their parsing are in :mod:`gentwin.cli.sweep`.  Runs are planned,
read and reported with :mod:`gentwin.records` and :mod:`gentwin.report`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from gentwin.records import is_finished, load_record, plan_runs
from gentwin.report import write_report
from gentwin.training import TrainConfig, env_dirname

DOMAINS = ("uniform", "loguniform", "quniform", "randint", "lograndint", "choice")
SEARCHERS = ("random", "optuna")
MODES = ("max", "min")
METRIC_DEFAULT = "mean_return"


# ---------------------------------------------------------------------------
# Search-space files
# ---------------------------------------------------------------------------
@dataclass
class SearchSpace:
    """A parsed search-space file (see the module docstring for the format)."""

    space: dict[str, dict[str, Any]]
    search: str = "random"
    metric: str = METRIC_DEFAULT
    mode: str = "max"
    num_samples: int = 4
    search_seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if self.search not in SEARCHERS:
            raise ValueError(f"search = {self.search!r} is invalid: allowed are {SEARCHERS}")
        if self.mode not in MODES:
            raise ValueError(f"mode = {self.mode!r} is invalid: allowed are {MODES}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ValueError(f"num_samples = {self.num_samples!r} is invalid: must be an integer >= 1")
        if isinstance(self.search_seed, bool) or not isinstance(self.search_seed, int) or self.search_seed < 0:
            raise ValueError(f"search_seed = {self.search_seed!r} is invalid: must be an integer >= 0")
        if not isinstance(self.space, dict) or not self.space:
            raise ValueError("space is invalid: expected a mapping of algorithm (or 'default') to parameters")
        for algo, params in self.space.items():
            if not isinstance(params, dict):
                raise ValueError(f"space.{algo} = {params!r} is invalid: expected a mapping of parameters")
            for name, spec in params.items():
                to_tune_domain(spec, f"space.{algo}.{name}")  # validates

    def params_for(self, algo: str) -> dict[str, Any]:
        """The raw specs that apply to ``algo`` (``default`` overridden by its own entry)."""
        return {**(self.space.get("default") or {}), **(self.space.get(algo) or {})}

    def has_domains(self, algo: str) -> bool:
        return any(is_domain(spec) for spec in self.params_for(algo).values())


def is_domain(spec: Any) -> bool:
    return isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DOMAINS


def to_tune_domain(spec: Any, where: str) -> Any:
    """A Tune sampling domain for a domain spec; constants are returned unchanged."""
    if not is_domain(spec):
        return spec
    from ray import tune

    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError(f"{where} = {spec!r} is invalid: choice needs a non-empty list")
        return tune.choice(args)
    expected = 3 if kind == "quniform" else 2
    if not isinstance(args, list) or len(args) != expected or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ValueError(f"{where} = {spec!r} is invalid: {kind} needs a list of {expected} numbers")
    low, high = args[0], args[1]
    if not low < high:
        raise ValueError(f"{where} = {spec!r} is invalid: needs low < high")
    if kind in ("loguniform", "lograndint") and low <= 0:
        raise ValueError(f"{where} = {spec!r} is invalid: {kind} needs low > 0")
    if kind in ("randint", "lograndint") and not all(isinstance(a, int) for a in args):
        raise ValueError(f"{where} = {spec!r} is invalid: {kind} needs integer bounds")
    if kind == "uniform":
        return tune.uniform(low, high)
    if kind == "loguniform":
        return tune.loguniform(low, high)
    if kind == "quniform":
        return tune.quniform(low, high, args[2])
    if kind == "randint":
        return tune.randint(low, high)
    return tune.lograndint(low, high)


def load_search_space(path: str | os.PathLike) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"search_space = {str(path)!r} is invalid: no such file")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"search space file {path}: expected a mapping")
    unknown = sorted(set(data) - {"search", "metric", "mode", "num_samples", "search_seed", "space"})
    if unknown:
        raise ValueError(f"search space file {path}: unknown keys {unknown}; allowed are "
                         "search, metric, mode, num_samples, search_seed, space")
    if "space" not in data:
        raise ValueError(f"search space file {path}: the 'space' mapping is missing")
    return SearchSpace(source=path.read_text(), **data)


def _plain(value: Any) -> Any:
    """Python scalars (YAML- and JSON-safe) from numpy/Tune values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def sample_configurations(space: SearchSpace, algo: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` reproducible random configurations of ``algo`` (constants included)."""
    rng = np.random.default_rng(seed)
    out = []
    specs = space.params_for(algo)
    for _ in range(n):
        config = {}
        for name, spec in specs.items():
            domain = to_tune_domain(spec, f"space.{algo}.{name}")
            config[name] = _plain(domain.sample(random_state=rng) if is_domain(spec) else spec)
        out.append(config)
    return out


# ---------------------------------------------------------------------------
# Trials
# ---------------------------------------------------------------------------
def hp_tag(hp: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(_plain(hp), sort_keys=True, default=str).encode()).hexdigest()
    return f"hp-{digest[:8]}"


def trial_log_root(base_log_root: str, preset: str | None, hp: dict[str, Any]) -> str:
    """Log root of one trial: the sweep's, plus a preset and a hyperparameter level."""
    root = Path(base_log_root)
    if preset:
        root = root / preset
    if hp:
        root = root / hp_tag(hp)
    return str(root)


def trial_train_config(trial: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` a trial trains (its sampled hyperparameters merged in)."""
    base = dict(trial["config"])
    hp = _plain(dict(trial.get("hp") or {}))
    base["hyperparams"] = {**base.get("hyperparams", {}), **hp}
    base["log_root"] = trial_log_root(trial["base_log_root"], trial.get("preset"), hp)
    if trial.get("preset"):
        base["env_kwargs"] = {**base.get("env_kwargs", {}), "params": trial["preset"]}
    return TrainConfig(**base)


def trial_name(trial: dict[str, Any]) -> str:
    parts = [trial["config"]["algo"], f"seed{trial['config']['seed']}"]
    if trial.get("preset"):
        parts.append(trial["preset"])
    if trial.get("hp"):
        parts.append(hp_tag(trial["hp"]))
    return "_".join(parts)


def _eval_metrics(agent: Any, bound: Any) -> dict[str, float]:
    """What a trial reports: its final evaluation, and its share of the family's bound (if any)."""
    from gentwin.evaluation import share_of_bound

    ret = agent.metric("return")
    metrics = {"mean_return": float(ret.mean()), "std_return": float(ret.std())}
    for key in agent.metrics:
        if key not in ("return", "r", "l", "t"):
            metrics[key] = agent.mean(key)
    share = share_of_bound(agent.mean(agent.objective_key), bound)
    if share is not None:
        metrics["share_of_bound"] = share
    return metrics


def _full_trial(params: dict[str, Any], specs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trial's full settings from its Tune config: ``run`` names an entry of ``specs``;
    a searcher adds the sampled ``hp``."""
    trial = dict(specs[params["run"]])
    if "hp" in params:
        trial["hp"] = _plain(dict(params["hp"]))
    return trial


def run_trial(params: dict[str, Any], specs: dict[str, dict[str, Any]]) -> None:
    """Tune function trainable: train (or reuse) one run and report its final evaluation.

    The Tune config holds only the run's name (and a searcher's sampled ``hp``),
    so Tune's tables stay readable; ``specs`` (passed once through the object
    store by ``tune.with_parameters``) holds the full settings.
    """
    import ray
    import torch
    from ray import tune

    from gentwin.training import train

    trial = _full_trial(params, specs)
    torch.set_num_threads(max(1, int(trial.get("cpus", 1))))
    config = trial_train_config(trial)
    hyperparams_file = trial.get("hyperparams_file")
    resumed = is_finished(config, hyperparams_file)
    if resumed:
        record = load_record(config)
        metrics = _eval_metrics(record.agent, record.bound)
    else:
        result = train(config, hyperparams_file=hyperparams_file)
        if result.interrupted:
            raise RuntimeError(f"training of {config.run_dir} was interrupted")
        metrics = _eval_metrics(result.agent, result.bound)
    context = ray.get_runtime_context()
    tune.report({
        **metrics,
        "resumed": resumed,
        "run_dir": str(config.run_dir),
        "node_id": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "worker_pid": os.getpid(),
    })


# ---------------------------------------------------------------------------
# Running Tune
# ---------------------------------------------------------------------------
@dataclass
class TrialOutcome:
    """One trial after the sweep: its settings, status, metrics or error."""

    name: str
    algo: str
    seed: int
    preset: str | None
    hp: dict[str, Any]
    phase: str
    status: str  # "ok" or "failed"
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_detail: str | None = None
    attempts: int = 1
    run_dir: str | None = None
    config: TrainConfig | None = None

    @property
    def short_error(self) -> str:
        return _short_error(self.error_detail or self.error or "")


def _short_error(text: str) -> str:
    """The last ``SomethingError: message`` line of a traceback (else its last line)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return line
    return lines[-1] if lines else "unknown error"


def _attempt_counter():
    from ray import tune

    class AttemptCounter(tune.Callback):
        """Count failed attempts per trial (printed as they happen)."""

        def __init__(self, specs: dict[str, dict[str, Any]], verbose: bool):
            self.specs = specs
            self.failures: dict[str, int] = {}
            self.verbose = verbose

        def _failed(self, trial, final: bool) -> None:
            name = trial_name(_full_trial(trial.config, self.specs))
            self.failures[name] = self.failures.get(name, 0) + 1
            if self.verbose:
                what = "giving up" if final else "retrying"
                print(f"[sweep] trial {name} failed (attempt {self.failures[name]}), {what}")

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._failed(trial, final=False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._failed(trial, final=True)

    return AttemptCounter


def _run_tuner(
    trials: list[dict[str, Any]],
    *,
    name: str,
    storage: Path,
    resources: dict[str, float],
    max_failures: int,
    verbose: int,
    search: tuple[Any, dict, int] | None = None,
) -> list[tuple[dict[str, Any], Any, int]]:
    """Run one Tune experiment; returns (trial dict, ray Result, failed attempts) per trial.

    Without ``search`` every trial of ``trials`` runs (a grid).  With ``search`` =
    (searcher, hp domains, num_samples), ``trials`` holds the one template the
    searcher's configurations are trained with.
    """
    from ray import tune

    specs = {trial_name(t): t for t in trials}
    trainable = tune.with_resources(tune.with_parameters(run_trial, specs=specs), resources)
    counter = _attempt_counter()(specs, verbose > 0)
    run_config = tune.RunConfig(
        name=name,
        storage_path=str(storage),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        callbacks=[counter],
        verbose=verbose,
    )

    def label(t) -> str:
        return trial_name(_full_trial(t.config, specs))

    if search is None:
        param_space = {"run": tune.grid_search(list(specs))}
        tune_config = tune.TuneConfig(reuse_actors=True, trial_name_creator=label, trial_dirname_creator=label)
    else:
        searcher, hp_space, num_samples = search
        param_space = {"run": next(iter(specs)), "hp": hp_space}
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=num_samples, reuse_actors=True,
                                      trial_name_creator=label,
                                      trial_dirname_creator=lambda t: f"{label(t)}_{t.trial_id}")
    grid = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config).fit()
    out = []
    for result in grid:
        trial = _full_trial(result.config, specs)
        out.append((trial, result, counter.failures.get(trial_name(trial), 0)))
    return out


def _outcome(trial: dict[str, Any], result: Any, failed_attempts: int, phase: str) -> TrialOutcome:
    config = trial_train_config(trial)
    outcome = TrialOutcome(
        name=trial_name(trial), algo=config.algo, seed=int(config.seed), preset=trial.get("preset"),
        hp=_plain(dict(trial.get("hp") or {})), phase=phase, status="ok", run_dir=str(config.run_dir),
        config=config,
    )
    if result.error is not None:
        outcome.status = "failed"
        outcome.error_detail = str(result.error) or "".join(
            traceback.format_exception_only(type(result.error), result.error))
        outcome.error = _short_error(outcome.error_detail)
        outcome.attempts = failed_attempts
        return outcome
    outcome.attempts = failed_attempts + 1
    outcome.metrics = {k: _plain(v) for k, v in (result.metrics or {}).items()
                       if isinstance(v, (int, float, str, bool, np.generic)) and not k.startswith(("config", "date"))}
    return outcome


# ---------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------
@dataclass
class SweepResult:
    out_dir: Path
    reports: list[Path]
    trials: list[TrialOutcome]
    best_hp: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the Ray nodes of the cluster the sweep ran on (id, address, alive, resources)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "failed"]

    @property
    def succeeded(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "ok"]


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect this process to Ray; returns True if this call connected (the caller shuts down).

    ``address`` (``HOST:PORT`` of a running cluster's head) attaches to that
    cluster.  Without it an embedded local Ray starts with ``num_cpus`` (default:
    the machine's cores).  An existing connection is reused as is.

    Two environment defaults are set before Ray is first imported (Ray reads
    them at import), each only if the user has not set it:

    - embedded: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes Ray bind its
      services to 127.0.0.1 instead of the machine's network address: an
      embedded Ray has no other node, so nothing else should reach it;
    - attaching: ``RAY_AUTH_MODE=token`` when a token is at hand
      (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), the
      way ``ray start`` decides; a cluster started by ``ray start`` with a token
      refuses drivers that do not present it.
    """
    import sys

    if "ray" not in sys.modules:
        if address is None:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        elif "RAY_AUTH_MODE" not in os.environ and (
                os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").exists()):
            os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, include_dashboard=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
    return True


def sweep(
    env_id: str,
    algos: Sequence[str],
    seeds: Sequence[int],
    base_config: TrainConfig | None = None,
    *,
    presets: Sequence[str] | None = None,
    search_space: SearchSpace | str | os.PathLike | None = None,
    num_samples: int | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_failures: int = 1,
    results_root: str | os.PathLike = "results",
    out_dir: str | os.PathLike | None = None,
    command: str | None = None,
    hyperparams_file: str | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run the sweep on Ray Tune and write the report (see the module docstring).

    ``base_config`` supplies everything but environment, algorithm, seed and the
    searched hyperparameters (timesteps, n_envs, evaluation, env_kwargs,
    hyperparams, log_root, baselines).  ``presets`` sets the environment's
    ``params`` per trial.  ``num_cpus`` sizes an embedded Ray (default: all
    cores).  ``verbose`` 0 silences Tune's progress output.
    """
    if not cpus_per_trial > 0:
        raise ValueError(f"cpus_per_trial = {cpus_per_trial!r} is invalid: must be > 0")
    if not gpus_per_trial >= 0:
        raise ValueError(f"gpus_per_trial = {gpus_per_trial!r} is invalid: must be >= 0")
    resources = {"cpu": cpus_per_trial, **({"gpu": gpus_per_trial} if gpus_per_trial else {})}
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"max_failures = {max_failures!r} is invalid: must be an integer >= 0")
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise ValueError(f"num_samples = {num_samples!r} is invalid: must be an integer >= 1")
    if isinstance(search_space, (str, os.PathLike)):
        search_space = load_search_space(search_space)
    base = dataclasses.replace(base_config or TrainConfig(), progress_bar=False)
    # Workers may run elsewhere (another process, another node): absolute paths only.
    base = dataclasses.replace(base, log_root=str(Path(base.log_root).resolve()))
    configs = plan_runs(env_id, algos, seeds, base)
    algos = list(dict.fromkeys(c.algo for c in configs))
    seeds = list(dict.fromkeys(c.seed for c in configs))
    presets = list(presets or [None])
    if len(set(presets)) != len(presets):
        raise ValueError(f"presets = {presets!r} is invalid: entries must be distinct")
    hp_file = str(Path(hyperparams_file).resolve()) if hyperparams_file else None
    results_root = Path(results_root).resolve()
    storage = results_root / env_dirname(env_id) / "ray"

    def make_trial(config: TrainConfig, preset: str | None, hp: dict[str, Any]) -> dict[str, Any]:
        return {"config": dataclasses.asdict(config), "hp": hp, "preset": preset, "base_log_root": base.log_root,
                "hyperparams_file": hp_file, "cpus": cpus_per_trial}

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    started = connect_ray(ray_address, num_cpus)
    import ray

    outcomes: list[TrialOutcome] = []
    best_hp: dict[str, dict[str, Any]] = {}
    try:
        nodes = [{"node_id": n["NodeID"], "address": n["NodeManagerAddress"], "alive": n["Alive"],
                  "resources": n["Resources"]} for n in ray.nodes()]
        # Phase 1 (only with a search space): search each (algorithm, preset) on the first seed.
        if search_space is not None:
            n = num_samples or search_space.num_samples
            sign = 1.0 if search_space.mode == "max" else -1.0
            searched: list[tuple[str, str | None, TrainConfig]] = []
            for algo in algos:
                first = next(c for c in configs if c.algo == algo and c.seed == seeds[0])
                for preset in presets:
                    key = f"{algo}/{preset}" if preset else algo
                    if search_space.has_domains(algo):
                        searched.append((key, preset, first))
                    else:  # constants only: nothing to search
                        best_hp[key] = sample_configurations(search_space, algo, 1, search_space.search_seed)[0]
            runs = []
            if search_space.search == "random" and searched:
                # Random configurations are known in advance: one Tune run holds them all.
                trials = [make_trial(first, preset, hp) for _, preset, first in searched
                          for hp in sample_configurations(search_space, first.algo, n, search_space.search_seed)]
                runs = _run_tuner(trials, name=f"search-{stamp}", storage=storage, resources=resources,
                                  max_failures=max_failures, verbose=verbose)
            elif searched:
                # Optuna learns from the results: one study (one Tune run) per (algorithm, preset).
                for key, preset, first in searched:
                    runs += _run_tuner([make_trial(first, preset, {})], name=f"search-{key.replace('/', '-')}-{stamp}",
                                       storage=storage, resources=resources, max_failures=max_failures,
                                       verbose=verbose, search=_optuna_search(search_space, first.algo, n))
            phase = [_outcome(t, r, k, "search") for t, r, k in runs]
            outcomes += phase
            for key, preset, first in searched:
                scored = [o for o in phase if o.algo == first.algo and o.preset == preset
                          and o.status == "ok" and search_space.metric in o.metrics]
                if scored:
                    best = max(scored, key=lambda o: sign * float(o.metrics[search_space.metric]))
                    best_hp[key] = best.hp
                    if verbose:
                        print(f"[sweep] best {key}: {search_space.metric} = "
                              f"{best.metrics[search_space.metric]:.6g} with {best.hp}")
        # Phase 2 (the sweep itself): every algorithm x seed x preset, at its (best) hyperparameters.
        trials = []
        for config in configs:
            for preset in presets:
                key = f"{config.algo}/{preset}" if preset else config.algo
                if search_space is not None and key not in best_hp:
                    continue  # every search trial failed: nothing to evaluate (listed as failed)
                trials.append(make_trial(config, preset, best_hp.get(key, {})))
        if trials:
            runs = _run_tuner(trials, name=f"sweep-{stamp}", storage=storage,
                              resources=resources, max_failures=max_failures, verbose=verbose)
            seen = {o.name for o in outcomes}
            for t, r, k in runs:
                out = _outcome(t, r, k, "evaluate")
                # The search already trained the best configuration on the first seed.
                if out.name in seen and out.status == "ok":
                    outcomes = [o for o in outcomes if o.name != out.name]
                outcomes.append(out)
    finally:
        if started:
            ray.shutdown()

    if command is None:
        command = f"sweep(env_id={env_id!r}, algos={algos!r}, seeds={seeds!r}, presets={presets!r})"
    if out_dir is None:
        out_dir = results_root / env_dirname(env_id) / f"sweep-{stamp}"
    out_dir = Path(out_dir)
    reports = _write_reports(out_dir, env_id, outcomes, presets, best_hp, search_space, command, nodes)
    result = SweepResult(out_dir=out_dir, reports=reports, trials=outcomes, best_hp=best_hp, nodes=nodes)
    for o in result.failed:
        print(f"[sweep] FAILED {o.name} ({o.phase}, {o.attempts} attempt(s)): {o.error}")
    return result


def _optuna_search(space: SearchSpace, algo: str, num_samples: int):
    """(OptunaSearch, hp domains, num_samples) for one (algorithm, preset)."""
    from ray.tune.search.optuna import OptunaSearch

    hp_space = {name: to_tune_domain(spec, f"space.{algo}.{name}") for name, spec in space.params_for(algo).items()}
    searcher = OptunaSearch(metric=space.metric, mode=space.mode, seed=space.search_seed)
    return searcher, hp_space, num_samples


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _sweep_section(outcomes: Sequence[TrialOutcome], best_hp: dict, search_space: SearchSpace | None) -> list[str]:
    L = ["", "## Sweep (Ray Tune)", ""]
    ok = [o for o in outcomes if o.status == "ok"]
    failed = [o for o in outcomes if o.status == "failed"]
    L.append(f"{len(outcomes)} trial(s): {len(ok)} finished, {len(failed)} failed.")
    if search_space is not None:
        L += ["", f"Search: {search_space.search}, metric `{search_space.metric}` ({search_space.mode}), "
                  "configurations tried on the first seed; the best one of each algorithm was trained on every seed.",
              "", "| algorithm/preset | best hyperparameters |", "|---|---|"]
        L += [f"| {k} | `{json.dumps(v, sort_keys=True)}` |" for k, v in best_hp.items()]
        if search_space.source:
            L += ["", "Search-space file:", "", "```yaml", search_space.source.rstrip(), "```"]
    L += ["", "### Trials", "", "| trial | phase | status | attempts | mean return | resumed | node | run directory |",
          "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        ret = _fmt(o.metrics.get("mean_return", "–")) if o.status == "ok" else "–"
        node = str(o.metrics.get("node_id", "–"))[:12]
        L.append(f"| {o.name} | {o.phase} | {o.status} | {o.attempts} | {ret} | {o.metrics.get('resumed', '–')} "
                 f"| {node} | `{o.run_dir}` |")
    if any(o.hp for o in outcomes):
        L += ["", "### Hyperparameters of the trials", "", "| trial | hyperparameters |", "|---|---|"]
        L += [f"| {o.name} | `{json.dumps(o.hp, sort_keys=True)}` |" for o in outcomes if o.hp]
    L += ["", "### Failed trials", ""]
    if failed:
        L += ["| trial | phase | attempts | error |", "|---|---|---|---|"]
        for o in failed:
            L.append(f"| {o.name} | {o.phase} | {o.attempts} | `{o.error.replace('|', '/')}` |")
    else:
        L.append("None.")
    L.append("")
    return L


def _write_reports(out_dir: Path, env_id: str, outcomes: list[TrialOutcome], presets: list[str | None],
                   best_hp: dict, search_space: SearchSpace | None, command: str,
                   nodes: list[dict[str, Any]]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for preset in presets:
        mine = [o for o in outcomes if o.preset == preset]
        target = out_dir / preset if (preset and len(presets) > 1) else out_dir
        final = [o for o in mine if o.status == "ok" and o.phase == "evaluate"]
        records = []
        for o in final:
            records.append(load_record(o.config, label=o.algo))
        title_env = f"{env_id} (preset {preset})" if preset else env_id
        if records:
            report = write_report(target, title_env, records, command)
            text = report.read_text()
        else:
            target.mkdir(parents=True, exist_ok=True)
            report = target / "report.md"
            text = (f"# {title_env}: sweep\n\nNo trial finished, so there is nothing to compare.\n\n"
                    f"Command:\n\n```\n{command}\n```\n")
        text += "\n".join(_sweep_section(mine, {k: v for k, v in best_hp.items()
                                                  if preset is None or k.endswith("/" + preset)}, search_space))
        report.write_text(text)
        reports.append(report)
    with open(out_dir / "sweep.json", "w") as f:
        json.dump({"env_id": env_id, "command": command, "best_hyperparams": best_hp, "ray_nodes": nodes,
                   "trials": [{k: v for k, v in dataclasses.asdict(o).items() if k != "config"} for o in outcomes]},
                  f, indent=2, default=str)
    return reports
