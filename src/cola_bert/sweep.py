"""Hydra callback that keeps `sweep_summary.csv` at the sweep root: one row per job, best first.

It is rewritten after every job, so a sweep that crashes half-way still leaves the finished rows,
and a failing job shows up as `failed` with its error instead of vanishing.
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
COLUMNS = ("job", "status", "overrides", "metric", "value", "val/mcc", "val/accuracy", "run_dir", "error")


def _sort_key(row: dict[str, Any]) -> tuple:
    value = row.get("value")
    ok = row["status"] == "completed" and isinstance(value, float) and not math.isnan(value)
    return (0 if ok else 1, -(value if ok else 0.0), int(row["job"]))


def _describe(job_return: JobReturn) -> str:
    # A failed JobReturn holds the exception; its public `return_value` would re-raise it.
    err = job_return._return_value
    return f"{type(err).__name__}: {err}".replace("\n", " ")


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.rows = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        if hydra_cfg.mode is None or str(hydra_cfg.mode) != "RunMode.MULTIRUN":
            return
        run_dir = Path(hydra_cfg.runtime.output_dir)
        metrics: dict[str, Any] = {}
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        completed = job_return.status == JobStatus.COMPLETED
        value = job_return.return_value if completed else None
        self.rows.append(
            {
                "job": hydra_cfg.job.num,
                "status": "completed" if completed else "failed",
                "overrides": " ".join(hydra_cfg.overrides.task),
                "metric": config.get("optimized_metric"),
                "value": float(value) if isinstance(value, (int, float)) else None,
                "val/mcc": metrics.get("val/mcc"),
                "val/accuracy": metrics.get("val/accuracy"),
                "run_dir": str(run_dir),
                "error": "" if completed else _describe(job_return),
            }
        )
        self._write(Path(hydra_cfg.sweep.dir) / SUMMARY_NAME)

    def _write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for row in sorted(self.rows, key=_sort_key):
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})
        os.replace(tmp, path)
