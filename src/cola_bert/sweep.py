"""Hydra callbacks that keep a CSV table at the sweep root, one row per job, rewritten after every job.

A sweep that crashes half-way still leaves the finished rows, and a failing job shows up as `failed` with its
error instead of vanishing. `SweepSummary` writes `sweep_summary.csv` for `cola_bert.train -m`, best job first in
the sweep's direction (the Optuna sweeper's `direction`, else `optimized_metric_mode`: max or min), and redraws
`sweep_report.png` from it (cola_bert.sweep_report). `launch.train`'s job table builds on `SweepTable` too.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SUMMARY_NAME = "sweep_summary.csv"
# optimized_metric_mode (Lightning's words, as in ModelCheckpoint) or an Optuna direction → the Optuna direction.
DIRECTIONS = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}

log = logging.getLogger(__name__)


def describe_failure(job_return: JobReturn) -> str:
    # A failed JobReturn holds the exception; its public `return_value` would re-raise it.
    err = job_return._return_value
    return f"{type(err).__name__}: {err}".replace("\n", " ")


def sweep_direction(config: DictConfig) -> str:
    """`maximize` or `minimize`: what the sweep optimises `optimized_metric` towards.

    The Optuna sweeper's `hydra.sweeper.direction` when it has one (that is what the study optimised), else the
    top-level `optimized_metric_mode` (`max`/`min`, also the checkpoint callback's mode), else `maximize`.
    """
    sweeper = config.hydra.get("sweeper") or {}
    if sweeper.get("direction") is not None:
        value, source = sweeper.direction, "hydra.sweeper.direction"
        value = getattr(value, "name", value)  # the sweeper's Direction enum
    else:
        value, source = config.get("optimized_metric_mode", "max"), "optimized_metric_mode"
    if str(value) not in DIRECTIONS:
        raise ValueError(
            f"{source}={value} is not a direction. Use optimized_metric_mode=max (the default, e.g. for val/mcc) or "
            "optimized_metric_mode=min (e.g. optimized_metric=val/loss); the checkpoint callback and the Optuna "
            "sweeper follow it."
        )
    return DIRECTIONS[str(value)]


class SweepTable(Callback):
    """One CSV row per multirun job in `<sweep dir>/<file_name>`; subclasses say what a row holds and its order."""

    file_name: str
    columns: tuple[str, ...]

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.path: Path | None = None

    def row(self, config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
        raise NotImplementedError

    def sort_key(self, row: dict[str, Any]) -> Any:
        return int(row["job"])

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.rows = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        if hydra_cfg.mode is None or str(hydra_cfg.mode) != "RunMode.MULTIRUN":
            return
        self.rows.append(
            {"job": hydra_cfg.job.num, "overrides": " ".join(hydra_cfg.overrides.task), **self.row(config, job_return)}
        )
        self.path = Path(hydra_cfg.sweep.dir) / self.file_name
        self._write(self.path)
        self.after_write(config)

    def after_write(self, config: DictConfig) -> None:
        """Called after each rewrite of the table (e.g. to redraw a picture of it)."""

    def sorted_rows(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=self.sort_key)

    def _write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            for row in self.sorted_rows():
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in self.columns})
        os.replace(tmp, path)


class SweepSummary(SweepTable):
    """`sweep_summary.csv`: each job's optimized metric, val MCC/accuracy and run dir, best first; failed jobs last.

    `report=True` also redraws `sweep_report.png` (and, for an Optuna sweep, its history and importance plots)
    after every job.
    """

    file_name = SUMMARY_NAME
    columns = ("job", "status", "overrides", "metric", "value", "val/mcc", "val/accuracy", "run_dir", "error")

    def __init__(self, report: bool = True) -> None:
        super().__init__()
        self.report = report
        self.direction = "maximize"
        self.params_space: dict[str, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        super().on_multirun_start(config, **kwargs)
        self.direction = sweep_direction(config)  # a bad value stops the sweep before its first job
        if self.report:  # an Optuna search space as the sweeper sees it: config + the sweep's command line
            from cola_bert.sweep_report import optuna_space

            self.params_space = optuna_space(config.hydra.get("sweeper"), list(config.hydra.overrides.task))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.direction = sweep_direction(config)
        super().on_job_end(config, job_return, **kwargs)

    def sort_key(self, row: dict[str, Any]) -> tuple:
        value = row.get("value")
        ok = row["status"] == "completed" and isinstance(value, float) and not math.isnan(value)
        sign = -1.0 if self.direction == "maximize" else 1.0
        return (0 if ok else 1, sign * value if ok else 0.0, int(row["job"]))

    def after_write(self, config: DictConfig) -> None:
        if not self.report or self.path is None:
            return
        from cola_bert.sweep_report import write_sweep_report

        try:
            write_sweep_report(self.path, self.path.parent, self.params_space, self.direction)
        except Exception as err:  # a picture must not stop the sweep; the CSV is already written
            log.warning("sweep_report.png not redrawn (%s: %s); %s is up to date", type(err).__name__, err, self.path)

    def row(self, config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
        run_dir = Path(config.hydra.runtime.output_dir)
        metrics: dict[str, Any] = {}
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        completed = job_return.status == JobStatus.COMPLETED
        value = job_return.return_value if completed else None
        return {
            "status": "completed" if completed else "failed",
            "metric": config.get("optimized_metric"),
            "value": float(value) if isinstance(value, (int, float)) else None,
            "val/mcc": metrics.get("val/mcc"),
            "val/accuracy": metrics.get("val/accuracy"),
            "run_dir": str(run_dir),
            "error": "" if completed else describe_failure(job_return),
        }
