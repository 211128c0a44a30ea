"""Callbacks: a run header, one plain line per epoch (readable in CloudWatch, matched by SageMaker metric regexes),
per-epoch history for plots and metrics.json, and training throughput that excludes validation."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import pytorch_lightning as pl
import torch

# The order and spelling of this line is the contract with launch/'s SageMaker metric_definitions.
EPOCH_LINE_KEYS = (
    ("train_loss", "train/loss"),
    ("val_loss", "val/loss"),
    ("val_mcc", "val/mcc"),
    ("val_accuracy", "val/accuracy"),
    ("val_f1", "val/f1"),
)


def format_epoch_line(epoch: int, metrics: dict[str, float]) -> str:
    parts = [f"epoch={epoch}"]
    parts += [f"{short}={metrics[key]:.6f}" for short, key in EPOCH_LINE_KEYS if key in metrics]
    return " ".join(parts)


class RunHeader(pl.Callback):
    """Prints what this run is, once, from rank 0 when fitting starts (the data is loaded by then):
    run dir, model, precision, device, data sizes, schedule and the checkpoint it resumes from."""

    def __init__(self, run_dir: str, model: str, precision: Callable[[pl.Trainer], str] | str, schedule: str = "",
                 resume: str | None = None):
        self.run_dir, self.model, self.precision, self.schedule, self.resume = run_dir, model, precision, schedule, resume
        self.printed = False

    @staticmethod
    def data_sizes(datamodule: Any) -> str:
        from cola_bert.data import DOMAINS

        parts = []
        for name, dataset in (getattr(datamodule, "datasets", None) or {}).items():
            if dataset is None:
                parts.append(f"{name} none")
                continue
            domains = getattr(dataset, "domains", None) or []
            counts = [(d, sum(1 for x in domains if x == i)) for i, d in enumerate(DOMAINS)]
            counts = [f"{d} {n}" for d, n in counts if n]
            parts.append(f"{name} {len(dataset)}" + (f" ({', '.join(counts)})" if len(counts) > 1 else ""))
        source = "own files" if getattr(datamodule, "uses_own_files", False) else (
            f"CoLA, split={datamodule.hparams.split}" if hasattr(datamodule, "hparams") else ""
        )
        return ", ".join(parts) + (f" [{source}]" if source else "")

    def lines(self, trainer: pl.Trainer) -> list[tuple[str, str]]:
        precision = self.precision(trainer) if callable(self.precision) else self.precision
        device = f"{type(trainer.accelerator).__name__.replace('Accelerator', '').lower()} x {trainer.num_devices}"
        if trainer.num_nodes > 1:
            device += f" x {trainer.num_nodes} nodes"
        rows = [("run dir", self.run_dir), ("model", self.model), ("precision", precision), ("device", device),
                ("data", self.data_sizes(trainer.datamodule)), ("schedule", self.schedule)]
        rows.append(("resume", f"from {self.resume}" if self.resume else "no (a fresh run)"))
        return [(k, v) for k, v in rows if v]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.printed or not trainer.is_global_zero:
            return
        self.printed = True
        print("\n".join(f"{key:<10} {value}" for key, value in self.lines(trainer)), flush=True)


class EpochSummary(pl.Callback):
    """Records each epoch's metrics and samples/s, and prints them as one `key=value` line from rank 0
    (plus a `step=... train_loss=...` line every `print_every_n_steps` steps when that is > 0)."""

    def __init__(self, print_every_n_steps: int = 0):
        self.print_every_n_steps = print_every_n_steps
        self.history: list[dict[str, float]] = []
        self._samples = 0
        self._seconds = 0.0
        self._epoch_samples = 0
        self._epoch_seconds = 0.0
        self._tick = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_samples, self._epoch_seconds = 0, 0.0
        self._tick = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: dict[str, Any], batch_idx: int) -> None:
        now = time.perf_counter()
        self._epoch_seconds += now - self._tick
        self._epoch_samples += int(batch["labels"].numel()) * trainer.world_size
        self._tick = now
        step = trainer.global_step
        if self.print_every_n_steps and step % self.print_every_n_steps == 0 and trainer.is_global_zero:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            print(f"step={step} epoch={trainer.current_epoch} train_loss_step={float(loss):.6f}", flush=True)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        # Mid-epoch validation (val_check_interval < 1) must not count as training time.
        self._tick += time.perf_counter() - self._val_started

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._samples += self._epoch_samples
        self._seconds += self._epoch_seconds
        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if isinstance(value, torch.Tensor) and value.numel() == 1 and not key.endswith("_step")
        }
        metrics["train_samples_per_second"] = self._epoch_samples / self._epoch_seconds if self._epoch_seconds else 0.0
        metrics["epoch"] = trainer.current_epoch
        metrics["global_step"] = trainer.global_step
        self.history.append(metrics)
        if trainer.is_global_zero:
            line = format_epoch_line(trainer.current_epoch, metrics)
            print(f"{line} samples_per_second={metrics['train_samples_per_second']:.1f}", flush=True)

    @property
    def train_samples_per_second(self) -> float:
        return self._samples / self._seconds if self._seconds else math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "samples": self._samples, "seconds": self._seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._samples = state_dict.get("samples", 0)
        self._seconds = state_dict.get("seconds", 0.0)
