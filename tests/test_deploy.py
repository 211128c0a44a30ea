"""launch.deploy: config group, container version picking, dry runs, deploys and deletes with the real SageMaker SDK.

No network, no AWS. Deploys run against a moto server on 127.0.0.1 (moto.server.ThreadedMotoServer) reached through
AWS_ENDPOINT_URL, so every call of the real SDK v2 (STS, S3 upload, CreateModel, CreateEndpointConfig,
CreateEndpoint, DescribeEndpoint, InvokeEndpoint, Delete*) is a real HTTP request that moto answers; a spy on
botocore's BaseClient._make_api_call records them. moto's sagemaker-runtime answers InvokeEndpoint with results
queued through its /moto-api/static/sagemaker/endpoint-results API (nothing is mocked in-process). Limits of moto
that shape the tests: endpoints are InService at once (the SDK's 30 s poll sleep is skipped), and its instance-type
list for endpoint configs predates ml.g5/ml.g6, so the GPU deploy runs on ml.g4dn.xlarge (the default ml.g5.xlarge
is checked in a dry run).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import pytest

from hydra import compose, initialize_config_dir

from launch import aws, deploy
from launch.aws import LaunchError

REPO_ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
ECR = f"763104351884.dkr.ecr.{REGION}.amazonaws.com"
DEFAULT_BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
SENTENCES = ["The cat sat on the mat.", "Cat the mat on sat the."]
ANSWERS = [
    {"label": 1, "label_name": "acceptable", "score": 0.91, "probabilities": [0.09, 0.91]},
    {"label": 0, "label_name": "unacceptable", "score": 0.87, "probabilities": [0.87, 0.13]},
]
OPTIONS = ("cpu", "gpu", "serverless", "elastic_inference")


# ------------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def region_only(clean_env, monkeypatch):
    """A region but no credentials: any AWS call would fail."""
    monkeypatch.setenv("AWS_REGION", REGION)
    return clean_env


@pytest.fixture
def moto_env(moto_env, monkeypatch):
    # The SDK sleeps 30 s before each DescribeEndpoint poll; moto endpoints are InService at once.
    aws.import_sagemaker()
    import sagemaker.session

    shim = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    shim.sleep = lambda seconds: None
    monkeypatch.setattr(sagemaker.session, "time", shim)
    return moto_env


@pytest.fixture
def queue_answers(moto_env):
    """Queue what moto's InvokeEndpoint returns next (what code/inference.py answers for SENTENCES)."""
    import requests

    def _queue(body=ANSWERS, content_type="application/json"):
        raw = body if isinstance(body, str) else json.dumps(body)
        payload = {"results": [{"Body": raw, "ContentType": content_type}]}
        url = f"{moto_env}/moto-api/static/sagemaker/endpoint-results"
        requests.post(url, json=payload, timeout=10).raise_for_status()

    return _queue


@pytest.fixture
def api_calls(api_calls, monkeypatch):
    """The shared botocore call spy; warnings land here too, as ("warn", msg)."""
    calls = api_calls
    original_warn = aws.warn

    def warn(message):
        calls.append(("warn", message))
        original_warn(message)

    monkeypatch.setattr(aws, "warn", warn)
    return calls


@pytest.fixture
def no_http(monkeypatch):
    """Any HTTP request from botocore fails the test."""
    from botocore.endpoint import Endpoint

    def refuse(self, *args, **kwargs):
        raise AssertionError("an AWS request was sent")

    monkeypatch.setattr(Endpoint, "make_request", refuse)


def ops(calls, name: str) -> list[dict]:
    return [c[2] for c in calls if len(c) == 4 and c[1] == name]


def api_only(calls) -> list[tuple]:
    return [c for c in calls if len(c) == 4]


def make_archive(
    path: Path,
    *,
    torch_version: str | None = "2.13.0",
    with_code: bool = True,
    with_manifest: bool = True,
    tamper: bool = False,
    first: tuple[str, bytes] | None = None,
) -> Path:
    """A small model.tar.gz laid out like cola_bert.export's (dummy weights), with a consistent manifest."""
    files = {
        "config.json": b'{"model_type": "bert"}',
        "model.pt": b"torchscript bytes",
        "model.safetensors": b"weights",
        "tokenizer.json": b"{}",
        "tokenizer_config.json": b"{}",
        "code/requirements.txt": b"transformers>=5\n",
    }
    if with_code:
        files["code/inference.py"] = b"def model_fn(model_dir):\n    return model_dir\n"
    if first:
        files = {first[0]: first[1], **files}
    manifest = {
        "format": "torchscript",
        "torch_version": torch_version,
        "transformers_version": "5.24.0",
        "max_length": 128,
        "label_names": ["unacceptable", "acceptable"],
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    if tamper:
        files["model.pt"] = b"changed after export"
    entries = list(files.items())
    if with_manifest:
        entries.insert(1 if first else 0, ("manifest.json", json.dumps(manifest).encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_archive(tmp_path / "export" / "model.tar.gz")


def cfg_for(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=deploy.CONF_DIR, version_base="1.3"):
        return compose("deploy", overrides=list(overrides), return_hydra_config=return_hydra_config)


def sm_client():
    import boto3

    return boto3.client("sagemaker", region_name=REGION)


def s3_client():
    import boto3

    return boto3.client("s3", region_name=REGION)


# --------------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("option", OPTIONS)
def test_every_deploy_option_composes(option, clean_env):
    cfg = cfg_for(f"deploy={option}")
    d = cfg.deploy
    expected = {
        "cpu": ("realtime", "ml.c5.large", None),
        "gpu": ("realtime", "ml.g5.xlarge", None),
        "serverless": ("serverless", None, None),
        "elastic_inference": ("elastic_inference", "ml.m5.large", "ml.eia2.medium"),
    }[option]
    assert (d.mode, d.instance_type, d.accelerator_type) == expected
    keys = set(cfg_for("deploy=cpu").deploy.keys())
    assert set(d.keys()) == keys  # every option carries the same schema
    assert cfg.aws.prefix == "cola-bert" and cfg.aws.region is None and cfg.aws.bucket is None
    assert cfg.aws.role is None  # ${oc.env:SAGEMAKER_ROLE,null}
    assert deploy._validate_deploy_node(d) == expected[0]
    if option == "serverless":
        assert (d.memory_size_in_mb, d.max_concurrency) == (2048, 5)
    if option == "elastic_inference":
        assert (d.framework_version, d.py_version) == ("1.5.1", "py3")


def test_defaults_cpu_and_hydra_writes_nothing(clean_env, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ROLE", ROLE)
    cfg = cfg_for(return_hydra_config=True)
    assert cfg.deploy.mode == "realtime" and cfg.deploy.instance_type == "ml.c5.large"
    assert cfg.aws.role == ROLE
    assert cfg.hydra.output_subdir is None
    assert cfg.hydra.job.chdir is False
    assert cfg.hydra.run.dir == "."
    assert (cfg.action, cfg.wait, cfg.dry_run, cfg.endpoint_name) == ("deploy", True, False, None)
    assert list(cfg.smoke_test.sentences) == SENTENCES and cfg.smoke_test.request_key == "inputs"


# ------------------------------------------------------------------------------------------------ version picking


def test_available_versions_follow_sdk_config_region_and_scope():
    cpu = deploy.available_versions(REGION, "ml.c5.large")
    assert "2.6.0" in cpu and cpu["2.6.0"] == ["py312"] and list(cpu)[-1] == "2.6.0"
    assert list(cpu) == sorted(cpu, key=deploy._version_key)
    assert deploy.available_versions(REGION, None, serverless=True) == cpu
    assert deploy.available_versions(REGION, "ml.m5.large", "ml.eia2.medium") == {"1.3.1": ["py3"], "1.5.1": ["py3"]}
    # The 1.5.1 EI image was never published in eu-central-1.
    assert deploy.available_versions("eu-central-1", "ml.m5.large", "ml.eia2.medium") == {"1.3.1": ["py3"]}
    assert deploy.image_scope("ml.c6g.large", None) == "inference_graviton"
    assert list(deploy.available_versions(REGION, "ml.c6g.large"))[-1] == "2.4.0"


@pytest.mark.parametrize(
    ("torch_version", "picked", "py", "warns"),
    [
        ("2.4.1", "2.5.1", "py311", False),  # 2.4.0 < 2.4.1: the next one up
        ("2.3.0", "2.3.0", "py311", False),
        ("2.6.0+cu124", "2.6.0", "py312", False),
        ("1.5.1", "1.6.0", "py36", False),
        ("2.13.0", "2.6.0", "py312", True),  # newer than anything SDK v2 offers
        (None, "2.6.0", "py312", False),
    ],
)
def test_pick_framework_version(torch_version, picked, py, warns):
    choice = deploy.pick_framework_version(torch_version, deploy.available_versions(REGION, "ml.c5.large"))
    assert (choice.framework_version, choice.py_version) == (picked, py)
    assert bool(choice.warning) is warns
    if warns:
        assert "2.13.0" in choice.warning and "2.6.0" in choice.warning
        assert "falls back to the bundled Hugging Face weights" in choice.warning


def test_plan_follows_manifest_torch_version(tmp_path, region_only, no_http, capsys):
    old = make_archive(tmp_path / "a" / "model.tar.gz", torch_version="2.3.0")
    result = deploy.execute(cfg_for(f"model_data={old}", "dry_run=true"))
    assert result["plan"].image_uri == f"{ECR}/pytorch-inference:2.3.0-cpu-py311"
    assert "Warning" not in capsys.readouterr().err

    new = make_archive(tmp_path / "b" / "model.tar.gz", torch_version="2.13.0")
    result = deploy.execute(cfg_for(f"model_data={new}", "dry_run=true"))
    assert result["plan"].image_uri == f"{ECR}/pytorch-inference:2.6.0-cpu-py312"
    err = capsys.readouterr().err
    assert "exported with torch 2.13.0" in err and "newest PyTorch serving container" in err


def test_pinned_framework_version(archive, region_only, no_http, capsys):
    result = deploy.execute(cfg_for(f"model_data={archive}", "dry_run=true", "deploy.framework_version=2.5.1"))
    plan = result["plan"]
    assert (plan.framework_version, plan.py_version) == ("2.5.1", "py311")
    assert plan.image_uri == f"{ECR}/pytorch-inference:2.5.1-cpu-py311"
    assert "older than the export's torch 2.13.0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["deploy.framework_version=2.99.0"], "Unsupported pytorch version: 2.99.0"),
        (["deploy.framework_version=2.6.0", "deploy.py_version=py38"], "Unsupported Python version: py38"),
    ],
)
def test_unknown_framework_version_fails_before_any_aws_call(overrides, fragment, archive, moto_env, api_calls):
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={archive}", f"aws.role={ROLE}", *overrides))
    text = str(info.value)
    assert fragment in text
    assert "2.6.0" in text  # the SDK's list of valid values
    assert "deploy.framework_version=<version>" in text
    assert api_only(api_calls) == []  # nothing uploaded, nothing created


# ------------------------------------------------------------------------------------------------------- dry runs


@pytest.mark.parametrize(
    ("option", "image", "resources"),
    [
        ("cpu", "pytorch-inference:2.6.0-cpu-py312", {"instance": "1 x ml.c5.large"}),
        ("gpu", "pytorch-inference:2.6.0-gpu-py312", {"instance": "1 x ml.g5.xlarge"}),
        (
            "serverless",
            "pytorch-inference:2.6.0-cpu-py312",
            {"serverless": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}},
        ),
        (
            "elastic_inference",
            "pytorch-inference-eia:1.5.1-cpu-py3",
            {"instance": "1 x ml.m5.large", "accelerator": "ml.eia2.medium"},
        ),
    ],
)
def test_dry_run_prints_plan_and_makes_no_aws_call(
    option, image, resources, archive, region_only, api_calls, no_http, capsys
):
    cfg = cfg_for(f"deploy={option}", f"model_data={archive}", "dry_run=true", "endpoint_name=my-endpoint")
    result = deploy.execute(cfg)
    assert api_only(api_calls) == []
    rows = result["rows"]
    assert rows["image uri"] == f"{ECR}/{image}"
    for key, value in resources.items():
        assert rows[key] == value
    assert rows["endpoint"] == rows["model"] == rows["endpoint config"] == "my-endpoint"
    assert rows["model data"].startswith(f"s3://sagemaker-{REGION}-<account>/cola-bert/models/my-endpoint/model.tar.gz")
    env = rows["env"]
    assert env["SAGEMAKER_PROGRAM"] == "inference.py" and env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    out, err = capsys.readouterr()
    assert f"{ECR}/{image}" in out
    assert "my-endpoint" in out and "SAGEMAKER_PROGRAM" in out
    assert out.rstrip().endswith("Dry run: no AWS call was made; nothing was uploaded or created.")
    if option == "elastic_inference":
        assert "2023-04-15" in err and "no longer available" in err and "torch 1.5.1" in err
        assert "deploy=cpu" in err and "deploy=serverless" in err and "deploy=gpu" in err
    else:
        assert "Elastic Inference" not in err


def test_dry_run_generates_endpoint_name(archive, region_only, no_http):
    result = deploy.execute(cfg_for("deploy=serverless", f"model_data={archive}", "dry_run=true"))
    name = result["plan"].endpoint_name
    assert name.startswith("cola-bert-serverless-") and len(name) <= 63
    assert deploy.NAME_RE.match(name)


def test_dry_run_s3_and_training_job_sources(region_only, api_calls, no_http, capsys):
    result = deploy.execute(cfg_for("model_data=s3://bucket/models/model.tar.gz", "dry_run=true", "endpoint_name=e"))
    assert result["rows"]["model data"] == "s3://bucket/models/model.tar.gz (used as is)"
    assert "not read in a dry run" in result["rows"]["manifest"]
    result = deploy.execute(cfg_for("training_job=cola-job-1", "dry_run=true", "endpoint_name=e", "aws.bucket=bk"))
    rows = result["rows"]
    assert rows["model source"] == "training_job: cola-job-1"
    assert rows["model data"].startswith("s3://bk/cola-bert/models/e/model.tar.gz (the model artifact of training job")
    assert api_only(api_calls) == []


def test_dry_run_delete(region_only, api_calls, no_http, capsys):
    result = deploy.execute(cfg_for("action=delete", "endpoint_name=old-endpoint", "dry_run=true"))
    assert result["dry_run"] is True
    out = capsys.readouterr().out
    assert "Delete old-endpoint (dry run)" in out and "endpoint config" in out
    assert api_only(api_calls) == []


# ----------------------------------------------------------------------------------------------- deploys on moto


def _describe(name: str):
    sm = sm_client()
    model = sm.describe_model(ModelName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=name)
    endpoint = sm.describe_endpoint(EndpointName=name)
    return model, config, endpoint


def test_deploy_cpu_uploads_creates_and_invokes(archive, moto_env, queue_answers, api_calls, capsys):
    queue_answers()
    result = deploy.execute(cfg_for(f"model_data={archive}", f"aws.role={ROLE}"))
    name = result["endpoint_name"]
    assert name.startswith("cola-bert-cpu-")
    key = f"cola-bert/models/{name}/model.tar.gz"
    assert result["model_data"] == f"s3://{DEFAULT_BUCKET}/{key}"

    # Uploaded once, byte for byte, and not repacked into a second archive.
    objects = s3_client().list_objects_v2(Bucket=DEFAULT_BUCKET).get("Contents", [])
    assert [o["Key"] for o in objects] == [key]
    assert s3_client().get_object(Bucket=DEFAULT_BUCKET, Key=key)["Body"].read() == archive.read_bytes()

    (create_model,) = ops(api_calls, "CreateModel")
    container = create_model["PrimaryContainer"]
    assert container["Image"] == f"{ECR}/pytorch-inference:2.6.0-cpu-py312"
    assert container["ModelDataUrl"] == f"s3://{DEFAULT_BUCKET}/{key}"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert container["Environment"]["SAGEMAKER_REGION"] == REGION
    assert create_model["ExecutionRoleArn"] == ROLE

    model, config, endpoint = _describe(name)
    assert model["PrimaryContainer"]["Image"] == container["Image"]
    (variant,) = config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (name, "ml.c5.large", 1)
    assert "AcceleratorType" not in variant and "ServerlessConfig" not in variant
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == name
    assert len(ops(api_calls, "CreateEndpointConfig")) == 1 and len(ops(api_calls, "CreateEndpoint")) == 1

    (invoke,) = ops(api_calls, "InvokeEndpoint")
    assert invoke["EndpointName"] == name
    assert invoke["ContentType"] == "application/json" and invoke["Accept"] == "application/json"
    assert json.loads(invoke["Body"]) == {"inputs": SENTENCES}
    assert result["predictions"] == [
        {"sentence": SENTENCES[0], "label": 1, "label_name": "acceptable", "score": 0.91},
        {"sentence": SENTENCES[1], "label": 0, "label_name": "unacceptable", "score": 0.87},
    ]
    out = capsys.readouterr().out
    assert "label=1 (acceptable) score=0.910" in out and "label=0 (unacceptable) score=0.870" in out
    assert f"action=delete endpoint_name={name}" in out
    # Every request went to AWS_ENDPOINT_URL (the moto server).
    assert {c[3] for c in api_only(api_calls)} == {moto_env}


def test_deploy_serverless(archive, moto_env, queue_answers, api_calls):
    queue_answers()
    name = deploy.execute(cfg_for("deploy=serverless", f"model_data={archive}", f"aws.role={ROLE}"))["endpoint_name"]
    model, config, _ = _describe(name)
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert "InstanceType" not in variant
    assert model["PrimaryContainer"]["Image"] == f"{ECR}/pytorch-inference:2.6.0-cpu-py312"
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"


def test_deploy_elastic_inference(archive, moto_env, queue_answers, api_calls):
    queue_answers()
    cfg = cfg_for("deploy=elastic_inference", f"model_data={archive}", f"aws.role={ROLE}")
    name = deploy.execute(cfg)["endpoint_name"]
    model, config, _ = _describe(name)
    assert model["PrimaryContainer"]["Image"] == f"{ECR}/pytorch-inference-eia:1.5.1-cpu-py3"
    (variant,) = config["ProductionVariants"]
    assert (variant["InstanceType"], variant["AcceleratorType"]) == ("ml.m5.large", "ml.eia2.medium")
    # The EI warning came before anything was uploaded or created.
    warn_at = next(i for i, c in enumerate(api_calls) if c[0] == "warn" and "2023-04-15" in c[1])
    first_put = next(i for i, c in enumerate(api_calls) if len(c) == 4 and c[1] == "PutObject")
    assert warn_at < first_put


def test_deploy_gpu(archive, moto_env, queue_answers, api_calls):
    queue_answers()
    # moto's endpoint-config validation predates ml.g5/ml.g6; ml.g4dn is another GPU family it accepts.
    cfg = cfg_for("deploy=gpu", f"model_data={archive}", f"aws.role={ROLE}", "deploy.instance_type=ml.g4dn.xlarge")
    name = deploy.execute(cfg)["endpoint_name"]
    model, config, _ = _describe(name)
    assert model["PrimaryContainer"]["Image"] == f"{ECR}/pytorch-inference:2.6.0-gpu-py312"
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"
    assert name.startswith("cola-bert-gpu-")


def test_deploy_s3_model_data_reads_manifest_and_is_not_reuploaded(tmp_path, moto_env, queue_answers, api_calls):
    s3 = s3_client()
    s3.create_bucket(Bucket="models-bucket")
    src = make_archive(tmp_path / "model.tar.gz", torch_version="2.3.0")
    s3.upload_file(str(src), "models-bucket", "runs/7/model.tar.gz")
    api_calls.clear()
    queue_answers()
    uri = "s3://models-bucket/runs/7/model.tar.gz"
    cfg = cfg_for(f"model_data={uri}", f"aws.role={ROLE}", "endpoint_name=from-s3", "aws.bucket=models-bucket")
    result = deploy.execute(cfg)
    assert result["image_uri"] == f"{ECR}/pytorch-inference:2.3.0-cpu-py311"  # from the S3 archive's manifest
    (create_model,) = ops(api_calls, "CreateModel")
    assert create_model["PrimaryContainer"]["ModelDataUrl"] == uri
    assert ops(api_calls, "PutObject") == [] and ops(api_calls, "CreateMultipartUpload") == []
    assert len(ops(api_calls, "GetObject")) == 1


def test_read_s3_manifest_gives_up_after_budget(tmp_path, moto_env, capsys):
    s3 = s3_client()
    s3.create_bucket(Bucket="big-bucket")
    big = make_archive(tmp_path / "big.tar.gz", first=("aaa.bin", os.urandom(256 * 1024)))
    s3.upload_file(str(big), "big-bucket", "big.tar.gz")
    ctx = aws.AwsContext({})
    info = deploy.read_s3_manifest(ctx, "s3://big-bucket/big.tar.gz", budget=64 * 1024)
    assert info.manifest is None and "skipped reading it" in info.notes[0]
    info = deploy.read_s3_manifest(ctx, "s3://big-bucket/big.tar.gz")
    assert info.manifest["torch_version"] == "2.13.0" and info.has_entry_point is True
    with pytest.raises(LaunchError, match="S3 object or bucket not found"):
        deploy.read_s3_manifest(ctx, "s3://big-bucket/missing.tar.gz")


def _fake_export(expected_input: bytes, exported: Path, seen: list):
    def export_model(model_dir, output_dir, format="torchscript", **kwargs):  # noqa: A002
        data = Path(model_dir).read_bytes()
        seen.append((data == expected_input, format))
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.tar.gz").write_bytes(exported.read_bytes())
        return out / "model.tar.gz"

    return export_model


def test_deploy_training_job_exports_then_deploys(tmp_path, moto_env, queue_answers, api_calls, monkeypatch):
    import cola_bert.export

    sm, s3 = sm_client(), s3_client()
    s3.create_bucket(Bucket="jobs")
    sm.create_training_job(
        TrainingJobName="cola-job-1",
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://jobs/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    artifact = sm.describe_training_job(TrainingJobName="cola-job-1")["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == "s3://jobs/out/cola-job-1/output/model.tar.gz"
    hf_tar = b"a tarred Hugging Face model directory"
    s3.put_object(Bucket="jobs", Key="out/cola-job-1/output/model.tar.gz", Body=hf_tar)
    exported = make_archive(tmp_path / "exported.tar.gz", torch_version="2.5.1")
    seen: list = []
    monkeypatch.setattr(cola_bert.export, "export_model", _fake_export(hf_tar, exported, seen))
    queue_answers()

    result = deploy.execute(cfg_for("training_job=cola-job-1", f"aws.role={ROLE}", "endpoint_name=from-job"))
    assert seen == [(True, "torchscript")]
    key = "cola-bert/models/from-job/model.tar.gz"
    assert s3.get_object(Bucket=DEFAULT_BUCKET, Key=key)["Body"].read() == exported.read_bytes()
    (create_model,) = ops(api_calls, "CreateModel")
    assert create_model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{DEFAULT_BUCKET}/{key}"
    # Re-picked from the export's manifest (2.5.1), not the local torch predicted in the plan.
    assert create_model["PrimaryContainer"]["Image"] == f"{ECR}/pytorch-inference:2.5.1-cpu-py311"
    assert result["predictions"][0]["label_name"] == "acceptable"


def test_training_job_not_found(moto_env):
    with pytest.raises(LaunchError, match="Training job 'nope' was not found in us-east-1"):
        deploy.execute(cfg_for("training_job=nope", f"aws.role={ROLE}"))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_real_export_archive(tiny_model_dir, tmp_path, region_only, no_http):
    """The archive cola_bert.export writes passes inspection and plans; its manifest is near the start."""
    import torch
    from cola_bert.export import export_model

    out = export_model(tiny_model_dir, tmp_path / "export", format="torchscript", lengths=[1, 8], batch_sizes=[1, 2])
    info = deploy.inspect_local_archive(Path(out))
    assert info.manifest["torch_version"] == torch.__version__.split("+")[0]
    assert info.has_entry_point
    result = deploy.execute(cfg_for(f"model_data={out}", "dry_run=true", "endpoint_name=real"))
    expected = deploy.pick_framework_version(info.torch_version, deploy.available_versions(REGION, "ml.c5.large"))
    assert result["plan"].framework_version == expected.framework_version
    # manifest.json sits within the first 64 KiB of the compressed archive: reading it from S3 is cheap.
    with tarfile.open(fileobj=deploy._LimitedReader(open(out, "rb"), 64 * 1024), mode="r|gz") as tar:
        assert any(member.name == "manifest.json" for member in tar)


def test_wait_false_skips_the_smoke_test(archive, moto_env, api_calls, capsys):
    result = deploy.execute(cfg_for(f"model_data={archive}", f"aws.role={ROLE}", "wait=false"))
    assert "predictions" not in result
    assert ops(api_calls, "InvokeEndpoint") == [] and ops(api_calls, "DescribeEndpoint") == []
    assert "aws sagemaker describe-endpoint" in capsys.readouterr().out


def test_smoke_test_failure_says_how_to_clean_up(archive, moto_env, queue_answers):
    queue_answers(body="not json", content_type="text/plain")
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=bad-answers"))
    text = str(info.value)
    assert text.startswith("The endpoint bad-answers is InService but the test request failed")
    assert "not JSON" in text and "action=delete endpoint_name=bad-answers" in text


def test_parse_predictions_shapes():
    assert deploy.parse_predictions({"predictions": ANSWERS}, SENTENCES)[1]["label_name"] == "unacceptable"
    assert deploy.parse_predictions(ANSWERS, SENTENCES)[0]["score"] == 0.91
    assert deploy.parse_predictions([1, 0], SENTENCES)[0]["label"] == 1
    with pytest.raises(LaunchError, match="unexpected JSON"):
        deploy.parse_predictions("text", SENTENCES)


# --------------------------------------------------------------------------------------------------------- delete


def test_delete_removes_endpoint_config_and_model(archive, moto_env, queue_answers, capsys):
    queue_answers()
    name = deploy.execute(cfg_for(f"model_data={archive}", f"aws.role={ROLE}"))["endpoint_name"]
    result = deploy.execute(cfg_for("action=delete", f"endpoint_name={name}"))
    assert result["deleted"] == {"endpoint": name, "endpoint_config": name, "models": [name]}
    sm = sm_client()
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    out = capsys.readouterr().out
    assert f"Deleted endpoint {name}" in out and f"Deleted model {name}" in out


def test_delete_finds_models_through_the_endpoint_config(moto_env):
    sm = sm_client()
    for model in ("m-a", "m-b"):
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    sm.create_endpoint_config(
        EndpointConfigName="cfg-x",
        ProductionVariants=[
            {"VariantName": "a", "ModelName": "m-a", "InstanceType": "ml.c5.large", "InitialInstanceCount": 1},
            {"VariantName": "b", "ModelName": "m-b", "InstanceType": "ml.c5.large", "InitialInstanceCount": 1},
        ],
    )
    sm.create_endpoint(EndpointName="ep-x", EndpointConfigName="cfg-x")
    sm.create_model(ModelName="unrelated", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    result = deploy.execute(cfg_for("action=delete", "endpoint_name=ep-x"))
    assert result["deleted"] == {"endpoint": "ep-x", "endpoint_config": "cfg-x", "models": ["m-a", "m-b"]}
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["unrelated"]


def test_delete_missing_endpoint(moto_env):
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for("action=delete", "endpoint_name=ghost"))
    assert str(info.value).startswith("Endpoint 'ghost' does not exist in us-east-1; nothing to delete.")


def test_delete_needs_endpoint_name(region_only):
    with pytest.raises(LaunchError, match="action=delete needs endpoint_name"):
        deploy.execute(cfg_for("action=delete"))


# --------------------------------------------------------------------------------------------------------- errors


def test_no_region(archive, clean_env, no_http):
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={archive}", f"aws.role={ROLE}"))
    assert str(info.value) == aws.NO_REGION_MESSAGE


def test_no_credentials(archive, region_only):
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={archive}", f"aws.role={ROLE}"))
    text = str(info.value)
    assert text.startswith(
        "No usable AWS credentials were found while finding or creating the default SageMaker bucket"
    )
    assert "AWS_PROFILE" in text


def test_no_role(archive, moto_env, api_calls):
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={archive}"))
    assert "aws.role=arn:aws:iam::<account>:role/<name>" in str(info.value)
    assert [c[1] for c in api_only(api_calls)] == ["GetCallerIdentity"]  # nothing uploaded or created


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["deploy=serverless", "deploy.memory_size_in_mb=1000"], "not a serverless memory size"),
        (["deploy=serverless", "deploy.max_concurrency=500"], "from 1 to 200"),
        (["deploy=elastic_inference", "deploy.accelerator_type=ml.g5.xlarge"], "ml.eia2.medium"),
        (["deploy.accelerator_type=ml.eia2.medium"], "only works with deploy=elastic_inference"),
        (["deploy.instance_type=c5.large"], "needs an instance type like ml.c5.large"),
        (["endpoint_name=bad_name"], "not a valid SageMaker name"),
        (["training_job=job"], "exactly one of model_data"),
        (["action=redeploy"], "action=redeploy is not one of deploy, delete"),
    ],
)
def test_bad_settings(overrides, fragment, archive, region_only, no_http):
    with pytest.raises(LaunchError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        deploy.execute(cfg_for(f"model_data={archive}", "dry_run=true", *overrides))


def test_nothing_to_deploy(region_only):
    with pytest.raises(LaunchError, match="exactly one of model_data"):
        deploy.execute(cfg_for("dry_run=true"))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"with_code": False}, "has no code/inference.py"),
        ({"tamper": True}, "sha256 mismatch: model.pt"),
    ],
)
def test_bad_archives(kwargs, fragment, tmp_path, region_only):
    path = make_archive(tmp_path / "model.tar.gz", **kwargs)
    with pytest.raises(LaunchError, match=fragment):
        deploy.execute(cfg_for(f"model_data={path}", "dry_run=true"))


def test_archive_without_manifest_still_plans(tmp_path, region_only, capsys):
    path = make_archive(tmp_path / "model.tar.gz", with_manifest=False)
    result = deploy.execute(cfg_for(f"model_data={path}", "dry_run=true"))
    assert result["plan"].framework_version == "2.6.0"
    assert "has no manifest.json" in capsys.readouterr().err


def test_not_an_archive(tmp_path, region_only):
    bogus = tmp_path / "model.tar.gz"
    bogus.write_text("hello")
    with pytest.raises(LaunchError, match="is not a tar archive"):
        deploy.execute(cfg_for(f"model_data={bogus}", "dry_run=true"))
    with pytest.raises(LaunchError, match="does not exist"):
        deploy.execute(cfg_for(f"model_data={tmp_path / 'missing.tar.gz'}", "dry_run=true"))


def test_model_data_directory_with_model_tar(archive, region_only):
    result = deploy.execute(cfg_for(f"model_data={archive.parent}", "dry_run=true"))
    assert result["plan"].archive.source == str(archive)


# ------------------------------------------------------------------------------------------------------------ CLI


def _run_cli(args: list[str], env_extra: dict[str, str], clean_env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SAGEMAKER_SUPPRESS_V2_WARNING"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-W", "default", "-m", "launch.deploy", *args],
        cwd=clean_env, env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_cli_dry_run_output_is_clean(archive, clean_env):
    args = [f"model_data={archive}", "dry_run=true", "endpoint_name=cli-ep"]
    proc = _run_cli(args, {"AWS_REGION": REGION}, clean_env)
    assert proc.returncode == 0, proc.stderr
    assert f"{ECR}/pytorch-inference:2.6.0-cpu-py312" in proc.stdout
    assert "Dry run: no AWS call was made" in proc.stdout
    # stderr holds only our own warning (torch 2.13 export vs 2.6 container): no banners, tracebacks, INFO lines.
    assert proc.stderr.startswith("Warning: The archive was exported with torch 2.13.0")
    for noise in ("Traceback", "sagemaker.config INFO", "path of deprecation", "DeprecationWarning", "telemetry"):
        assert noise not in proc.stdout + proc.stderr
    assert sorted(p.name for p in clean_env.iterdir() if p.name not in ("export",)) == []  # Hydra wrote nothing


def test_cli_error_is_one_paragraph(archive, clean_env):
    proc = _run_cli([f"model_data={archive}"], {}, clean_env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: No AWS region is configured.")
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
    assert proc.stdout == ""
