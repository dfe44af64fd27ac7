"""The ``sweep`` subcommand: its flags (:func:`build_sweep_parser`) and :func:`cmd_sweep`.

Parses the flags into a :class:`~gentwin.training.TrainConfig` and plain
arguments and calls :func:`gentwin.sweep.sweep`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gentwin.cli import add_run_arguments, command_line, config_from_args, split_list
from gentwin.sweep import sweep

__all__ = ["build_sweep_parser", "cmd_sweep"]


def _canonical_command(args, algos: list[str], seeds: list[int]) -> str:
    """The sweep command with every option explicit."""
    return command_line("sweep", [
        ("--env", args.env), ("--algos", ",".join(algos)), ("--seeds", ",".join(map(str, seeds))),
        ("--timesteps", args.timesteps), ("--n-envs", args.n_envs), ("--eval-freq", args.eval_freq),
        ("--eval-episodes", args.eval_episodes), ("--baselines", args.baselines), ("--log-root", args.log_root),
        ("--results-root", args.results_root), ("--cpus-per-trial", args.cpus_per_trial),
        ("--gpus-per-trial", args.gpus_per_trial), ("--max-failures", args.max_failures), ("--device", args.device),
        ("--presets", args.presets), ("--search-space", args.search_space), ("--num-samples", args.num_samples),
        ("--ray-address", args.ray_address), ("--hyperparams", args.hyperparams),
        ("--env-kwarg", args.env_kwarg or []), ("--hp", args.hp or []),
    ])


def cmd_sweep(args) -> int:
    algos = split_list(args.algos, "--algos")
    try:
        seeds = [int(s) for s in split_list(args.seeds, "--seeds")]
    except ValueError:
        raise SystemExit(f"--seeds {args.seeds!r} is invalid: expected comma-separated integers") from None
    base = config_from_args(args, algos[0], seeds[0])
    if args.baselines.strip().lower() == "none":
        base = dataclasses.replace(base, baselines=[])
    elif args.baselines.strip().lower() != "all":
        base = dataclasses.replace(base, baselines=split_list(args.baselines, "--baselines"))
    result = sweep(
        args.env, algos, seeds, base,
        presets=split_list(args.presets, "--presets") if args.presets else None,
        search_space=args.search_space, num_samples=args.num_samples, ray_address=args.ray_address,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, max_failures=args.max_failures,
        results_root=args.results_root,
        command=_canonical_command(args, algos, seeds),
        hyperparams_file=args.hyperparams, verbose=0 if args.no_progress else 1,
    )
    print(f"{len(result.succeeded)} trial(s) finished, {len(result.failed)} failed")
    for report in result.reports:
        print(f"report: {report}")
    print(f"TensorBoard: tensorboard --logdir {Path(base.log_root).resolve()}")
    return 1 if result.failed else 0


def build_sweep_parser(sub) -> None:
    """Add the ``sweep`` subcommand to the ``train.py`` parser."""
    p = sub.add_parser("sweep", help="algorithms x seeds x presets x hyperparameters as Ray Tune trials")
    add_run_arguments(p)
    p.add_argument("--algos", default="ppo,maskable_ppo", help="comma-separated algorithms (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: %(default)s)")
    p.add_argument("--presets", help="comma-separated parameter presets of the environment (env kwarg params)")
    p.add_argument("--baselines", default="all", help="'all', 'none' or comma-separated baseline names")
    p.add_argument("--search-space", metavar="FILE", help="YAML hyperparameter search space (see docs/ray.md)")
    p.add_argument("--num-samples", type=int, help="configurations per (algorithm, preset) in a search")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="attach to a running Ray cluster (HOST:PORT); default: start an embedded local Ray")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs reserved by each trial (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs reserved by each trial (default: 0; use with --device cuda or auto)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial (default: 1)")
    p.add_argument("--results-root", default="results", help="report root (default: %(default)s)")
    p.set_defaults(func=cmd_sweep)
