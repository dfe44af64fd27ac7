"""Environment throughput: the native batched vector env against Gymnasium's
SyncVectorEnv of single envs, side by side in one run, plus memory over a long run.

    python benchmarks/throughput.py                       # AspSelection-v0, B = 1, 64, 1024
    python benchmarks/throughput.py --env gentwin/RisIsac-v0 --batch-sizes 1 256
    python benchmarks/throughput.py --quick               # shorter timings
    python benchmarks/throughput.py --env gentwin/TaskOffloading-v0 --env-kwarg params=large --batch-sizes 256

Steps/s counts environment steps (a batch step of B instances is B steps).
Actions are drawn before timing, so only the environment is measured.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import gentwin  # noqa: F401
from gentwin.envs import make_sb3_vec_env


def random_actions(space: spaces.Space, n_steps: int, batch: int | None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n_steps,) if batch is None else (n_steps, batch)
    if isinstance(space, spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=shape)
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(space.start, space.start + space.nvec, size=(*shape, *space.shape))
    if isinstance(space, spaces.MultiBinary):
        return rng.integers(0, 2, size=(*shape, *space.shape))
    return rng.uniform(space.low, space.high, size=(*shape, *space.shape)).astype(space.dtype)


def time_batched_steps(step, actions: np.ndarray, batch: int, min_seconds: float) -> float:
    """Environment steps/s of ``step(batch_actions)``, cycling through ``actions``."""
    steps, start = 0, time.perf_counter()
    while True:
        for k in range(len(actions)):
            step(actions[k])
        steps += len(actions)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps * batch / elapsed


def time_vector_env(env, batch: int, min_seconds: float) -> float:
    """Steps/s of a Gymnasium VectorEnv with SAME_STEP autoreset."""
    env.reset(seed=0)
    return time_batched_steps(env.step, random_actions(env.single_action_space, 256, batch), batch, min_seconds)


def time_single_env(env, min_seconds: float) -> float:
    env.reset(seed=0)
    actions = random_actions(env.action_space, 4096, None)
    steps, start = 0, time.perf_counter()
    while True:
        for k in range(4096):
            _, _, term, trunc, _ = env.step(actions[k])
            if term or trunc:
                env.reset()
        steps += 4096
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps / elapsed


def time_sb3_vec_env(env_id: str, batch: int, min_seconds: float, env_kwargs: dict) -> float:
    venv = make_sb3_vec_env(env_id, num_envs=batch, seed=0, **env_kwargs)
    venv.reset()
    return time_batched_steps(venv.step, random_actions(venv.action_space, 256, batch), batch, min_seconds)


def rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc), peak RSS elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_over_long_run(env_id: str, batch: int, batch_steps: int, env_kwargs: dict) -> tuple[float, float, float]:
    """RSS after warm-up, after a long run, and the growth per 1,000 episodes ended."""
    env = gym.make_vec(env_id, num_envs=batch, **env_kwargs)
    env.reset(seed=0)
    actions = random_actions(env.single_action_space, 256, batch)
    episodes = 0
    for k in range(batch_steps // 10):  # warm-up: allocate everything once
        env.step(actions[k % 256])
    gc.collect()
    before = rss_mib()
    for k in range(batch_steps):
        _, _, term, trunc, _ = env.step(actions[k % 256])
        episodes += int(np.sum(term | trunc))
    gc.collect()
    after = rss_mib()
    return before, after, (after - before) / max(episodes, 1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="gentwin/AspSelection-v0")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="environment parameter or preset (params=large); repeatable")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per measurement")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, shorter memory run")
    parser.add_argument("--memory-steps", type=int, default=20_000, help="batch steps of the memory run")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    import yaml

    kw = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.env_kwarg)}
    memory_steps = min(3_000, args.memory_steps) if args.quick else args.memory_steps

    print(f"# gentwin throughput: {args.env} {kw or ''}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}, gymnasium {gym.__version__}")
    single = time_single_env(gym.make(args.env, **kw).unwrapped, seconds)
    wrapped = time_single_env(gym.make(args.env, **kw), seconds)
    print(f"single env (unwrapped): {single:,.0f} steps/s")
    print(f"single env (gym.make, with checker wrappers): {wrapped:,.0f} steps/s")
    print()
    header = f"{'B':>6} | {'native VectorEnv':>18} | {'SyncVectorEnv':>15} | {'native / sync':>13} | {'SB3 VecEnv view':>16}"
    print(header)
    print("-" * len(header))
    for batch in args.batch_sizes:
        native = time_vector_env(gym.make_vec(args.env, num_envs=batch, **kw), batch, seconds)
        sync_env = SyncVectorEnv([lambda: gym.make(args.env, **kw) for _ in range(batch)],
                                 autoreset_mode=AutoresetMode.SAME_STEP)
        sync = time_vector_env(sync_env, batch, seconds)
        sb3 = time_sb3_vec_env(args.env, batch, seconds, kw)
        print(f"{batch:>6} | {native:>18,.0f} | {sync:>15,.0f} | {native / sync:>12.1f}x | {sb3:>16,.0f}")
    batch = max(args.batch_sizes)
    before, after, per_k = memory_over_long_run(args.env, batch, memory_steps, kw)
    print()
    print(f"memory, native B={batch}, {memory_steps:,} batch steps: RSS {before:.1f} MiB -> {after:.1f} MiB "
          f"({per_k:+.3f} MiB per 1,000 episodes)")


if __name__ == "__main__":
    main()
