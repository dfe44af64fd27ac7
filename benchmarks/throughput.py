"""Environment throughput: the native batched vector env against Gymnasium's
SyncVectorEnv of single envs, side by side in one run, plus memory over a long run.

    python benchmarks/throughput.py                       # AspSelection-v0, B = 1, 64, 1024
    python benchmarks/throughput.py --env gentwin/RisIsac-v0 --batch-sizes 1 256
    python benchmarks/throughput.py --quick               # shorter timings
    python benchmarks/throughput.py --env gentwin/TaskOffloading-v0 --env-kwarg params=large --batch-sizes 256

Steps/s counts environment steps (a batch step of B instances is B steps).
Actions are drawn before timing, so only the environment is measured.  Every
timing reports wall-clock steps/s and CPU-time steps/s (``time.process_time``):
on a machine shared with other work the wall clock measures the load as much as
the code, the CPU time far less; the load average (``os.getloadavg``) is printed
with the results.  Run it with ``OMP_NUM_THREADS=1`` (printed too) so BLAS
threads do not compete.

Memory: RSS is read after a warm-up in which every instance has finished at least
two episodes (so the reset path's allocations are made), then at checkpoints over
the long run; the growth per 1,000 episodes is the least-squares slope of RSS
against episodes ended, not the difference of two readings.  (A warm-up shorter
than one episode counts the first resets' allocations as growth: the earlier
"3.6 MiB per 1,000 episodes" of the TaskOffloading ``large`` preset was that.)
``--json PATH`` writes the run record.
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


def time_batched_steps(step, actions: np.ndarray, batch: int, min_seconds: float) -> tuple[float, float]:
    """Environment steps/s (wall clock, CPU time) of ``step(batch_actions)``, cycling through ``actions``."""
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        for k in range(len(actions)):
            step(actions[k])
        steps += len(actions)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps * batch / elapsed, steps * batch / max(time.process_time() - cpu, 1e-9)


def time_vector_env(env, batch: int, min_seconds: float) -> tuple[float, float]:
    """Steps/s (wall, CPU) of a Gymnasium VectorEnv."""
    env.reset(seed=0)
    return time_batched_steps(env.step, random_actions(env.single_action_space, 256, batch), batch, min_seconds)


def time_single_env(env, min_seconds: float) -> tuple[float, float]:
    env.reset(seed=0)
    actions = random_actions(env.action_space, 4096, None)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        for k in range(4096):
            _, _, term, trunc, _ = env.step(actions[k])
            if term or trunc:
                env.reset()
        steps += 4096
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps / elapsed, steps / max(time.process_time() - cpu, 1e-9)


def time_sb3_vec_env(env_id: str, batch: int, min_seconds: float, env_kwargs: dict) -> tuple[float, float]:
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


def memory_over_long_run(env_id: str, batch: int, batch_steps: int, env_kwargs: dict,
                         checkpoints: int = 10) -> dict:
    """RSS after a warm-up of two episodes per instance, over a long run, and its slope.

    Returns the readings (episodes ended, RSS MiB) and ``per_1000_episodes``, the
    least-squares slope of RSS against episodes.
    """
    env = gym.make_vec(env_id, num_envs=batch, **env_kwargs)
    env.reset(seed=0)
    actions = random_actions(env.single_action_space, 256, batch)
    finished = np.zeros(batch, dtype=np.int64)
    k = 0
    while finished.min() < 2:  # warm-up: every instance has reset at least twice
        _, _, term, trunc, _ = env.step(actions[k % 256])
        finished += term | trunc
        k += 1
    warmup_steps = k
    gc.collect()
    readings = [(0, rss_mib())]
    episodes = 0
    every = max(1, batch_steps // checkpoints)
    for k in range(batch_steps):
        _, _, term, trunc, _ = env.step(actions[k % 256])
        episodes += int(np.sum(term | trunc))
        if (k + 1) % every == 0:
            gc.collect()
            readings.append((episodes, rss_mib()))
    x = np.array([e for e, _ in readings], dtype=np.float64)
    y = np.array([r for _, r in readings])
    slope = float(np.polyfit(x, y, 1)[0]) * 1000 if np.ptp(x) > 0 else float("nan")
    return {"warmup_batch_steps": warmup_steps, "batch_steps": batch_steps, "episodes": episodes,
            "readings": readings, "rss_before_mib": readings[0][1], "rss_after_mib": readings[-1][1],
            "per_1000_episodes": slope}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="gentwin/AspSelection-v0")
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="environment parameter or preset (params=large); repeatable")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timing per measurement")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, shorter memory run")
    parser.add_argument("--memory-steps", type=int, default=20_000, help="batch steps of the memory run")
    parser.add_argument("--memory-batch", type=int, default=None, help="B of the memory run (default: largest)")
    parser.add_argument("--no-sb3", action="store_true", help="skip the SB3 view")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the run record here")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    import yaml

    kw = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.env_kwarg)}
    memory_steps = min(3_000, args.memory_steps) if args.quick else args.memory_steps
    record: dict = {
        "env": args.env, "env_kwargs": kw, "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "numpy": np.__version__, "gymnasium": gym.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_start": os.getloadavg(),
        "seconds": seconds, "rows": [],
    }
    print(f"# gentwin throughput: {args.env} {kw or ''}")
    print(f"# {record['machine']}, python {record['python']}, numpy {record['numpy']}, "
          f"gymnasium {record['gymnasium']}, OMP_NUM_THREADS={record['omp_num_threads']}")
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in record['load_average_start'])}")
    single = time_single_env(gym.make(args.env, **kw).unwrapped, seconds)
    wrapped = time_single_env(gym.make(args.env, **kw), seconds)
    record["single_env"] = {"wall": single[0], "cpu": single[1]}
    record["single_env_gym_make"] = {"wall": wrapped[0], "cpu": wrapped[1]}
    print(f"single env (unwrapped): {single[0]:,.0f} steps/s wall, {single[1]:,.0f} CPU")
    print(f"single env (gym.make, with checker wrappers): {wrapped[0]:,.0f} steps/s wall, {wrapped[1]:,.0f} CPU")
    print()
    header = (f"{'B':>6} | {'native VectorEnv':>18} | {'SyncVectorEnv':>15} | {'native / sync':>13} | "
              f"{'native / sync, CPU':>18} | {'SB3 VecEnv view':>16}")
    print(header)
    print("-" * len(header))
    for batch in args.batch_sizes:
        native = time_vector_env(gym.make_vec(args.env, num_envs=batch, **kw), batch, seconds)
        sync_env = SyncVectorEnv([lambda: gym.make(args.env, **kw) for _ in range(batch)],
                                 autoreset_mode=AutoresetMode.SAME_STEP)
        sync = time_vector_env(sync_env, batch, seconds)
        sb3 = (float("nan"), float("nan")) if args.no_sb3 else time_sb3_vec_env(args.env, batch, seconds, kw)
        row = {"batch": batch, "native": {"wall": native[0], "cpu": native[1]},
               "sync": {"wall": sync[0], "cpu": sync[1]}, "sb3": {"wall": sb3[0], "cpu": sb3[1]},
               "ratio_wall": native[0] / sync[0], "ratio_cpu": native[1] / sync[1]}
        record["rows"].append(row)
        print(f"{batch:>6} | {native[0]:>18,.0f} | {sync[0]:>15,.0f} | {row['ratio_wall']:>12.1f}x | "
              f"{row['ratio_cpu']:>17.1f}x | {sb3[0]:>16,.0f}")
    batch = args.memory_batch or max(args.batch_sizes)
    memory = memory_over_long_run(args.env, batch, memory_steps, kw)
    record["memory"] = {"batch": batch, **memory}
    record["load_average_end"] = os.getloadavg()
    print()
    print(f"memory, native B={batch}, warm-up {memory['warmup_batch_steps']:,} batch steps (2 episodes per "
          f"instance), then {memory_steps:,} batch steps ({memory['episodes']:,} episodes): RSS "
          f"{memory['rss_before_mib']:.1f} MiB -> {memory['rss_after_mib']:.1f} MiB, slope "
          f"{memory['per_1000_episodes']:+.3f} MiB per 1,000 episodes")
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in record['load_average_end'])}")
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"# run record: {args.json}")


if __name__ == "__main__":
    main()
