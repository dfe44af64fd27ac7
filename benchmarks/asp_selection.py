#!/usr/bin/env python
"""AspSelection-v0: every baseline and the certified LP bound per preset; ``d2sac`` against
the published D2SAC simulator.

    OMP_NUM_THREADS=1 python benchmarks/asp_selection.py                 # measure, write the record
    python benchmarks/asp_selection.py --write-readme                    # ... and regenerate README's table
    python benchmarks/asp_selection.py --readme-only                     # README from the saved record

Per preset (``survey``, ``reference``, ``d2sac``): random, round-robin, crash-avoid, the
greedy oracle and capacity pricing on ``--episodes`` held-out episodes (seeds
``--seed .. --seed + episodes - 1``, the evaluation harness's ``gentwin.evaluation``),
and the LP relaxation bound of each of those episodes (``BOUND``) with its solve time.
On ``d2sac`` the four policies of the D2SAC code are compared with its published means
(5 episodes of its own seeding; ``../shared/data/README.md``): the claim is that ours
land within ±10 % of them (random within ±25 %).

The record (``benchmarks/records/asp_selection.json``) keeps every per-episode number;
the README's AspSelection table is written from it between the ``asp_selection`` marker
comments (never by hand).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "records" / "asp_selection.json"
README = ROOT / "README.md"
BEGIN, END = "<!-- asp_selection:begin (benchmarks/asp_selection.py) -->", "<!-- asp_selection:end -->"
ENV_ID = "gentwin/AspSelection-v0"
PRESETS = ("survey", "reference", "d2sac")
#: The D2SAC code's published returns, 5 episodes of its own seeding: (mean, sd).
PUBLISHED = {"random": (-140.8, 24.3), "round_robin": (229.0, 21.1), "crash_avoid": (355.9, 13.2),
             "greedy_oracle": (557.0, 13.2)}
PUBLISHED_NAMES = {"random": "random", "round_robin": "round-robin", "crash_avoid": "crash-avoid (most free capacity)",
                   "greedy_oracle": "oracle (best immediate quality among ASPs with room)"}
TOLERANCE = {"random": 0.25, "round_robin": 0.10, "crash_avoid": 0.10, "greedy_oracle": 0.10}


def measure(preset: str, episodes: int, seed: int) -> dict:
    from gentwin.baselines import get_baselines
    from gentwin.baselines.asp_selection import BOUND, fit_capacity_prices
    from gentwin.envs import make_sb3_vec_env
    from gentwin.envs.asp_selection import AspSelectionKernel
    from gentwin.evaluation import evaluate_policy

    out: dict = {"preset": preset, "episodes": episodes, "seeds": [seed, seed + episodes - 1], "policies": {}}
    start = time.perf_counter()
    fit_capacity_prices(AspSelectionKernel.resolve_params(preset))
    out["price_fit_s"] = time.perf_counter() - start
    for name, cls in get_baselines(ENV_ID).items():
        venv = make_sb3_vec_env(ENV_ID, num_envs=episodes, params=preset)
        result = evaluate_policy(cls(venv, seed=0), ENV_ID, n_episodes=episodes, seed=seed, venv=venv)
        out["policies"][name] = {k: result.metric(k).tolist() for k in ("return", "crash_rate", "length")}
        print(f"  {preset:9s} {name:17s} {result.mean('return'):9.2f}", flush=True)
    # The bound exactly as the harness evaluates it, timed per episode.
    kernel = AspSelectionKernel(AspSelectionKernel.resolve_params(preset), num_envs=episodes)
    kernel.reset(seed=seed)
    from gentwin.baselines.asp_selection import lp_relaxation

    lps = [lp_relaxation(kernel, b) for b in range(episodes)]
    out["bound"] = {"name": BOUND.name, "kind": BOUND.kind, "values": [lp.value for lp in lps],
                    "lp_values": [lp.lp_value for lp in lps], "seconds": [lp.seconds for lp in lps],
                    "cpu_seconds": [lp.cpu_seconds for lp in lps],
                    "tasks": kernel.episode_tasks.tolist()}
    print(f"  {preset:9s} {'lp_relaxation':17s} {np.mean(out['bound']['values']):9.2f} "
          f"({np.mean(out['bound']['seconds']):.2f} s wall, {np.mean(out['bound']['cpu_seconds']):.2f} s CPU per episode)",
          flush=True)
    return out


def summarise(record: dict) -> list[str]:
    """Printable check lines (and the d2sac claim's verdict)."""
    lines = []
    for p in record["presets"]:
        ub = np.asarray(p["bound"]["values"])
        cp, go = (np.asarray(p["policies"][k]["return"]) for k in ("capacity_pricing", "greedy_oracle"))
        beaten = [k for k, v in p["policies"].items() if np.any(np.asarray(v["return"]) > ub)]
        lines.append(f"{p['preset']}: capacity_pricing > greedy_oracle on {int((cp > go).sum())} of {len(cp)} "
                     f"episodes; policies above the bound on some episode: {beaten or 'none'}")
        if p["preset"] == "d2sac":
            for name, (published, _) in PUBLISHED.items():
                ours = float(np.mean(p["policies"][name]["return"]))
                ok = abs(ours / published - 1.0) <= TOLERANCE[name]
                lines.append(f"d2sac {name}: ours {ours:.1f} / published {published} = {ours / published:.3f} "
                             f"(tolerance ±{TOLERANCE[name]:.0%}): {'within' if ok else 'OUTSIDE'}")
    return lines


def readme_fragment(record: dict) -> str:
    L = [BEGIN, "",
         f"Measured by `{record['command']}` on {record['date']} ({record['machine']}); "
         f"{record['presets'][0]['episodes']} held-out episodes per preset, evaluation seeds "
         f"{record['presets'][0]['seeds'][0]}..{record['presets'][0]['seeds'][1]}. Mean return ± sd over "
         "episodes; crash rate per task; share = mean return / mean LP bound on the same episodes.", "",
         "| policy | " + " | ".join(f"`{p['preset']}`" for p in record["presets"]) + " |",
         "|---" * (len(record["presets"]) + 1) + "|"]
    for name in ("random", "round_robin", "crash_avoid", "greedy_oracle", "capacity_pricing"):
        cells = []
        for p in record["presets"]:
            ub = float(np.mean(p["bound"]["values"]))
            r = np.asarray(p["policies"][name]["return"])
            c = float(np.mean(p["policies"][name]["crash_rate"]))
            cells.append(f"{r.mean():.1f} ± {r.std(ddof=1):.1f} (share {r.mean() / ub:.3f}"
                         + (f"; crash rate {c:.3f})" if c > 0 else ")"))
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"{np.mean(p['bound']['values']):.1f} ± {np.std(p['bound']['values'], ddof=1):.1f}" for p in record["presets"]]
    L.append("| **lp_relaxation** (certified upper bound, not a policy) | " + " | ".join(cells) + " |")
    L += ["", "LP bound: CPU time per episode (HiGHS interior point, one thread; wall time on the shared machine "
          "in the record) "
          + "; ".join(f"`{p['preset']}` {np.mean(p['bound']['cpu_seconds']):.1f} s (max {np.max(p['bound']['cpu_seconds']):.1f} s, "
                      f"{np.mean(p['bound']['tasks']):.0f} tasks)" for p in record["presets"]) + "; capacity pricing beats the greedy oracle on "
          + ", ".join(f"{int(np.sum(np.asarray(p['policies']['capacity_pricing']['return']) > np.asarray(p['policies']['greedy_oracle']['return'])))}"
                      f"/{p['episodes']} `{p['preset']}` episodes" for p in record["presets"]) + ".", ""]
    d2sac = next((p for p in record["presets"] if p["preset"] == "d2sac"), None)
    if d2sac:
        L += [f"`d2sac` against the published D2SAC simulator (its code's 5 episodes; ours: {d2sac['episodes']} "
              "held-out episodes):", "",
              "| policy | D2SAC code (mean, sd) | gentwin `d2sac` (mean, sd) | ratio | tolerance |", "|---|---|---|---|---|"]
        for name, (published, sd) in PUBLISHED.items():
            r = np.asarray(d2sac["policies"][name]["return"])
            L.append(f"| {PUBLISHED_NAMES[name]} | {published} ({sd}) | {r.mean():.1f} ({r.std(ddof=1):.1f}) | "
                     f"{r.mean() / published:.3f} | ±{TOLERANCE[name]:.0%} |")
        L.append("")
    L.append(END)
    return "\n".join(L)


def write_readme(record: dict) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README}: missing the marker comments {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + readme_fragment(record) + tail)
    print(f"wrote the AspSelection table of {README}")


def main() -> int:
    from gentwin.evaluation import EVAL_SEED

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--record", default=str(RECORD))
    parser.add_argument("--write-readme", action="store_true", help="regenerate README's table from the record")
    parser.add_argument("--readme-only", action="store_true", help="measure nothing; README from --record")
    args = parser.parse_args()
    if args.episodes < 1:
        raise SystemExit(f"--episodes {args.episodes} is invalid: must be >= 1")
    record_path = Path(args.record)
    if args.readme_only:
        record = json.loads(record_path.read_text())
    else:
        import scipy

        command = "OMP_NUM_THREADS=1 python benchmarks/asp_selection.py " + " ".join(sys.argv[1:])
        start = time.perf_counter()
        record = {"command": command.strip(), "date": dt.date.today().isoformat(),
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start",
                  "scipy": scipy.__version__, "presets": [measure(p, args.episodes, args.seed) for p in args.presets]}
        record["wall_s"] = time.perf_counter() - start
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1))
        print(f"record: {record_path} ({record['wall_s']:.0f} s)")
    for line in summarise(record):
        print(line)
    if args.write_readme or args.readme_only:
        write_readme(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
