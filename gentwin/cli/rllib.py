"""The ``rllib`` subcommand: its flags (:func:`build_rllib_parser`) and :func:`cmd_rllib`.

Parses the flags into a :class:`~gentwin.rllib.RllibConfig` and calls
:func:`gentwin.rllib.train_rllib`.
"""

from __future__ import annotations

from gentwin.cli import parse_kv
from gentwin.envs import PARALLEL_ENVIRONMENTS
from gentwin.rllib import POLICY_MODES, RllibConfig, train_rllib

__all__ = ["build_rllib_parser", "cmd_rllib"]


def cmd_rllib(args) -> int:
    import torch

    torch.set_num_threads(1)  # small MLPs: one thread is fastest
    config = RllibConfig(
        env_id=args.env, iterations=args.iterations, seed=args.seed,
        env_kwargs=parse_kv(args.env_kwarg, "--env-kwarg"), policies=args.policies,
        train_batch_size=args.train_batch_size, minibatch_size=args.minibatch_size, num_epochs=args.num_epochs,
        lr=args.lr, gamma=args.gamma, num_env_runners=args.num_env_runners, log_root=args.log_root,
        eval_episodes=args.eval_episodes,
    )
    print(f"RLlib multi-agent PPO ({config.policies} policies) on {config.env_id} for {config.iterations} "
          f"iterations of {config.train_batch_size} env steps -> {config.run_dir}")
    result = train_rllib(config, ray_address=args.ray_address)
    if result.eval_episodes:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"RLlib PPO, {len(result.eval_episodes)} held-out episodes")
        table.add_column("metric")
        table.add_column("mean", justify="right")
        for key, value in result.eval_summary().items():
            table.add_row(key, f"{value:.4g}")
        Console(width=120).print(table)
    print(f"checkpoint: {result.checkpoint_dir}\nTensorBoard: tensorboard --logdir {config.log_root}")
    return 0


def build_rllib_parser(sub) -> None:
    """Add the ``rllib`` subcommand to the ``train.py`` parser."""
    p = sub.add_parser("rllib", help="multi-agent PPO with RLlib on a PettingZoo environment")
    p.add_argument("--env", default="gentwin/TaskOffloading-ma-v0",
                   help=f"PettingZoo id, one of {sorted(PARALLEL_ENVIRONMENTS)} (default: %(default)s)")
    p.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE", help="environment parameter; repeatable")
    p.add_argument("--iterations", type=int, default=20, help="PPO iterations (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", choices=POLICY_MODES, default="shared",
                   help="one policy shared by all agents, or one per agent (default: %(default)s)")
    p.add_argument("--train-batch-size", type=int, default=2000, help="env steps per iteration (default: %(default)s)")
    p.add_argument("--minibatch-size", type=int, default=128)
    p.add_argument("--num-epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--num-env-runners", type=int, default=0, help="remote sampling actors (0: sample in-process)")
    p.add_argument("--eval-episodes", type=int, default=8, help="greedy held-out episodes at the end")
    p.add_argument("--log-root", default="runs", help="TensorBoard/CSV/checkpoint root (default: %(default)s)")
    p.add_argument("--ray-address", metavar="ADDR", help="attach to a running Ray cluster; default: embedded Ray")
    p.set_defaults(func=cmd_rllib)
