"""The SageMaker training container contract, end to end on CPU.

A job is launched with `launch.train` against a moto server; the `sourcedir.tar.gz` and channel files it uploaded
are unpacked into a temporary directory laid out like `/opt/ml` (SAGEMAKER_BASE_DIR), the `SM_*` variables are set
the way the SageMaker training toolkit sets them from the job's recorded hyperparameters, and the staged `entry.py`
runs as a subprocess with the toolkit's argv (`--key value`, sorted, values rendered with str()). Then: the model
artifact, the exact values in config.yaml, the metric regexes against the real output, resume from last.ckpt, and a
2-process torchrun (gloo) run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from launch import aws
from launch import train as launch_train

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
RUN_TIMEOUT = 300

OVERRIDES = [
    "model=tiny",
    "model.optimizer.lr=3e-5",
    "task_name='my run with spaces'",
    "model.optimizer.betas=[0.8,0.95]",
    "data.group_by_length=false",
    "seed=7",
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "print_every_n_steps=1",
    "logger=csv",
]
_STRIP_ENV = ("AWS_", "SM_", "SAGEMAKER_", "TRAINING_JOB_NAME", "COLA_BERT_", "RANK", "LOCAL_RANK", "WORLD_SIZE",
              "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_", "NODE_RANK",
              "PYTHONPATH")  # fmt: skip


@dataclass
class Job:
    name: str
    raw_hyperparameters: dict[str, str]  # as recorded by CreateTrainingJob: JSON-encoded values
    tarball: bytes
    channels: dict[str, dict[str, bytes]]  # channel → file name → content


@dataclass
class Run:
    base: Path
    proc: subprocess.CompletedProcess

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def metrics(self) -> dict:
        return json.loads((self.model_dir / "metrics.json").read_text())

    @property
    def config(self):
        return OmegaConf.load(self.model_dir / "config.yaml")


# ------------------------------------------------------------------------------------------------ the launched job


@pytest.fixture(scope="module")
def job(cola_archive, tmp_path_factory) -> Job:
    import boto3
    import requests
    from hydra import compose, initialize_config_dir
    from moto.server import ThreadedMotoServer

    from cola_bert.archive import ensure_cola
    from cola_bert.data import cola_splits, write_labelled_tsv

    tmp = tmp_path_factory.mktemp("job")
    sha = OmegaConf.load(REPO / "conf" / "data" / "cola.yaml").sha256
    splits = cola_splits(ensure_cola(tmp / "data", "https://invalid.example/x.zip", sha, cola_archive), "glue", 0.25, 7)
    write_labelled_tsv(splits["train"][:300], tmp / "train.tsv")
    write_labelled_tsv(splits["val"][:100], tmp / "dev.tsv")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in list(os.environ):
                if var.startswith("AWS_") or var == "SAGEMAKER_ROLE":
                    mp.delenv(var)
            mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_REGION", REGION)
            mp.setenv("AWS_CONFIG_FILE", str(tmp / "aws-config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "aws-credentials"))
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            requests.post(f"http://{host}:{port}/moto-api/reset", timeout=10)
            overrides = [*OVERRIDES, f"data.train_file={tmp / 'train.tsv'}", f"data.val_file={tmp / 'dev.tsv'}",
                         f"aws.role={ROLE}", "sagemaker.wait=false"]  # fmt: skip
            with initialize_config_dir(version_base="1.3", config_dir=launch_train.CONF_DIR, job_name="test"):
                cfg = compose(config_name="launch_train", overrides=overrides)
            record = launch_train.launch(cfg, overrides)

            sm = boto3.client("sagemaker", region_name=REGION)
            s3 = boto3.client("s3", region_name=REGION)
            described = sm.describe_training_job(TrainingJobName=record["job_name"])
            raw = described["HyperParameters"]
            bucket, key = aws.parse_s3_uri(json.loads(raw["sagemaker_submit_directory"]))
            tarball = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            channels: dict[str, dict[str, bytes]] = {}
            for channel in described["InputDataConfig"]:
                bucket, prefix = aws.parse_s3_uri(channel["DataSource"]["S3DataSource"]["S3Uri"])
                for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                    body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    channels.setdefault(channel["ChannelName"], {})[obj["Key"][len(prefix):].lstrip("/")] = body
    finally:
        server.stop()
    return Job(record["job_name"], raw, tarball, channels)


# ------------------------------------------------------------------------------------ the training toolkit, in short


def _decode(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def toolkit_argv(hyperparameters: dict) -> list[str]:
    """sagemaker_training.mapping.to_cmd_args: `--key value` sorted by key, values rendered with str()."""
    argv: list[str] = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        if isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        else:
            text = "" if value is None else str(value)
        argv += [f"--{key}" if len(key) > 1 else f"-{key}", text]
    return argv


def layout(job: Job, base: Path) -> Path:
    """/opt/ml under `base`: code/ (sourcedir.tar.gz unpacked), input/data/<channel>/, input/config/, model/,
    output/data/, checkpoints/."""
    with tarfile.open(fileobj=io.BytesIO(job.tarball)) as tar:
        tar.extractall(base / "code", filter="data")
    for channel, files in job.channels.items():
        for name, body in files.items():
            path = base / "input" / "data" / channel / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    for sub in ("model", "output/data", "output/intermediate", "checkpoints", "input/config"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base


def toolkit_env(job: Job, base: Path, raw: dict[str, str], *, hosts=("algo-1",), num_gpus: int = 0) -> tuple[dict, list]:
    """The environment and argv the SageMaker training toolkit gives the user script."""
    decoded = {k: _decode(v) for k, v in raw.items()}
    framework = {k: v for k, v in decoded.items() if k.startswith("sagemaker_")}
    user = {k: v for k, v in decoded.items() if not k.startswith("sagemaker_")}
    argv = toolkit_argv(user)
    channels = sorted(job.channels)
    config = base / "input" / "config"
    (config / "hyperparameters.json").write_text(json.dumps(raw))
    resource = {"current_host": hosts[0], "hosts": list(hosts), "network_interface_name": "eth0"}
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    data_config = {c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for c in channels}
    (config / "inputdataconfig.json").write_text(json.dumps(data_config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIP_ENV)}
    sm = {
        "SM_HPS": json.dumps(user),
        "SM_USER_ARGS": json.dumps(argv),
        "SM_CHANNELS": json.dumps(channels),
        "SM_MODEL_DIR": str(base / "model"),
        "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"),
        "SM_OUTPUT_DIR": str(base / "output"),
        "SM_OUTPUT_INTERMEDIATE_DIR": str(base / "output" / "intermediate"),
        "SM_INPUT_DIR": str(base / "input"),
        "SM_INPUT_CONFIG_DIR": str(config),
        "SM_HOSTS": json.dumps(list(hosts)),
        "SM_CURRENT_HOST": hosts[0],
        "SM_CURRENT_INSTANCE_TYPE": "ml.m5.xlarge",
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_NEURONS": "0",
        "SM_NETWORK_INTERFACE_NAME": "eth0",
        "SM_LOG_LEVEL": "20",
        "SM_MODULE_NAME": "entry",
        "SM_MODULE_DIR": str(framework.get("sagemaker_submit_directory", "")),
        "SM_FRAMEWORK_MODULE": "sagemaker_pytorch_container.training:main",
        "SM_FRAMEWORK_PARAMS": json.dumps({k: v for k, v in framework.items()
                                           if k not in ("sagemaker_program", "sagemaker_submit_directory")}),
        "SM_RESOURCE_CONFIG": json.dumps(resource),
        "SM_INPUT_DATA_CONFIG": json.dumps(data_config),
        "TRAINING_JOB_NAME": job.name,
        "SAGEMAKER_BASE_DIR": str(base),
        "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    for channel in channels:
        sm[f"SM_CHANNEL_{channel.upper()}"] = str(base / "input" / "data" / channel)
    for key, value in user.items():
        sm[f"SM_HP_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    sm["SM_TRAINING_ENV"] = json.dumps(
        {"job_name": job.name, "hyperparameters": user, "channel_input_dirs": {c: sm[f"SM_CHANNEL_{c.upper()}"]
         for c in channels}, "hosts": list(hosts), "current_host": hosts[0], "model_dir": sm["SM_MODEL_DIR"],
         "num_gpus": num_gpus, "user_entry_point": json.loads(raw["sagemaker_program"])}
    )  # fmt: skip
    env.update(sm)
    return env, argv


def run_entry(
    job: Job, base: Path, raw: dict[str, str] | None = None, *, torchrun: int = 0, check: bool = True, **env_extra
) -> Run:
    env, argv = toolkit_env(job, base, raw or job.raw_hyperparameters)
    env.update(env_extra)
    program = json.loads(job.raw_hyperparameters["sagemaker_program"])
    if torchrun:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={torchrun}",
               "--master_addr=127.0.0.1", f"--master_port={port}", program, *argv]  # fmt: skip
    else:
        cmd = [sys.executable, program, *argv]
    proc = subprocess.run(cmd, cwd=base / "code", env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:3])} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return Run(base, proc)


@pytest.fixture(scope="module")
def first_run(job, tmp_path_factory) -> Run:
    return run_entry(job, layout(job, tmp_path_factory.mktemp("opt_ml")))


# ---------------------------------------------------------------------------------------------------------- tests


def test_the_toolkit_argv_is_what_sagemaker_passes(job):
    argv = toolkit_argv({k: _decode(v) for k, v in job.raw_hyperparameters.items() if not k.startswith("sagemaker_")})
    assert argv[:2] == ["--+trainer.limit_train_batches", "3"]
    assert "--task_name" in argv and argv[argv.index("--task_name") + 1] == "'my run with spaces'"
    assert argv[argv.index("--model.optimizer.lr") + 1] == "3e-5"


def test_artifacts_land_in_sm_model_dir(first_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = first_run.model_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.json",
                 "config.yaml"):  # fmt: skip
        assert (model_dir / name).is_file(), name
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert model.config.hidden_size == 32 and model.config.id2label == {0: "unacceptable", 1: "acceptable"}
    assert AutoTokenizer.from_pretrained(model_dir)("A sentence.")["input_ids"]
    metrics = first_run.metrics
    assert -1.0 <= metrics["val/mcc"] <= 1.0 and metrics["global_step"] == 3
    # Extra outputs in SM_OUTPUT_DATA_DIR, checkpoints in /opt/ml/checkpoints.
    out = first_run.base / "output" / "data"
    assert (out / "plots" / "learning_curves.png").is_file() and (out / "csv" / "metrics.csv").is_file()
    assert (first_run.base / "checkpoints" / "last.ckpt").is_file()
    assert not list((first_run.base / "code").glob("outputs")) and not (first_run.base / "code" / ".hydra").exists()
    # The staged package ran, not the checkout's.
    assert f"[entry] cola_bert from {first_run.base / 'code' / 'cola_bert'}" in first_run.proc.stdout


def test_hyperparameters_arrive_exactly(first_run, job):
    cfg = first_run.config
    assert cfg.model.optimizer.lr == 3e-5 and isinstance(cfg.model.optimizer.lr, float)
    assert cfg.task_name == "my run with spaces"
    assert list(cfg.model.optimizer.betas) == [0.8, 0.95]
    assert cfg.data.group_by_length is False
    assert cfg.seed == 7 and cfg.data.split_seed == 7 and cfg.data.batch_size == 16
    assert cfg.model.tiny.hidden_size == 32 and cfg.model.pretrained is None  # model=tiny (a group selection)
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 3
    # What the container decided.
    base = first_run.base
    assert cfg.data.train_file == str(base / "input" / "data" / "train" / "train.tsv")
    assert cfg.data.val_file == str(base / "input" / "data" / "validation" / "validation.tsv")
    assert cfg.data.test_file is None
    assert cfg.paths.model_dir == str(base / "model") and cfg.paths.output_dir == str(base / "output" / "data")
    assert cfg.paths.checkpoint_dir == str(base / "checkpoints")
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1 and cfg.trainer.num_nodes == 1
    assert cfg.trainer.enable_progress_bar is False and cfg.ckpt_path == "last"
    assert cfg.print_every_n_steps == 1  # given: the container's default (50) does not replace it


def test_metric_definitions_match_what_the_script_prints(first_run):
    stdout = first_run.proc.stdout
    assert "\r" not in stdout  # no progress bar redraws (CloudWatch would show #015 garbage)
    lines = stdout.splitlines()
    found = {}
    for definition in launch_train.metric_definitions():
        regex = re.compile(definition["Regex"])
        found[definition["Name"]] = [float(m.group(1)) for line in lines if (m := regex.search(line))]
    for name in ("train_loss", "val_loss", "val_mcc", "val_accuracy", "val_f1", "epoch", "train_loss_step",
                 "samples_per_second"):  # fmt: skip
        assert found[name], f"metric {name} matched nothing in:\n{stdout[-3000:]}"
    assert found["test_mcc"] == [] and found["test_accuracy"] == []  # no test channel
    epoch_lines = [line for line in lines if line.startswith("epoch=")]
    assert len(epoch_lines) == 1 and len(found["train_loss"]) == 1  # train_loss never matches train_loss_step
    assert len(found["train_loss_step"]) == 3  # print_every_n_steps=1, 3 steps
    metrics = first_run.metrics
    # The last value SageMaker records (and a tuning job optimises) is the best checkpoint's.
    assert found["val_mcc"][-1] == pytest.approx(metrics["val/mcc"], abs=1e-6)
    assert found["val_accuracy"][-1] == pytest.approx(metrics["val/accuracy"], abs=1e-6)
    assert found["train_loss"][0] == pytest.approx(metrics["history"][0]["train/loss"], abs=1e-6)
    assert lines[-2].startswith("best_epoch=0 val_loss=")


def test_restart_resumes_from_last_checkpoint(first_run, job, tmp_path):
    base = tmp_path / "opt_ml"
    shutil.copytree(first_run.base, base)
    shutil.rmtree(base / "model")
    (base / "model").mkdir()
    raw = dict(job.raw_hyperparameters)
    raw["trainer.max_epochs"] = json.dumps("2")
    second = run_entry(job, base, raw)
    output = second.proc.stdout + second.proc.stderr
    assert re.search(r"Restoring states from the checkpoint path at \S*/checkpoints/last\.ckpt", output), output[-3000:]
    metrics = second.metrics
    assert metrics["global_step"] == 2 * first_run.metrics["global_step"] == 6
    assert [row["epoch"] for row in metrics["history"]] == [0, 1]
    assert metrics["history"][0]["train/loss"] == pytest.approx(first_run.metrics["history"][0]["train/loss"])
    assert [line for line in second.proc.stdout.splitlines() if line.startswith("epoch=")][0].startswith("epoch=1 ")


def test_torchrun_two_cpu_processes(job, tmp_path):
    run = run_entry(job, layout(job, tmp_path / "opt_ml"), torchrun=2, COLA_BERT_SYNC_BEST_WEIGHTS="1")
    stdout = run.proc.stdout
    ranks = dict(re.findall(r"^\[entry\] rank (\d)/2: (.*)$", stdout, re.M))
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], stdout[-3000:]
    assert "best weights (epoch_000.ckpt) sent to all 2 ranks" in stdout
    assert stdout.count("[entry] model, metrics.json and config.yaml written") == 1
    cfg = run.config
    assert cfg.trainer.devices == 2 and cfg.trainer.num_nodes == 1 and cfg.trainer.strategy == "ddp"
    assert cfg.trainer.accelerator == "cpu"
    assert sorted(p.name for p in run.model_dir.iterdir()) == [
        "config.json", "config.yaml", "metrics.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    ]  # fmt: skip
    metrics = run.metrics
    assert metrics["global_step"] == 3  # each of the 2 ranks ran 3 steps on its half of the data
    assert f"val/mcc={metrics['val/mcc']:.6f}" in ranks["0"]


def test_a_missing_channel_fails_with_a_clear_reason(job, tmp_path):
    base = layout(job, tmp_path / "opt_ml")
    shutil.rmtree(base / "input" / "data" / "validation")
    trimmed = Job(job.name, job.raw_hyperparameters, job.tarball, {"train": job.channels["train"]})
    run = run_entry(trimmed, base, check=False)
    assert run.proc.returncode == 2 and "Traceback" not in run.proc.stderr
    reason = (base / "output" / "failure").read_text()
    assert "Missing input channel(s) validation" in reason and "sagemaker.inputs.validation" in reason
