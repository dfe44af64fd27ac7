"""The two PNG plots of a comparison report (matplotlib, Agg backend).

``learning_curves.png``: ``eval/mean_return`` vs. environment steps, mean over
seeds with a 95 % t-band, baselines as horizontal lines
(:func:`plot_learning_curves`); ``final_performance.png``: final mean return
with 95 % intervals (:func:`plot_final_performance`).  Called by
:func:`gentwin.report.write_report`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from gentwin.records import RunRecord
from gentwin.stats import PolicySummary, t_quantile

__all__ = ["plot_final_performance", "plot_learning_curves"]


def _aligned_curves(records: Sequence[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Curves of several seeds on one step grid: (steps (K,), returns (S, K))."""
    curves = [(r.curve_steps, r.curve_returns) for r in records if r.curve_steps.size]
    if not curves:
        return np.zeros(0), np.zeros((0, 0))
    first = curves[0][0]
    if all(c[0].shape == first.shape and np.array_equal(c[0], first) for c in curves):
        return first.astype(np.float64), np.stack([c[1] for c in curves])
    # Different grids (e.g. different n_envs): interpolate on the union inside the common range.
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)].astype(np.float64)
    return grid, np.stack([np.interp(grid, c[0], c[1]) for c in curves])


def _limit_y(ax, values: Sequence[float], margin: float = 0.25) -> None:
    """Show the means (and baselines) with a margin: with few seeds the t-bands can be so wide
    that they would flatten every curve; they are clipped at the plot's edge instead."""
    if not values:
        return
    lo, hi = float(min(values)), float(max(values))
    pad = margin * (hi - lo) if hi > lo else max(1.0, 0.1 * abs(hi))
    cur_lo, cur_hi = ax.get_ylim()
    ax.set_ylim(max(cur_lo, lo - pad), min(cur_hi, hi + pad))


def plot_learning_curves(path: Path, env_id: str, records: Sequence[RunRecord],
                         summaries: Sequence[PolicySummary]) -> Path:
    """Mean eval/mean_return over seeds with a 95 % t-band; baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    shown: list[float] = []  # curve means and baseline levels: the y range to show
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.name, []).append(r)
    for i, (name, recs) in enumerate(groups.items()):
        steps, returns = _aligned_curves(recs)
        if steps.size == 0:
            continue
        color = f"C{i % 10}"
        mean = returns.mean(axis=0)
        shown += [float(mean.min()), float(mean.max())]
        ax.plot(steps, mean, color=color, marker="o", markersize=3, label=f"{name} (n={returns.shape[0]})")
        if returns.shape[0] > 1:
            half = t_quantile(0.975, returns.shape[0] - 1) * returns.std(axis=0, ddof=1) / math.sqrt(returns.shape[0])
            ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))]
    for j, s in enumerate(x for x in summaries if x.kind == "baseline"):
        ax.axhline(s.stats["return"].mean, color=f"C{(len(groups) + j) % 10}", linestyle=styles[j % len(styles)],
                   linewidth=1.4, label=f"baseline: {s.name}")
        shown.append(s.stats["return"].mean)
    _limit_y(ax, shown)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (mean over held-out episodes)")
    ax.set_title(f"{env_id}: learning curves\nmean over seeds, 95% t-band (clipped to the plot)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_final_performance(path: Path, env_id: str, summaries: Sequence[PolicySummary]) -> Path:
    """Bar chart of the final mean return with 95 % intervals (agents first, then baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in summaries]
    means = np.array([s.stats["return"].mean for s in summaries])
    halves = np.array([s.stats["return"].half_width for s in summaries])
    halves = np.where(np.isnan(halves), 0.0, halves)
    colors = [f"C{i % 10}" if s.kind == "agent" else "0.6" for i, s in enumerate(summaries)]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4.5))
    ax.bar(np.arange(len(names)), means, yerr=halves, capsize=4, color=colors, edgecolor="black", linewidth=0.6)
    for x, m in enumerate(means):
        ax.annotate(f"{m:.4g}", (x, m), textcoords="offset points", xytext=(0, 3 if m >= 0 else -10),
                    ha="center", fontsize=7)
    _limit_y(ax, [*means.tolist(), 0.0])
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("final evaluation return")
    ax.set_title(f"{env_id}: final performance\nagents coloured, baselines grey; 95% intervals", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
