"""Progress display of a comparison (rich): one bar for all steps, one for the current run.

Used by :func:`gentwin.compare.compare`; ``compare(progress=False)`` (the
``--no-progress`` flag) turns it off.
"""

from __future__ import annotations

import csv
import threading

from gentwin.records import read_progress_csv
from gentwin.training import TrainConfig

__all__ = ["CompareProgress"]


class CompareProgress:
    """Rich progress over the whole comparison: one bar for all steps, one for the current run.

    ``train`` takes no callback, so a background thread follows the current
    run's ``progress.csv`` (``time/total_timesteps``, written at every SB3 dump).
    """

    def __init__(self, total_steps: int, n_runs: int, n_skipped: int, enabled: bool = True):
        self.enabled = enabled
        self.total_steps = total_steps
        self.n_runs = n_runs
        self.n_skipped = n_skipped
        self._done_steps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        skipped = f", {n_skipped} finished run(s) skipped" if n_skipped else ""
        self.overall = self.progress.add_task(f"all {n_runs} run(s){skipped}", total=max(total_steps, 1))
        self.current = None

    def __enter__(self):
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        self._stop_thread()
        if self.enabled:
            self.progress.stop()
        return False

    def start_run(self, index: int, label: str, config: TrainConfig) -> None:
        if not self.enabled:
            return
        desc = f"run {index}/{self.n_runs}: {label} seed {config.seed}"
        if self.current is None:
            self.current = self.progress.add_task(desc, total=config.timesteps)
        else:
            self.progress.reset(self.current, description=desc, total=config.timesteps)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, args=(config,), daemon=True)
        self._thread.start()

    def _follow(self, config: TrainConfig) -> None:
        import time

        path = config.run_dir / "progress.csv"
        started_ns = time.time_ns() - 10**9
        while not self._stop.wait(0.5):
            try:
                if path.stat().st_mtime_ns < started_ns:
                    continue  # still the file of an earlier run in this directory
                rows = read_progress_csv(path)
            except (OSError, csv.Error, UnicodeDecodeError, ValueError):
                continue  # the file is being rewritten; try again
            steps = [r.get("time/total_timesteps") or "" for r in rows]
            steps = [int(float(s)) for s in steps if s.strip()]
            if steps:
                self._set(config, min(max(steps), config.timesteps))

    def _set(self, config: TrainConfig, steps: int) -> None:
        self.progress.update(self.current, completed=steps)
        self.progress.update(self.overall, completed=min(self._done_steps + steps, self.total_steps))

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def skip_run(self, config: TrainConfig) -> None:
        """A planned run turned out finished (by another process): drop its steps from the total."""
        self.total_steps -= config.timesteps
        if self.enabled:
            self.progress.update(self.overall, total=max(self.total_steps, 1))

    def end_run(self, config: TrainConfig) -> None:
        self._stop_thread()
        self._done_steps += config.timesteps
        if self.enabled:
            self._set(config, config.timesteps)
