"""Statistics of finished runs: 95 % Student-t intervals, per-policy summaries, shares of the bound.

An agent's number for one seed is the mean over the evaluation episodes of its
final evaluation (``eval.json``); :func:`summarise` gives the mean over seeds
and the half-width of the two-sided 95 % Student-t interval over seeds
(``t_{0.975, n-1} * s / sqrt(n)``, :func:`t_interval`; no interval with one
seed).  Baselines do not learn: with the same evaluation seeds every training
seed reproduces the same baseline episodes, so their interval is taken over
the evaluation episodes instead (if different training seeds did give
different baseline numbers, over seeds).  :func:`attach_shares` sets each
policy's share of the bound (mean return / mean bound, see
:mod:`gentwin.baselines.base`).  Read by :mod:`gentwin.report` and
:mod:`gentwin.plots`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from gentwin.evaluation import BoundResult, EvalResult
from gentwin.records import RunRecord

__all__ = ["PolicySummary", "Stat", "attach_shares", "records_bound", "summarise", "t_interval", "t_quantile"]

#: per-episode keys that are not domain metrics (SB3 Monitor's r/l/t duplicates)
_SKIP_KEYS = ("r", "l", "t")


@dataclass(frozen=True)
class Stat:
    """Mean and 95 % t-interval half-width of ``n`` samples (``half_width`` NaN when n < 2)."""

    mean: float
    half_width: float
    n: int

    def fmt(self, digits: int = 4) -> str:
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {self.half_width:.{digits}g}"


def t_quantile(p: float, dof: int) -> float:
    """Quantile of Student's t (``scipy.special.stdtrit``: much lighter to import than scipy.stats)."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, p))


def t_interval(samples: Iterable[float], confidence: float = 0.95) -> Stat:
    """Mean and half-width of the two-sided Student-t interval of ``samples``."""
    x = np.asarray(list(samples), dtype=np.float64)
    if x.size == 0:
        raise ValueError("samples = [] is invalid: need at least one value")
    if x.size < 2:
        return Stat(float(x.mean()), float("nan"), int(x.size))
    sem = x.std(ddof=1) / math.sqrt(x.size)
    half = float(t_quantile(0.5 + confidence / 2, x.size - 1) * sem)
    return Stat(float(x.mean()), half, int(x.size))


def _metric_names(results: Iterable[EvalResult]) -> list[str]:
    names: list[str] = []
    for res in results:
        for key in res.metrics:
            if key not in names and key not in _SKIP_KEYS:
                names.append(key)
    if "return" in names:
        names.remove("return")
    return ["return", *names]


def _episodes_key(res: EvalResult) -> str:
    """Identity of an evaluation's numbers (wall-clock ``t`` and its r/l copies left out)."""
    eps = [{k: v for k, v in ep.items() if k not in _SKIP_KEYS} for ep in res.episodes]
    return json.dumps(eps, sort_keys=True, default=float)


@dataclass
class PolicySummary:
    """Statistics of one policy (agent group or baseline) in the report."""

    name: str
    kind: str  # "agent" or "baseline"
    over: str  # "seeds" or "episodes"
    stats: dict[str, Stat]
    #: agents: one entry per run (its seed and run directory, and the episode means of every metric)
    runs: list[dict[str, Any]] = field(default_factory=list)
    share_of_bound: Stat | None = None


def summarise(records: Sequence[RunRecord]) -> tuple[list[PolicySummary], list[str]]:
    """Per-policy statistics of ``records``: (summaries, metric names)."""
    if not records:
        raise ValueError("records = [] is invalid: need at least one finished run")
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(rec.name, []).append(rec)
    baseline_names: list[str] = []
    for rec in records:
        for b in rec.baselines:
            if b not in baseline_names:
                baseline_names.append(b)
    metrics = _metric_names([r.agent for r in records] + [b for r in records for b in r.baselines.values()])

    summaries: list[PolicySummary] = []
    for name, recs in groups.items():
        runs = [{"seed": r.config.seed, "run_dir": str(r.run_dir),
                 "steps": int(r.curve_steps[-1]) if r.curve_steps.size else None,
                 **{m: r.agent.mean(m) for m in metrics if m in r.agent.metrics}} for r in recs]
        stats = {m: t_interval([run[m] for run in runs]) for m in metrics if all(m in run for run in runs)}
        summaries.append(PolicySummary(name, "agent", "seeds", stats, runs))
    for name in baseline_names:
        by_seed: dict[int, EvalResult] = {}
        for r in records:
            if name in r.baselines:
                by_seed.setdefault(r.config.seed, r.baselines[name])
        results = list(by_seed.values())
        distinct = {_episodes_key(res): res for res in results}
        if len(distinct) == 1:
            res = results[0]
            stats = {m: t_interval(res.metric(m)) for m in metrics if m in res.metrics}
            summaries.append(PolicySummary(name, "baseline", "episodes", stats))
        else:
            uniq = list(distinct.values())
            stats = {m: t_interval([r.mean(m) for r in uniq]) for m in metrics if all(m in r.metrics for r in uniq)}
            summaries.append(PolicySummary(name, "baseline", "seeds", stats))
    return summaries, metrics


def records_bound(records: Sequence[RunRecord]) -> BoundResult | None:
    """The bound of ``records`` (the first record that has one; all share the evaluation episodes)."""
    return next((r.bound for r in records if r.bound is not None), None)


def attach_shares(summaries: Sequence[PolicySummary], bound: BoundResult | None) -> float | None:
    """Set every summary's share of ``bound`` (mean return / mean bound); returns the mean bound."""
    if bound is None:
        return None
    ub = bound.mean()
    if ub == 0 or not np.isfinite(ub):
        return None
    for s in summaries:
        # The paper's units: unscaled_return where a reward option scaled the training reward.
        key = "unscaled_return" if "unscaled_return" in s.stats else "return"
        if s.kind == "agent":
            s.share_of_bound = t_interval([run[key] / ub for run in s.runs])
        else:
            st = s.stats[key]
            s.share_of_bound = Stat(st.mean / ub, st.half_width / abs(ub), st.n)
    return ub
