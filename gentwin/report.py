"""The comparison report: ``report.md``, ``summary.json`` and the console table.

:func:`write_report` writes, into one directory, ``report.md`` (every line of
the Markdown report is made here: the tables, the bound, the per-run numbers,
the configuration, the command and the package versions), ``summary.json``
(the same numbers, machine-readable) and the two plots of
:mod:`gentwin.plots`.  :func:`print_summary` prints the same table to the
console.  Numbers come from :mod:`gentwin.stats`; records from
:mod:`gentwin.records`.  The sweep (:mod:`gentwin.sweep`) appends its own
"Sweep" section to the same report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from gentwin.evaluation import BoundResult
from gentwin.plots import plot_final_performance, plot_learning_curves
from gentwin.records import RunRecord
from gentwin.stats import PolicySummary, attach_shares, records_bound, summarise

__all__ = ["REPORT_PACKAGES", "package_versions", "print_summary", "write_report"]

#: packages whose versions go into the report
REPORT_PACKAGES = (
    "gentwin", "numpy", "scipy", "gymnasium", "pettingzoo", "stable-baselines3", "sb3-contrib",
    "torch", "matplotlib", "tensorboard",
)


def package_versions(packages: Sequence[str] = REPORT_PACKAGES) -> dict[str, str]:
    """Installed versions (``"not installed"`` where missing), plus Python's."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_commit() -> str | None:
    import subprocess

    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def _config_lines(records: Sequence[RunRecord]) -> list[str]:
    c = records[0].config
    same = lambda f: all(getattr(r.config, f) == getattr(c, f) for r in records)  # noqa: E731
    lines = []
    for f in ("timesteps", "n_envs", "eval_freq", "eval_episodes", "eval_seed", "env_kwargs", "hyperparams", "policy"):
        value = getattr(c, f) if same(f) else "varies per run"
        lines.append(f"- `{f}`: {value}")
    return lines


def write_report(out_dir: str | os.PathLike, env_id: str, records: Sequence[RunRecord], command: str,
                 bound: BoundResult | None = None) -> Path:
    """Write ``report.md``, ``summary.json`` and the two PNG plots into ``out_dir``.

    ``records`` are finished runs (:func:`load_record`), grouped by
    ``record.name``; the baselines are read from their ``eval.json``
    ``baselines`` entries.  ``bound`` is the reference of the share column
    (``None``: the records' own bound, if any).
    ``command`` is printed verbatim.  Returns the path of ``report.md``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    summaries, metrics = summarise(records)
    if bound is None:
        bound = records_bound(records)
    ub = attach_shares(summaries, bound)
    curves_png = plot_learning_curves(out_dir / "learning_curves.png", env_id, records, summaries)
    bars_png = plot_final_performance(out_dir / "final_performance.png", env_id, summaries)
    versions = package_versions()

    def share(s: PolicySummary) -> str:
        return s.share_of_bound.fmt(4) if s.share_of_bound is not None else "–"

    L: list[str] = [f"# {env_id}: agents vs. baselines", ""]
    L += [f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}.", ""]
    L += ["Mean ± half-width of the 95 % Student-t interval. Agents: over training seeds (each seed's "
          "value is the mean over the held-out evaluation episodes of its final evaluation). Baselines "
          "do not train; they are evaluated on the same held-out episodes, and their interval is over "
          "those episodes (column *n over*).", ""]
    if ub is not None:
        values = np.asarray(bound.values)
        L += [f"Bound: `{bound.name}`, {bound.kind}"
              + (f" ({bound.description})" if bound.description else "") + ".", "",
              f"Share of bound = mean return / mean bound over the same {len(values)} held-out episodes "
              f"(mean bound {ub:.6g}, per episode {values.min():.6g} .. {values.max():.6g}).", ""]
    else:
        L += ["No share of a bound: this environment has no exact optimum or certified upper bound.", ""]
    L += ["## Final performance", ""]
    L += ["| policy | kind | return | share of bound | n over |", "|---|---|---|---|---|"]
    for s in summaries:
        L.append(f"| {s.name} | {s.kind} | {s.stats['return'].fmt()} | {share(s)} | {s.stats['return'].n} {s.over} |")
    L += ["", "## Domain metrics (per episode)", ""]
    shown = [m for m in metrics if m != "return"]
    if shown:
        L += ["| policy | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for s in summaries:
            L.append(f"| {s.name} | " + " | ".join(s.stats[m].fmt() if m in s.stats else "–" for m in shown) + " |")
    L += ["", "## Per-run evaluations (agents)", ""]
    L += ["*steps*: environment steps actually trained (the step of the final evaluation; on-policy "
          "algorithms finish their last rollout, so it can exceed the budget).", ""]
    L += ["| policy | seed | steps | " + " | ".join(metrics) + " | run directory |",
          "|---" * (len(metrics) + 4) + "|"]
    for s in (x for x in summaries if x.kind == "agent"):
        for run in sorted(s.runs, key=lambda r: (r["seed"], r["run_dir"])):
            steps = "–" if run["steps"] is None else str(run["steps"])
            L.append(f"| {s.name} | {run['seed']} | {steps} | "
                     + " | ".join(f"{run[m]:.6g}" if m in run else "–" for m in metrics) + f" | `{run['run_dir']}` |")
    L += ["", "## Plots", "", f"![learning curves]({curves_png.name})", "", f"![final performance]({bars_png.name})", ""]
    L += ["## Setup", "", f"- environment: `{env_id}`"]
    L += _config_lines(records)
    L += [f"- total training wall time: {sum(r.wall_time_s for r in records):.1f} s over {len(records)} runs"]
    commit = _git_commit()
    if commit:
        L.append(f"- gentwin commit: {commit}")
    L += ["", "Command:", "", "```", command, "```", "", "Versions:", ""]
    L += [f"- {k} {v}" for k, v in versions.items()]
    L.append("")
    report = out_dir / "report.md"
    report.write_text("\n".join(L))

    summary = {
        "env_id": env_id,
        "command": command,
        "bound": bound.to_json() if bound is not None else None,
        "bound_mean": ub,
        "versions": versions,
        "policies": [
            {
                "name": s.name,
                "kind": s.kind,
                "over": s.over,
                "stats": {m: dataclasses.asdict(st) for m, st in s.stats.items()},
                "share_of_bound": dataclasses.asdict(s.share_of_bound) if s.share_of_bound else None,
                "runs": s.runs,
            }
            for s in summaries
        ],
        "runs": [str(r.run_dir) for r in records],
    }
    with open(out_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=2, default=float, allow_nan=True)
    return report


def print_summary(records: Sequence[RunRecord], title: str) -> None:
    """Rich table of the comparison: return (mean ± 95 % half-width), share of the bound, crash rate."""
    from rich.console import Console
    from rich.table import Table

    summaries, metrics = summarise(records)
    ub = attach_shares(summaries, records_bound(records))
    # min_width: a narrow table (no share column) must not wrap its title
    table = Table(title=title, min_width=min(len(title), 116) + 4)
    for col in ("policy", "kind", "return (95% CI)", *(["crash rate"] if "crash_rate" in metrics else []),
                *(["share of bound"] if ub is not None else [])):
        table.add_column(col, justify="left" if col in ("policy", "kind") else "right")
    for s in summaries:
        cells = [s.name, s.kind, s.stats["return"].fmt()]
        if "crash_rate" in metrics:
            cells.append(s.stats["crash_rate"].fmt(3) if "crash_rate" in s.stats else "–")
        if ub is not None:
            cells.append(s.share_of_bound.fmt(4) if s.share_of_bound is not None else "–")
        table.add_row(*cells)
    Console(width=120).print(table)
