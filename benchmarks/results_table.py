"""Write ``docs/benchmark_results.md`` from the learning-run records (never by hand).

    python benchmarks/results_table.py [--records benchmarks/records/learning.jsonl] [--out docs/benchmark_results.md]

One section per environment id (and environment options); one row per agent
variant and budget: seeds, mean and 95 % Student-t interval over seeds of the
**share of the reference** (ratio of the mean objective over the held-out episodes
to the mean of the family's exact optimum or certified bound on the same
episodes), the violation rate where the family has constraints, the mean return
and the wall time per run; then the baselines on the same episodes.  The
reference of each family is named with its kind (exact optimum, certified bound,
or, where none is computable, the strongest heuristic, which a policy may beat).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECORDS = ROOT / "benchmarks" / "records" / "learning.jsonl"
DEFAULT_OUT = ROOT / "docs" / "benchmark_results.md"

#: Fallback for records without a declared bound: (objective metric, per-episode optimum metric, label).
FAMILIES = {
    "PowerAllocation": ("sum_rate", "optimal_sum_rate", "water-filling (exact optimum)"),
    "ContractDesign": ("utility", "optimal_utility", "optimal contract (exact optimum)"),
}


def _family(env_id: str) -> str:
    return env_id.split("/")[-1].split("-")[0]


def t_interval(x) -> tuple[float, float]:
    from scipy.special import stdtrit

    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stdtrit(x.size - 1, 0.975) * x.std(ddof=1) / math.sqrt(x.size))


def _objective_and_reference(env_id: str, summary: dict, record: dict) -> tuple[float | None, float | None, str]:
    """(mean objective, mean reference, reference label) of one evaluation summary.

    The objective is the return in the paper's units (``unscaled_return`` where a
    reward option scaled the training reward); the reference is the family's declared
    bound on the same episodes (``record["bound"]``), else its per-episode optimum metric.
    """
    objective = summary.get("unscaled_return", summary.get("return"))
    bound = record.get("bound") or {}
    if bound.get("mean") is not None:
        return objective, bound["mean"], f"`{bound.get('name')}` ({bound.get('kind')})"
    fam = FAMILIES.get(_family(env_id))
    if fam is not None and summary.get(fam[1]) is not None:
        return objective, summary[fam[1]], fam[2]
    return objective, None, "none (no exact optimum or certified bound)"


def _fmt(mean: float, half: float, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def build_table(records: list[dict]) -> str:
    groups: "OrderedDict[tuple, list[dict]]" = OrderedDict()
    for rec in sorted(records, key=lambda r: (r["env_id"], json.dumps(r["env_kwargs"], sort_keys=True))):
        key = (rec["env_id"], json.dumps(rec["env_kwargs"], sort_keys=True))
        groups.setdefault(key, []).append(rec)
    lines = [
        "# Learning benchmark results",
        "",
        "Written by `python benchmarks/results_table.py` from `benchmarks/records/learning.jsonl`",
        "(one JSON line per run, appended by `benchmarks/learning.py`); do not edit by hand.",
        "Every run is evaluated deterministically on held-out seeds (from `EVAL_SEED`), the same",
        "episodes for every agent and baseline of a section. **Share** = mean objective over those",
        "episodes / mean reference on the same episodes; mean ± 95 % Student-t interval over seeds.",
        "The objective is in the paper's units (`unscaled_return` where an environment option scales",
        "the reward); \"mean env reward\" is the reward the agent trained on (scaled where an option says so).",
        "Times are per run (training and evaluation), single-threaded: CPU seconds of the run's",
        "process (what it takes on an idle core) and wall seconds on the project's 2-core machine,",
        "which other work shared (load average in the records).",
        "",
    ]
    for (env_id, env_kwargs), recs in groups.items():
        kwargs = json.loads(env_kwargs)
        title = env_id + (" " + ", ".join(f"`{k}={v}`" for k, v in kwargs.items()) if kwargs else "")
        _, ref_value, ref_name = _objective_and_reference(env_id, recs[0]["agent"], recs[0])
        lines += [f"## {title}", "", f"Reference: {ref_name}.", ""]
        if ref_value is not None and ref_value < 0:
            lines += ["Returns are negative costs here, so the share is cost / the bound's cost: at least 1,",
                      "lower is better.", ""]
        if env_id.endswith("-ma-v0"):  # trained through SuperSuit: one step per agent
            lines += ["A PettingZoo id: one policy shared by the agents; steps count agent-steps (every agent's",
                      "action is one), n_envs copies of the environment; scored on the central env.", ""]
        has_violation = any("violation_rate" in r["agent"] for r in recs)
        # AspSelection's constraint is capacity: a crash (the chosen ASP had no room) per task.
        has_crash = any("crash_rate" in r["agent"] for r in recs)
        head = ["agent", "steps", "n_envs", "seeds", "share of reference", "mean env reward"]
        if has_violation:
            head.append("violation rate")
        if has_crash:
            head.append("crash rate")
        head += ["CPU s / run", "wall s / run", "eval episodes"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        variants: "OrderedDict[tuple, list[dict]]" = OrderedDict()
        for r in recs:
            variants.setdefault((r["label"], r["timesteps"], r["n_envs"]), []).append(r)
        for (label, steps, n_envs), runs in variants.items():
            shares, returns, viol, crash, walls, cpus = [], [], [], [], [], []
            for r in runs:
                obj, ref, _ = _objective_and_reference(env_id, r["agent"], r)
                shares.append(obj / ref if (obj is not None and ref) else float("nan"))
                returns.append(r["agent"].get("return", float("nan")))
                viol.append(r["agent"].get("violation_rate", float("nan")))
                crash.append(r["agent"].get("crash_rate", float("nan")))
                walls.append(r["wall_s"])
                cpus.append(r.get("cpu_s", float("nan")))
            row = [f"`{label}`", f"{steps:,}", str(n_envs), str(len(runs)), _fmt(*t_interval(shares)),
                   _fmt(*t_interval(returns), digits=3)]
            if has_violation:
                row.append(_fmt(*t_interval(viol), digits=3))
            if has_crash:
                row.append(_fmt(*t_interval(crash), digits=4))
            row += [f"{np.mean(cpus):.0f}", f"{np.mean(walls):.0f}", str(runs[0]["eval_episodes"])]
            lines.append("| " + " | ".join(row) + " |")
        latest = recs[-1]
        if latest.get("baselines"):
            extra = (["violation rate"] if has_violation else []) + (["crash rate"] if has_crash else [])
            lines += ["", f"Baselines on the same {latest['eval_episodes']} episodes:", "",
                      "| " + " | ".join(["baseline", "share of reference", "mean env reward", *extra]) + " |",
                      "|" + "---|" * (3 + len(extra))]
            for name, summ in latest["baselines"].items():
                obj, ref, _ = _objective_and_reference(env_id, summ, latest)
                share = f"{obj / ref:.4f}" if (obj is not None and ref) else "–"
                cells = [f"`{name}`", share, f"{summ.get('return', float('nan')):.3f}"]
                for key, shown in (("violation_rate", has_violation), ("crash_rate", has_crash)):
                    if shown:
                        v = summ.get(key)
                        cells.append("–" if v is None else f"{v:.4f}" if key == "crash_rate" else f"{v:.3f}")
                lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Commands (one seed each; the train.py equivalent is in the records):", ""]
        for (label, steps, n_envs), runs in variants.items():
            lines.append(f"- `{label}`: `{runs[0]['command']}`")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", default=str(DEFAULT_RECORDS))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    path = Path(args.records)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    Path(args.out).write_text(build_table(records))
    print(f"wrote {args.out} ({len(records)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
