"""Command line of gentwin (``python train.py ...`` or ``gentwin-train ...``).

``python train.py`` with no arguments is the embedded default: a short
MaskablePPO run on AspSelection-v0 that ends with a table of the agent against
the baselines.  Subcommands::

    train.py [train] --env ID --algo NAME --timesteps N --n-envs B --seed S
    train.py evaluate --env ID --algo NAME --model runs/.../model.zip

Layout: everything ``argparse`` is in this package, which imports the library
(:mod:`gentwin.training`, :mod:`gentwin.evaluation`, :mod:`gentwin.compare`,
:mod:`gentwin.sweep`, :mod:`gentwin.rllib`) and is imported by none of it.

- this module: the run flags shared by train, compare and sweep
  (:func:`add_run_arguments`), their translation into a
  :class:`~gentwin.training.TrainConfig` (:func:`resolve_run_keys`,
  :func:`config_from_args`), small parsing helpers (:func:`parse_kv`,
  :func:`split_list`, :func:`command_line`), the ``train`` and ``evaluate``
  subcommands, and :func:`build_parser` / :func:`main`;
- :mod:`gentwin.cli.compare`, :mod:`gentwin.cli.sweep`,
  :mod:`gentwin.cli.rllib`: one subcommand each (its flags and ``cmd_*``).

The subcommand modules import the shared flags from here; :data:`COMMANDS`
names them as ``module:function`` and :func:`build_parser` imports them, so ``import
gentwin.cli`` alone loads none of them.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: the ``train.py --help`` description
DESCRIPTION = """\
Command line of gentwin (``python train.py ...`` or ``gentwin-train ...``).

``python train.py`` with no arguments is the embedded default: a short
MaskablePPO run on AspSelection-v0 that ends with a table of the agent against
the baselines.  Subcommands::

    train.py [train] --env ID --algo NAME --timesteps N --n-envs B --seed S
    train.py evaluate --env ID --algo NAME --model runs/.../model.zip
"""

DEFAULT_ENV = "gentwin/AspSelection-v0"
DEFAULT_ALGO = "maskable_ppo"
DEFAULT_TIMESTEPS = 60_000


def parse_kv(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``key=value`` pairs, values parsed as YAML scalars (``lr=3e-4`` -> float)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"{flag} {item!r} is invalid: expected key=value")
        key, value = item.split("=", 1)
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and _FLOAT.fullmatch(parsed):
            # YAML 1.1 reads exponent floats without a dot ("1e-3") as strings.
            parsed = float(parsed)
        out[key] = parsed
    return out


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


#: the old private name (``benchmarks/reproduce.py`` and older scripts import it)
_parse_kv = parse_kv


def split_list(text: str | None, flag: str) -> list[str]:
    """A comma-separated flag value as a list (``None``: the flag was not given, ``[]``)."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    if text is not None and not items:
        raise SystemExit(f"{flag} {text!r} is invalid: expected a comma-separated list")
    return items


def command_line(subcommand: str, options: Sequence[tuple[str, Any]]) -> str:
    """``python train.py SUBCOMMAND`` with ``options`` spelled out, shell-quoted.

    Each option is ``(flag, value)``: ``None`` leaves the flag out, a list repeats
    it once per item, anything else is written with ``str``.  Used for the
    report's command, which reproduces the run whatever the defaults.
    """
    parts = ["python", "train.py", subcommand]
    for flag, value in options:
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            parts += [flag, str(item)]
    return " ".join(shlex.quote(p) for p in parts)


def add_run_arguments(parser: argparse.ArgumentParser, run_keys_from_hyperparams: bool = False) -> None:
    """Arguments shared by train, compare and sweep.

    With ``run_keys_from_hyperparams`` (``train``), ``--timesteps`` and ``--n-envs``
    default to the hyperparameter file's ``n_timesteps`` / ``n_envs`` for the chosen
    id and algorithm (see :func:`resolve_run_keys`), as in RL Zoo.
    """
    parser.add_argument("--env", default=DEFAULT_ENV, help="environment id (default: %(default)s)")
    parser.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE",
                        help="environment parameter or preset (params=reference); repeatable")
    if run_keys_from_hyperparams:
        parser.add_argument("--timesteps", type=int, default=None,
                            help="environment steps per run (default: the hyperparameter file's n_timesteps, "
                                 f"else {DEFAULT_TIMESTEPS})")
        parser.add_argument("--n-envs", type=int, default=None,
                            help="batch size B of the training env (default: the hyperparameter file's n_envs, "
                                 "else 8)")
    else:
        parser.add_argument("--timesteps", type=int, default=DEFAULT_TIMESTEPS, help="environment steps per run")
        parser.add_argument("--n-envs", type=int, default=8, help="batch size B of the training env")
    parser.add_argument("--eval-freq", type=int, default=20_000, help="steps between evaluations (0: final only)")
    parser.add_argument("--eval-episodes", type=int, default=8, help="held-out episodes per evaluation")
    parser.add_argument("--log-root", default="runs", help="TensorBoard/CSV/model root (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda")
    parser.add_argument("--hyperparams", metavar="FILE", help="RL-Zoo style YAML (env id -> algorithm kwargs)")
    parser.add_argument("--hp", action="append", metavar="KEY=VALUE", help="algorithm kwarg override; repeatable")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def resolve_run_keys(args: argparse.Namespace, algo: str) -> tuple[int, int, dict[str, Any]]:
    """``(timesteps, n_envs, env_kwargs)`` of a run: flags first, then the hyperparameter file.

    Precedence, as in RL Zoo: an explicit ``--timesteps`` / ``--n-envs`` wins; otherwise
    the file's ``n_timesteps`` / ``n_envs`` entry for ``(--env, algo)`` (the packaged
    ``gentwin/hyperparams/<algo>.yml`` unless ``--hyperparams`` names one); otherwise
    ``DEFAULT_TIMESTEPS`` and 8.  The file's ``env_kwargs`` are the base that
    ``--env-kwarg`` pairs override one by one.
    """
    from gentwin.training import load_hyperparams, split_hyperparams

    run, _ = split_hyperparams(load_hyperparams(algo, args.env, getattr(args, "hyperparams", None)))
    timesteps = args.timesteps if args.timesteps is not None else int(run.get("n_timesteps", DEFAULT_TIMESTEPS))
    n_envs = args.n_envs if args.n_envs is not None else int(run.get("n_envs", 8))
    file_env_kwargs = run.get("env_kwargs") or {}
    if not isinstance(file_env_kwargs, dict):
        raise SystemExit(f"env_kwargs = {file_env_kwargs!r} in the hyperparameter file is invalid: expected a mapping")
    env_kwargs = {**file_env_kwargs, **parse_kv(args.env_kwarg, "--env-kwarg")}
    return timesteps, n_envs, env_kwargs


def config_from_args(args: argparse.Namespace, algo: str, seed: int):
    """The :class:`~gentwin.training.TrainConfig` of the run flags (:func:`add_run_arguments`) for ``algo``, ``seed``."""
    from gentwin.training import TrainConfig

    timesteps, n_envs, env_kwargs = resolve_run_keys(args, algo)
    return TrainConfig(
        env_id=args.env,
        algo=algo,
        timesteps=timesteps,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        hyperparams=parse_kv(args.hp, "--hp"),
        log_root=args.log_root,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        device=args.device,
        progress_bar=not args.no_progress,
    )


#: the old private name
_config_from_args = config_from_args


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = ["policy", "mean_return", "std_return", "crash_rate", "share_of_bound"]
    columns = [c for c in columns if any(c in r for r in rows)]
    for c in columns:
        table.add_column(c.replace("_", " "), justify="left" if c == "policy" else "right")
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        table.add_row(*cells)
    Console(width=120).print(table)


def print_bound(bound: Any) -> None:
    """One line naming the reference of the share column (or saying there is none)."""
    if bound is None:
        print("share of bound: none (no exact optimum or certified upper bound for this environment)")
    else:
        print(f"share of bound = mean return / mean {bound.name} ({bound.kind}) over the same episodes")


def cmd_train(args: argparse.Namespace) -> int:
    from gentwin.training import train

    config = config_from_args(args, args.algo, args.seed)
    print(f"training {config.algo} on {config.env_id} for {config.timesteps} steps "
          f"(B={config.n_envs}, seed={config.seed}) -> {config.run_dir}")
    result = train(config, hyperparams_file=args.hyperparams)
    if result.interrupted:
        print(f"interrupted: saved the model trained so far to {result.model_path}")
    print_table(result.table_rows(),
                f"{config.env_id}: {config.algo} vs baselines, {config.eval_episodes} held-out episodes")
    print_bound(result.bound)
    print(f"model: {result.model_path}\nTensorBoard: tensorboard --logdir {config.log_root}")
    return 0


def _saved_env_kwargs(model_path: str) -> dict[str, Any]:
    """The ``env_kwargs`` of the run that wrote ``model_path`` (its ``config.yaml``), if any.

    A model trained on an environment option (e.g. a hyperparameter file's
    ``env_kwargs``) is evaluated on the same option unless ``--env-kwarg`` overrides it.
    """
    import yaml
    from pathlib import Path

    config_path = Path(model_path).with_name("config.yaml")
    if not config_path.exists():
        return {}
    with open(config_path) as f:
        saved = yaml.safe_load(f) or {}
    return dict(saved.get("env_kwargs") or {})


def cmd_evaluate(args: argparse.Namespace) -> int:
    from gentwin.training import TrainConfig, comparison_rows, evaluate, evaluate_baselines, load_model

    config = TrainConfig(env_id=args.env, algo=args.algo, eval_episodes=args.eval_episodes,
                         env_kwargs={**_saved_env_kwargs(args.model), **parse_kv(args.env_kwarg, "--env-kwarg")},
                         baselines="all" if args.baselines else [])
    model = load_model(args.algo, args.model, device=args.device)
    results = {args.algo: evaluate(model, config)}
    baselines, bound = evaluate_baselines(config)
    results.update(baselines)
    print_table(comparison_rows(results, bound), f"{args.env}: {args.model}")
    print_bound(bound)
    return 0


def _build_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one agent (the default command)")
    add_run_arguments(p, run_keys_from_hyperparams=True)
    p.add_argument("--algo", default=DEFAULT_ALGO, help="algorithm (see gentwin.agents.ALGORITHMS)")
    p.add_argument("--seed", type=int, default=0, help="training seed (instances get seed .. seed+B-1)")
    p.set_defaults(func=cmd_train)


def _build_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a saved model against the baselines")
    p.add_argument("--env", default=DEFAULT_ENV)
    p.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE")
    p.add_argument("--algo", required=True)
    p.add_argument("--model", required=True, help="path of a saved model.zip")
    p.add_argument("--eval-episodes", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-baselines", dest="baselines", action="store_false")
    p.set_defaults(func=cmd_evaluate)


#: subcommand name -> function adding its parser, or ``"module:function"`` naming one
COMMANDS: dict[str, Callable | str] = {
    "train": _build_train_parser,
    "evaluate": _build_evaluate_parser,
    "compare": "gentwin.cli.compare:build_compare_parser",
    "sweep": "gentwin.cli.sweep:build_sweep_parser",
    "rllib": "gentwin.cli.rllib:build_rllib_parser",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    for build in COMMANDS.values():
        if isinstance(build, str):
            module, _, name = build.partition(":")
            build = getattr(importlib.import_module(module), name)
        build(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No subcommand (or only options): the train command.
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train", *argv]
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
