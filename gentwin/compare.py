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

Statistics (:mod:`gentwin.stats`)
---------------------------------
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

Layout
------
This module only runs the comparison (:func:`compare`: plan, skip finished
runs, train, report).  The jobs around it live in one module each:

- :mod:`gentwin.records`: planning runs (:func:`plan_runs`,
  :func:`plan_variants`), :func:`is_finished`, :func:`load_record` and
  :class:`RunRecord`;
- :mod:`gentwin.stats`: t-intervals, per-policy summaries, shares of the bound;
- :mod:`gentwin.plots`: the two PNG plots;
- :mod:`gentwin.report`: ``report.md``, ``summary.json`` and the console table
  (:func:`write_report`, :func:`print_summary`);
- :mod:`gentwin.progress`: the progress bars;
- :mod:`gentwin.cli.compare`: the ``compare`` flags and their parsing.

The names used elsewhere are re-exported here.  The sweep
(:mod:`gentwin.sweep`) uses the same records and report; a :class:`RunRecord`
may carry a ``label`` (e.g. a trial name) that replaces the algorithm name in
the tables.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from gentwin.progress import CompareProgress
from gentwin.records import (MATCH_FIELDS, RunRecord, is_finished, load_record, parse_algo_spec, plan_runs,
                             plan_variants)
from gentwin.report import print_summary, write_report
from gentwin.stats import Stat, t_interval
from gentwin.training import TrainConfig, env_dirname, train

__all__ = [
    "MATCH_FIELDS",
    "CompareResult",
    "RunRecord",
    "Stat",
    "check_algorithms",
    "compare",
    "is_finished",
    "load_record",
    "parse_algo_spec",
    "plan_runs",
    "plan_variants",
    "print_summary",
    "t_interval",
    "write_report",
]


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
    with CompareProgress(sum(configs[i].timesteps for i in todo), len(todo), len(skipped), enabled=enabled) as bar:
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
