"""End to end through the command line on the real CoLA archive: a run's outputs, predict, the console a user
sees (header, no noise) and known user errors (one paragraph, exit 2). Resume: test_resume.py.

Sweeps (grid, Optuna, sweep_summary.csv, sweep_report.png) are in test_sweep.py."""

from __future__ import annotations

import json
import os
import re
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


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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
        pytest.param(["data.archive={archive}", "ckpt_path={tmp}"], "ckpt_path={tmp} is a directory, not a checkpoint",
                     id="ckpt-path-directory"),
        pytest.param(["data.archive={archive}", "ckpt_path={tmp}/corrupt.ckpt"],
                     "ckpt_path={tmp}/corrupt.ckpt cannot be read as a Lightning checkpoint", id="ckpt-path-corrupt"),
        pytest.param(["data.archive={archive}", "model.optimizer.lr=abc"],
                     "model.optimizer.lr=abc is not a number. Give a number, e.g. model.optimizer.lr=5e-5.",
                     id="lr-not-a-number"),
        pytest.param(["data.archive={archive}", "data.batch_size=0"], "data.batch_size=0 is out of range",
                     id="batch-size-0"),
        pytest.param(["data.archive={archive}", "seed=abc"], "seed=abc is not an integer", id="seed-not-an-integer"),
        pytest.param(["data.archive={archive}", "trainer.precision=bogus"],
                     "trainer.precision=bogus is not a precision Lightning knows", id="precision-unknown"),
        pytest.param(["data.archive={archive}", "trainer.accelerator=gpu"],
                     "trainer.accelerator=gpu asks for a CUDA GPU, but PyTorch sees none", id="gpu-without-gpu",
                     marks=pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA GPU")),
        pytest.param(["data.archive={archive}", "data.max_length=100000"],
                     "data.max_length=100000 exceeds the model's max_position_embeddings=512", id="max-length-too-long"),
        pytest.param(["data.archive={archive}", "logger=mlflow", "logger.mlflow.tracking_uri=bogus://nowhere"],
                     "logger=mlflow cannot use tracking_uri=bogus://nowhere", id="mlflow-bad-uri"),
        pytest.param(["data.archive={archive}", "logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9"],
                     "logger=mlflow cannot use tracking_uri=http://127.0.0.1:9 (MlflowException: no answer within 10 s",
                     id="mlflow-server-down"),  # not after ~4 min of retries
        pytest.param(["data.archive={archive}", "paths.model_dir={tmp}/bad.csv/model"],
                     "paths.model_dir={tmp}/bad.csv/model cannot be created: {tmp}/bad.csv is a file",
                     id="model-dir-not-creatable"),
    ],
)
def test_known_user_errors_are_one_paragraph_and_exit_2(cola_archive, tmp_path, overrides, message):
    (tmp_path / "bad.csv").write_text('sentence,label\nFine.,1\n"Never closed.,0\nNext.,1\n')
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint")
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


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("cola_bert.train", ["trainer.max_epoch=3"], "Could not override 'trainer.max_epoch'."),
        ("cola_bert.train", ["model=tinyy"], "In 'train': Could not find 'model/tinyy'"),
        ("cola_bert.export", ["model_dir=x", "formatt=onnx"], "Could not override 'formatt'."),
        ("launch.train", ["sagemaker=gpuu"], "Could not find 'sagemaker/gpuu'"),
        ("launch.tune", ["tune.strategy=Bayesian=1"], "mismatched input '='"),
        ("launch.deploy", ["model_data=x", "deploy=cpuu"], "Could not find 'deploy/cpuu'"),
        ("launch.batch", ["input=x.txt", "outputt=s3://b/"], "Could not override 'outputt'."),
    ],
)
def test_a_command_line_hydra_cannot_compose_exits_2(tmp_path, module, args, message):
    """Hydra's own message (what was wrong, the options), but exit status 2 like every other bad input: Hydra's 1
    is what these commands return when a run or a job fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([sys.executable, "-m", module, *args, f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_failure_after_the_config_is_composed_still_exits_1(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "import hydra\nfrom cola_bert import console\n\n"
        "@hydra.main(version_base='1.3', config_path=None)\n"
        "def main(cfg):\n    console.config_composed()\n    raise RuntimeError('a bug, not a bad command line')\n\n"
        "console.run_hydra(main)\n"
    )
    run = [sys.executable, str(script), f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "a bug, not a bad command line" in proc.stderr
    proc = subprocess.run([*run, "+x=[1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no viable alternative at input '[1'" in proc.stderr


def test_a_checkpoint_of_another_model_is_refused_before_training(tmp_path):
    """ckpt_path= a checkpoint written by a run with other model settings: a ConfigError naming the first weight
    that differs and the checkpoint's model, instead of a shape error from inside Lightning's restore."""
    import torch

    from cola_bert.config import ConfigError
    from cola_bert.module import CoLAClassifier
    from cola_bert.train import check_checkpoint

    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "vocab_size": 128}
    this = CoLAClassifier(None, tiny=tiny)
    other = CoLAClassifier(None, tiny={**tiny, "hidden_size": 64})
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams)}, path)
    with pytest.raises(ConfigError, match=r"was written by a different model than this run's \(model\.bert\..* has "
                                          r"shape \(.*64.*\) there, \(.*32.*\) here; .*'hidden_size': 64"):
        check_checkpoint(str(path), this)
    same = tmp_path / "same.ckpt"
    torch.save({"state_dict": this.state_dict(), "hyper_parameters": dict(this.hparams)}, same)
    check_checkpoint(str(same), this)  # a checkpoint of this model passes


def test_same_seed_same_metrics(compose_train, tmp_path):
    from cola_bert.train import train

    def metrics(seed: int, name: str) -> dict:
        cfg = compose_train("experiment=smoke", f"seed={seed}", "save_model=false", output_dir=tmp_path / name)
        record = train(cfg)
        return {k: record[k] for k in ("val/loss", "val/mcc", "val/accuracy", "train/loss")}

    first, again, other = metrics(3, "a"), metrics(3, "b"), metrics(4, "c")
    assert first == again
    assert first["val/loss"] != other["val/loss"]


def test_require_number_checks_each_list_item_like_a_single_value():
    """One check serves the training config and the export CLI: lists get the same type and range checks per item."""
    from cola_bert.config import ConfigError, require_number

    require_number("batch_sizes", [1, 8], "[1,8]", integer=True, low=1, as_list=True)
    require_number("batch_sizes", 8, "[1,8]", integer=True, low=1, as_list=True)  # one value is a list of one
    for value, message in (([0, 8], "batch_sizes=[0, 8] is out of range: it must be >= 1"),
                           ([1, "x"], "batch_sizes=[1, 'x'] is not a list of integers"),
                           ([], "batch_sizes=[] is not a list of integers")):  # fmt: skip
        with pytest.raises(ConfigError, match=re.escape(message)):
            require_number("batch_sizes", value, "[1,8]", integer=True, low=1, as_list=True)
    with pytest.raises(ConfigError, match="seed=\\[1, 2\\] is not an integer"):
        require_number("seed", [1, 2], "42", integer=True)
