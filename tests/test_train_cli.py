"""End to end through the command line on the real CoLA archive: a run's outputs, predict, resume.

Sweeps (grid, Optuna, sweep_summary.csv, sweep_report.png) are in test_sweep.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

REPO = Path(__file__).resolve().parents[1]


def run_cli(module: str, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, input=stdin, timeout=600)
    if check and proc.returncode != 0:
        pytest.fail(f"{module} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def smoke_args(cola_archive: Path, tmp_path: Path) -> list[str]:
    return ["experiment=smoke", f"data.archive={cola_archive}", f"paths.data_dir={tmp_path / 'data'}",
            "data.eval_batch_size=512", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def smoke_run(cola_archive, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("smoke")
    run_dir = tmp / "run"
    proc = run_cli("cola_bert.train", *smoke_args(cola_archive, tmp), f"hydra.run.dir={run_dir}")
    return run_dir, proc


def test_run_writes_the_documented_layout(smoke_run):
    run_dir, proc = smoke_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("epoch_*.ckpt"))) == 1
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (run_dir / "model" / name).is_file(), name
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert model.config.id2label == {0: "unacceptable", 1: "acceptable"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/mcc", "val/accuracy", "val/loss", "val/f1", "val/mcc_in_domain", "val/mcc_out_of_domain",
                "best_epoch", "train_samples_per_second", "history"):
        assert key in metrics, key
    assert metrics["best_epoch"] == 0 and metrics["train_samples_per_second"] > 0
    assert -1.0 <= metrics["val/mcc"] <= 1.0
    config = (run_dir / "config.yaml").read_text()
    assert "${" not in config and "split: glue" in config
    for png in ("learning_curves.png", "confusion_matrix.png"):
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The plain per-epoch line that SageMaker metric regexes read.
    assert "epoch=0 train_loss=" in proc.stdout and " val_mcc=" in proc.stdout


def test_predict_on_the_produced_model(smoke_run):
    run_dir, _ = smoke_run
    proc = run_cli("cola_bert.predict", "--model-dir", str(run_dir / "model"), "--json",
                   "The cat sat on the mat.", "Cat the mat sat on.")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["sentence"] for r in rows] == ["The cat sat on the mat.", "Cat the mat sat on."]
    for row in rows:
        assert row["label_name"] == ["unacceptable", "acceptable"][row["label"]]
        assert abs(sum(row["probabilities"]) - 1) < 1e-5 and row["score"] == max(row["probabilities"])
    table = run_cli("cola_bert.predict", "--model-dir", str(run_dir / "model"), stdin="One line.\n\nTwo lines.\n")
    assert "One line." in table.stdout and "Two lines." in table.stdout and "probability" in table.stdout


def test_predict_explains_a_wrong_model_dir(tmp_path):
    proc = run_cli("cola_bert.predict", "--model-dir", str(tmp_path), "x", check=False)
    assert proc.returncode != 0 and "is not a model directory" in proc.stderr


def test_resume_from_last_checkpoint_continues_the_global_step(cola_archive, tmp_path):
    run_dir = tmp_path / "run"
    args = [*smoke_args(cola_archive, tmp_path), f"hydra.run.dir={run_dir}"]
    run_cli("cola_bert.train", *args)
    first = json.loads((run_dir / "metrics.json").read_text())
    assert first["global_step"] == 5
    proc = run_cli("cola_bert.train", *args, "trainer.max_epochs=2", "ckpt_path=last")
    second = json.loads((run_dir / "metrics.json").read_text())
    assert "Restoring states from the checkpoint path" in proc.stdout + proc.stderr
    assert second["global_step"] == 10 and second["epochs_trained"] == 2
    assert [row["global_step"] for row in second["history"]] == [5, 10]


def test_missing_checkpoint_path_is_a_clear_error(cola_archive, tmp_path):
    proc = run_cli("cola_bert.train", *smoke_args(cola_archive, tmp_path), f"hydra.run.dir={tmp_path / 'r'}",
                   f"ckpt_path={tmp_path / 'nope.ckpt'}", check=False)
    assert proc.returncode != 0 and "ckpt_path=" in proc.stderr and "does not exist" in proc.stderr


def test_same_seed_same_metrics(compose_train, tmp_path):
    from cola_bert.train import train

    def metrics(seed: int, name: str) -> dict:
        cfg = compose_train("experiment=smoke", f"seed={seed}", "save_model=false", output_dir=tmp_path / name)
        record = train(cfg)
        return {k: record[k] for k in ("val/loss", "val/mcc", "val/accuracy", "train/loss")}

    first, again, other = metrics(3, "a"), metrics(3, "b"), metrics(4, "c")
    assert first == again
    assert first["val/loss"] != other["val/loss"]
