"""End to end through the command line on the real CoLA archive: a run's outputs, predict, the console a user
sees (header, no noise) and known user errors (one paragraph, exit 2). Resume: test_resume.py.

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


def run_cli(module: str, *args: str, check: bool = True, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
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
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--model-dir {tmp_path} is neither an exported artifact (no manifest.json) nor a model directory" in proc.stderr
    assert "python -m cola_bert.export" in proc.stderr  # says what to pass instead


def test_captured_console_is_clean_and_starts_with_the_run_header(cola_archive, tmp_path):
    """The packaged MiniLM through one batch (debug=fast), output captured as in CI or CloudWatch: no terminal
    escapes, no adverts, no dependency deprecations, no empty summaries; a header that says what runs where."""
    run_dir = tmp_path / "run"
    proc = run_cli("cola_bert.train", "debug=fast", f"data.archive={cola_archive}", f"paths.data_dir={tmp_path / 'data'}",
                   f"hydra.run.dir={run_dir}")
    output = proc.stdout + proc.stderr
    assert "\x1b[" not in output
    for noise in ("Tip:", "litlogger", "litmodels", "deprecated", "Deprecation", "FutureWarning", "FLOPs",
                  "LOAD REPORT", "GPU available", "TPU available", "Traceback"):
        assert noise not in output, noise
    header = {line[:10].strip(): line[11:] for line in proc.stdout.splitlines()[:8]}
    assert header["run dir"] == str(run_dir)
    assert header["model"].startswith("all-MiniLM-L6-v2 (packaged), BertForSequenceClassification: 6 layers")
    assert "new classifier head for 2 labels" in header["model"]
    from cola_bert.precision import auto_precision

    assert header["precision"].startswith(auto_precision("cpu") + " (") and "chosen automatically" in header["precision"]
    assert header["data"].startswith("train 8551, val 1043 (in_domain 527, out_of_domain 516), test none")
    assert "epoch=0 train_loss=" in proc.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(["data.archive={tmp}/nope.zip"], "data.archive={tmp}/nope.zip does not exist", id="archive-missing"),
        pytest.param(["data.train_file={tmp}/bad.csv", "data.val_file={tmp}/bad.csv"],
                     "{tmp}/bad.csv:3: a quoted field is not closed", id="bad-data-file"),
        pytest.param(["data.archive={archive}", "trainer.max_epochs=-1"], "needs to know the total number",
                     id="max-epochs-unlimited"),
        pytest.param(["data.archive={archive}", "ckpt_path={tmp}/nope.ckpt"], "ckpt_path={tmp}/nope.ckpt does not exist",
                     id="ckpt-path-missing"),
    ],
)
def test_known_user_errors_are_one_paragraph_and_exit_2(cola_archive, tmp_path, overrides, message):
    (tmp_path / "bad.csv").write_text('sentence,label\nFine.,1\n"Never closed.,0\nNext.,1\n')
    fill = {"tmp": tmp_path, "archive": cola_archive}
    args = ["model=tiny", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
            *(o.format(**fill) for o in overrides)]
    proc = run_cli("cola_bert.train", *args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.strip()]
    assert error[-2].startswith("Error: ") and message.format(**fill) in error[-2]
    assert error[-1] == "(Set HYDRA_FULL_ERROR=1 to see the traceback.)"
    if "trainer.max_epochs=-1" in overrides:  # the traceback is still there for whoever asks for it
        full = run_cli("cola_bert.train", *args, check=False, env={"HYDRA_FULL_ERROR": "1"})
        assert full.returncode != 0 and "Traceback" in full.stderr and "ConfigError" in full.stderr


def test_same_seed_same_metrics(compose_train, tmp_path):
    from cola_bert.train import train

    def metrics(seed: int, name: str) -> dict:
        cfg = compose_train("experiment=smoke", f"seed={seed}", "save_model=false", output_dir=tmp_path / name)
        record = train(cfg)
        return {k: record[k] for k in ("val/loss", "val/mcc", "val/accuracy", "train/loss")}

    first, again, other = metrics(3, "a"), metrics(3, "b"), metrics(4, "c")
    assert first == again
    assert first["val/loss"] != other["val/loss"]
