"""Resuming with `ckpt_path=last` continues the interrupted run instead of starting again.

Each test compares the resumed run with the first one: the first epoch printed after the restart, the earlier
epochs' history and csv/metrics.csv rows left unchanged, and AdamW's moments restored from the checkpoint. A fresh
run in the same directory (no ckpt_path) fails every one of these checks.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytorch_lightning as pl
import torch
from cli_support import run_module, smoke_args


class OptimizerProbe(pl.Callback):
    """Copies the optimizer state and loop counters as training starts (after any checkpoint was restored)."""

    seen: dict = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = trainer.optimizers[0].state_dict()["state"]
        OptimizerProbe.seen = {
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "exp_avg": {i: s["exp_avg"].clone() for i, s in state.items()},
        }


def test_resume_restores_optimizer_state_counters_and_history(compose_train, tmp_path):
    from cola_bert.train import train

    run_dir = tmp_path / "run"
    common = ("experiment=smoke", "save_model=false", "trainer.enable_progress_bar=false")
    first = train(compose_train(*common, output_dir=run_dir))
    saved = tmp_path / "after_epoch_0.ckpt"
    shutil.copyfile(run_dir / "checkpoints" / "last.ckpt", saved)  # the resumed run overwrites last.ckpt

    probe = f"+callbacks.probe._target_={OptimizerProbe.__module__}.OptimizerProbe"
    second = train(compose_train(*common, "trainer.max_epochs=2", "ckpt_path=last", probe, output_dir=run_dir))

    seen = OptimizerProbe.seen
    assert (seen["global_step"], seen["epoch"]) == (5, 1)  # starts where the first run stopped
    checkpoint = torch.load(saved, map_location="cpu", weights_only=False)
    moments = checkpoint["optimizer_states"][0]["state"]
    assert moments and set(seen["exp_avg"]) == set(moments)
    for index, state in moments.items():
        assert torch.equal(seen["exp_avg"][index], state["exp_avg"]), index
    # Epoch 0 is the first run's, byte for byte; only epoch 1 is new.
    assert second["history"][0] == first["history"][0]
    assert [row["epoch"] for row in second["history"]] == [0, 1]
    assert [row["global_step"] for row in second["history"]] == [5, 10]


def _csv_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _training_rows(rows: list[dict[str, str]], before_step: int) -> list[dict[str, str]]:
    """The rows logged while training up to `before_step`, without the columns that appear only later."""
    return [{k: v for k, v in row.items() if v != ""} for row in rows if int(row["step"]) < before_step]


def _epoch_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("epoch=")]


def test_cli_resume_prints_only_the_new_epoch_and_keeps_the_metrics_csv(cola_archive, tmp_path):
    run_dir = tmp_path / "run"
    args = [*smoke_args(cola_archive, tmp_path), f"hydra.run.dir={run_dir}"]
    first = run_module("cola_bert.train", *args)
    first_lines = _epoch_lines(first.stdout)
    first_csv = _csv_rows(run_dir / "csv" / "metrics.csv")
    first_history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [line.split()[0] for line in first_lines] == ["epoch=0"]

    second = run_module("cola_bert.train", *args, "trainer.max_epochs=2", "ckpt_path=last")
    assert f"resume     from {run_dir / 'checkpoints' / 'last.ckpt'}" in second.stdout
    assert [line.split()[0] for line in _epoch_lines(second.stdout)] == ["epoch=1"]

    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["history"][0] == first_history[0] and record["global_step"] == 10
    rows = _csv_rows(run_dir / "csv" / "metrics.csv")
    # Epoch 0's rows (steps 0-4) survive the restart unchanged; epoch 1 adds steps 5-9.
    assert _training_rows(rows, 5) == _training_rows(first_csv, 5) != []
    assert {int(r["step"]) for r in rows if r.get("train/loss_step")} == set(range(10))
    assert sorted(float(r["epoch"]) for r in rows if r.get("train/loss")) == [0.0, 1.0]
