"""The ``compare`` subcommand: its flags (:func:`build_compare_parser`) and :func:`cmd_compare`.

Parses the flags into a :class:`~gentwin.training.TrainConfig` and plain
arguments and calls :func:`gentwin.compare.compare`; the table it prints is
:func:`gentwin.report.print_summary`.
"""

from __future__ import annotations

from typing import Any

from gentwin.cli import add_run_arguments, command_line, config_from_args, parse_kv, split_list
from gentwin.compare import compare, parse_algo_spec, print_summary

__all__ = ["build_compare_parser", "cmd_compare"]


def _canonical_command(args, seeds: list[int], algos: list[str]) -> str:
    """The compare command with every option explicit (reproduces the run whatever the defaults)."""
    return command_line("compare", [
        ("--env", args.env), ("--algos", ",".join(algos)), ("--baselines", args.baselines),
        ("--seeds", ",".join(map(str, seeds))), ("--timesteps", args.timesteps), ("--n-envs", args.n_envs),
        ("--eval-freq", args.eval_freq), ("--eval-episodes", args.eval_episodes), ("--log-root", args.log_root),
        ("--results-root", args.results_root), ("--device", args.device),
        ("--env-kwarg", args.env_kwarg or []), ("--hp", args.hp or []), ("--algo-hp", args.algo_hp or []),
        ("--hyperparams", args.hyperparams or None),
    ])


def cmd_compare(args) -> int:
    import torch

    torch.set_num_threads(1)  # small MLPs: one thread is fastest and leaves the other cores alone
    try:
        seeds = [int(s) for s in split_list(args.seeds, "--seeds")]
    except ValueError:
        raise SystemExit(f"--seeds {args.seeds!r} is invalid: expected comma-separated integers") from None
    algos = split_list(args.algos, "--algos")
    if args.baselines.strip().lower() == "all":
        baselines: Any = "all"
    elif args.baselines.strip().lower() == "none":
        baselines = []
    else:
        baselines = split_list(args.baselines, "--baselines")
    algo_hp: dict[str, dict] = {}
    for item in args.algo_hp or []:
        label, sep, kv = item.partition(":")
        if not sep or "=" not in kv:
            raise SystemExit(f"--algo-hp {item!r} is invalid: expected LABEL:KEY=VALUE")
        algo_hp.setdefault(label, {}).update(parse_kv([kv], "--algo-hp"))
    base = config_from_args(args, parse_algo_spec(algos[0])[1], seeds[0])
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
