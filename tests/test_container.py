"""The SageMaker training container contract, end to end on CPU, with the real `sagemaker-training` toolkit.

A job is launched with `launch.train` against the shared moto server; the `sourcedir.tar.gz`, channel files and
HyperParameters it recorded are laid out in a temporary directory like `/opt/ml` (SAGEMAKER_BASE_DIR:
input/config/*.json, input/data/<channel>/), and the toolkit itself — `sagemaker_training.trainer.train()`, the
container's `train` command — unpacks the code, pip-installs the staged requirements.txt (exact pins, already
satisfied here), sets SM_* and argv and starts `sagemaker_entry.py`. For torch_distributed the driver does what the
PyTorch container's framework module does: `entry_point.run(..., runner_type=TorchDistributed)`, i.e. torchrun.

Checked: the model artifact, the exact values in config.yaml (SM_HPS → the entry point's own parser → Hydra), the
metric regexes against the real output, resume after a restart, checkpoint isolation between two tuning trials that
share /opt/ml/checkpoints, a real two-node rendezvous (two toolkit processes, SM_HOSTS, torchrun --node_rank, gloo)
and the failure reason of a job with a missing channel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from moto_support import REGION, ROLE, clean_environ, point_at_moto

from launch import train as launch_train
from launch.session import parse_s3_uri

RUN_TIMEOUT = 420
# Each test starts the toolkit (pip check + a tiny training run, or two for the two-node test) in subprocesses.
pytestmark = pytest.mark.timeout(900)
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/cola-bert-train:test"  # custom image: no constraints.txt
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
# What the PyTorch training container runs: its framework module picks the runner from the framework parameters.
# trainer.train() configures the toolkit's logger before it hands over to the framework module, so the torchrun
# branch does the same (without it the toolkit logs nothing, "Invoking script ..." included).
DRIVER = """
from sagemaker_training import entry_point, environment, logging_config, runner, trainer
env = environment.Environment()
if env.additional_framework_parameters.get("sagemaker_torch_distributed_enabled"):
    logging_config.configure_logger(env.log_level)
    entry_point.run(env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars(),
                    runner_type=runner.RunnerType.TorchDistributed)
else:
    trainer.train()
"""
_STRIP_ENV = ("SM_", "SAGEMAKER_", "TRAINING_JOB_NAME", "COLA_BERT_", "RANK", "LOCAL_RANK", "WORLD_SIZE",
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

    def epochs(self) -> list[str]:
        return [line for line in self.proc.stdout.splitlines() if line.startswith("epoch=")]


# ------------------------------------------------------------------------------------------------ the launched job


@pytest.fixture(scope="module")
def job(cola_archive, moto_url, tmp_path_factory) -> Job:
    import boto3
    from hydra import compose, initialize_config_dir

    from cola_bert.archive import ensure_cola
    from cola_bert.data import cola_splits, write_labelled_tsv

    tmp = tmp_path_factory.mktemp("job")
    sha = OmegaConf.load(Path(launch_train.CONF_DIR) / "data" / "cola.yaml").sha256
    splits = cola_splits(ensure_cola(tmp / "data", "https://invalid.example/x.zip", sha, cola_archive), "glue", 0.25, 7)
    write_labelled_tsv(splits["train"][:300], tmp / "train.tsv")
    write_labelled_tsv(splits["val"][:100], tmp / "dev.tsv")
    clean = clean_environ(dict(os.environ), tmp)
    with pytest.MonkeyPatch.context() as mp:
        for var in set(os.environ) - set(clean):
            mp.delenv(var)
        for key, value in clean.items():
            mp.setenv(key, value)
        point_at_moto(mp, moto_url)
        overrides = [*OVERRIDES, f"data.train_file={tmp / 'train.tsv'}", f"data.val_file={tmp / 'dev.tsv'}",
                     f"aws.role={ROLE}", "sagemaker.wait=false", f"sagemaker.image_uri={IMAGE}"]  # fmt: skip
        with initialize_config_dir(version_base="1.3", config_dir=launch_train.CONF_DIR, job_name="test"):
            cfg = compose(config_name="launch_train", overrides=overrides)
        record = launch_train.launch(cfg, overrides)
        sm, s3 = boto3.client("sagemaker", region_name=REGION), boto3.client("s3", region_name=REGION)
        described = sm.describe_training_job(TrainingJobName=record["job_name"])
        raw = described["HyperParameters"]
        bucket, key = parse_s3_uri(json.loads(raw["sagemaker_submit_directory"]))
        tarball = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        channels: dict[str, dict[str, bytes]] = {}
        for channel in described["InputDataConfig"]:
            bucket, prefix = parse_s3_uri(channel["DataSource"]["S3DataSource"]["S3Uri"])
            for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                channels.setdefault(channel["ChannelName"], {})[obj["Key"][len(prefix):].lstrip("/")] = body
    return Job(record["job_name"], raw, tarball, channels)


# ------------------------------------------------------------------------------------------ /opt/ml + the toolkit


def layout(job: Job, base: Path, raw: dict[str, str] | None = None, *, hosts=("localhost",), host="localhost") -> Path:
    """/opt/ml under `base` as SageMaker prepares it before the toolkit starts: input/config/*.json (the recorded
    hyperparameters, the code's S3 URI pointing at a local copy of the same tarball), input/data/<channel>/.
    Host names must resolve: the toolkit waits for every host's DNS entry (SageMaker's are algo-1, algo-2, ...)."""
    raw = dict(raw or job.raw_hyperparameters)
    (base / "input" / "config").mkdir(parents=True, exist_ok=True)
    # SageMaker creates these before the container starts; without output/ the toolkit cannot write output/failure
    # and then exits 0 for a failed job.
    for directory in ("model", "output"):
        (base / directory).mkdir(exist_ok=True)
    (base / "sourcedir.tar.gz").write_bytes(job.tarball)
    raw["sagemaker_submit_directory"] = json.dumps(str(base / "sourcedir.tar.gz"))
    config = base / "input" / "config"
    (config / "hyperparameters.json").write_text(json.dumps(raw))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": host, "hosts": list(hosts), "current_instance_type": "ml.m5.xlarge",
         "network_interface_name": "lo"}))  # fmt: skip
    (config / "inputdataconfig.json").write_text(json.dumps(
        {c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"} for c in job.channels}))
    for channel, files in job.channels.items():
        for name, body in files.items():
            path = base / "input" / "data" / channel / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    return base


def start(job_name: str, base: Path, **env_extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIP_ENV) and not k.startswith("AWS_")}
    env.update(SAGEMAKER_BASE_DIR=str(base), TRAINING_JOB_NAME=job_name, HF_HUB_OFFLINE="1",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **env_extra)  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", DRIVER], cwd=base, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def finish(proc: subprocess.Popen, base: Path, *, check: bool = True) -> Run:
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        pytest.fail(f"the toolkit exited {proc.returncode}:\n{stdout[-4000:]}\n{stderr[-6000:]}")
    return Run(base, done)


def run_job(job: Job, base: Path, raw: dict[str, str] | None = None, *, name: str | None = None,
            check: bool = True) -> Run:  # fmt: skip
    layout(job, base, raw)
    return finish(start(name or job.name, base), base, check=check)


@pytest.fixture(scope="module")
def first_run(job, tmp_path_factory) -> Run:
    return run_job(job, tmp_path_factory.mktemp("opt_ml"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------- tests


def test_the_toolkit_installed_the_pins_and_started_the_entry_point(first_run, job):
    out = first_run.proc.stdout + first_run.proc.stderr
    assert "requirements.txt" in out and "pytorch-lightning==" in (first_run.base / "code" / "requirements.txt").read_text()
    assert re.search(r"Requirement already satisfied: pytorch-lightning==", out)  # exact pins, as installed here
    assert f"[entry] cola_bert from {first_run.base / 'code' / 'cola_bert'}" in first_run.proc.stdout
    assert (first_run.base / "output" / "success").is_file()  # the toolkit's own verdict


def test_artifacts_land_in_sm_model_dir(first_run, job):
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
    out = first_run.base / "output" / "data"
    assert (out / "plots" / "learning_curves.png").is_file() and (out / "csv" / "metrics.csv").is_file()
    # Checkpoints under /opt/ml/checkpoints/<TRAINING_JOB_NAME>/ (what SageMaker syncs to checkpoint_s3_uri).
    assert sorted(p.name for p in (first_run.base / "checkpoints").iterdir()) == [job.name]
    assert (first_run.base / "checkpoints" / job.name / "last.ckpt").is_file()
    assert first_run.config.paths.checkpoint_dir == str(first_run.base / "checkpoints" / job.name)


def test_hyperparameters_arrive_exactly(first_run):
    cfg = first_run.config
    assert cfg.model.optimizer.lr == 3e-5 and isinstance(cfg.model.optimizer.lr, float)
    assert cfg.task_name == "my run with spaces"
    assert list(cfg.model.optimizer.betas) == [0.8, 0.95]
    assert cfg.data.group_by_length is False
    assert cfg.seed == 7 and cfg.data.split_seed == 7 and cfg.data.batch_size == 16
    assert cfg.model.tiny.hidden_size == 32 and cfg.model.pretrained is None  # model=tiny (a group selection)
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 3
    base = first_run.base
    assert cfg.data.train_file == str(base / "input" / "data" / "train" / "train.tsv")
    assert cfg.data.val_file == str(base / "input" / "data" / "validation" / "validation.tsv")
    assert cfg.data.test_file is None
    assert cfg.paths.model_dir == str(base / "model") and cfg.paths.output_dir == str(base / "output" / "data")
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
    assert len(first_run.epochs()) == 1 and len(found["train_loss"]) == 1  # never matches train_loss_step
    assert len(found["train_loss_step"]) == 3  # print_every_n_steps=1, 3 steps
    metrics = first_run.metrics
    # The last value SageMaker records (and a tuning job optimises) is the best checkpoint's.
    assert found["val_mcc"][-1] == pytest.approx(metrics["val/mcc"], abs=1e-6)
    assert found["val_accuracy"][-1] == pytest.approx(metrics["val/accuracy"], abs=1e-6)
    assert found["train_loss"][0] == pytest.approx(metrics["history"][0]["train/loss"], abs=1e-6)


def test_a_restarted_spot_job_resumes_its_own_checkpoint(first_run, job, tmp_path):
    base = tmp_path / "opt_ml"
    shutil.copytree(first_run.base / "checkpoints", base / "checkpoints")  # what SageMaker copies back down
    raw = dict(job.raw_hyperparameters)
    raw["trainer.max_epochs"] = json.dumps("2")
    second = run_job(job, base, raw)
    output = second.proc.stdout + second.proc.stderr
    assert re.search(rf"Restoring states from the checkpoint path at \S*/checkpoints/{job.name}/last\.ckpt", output)
    metrics = second.metrics
    assert metrics["global_step"] == 2 * first_run.metrics["global_step"] == 6
    assert [row["epoch"] for row in metrics["history"]] == [0, 1]
    assert metrics["history"][0]["train/loss"] == pytest.approx(first_run.metrics["history"][0]["train/loss"])
    assert second.epochs()[0].startswith("epoch=1 ")  # continued, not restarted


def test_tuning_trials_never_read_or_write_each_others_checkpoints(first_run, job, tmp_path):
    """Two training jobs of one tuning job: SageMaker syncs the whole shared checkpoint prefix into each job's
    /opt/ml/checkpoints, and the toolkit hides `_tuning_objective_metric`. The second trial must start from scratch
    although the first one's last.ckpt is right there, and must leave it untouched."""
    shared = first_run.base / "checkpoints"
    theirs = shared / job.name / "last.ckpt"
    before = _sha(theirs)
    base = tmp_path / "opt_ml"
    base.mkdir()
    (base / "checkpoints").symlink_to(shared)  # one directory, as after SageMaker's sync
    raw = {**job.raw_hyperparameters, "_tuning_objective_metric": "val_mcc", "model.optimizer.lr": json.dumps("1e-4")}
    trial = run_job(job, base, raw, name=f"{job.name[:40]}-trial-002")
    output = trial.proc.stdout + trial.proc.stderr
    restored = re.findall(r"Restoring states from the checkpoint path at (\S+)", output)
    assert restored and all(Path(p).parent.name.endswith("-trial-002") for p in restored)  # its own best, at the end
    assert f"{shared / job.name}/" not in output  # never read from the other trial's directory
    assert trial.epochs()[0].startswith("epoch=0 ") and trial.metrics["global_step"] == 3
    assert (shared / f"{job.name[:40]}-trial-002" / "last.ckpt").is_file()
    assert _sha(theirs) == before
    assert trial.config.model.optimizer.lr == 1e-4


def test_two_nodes_rendezvous_through_torchrun(job, tmp_path):
    """sagemaker=multi_gpu's torch_distributed on two 'hosts' of one machine: each toolkit process starts
    `torchrun --nnodes 2 --nproc_per_node 1 --master_addr <first host> --master_port 7777 --node_rank <i>`."""
    raw = {**job.raw_hyperparameters, "sagemaker_torch_distributed_enabled": "true"}
    hosts = ("localhost", "127.0.0.1")  # two names of this machine: node_rank = the host's index
    procs = []
    for host in hosts:
        base = layout(job, tmp_path / host, raw, hosts=hosts, host=host)
        procs.append((start(job.name, base, COLA_BERT_SYNC_BEST_WEIGHTS="1"), base))
    runs = [finish(proc, base) for proc, base in procs]
    for i, run in enumerate(runs):
        assert "torchrun --nnodes 2 --nproc_per_node 1" in run.proc.stdout + run.proc.stderr
        assert f"--node_rank {i}" in run.proc.stdout + run.proc.stderr
    lines = {int(r): s for run in runs for r, s in re.findall(r"^\[entry\] rank (\d)/2: (.*)$", run.proc.stdout, re.M)}
    assert set(lines) == {0, 1} and lines[0] == lines[1]  # both ranks scored the same (best) weights
    leader, follower = runs
    assert "best weights (epoch_000.ckpt) sent to all 2 ranks" in leader.proc.stdout
    assert leader.config.trainer.num_nodes == 2 and leader.config.trainer.devices == 1
    assert leader.config.trainer.strategy == "ddp" and leader.config.trainer.accelerator == "cpu"
    assert leader.metrics["global_step"] == 3 and not (follower.model_dir / "metrics.json").exists()
    assert f"val/mcc={leader.metrics['val/mcc']:.6f}" in lines[0]


def test_a_missing_channel_fails_with_a_clear_reason(job, tmp_path):
    trimmed = Job(job.name, job.raw_hyperparameters, job.tarball, {"train": job.channels["train"]})
    run = run_job(trimmed, tmp_path / "opt_ml", check=False)
    assert run.proc.returncode != 0
    assert "[entry] error: Missing input channel(s) validation" in run.proc.stderr
    assert "Traceback" not in run.proc.stderr.split("[entry] error:")[0]
    reason = (run.base / "output" / "failure").read_text()
    assert "Missing input channel(s) validation" in reason or "ExitCode 2" in reason
