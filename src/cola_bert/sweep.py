"""Hydra callbacks that keep a CSV table at the sweep root, one row per job, rewritten after every job.

A sweep that crashes half-way still leaves the finished rows, and a failing job shows up as `failed` with its
error instead of vanishing. `SweepSummary` writes `sweep_summary.csv` (best first) for `cola_bert.train -m`;
`launch.train`'s job table builds on `SweepTable` too.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SUMMARY_NAME = "sweep_summary.csv"


def describe_failure(job_return: JobReturn) -> str:
    # A failed JobReturn holds the exception; its public `return_value` would re-raise it.
    err = job_return._return_value
    return f"{type(err).__name__}: {err}".replace("\n", " ")


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
    """`sweep_summary.csv`: each job's optimized metric, val MCC/accuracy and run dir, best first."""

    file_name = SUMMARY_NAME
    columns = ("job", "status", "overrides", "metric", "value", "val/mcc", "val/accuracy", "run_dir", "error")

    def sort_key(self, row: dict[str, Any]) -> tuple:
        value = row.get("value")
        ok = row["status"] == "completed" and isinstance(value, float) and not math.isnan(value)
        return (0 if ok else 1, -(value if ok else 0.0), int(row["job"]))

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
