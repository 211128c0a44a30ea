"""Lightning's CSV logger, made to keep `csv/metrics.csv` whole across a resume.

Lightning's writer deletes an existing `metrics.csv` when it starts, so `ckpt_path=last` after a kill left only the
epochs after the restart. This writer keeps the rows of the earlier run that come before the step the restarted run
continues from, and drops the later ones (logged after the checkpoint was written, then trained again).
"""

from __future__ import annotations

import csv
import os
from typing import Any, Optional

from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class HistoryKeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        self._earlier: list[dict[str, str]] | None = None
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Instead of deleting an existing metrics.csv: remember its rows until the first new row arrives."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self._earlier = list(csv.DictReader(fh))

    def log_metrics(self, metrics_dict: dict[str, float], step: Optional[int] = None) -> None:
        super().log_metrics(metrics_dict, step)
        if self._earlier is not None:
            self._merge_earlier(int(self.metrics[-1]["step"]))

    def _merge_earlier(self, first_new_step: int) -> None:
        """Rewrite metrics.csv with the earlier rows before `first_new_step`: a fresh run (step 0) keeps none."""
        kept = [row for row in self._earlier if _step(row) < first_new_step]
        self._earlier = None
        keys = sorted({key for row in kept for key in row})
        tmp = self.metrics_file_path + ".tmp"
        with self._fs.open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.metrics_file_path)
        self.metrics_keys = keys
        if not kept:
            os.remove(self.metrics_file_path)  # written fresh, with the new run's columns, at the next save()


def _step(row: dict[str, Any]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class CSVLogger(_LightningCSVLogger):
    """`pytorch_lightning.loggers.CSVLogger` whose `metrics.csv` survives a resume (see the module docstring)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> HistoryKeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = HistoryKeepingWriter(log_dir=self.log_dir)
        return self._experiment
