"""launch.deploy: config group, image choice, checks before any AWS call, deploys and deletes with the real SDK v2.

No network, no AWS: a moto server on 127.0.0.1 answers every SDK call (AWS_ENDPOINT_URL), and the `handler_container`
fixture plays the serving container with the archive's own code/inference.py, so the smoke test's answers are what
the real handler computes for the request the launcher sent; the expected answers are computed here independently,
in-process, with `cola_bert.inference` on the same export (`tiny_export`, a real export of the tiny model). moto's
endpoint configs predate ml.g5, so the GPU deploy runs on ml.g4dn.xlarge (the default ml.g5.xlarge is planned in a
dry run).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cola_bert import inference, tarball
from cola_bert.config import conf_dir
from launch import deploy, errors, images
from launch.errors import LaunchError, NotFound

REPO_ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
ECR = f"763104351884.dkr.ecr.{REGION}.amazonaws.com"
DEFAULT_BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
SENTENCES = ["The cat sat on the mat.", "Cat the mat on sat the."]
# moto's CreateEndpointConfig enum predates the c6i family that conf/deploy/cpu.yaml defaults to (botocore's service
# model and SageMaker accept it): deployments run against moto pick an older CPU type.
MOTO_CPU = "deploy.instance_type=ml.c5.large"


def cfg_for(*overrides: str, return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("deploy", overrides=list(overrides), return_hydra_config=return_hydra_config)


def ops(calls, name: str) -> list[dict]:
    return [c[2] for c in calls if c[1] == name]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def region_only(clean_env, monkeypatch):
    """A region but no credentials: any AWS call would fail."""
    monkeypatch.setenv("AWS_REGION", REGION)
    return clean_env


@pytest.fixture
def no_http(monkeypatch):
    """Any HTTP request from botocore fails the test."""
    from botocore.endpoint import Endpoint

    def refuse(self, *args, **kwargs):
        raise AssertionError("an AWS request was sent")

    monkeypatch.setattr(Endpoint, "make_request", refuse)


@pytest.fixture(scope="module")
def archive(tiny_export) -> Path:
    return tiny_export / "model.tar.gz"


@pytest.fixture(scope="module")
def handler_answers(tiny_export):
    """What the real handler answers, in this process, for a JSON request with these sentences."""
    model = inference.model_fn(str(tiny_export / "model"))

    def answers(sentences: list[str]) -> list[dict]:
        data = inference.input_fn(json.dumps({"inputs": sentences}), "application/json")
        body, _ = inference.output_fn(inference.predict_fn(data, model), "application/json")
        return json.loads(body)

    return answers


def repack(source: Path, dest: Path, *, extra: tarfile.TarInfo | None = None, replace: dict | None = None) -> Path:
    """A copy of an exported archive with one member added or some members' contents replaced."""
    with tarfile.open(source) as src, tarfile.open(dest, "w:gz") as out:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if replace and member.name in replace:
                data = replace[member.name]
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
        if extra is not None:
            out.addfile(extra, io.BytesIO(b"x" * extra.size) if extra.isfile() else None)
    return dest


# --------------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("option", "mode", "instance"),
    [("cpu", "realtime", "ml.c6i.large"), ("gpu", "realtime", "ml.g5.xlarge"), ("serverless", "serverless", None)],
)
def test_deploy_options_compose_with_one_schema(option, mode, instance, clean_env):
    d = cfg_for(f"deploy={option}").deploy
    assert (d.mode, d.instance_type) == (mode, instance)
    assert set(d.keys()) == set(cfg_for().deploy.keys())
    if option == "serverless":
        assert (d.memory_size_in_mb, d.max_concurrency, d.model_server_workers) == (2048, 5, 1)


def test_defaults_and_hydra_writes_nothing(clean_env, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ROLE", ROLE)
    cfg = cfg_for(return_hydra_config=True)
    assert (cfg.deploy.mode, cfg.deploy.instance_type, cfg.aws.role) == ("realtime", "ml.c6i.large", ROLE)
    assert cfg.hydra.output_subdir is None and cfg.hydra.job.chdir is False and cfg.hydra.run.dir == "."
    assert (cfg.action, cfg.wait, cfg.dry_run, cfg.endpoint_name, cfg.model_name) == ("deploy", True, False, None, None)
    assert list(cfg.smoke_test.sentences) == SENTENCES and cfg.smoke_test.request_key == "inputs"


# --------------------------------------------------------------------------------------------------------- images


def test_the_pinned_versions_pick_the_sdk_image_and_a_pin_it_lacks_is_refused_with_its_list():
    cfg = cfg_for()
    assert (cfg.deploy.framework_version, cfg.deploy.py_version) == ("2.6.0", "py312")  # what the handler targets
    pins = {k: cfg.deploy[k] for k in images.PINS}
    assert images.choose(REGION, "ml.g5.xlarge", **pins).uri == f"{ECR}/pytorch-inference:2.6.0-gpu-py312"
    assert images.choose(REGION, None, **pins).uri == f"{ECR}/pytorch-inference:2.6.0-cpu-py312"  # serverless: CPU
    older = images.choose(REGION, "ml.c5.large", framework_version="2.3.0", py_version="py311")
    assert older.uri == f"{ECR}/pytorch-inference:2.3.0-cpu-py311" and older.reason == "pytorch 2.3.0, py311"
    assert images.choose(REGION, None, image_uri="my/img:1").uri == "my/img:1"
    # Graviton images lag behind: the SDK's own list of what it offers is in the message
    with pytest.raises(LaunchError, match=r"deploy\.framework_version=2\.6\.0 .*ml\.c7g\.large.*version\(s\): .*2\.4\.0"):
        images.choose(REGION, "ml.c7g.large", **pins, setting="deploy.")
    with pytest.raises(LaunchError, match=r"Set the serving image's framework_version and py_version"):
        images.choose(REGION, "ml.c5.large", framework_version="2.6.0")


def test_compatibility_note_says_what_is_verified():
    note = images.compatibility_note({"format": "torchscript", "torch_version": "2.13.0"}, "2.6.0")
    assert "measured to load and serve under the torch 2.6 container" in note
    assert "not verified" in images.compatibility_note({"format": "torch_export", "torch_version": "2.13.0"}, "2.6.0")
    assert images.compatibility_note({"format": "torchscript", "torch_version": "2.5.1"}, "2.6.0") is None


# ----------------------------------------------------------------------------------- refused before any AWS call


def test_elastic_inference_is_refused_before_anything(region_only, no_http, tmp_path):
    missing = tmp_path / "not-even-there.tar.gz"  # refused before the archive is looked at
    for overrides in (["deploy=elastic_inference"], ["+deploy.accelerator_type=ml.eia2.medium"]):
        with pytest.raises(LaunchError) as info:
            deploy.execute(cfg_for(f"model_data={missing}", *overrides))
        text = str(info.value)
        assert info.value.exit_code == 2
        for fact in ("2023-04-15", "AcceleratorType as no longer supported", "torch <= 1.5.1 on Python 3.6",
                     "from __future__ import annotations", "deploy=cpu", "deploy=serverless", "deploy=gpu",
                     "format=onnx quantize=int8"):  # fmt: skip
            assert fact in text
        assert "\n" not in text  # one paragraph


def test_elastic_inference_config_stays_discoverable(clean_env):
    d = cfg_for("deploy=elastic_inference").deploy
    assert (d.mode, d.accelerator_type, d.framework_version) == ("elastic_inference", "ml.eia2.medium", "1.5.1")
    text = (REPO_ROOT / "conf/deploy/elastic_inference.yaml").read_text()
    assert "2023-04-15" in text and "quantize=int8" in text


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["deploy.instance_type=ml.c5.huge"], "Closest valid types: ml.c5.large"),
        (["deploy.instance_type=c5.large"], "not an instance type SageMaker accepts for CreateEndpointConfig"),
        (["deploy=serverless", "deploy.memory_size_in_mb=1000"], "not a serverless memory size"),
        (["deploy=serverless", "deploy.max_concurrency=500"], "from 1 to 200"),
        (["aws.bucket=My_Bucket"], "aws.bucket=My_Bucket is not a valid S3 bucket name"),
        (["aws.role=arn:aws:iam::12:role/x"], "is not an IAM role ARN"),
        (["endpoint_name=bad_name"], "not a valid SageMaker name"),
        (["training_job=job"], "exactly one of model_data"),
        (["action=redeploy"], "action=redeploy is not one of deploy, delete"),
        (["deploy.initial_instance_count=abc"], "ProductionVariants.InitialInstanceCount in botocore"),
        (["deploy.model_server_workers=abc"], "deploy.model_server_workers=abc must be a whole number of at least 1"),
        (["deploy.model_server_workers=-1"], "deploy.model_server_workers=-1 must be a whole number of at least 1"),
        (["+deploy.env.A={B:1}"], "deploy.env.A={B:1} is not a plain value"),
        (["aws.prefix=/a//b/"], "aws.prefix=/a//b/ has an empty path segment"),
        (["model_data=s3://bucket"], "model_data=s3://bucket names no object"),
        (["wait=maybe"], "wait=maybe must be true or false"),
        (["smoke_test.sentences=hello"], "smoke_test.sentences=hello must be a list of sentences"),
    ],
)
def test_bad_settings_are_refused_before_any_call(overrides, fragment, archive, region_only, no_http):
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={archive}", *overrides))
    assert fragment in str(info.value)


@pytest.mark.parametrize("kind", ["dotdot", "symlink", "tampered", "added_code", "tampered_code", "no_handler"])
def test_archive_check_is_the_serving_one(kind, archive, tmp_path, region_only, no_http, monkeypatch):
    """`../` members, links, modified files and code the manifest does not hash are refused by the very strict check
    `cola_bert.serve` runs (`verify_tarball`): the endpoint runs the archive's own code/inference.py unrepacked."""
    if kind == "added_code":
        member = tarfile.TarInfo("code/sitecustomize.py")
        member.size = 1
        bad = repack(archive, tmp_path / "m.tar.gz", extra=member)
    elif kind == "tampered_code":
        bad = repack(archive, tmp_path / "m.tar.gz", replace={"code/inference.py": b"import os\n"})
    elif kind == "dotdot":
        member = tarfile.TarInfo("../evil.py")
        member.size = 1
        bad = repack(archive, tmp_path / "m.tar.gz", extra=member)
    elif kind == "symlink":
        member = tarfile.TarInfo("tokenizer_link.json")
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
        bad = repack(archive, tmp_path / "m.tar.gz", extra=member)
    elif kind == "tampered":
        bad = repack(archive, tmp_path / "m.tar.gz", replace={"model.pt": b"not the exported graph"})
    else:
        with tarfile.open(archive) as tar:
            names = [m.name for m in tar.getmembers()]
        assert "code/inference.py" in names
        bad = tmp_path / "m.tar.gz"
        with tarfile.open(archive) as src, tarfile.open(bad, "w:gz") as out:
            for m in src.getmembers():
                if m.name != "code/inference.py":
                    out.addfile(m, src.extractfile(m) if m.isfile() else None)
    calls = []
    real = tarball.verify_tarball
    monkeypatch.setattr(tarball, "verify_tarball", lambda *a: calls.append(a) or real(*a))
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={bad}", "dry_run=true"))
    assert len(calls) == 1  # the launcher has no archive check of its own
    with pytest.raises(inference.ArtifactError) as serving:  # what serve says about the same file
        real(bad)
    assert str(info.value) == f"model_data={bad} cannot be deployed: {serving.value}"


def test_not_an_archive_and_missing_file(tmp_path, region_only, no_http):
    bogus = tmp_path / "model.tar.gz"
    bogus.write_text("hello")
    with pytest.raises(LaunchError, match="not a readable .tar.gz"):
        deploy.execute(cfg_for(f"model_data={bogus}", "dry_run=true"))
    with pytest.raises(LaunchError, match="does not exist"):
        deploy.execute(cfg_for(f"model_data={tmp_path / 'missing.tar.gz'}", "dry_run=true"))


def test_dry_run_plans_from_the_real_export(archive, region_only, no_http, capsys):
    result = deploy.execute(cfg_for(f"model_data={archive.parent}", "dry_run=true", "endpoint_name=plan-ep"))
    plan, rows = result["plan"], result["rows"]
    assert plan.image.uri == f"{ECR}/pytorch-inference:2.6.0-cpu-py312"
    assert plan.artifact.manifest["format"] == "torchscript" and plan.artifact.digest == sha256(archive)
    assert rows["model data"].startswith(f"s3://sagemaker-{REGION}-<account>/cola-bert/models/{sha256(archive)}/")
    assert rows["environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert "measured to load and serve" in rows["notes"]
    assert "Dry run: no AWS call was made" in capsys.readouterr().out


def test_gpu_default_is_planned(archive, region_only, no_http):
    plan = deploy.execute(cfg_for("deploy=gpu", f"model_data={archive}", "dry_run=true"))["plan"]
    assert (plan.instance_type, plan.image.uri) == ("ml.g5.xlarge", f"{ECR}/pytorch-inference:2.6.0-gpu-py312")


# ---------------------------------------------------------------------------------------------- deploys on moto


def _describe(name: str):
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    model = sm.describe_model(ModelName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=name)
    return model, config


def test_deploy_cpu_uploads_once_creates_and_smoke_tests(archive, handler_container, api_calls, handler_answers,
                                                         capsys):  # fmt: skip
    import boto3

    cfg = cfg_for(MOTO_CPU, f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=ep-one")
    result = deploy.execute(cfg)
    key = f"cola-bert/models/{sha256(archive)}/model.tar.gz"
    assert result["model_data"] == f"s3://{DEFAULT_BUCKET}/{key}"
    uploaded = boto3.client("s3", region_name=REGION).get_object(Bucket=DEFAULT_BUCKET, Key=key)["Body"].read()
    assert uploaded == archive.read_bytes()
    model, config = _describe("ep-one")
    container = model["PrimaryContainer"]
    assert container["Image"] == f"{ECR}/pytorch-inference:2.6.0-cpu-py312"
    assert container["ModelDataUrl"] == result["model_data"] and model["ExecutionRoleArn"] == ROLE
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    (variant,) = config["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.large", 1)
    assert "AcceleratorType" not in variant
    (invoke,) = ops(api_calls, "InvokeEndpoint")
    assert json.loads(invoke["Body"]) == {"inputs": SENTENCES}
    # The smoke test reports what the real handler answers for these sentences.
    expected = handler_answers(SENTENCES)
    assert result["predictions"] == expected
    out = capsys.readouterr().out
    for sentence, row in zip(SENTENCES, expected):
        assert f"{sentence!r}: label={row['label']} ({row['label_name']}) score={row['score']:.3f}" in out
    assert "action=delete endpoint_name=ep-one" in out

    api_calls.clear()  # the same archive again: no second upload
    deploy.execute(cfg_for(MOTO_CPU, f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=ep-two", "wait=false"))
    assert ops(api_calls, "PutObject") == [] and ops(api_calls, "CreateMultipartUpload") == []
    assert len(ops(api_calls, "HeadObject")) == 1 and len(ops(api_calls, "CreateModel")) == 1


def test_deploy_serverless_and_gpu(archive, handler_container, api_calls):
    deploy.execute(cfg_for("deploy=serverless", f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=sl"))
    model, config = _describe("sl")
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert "InstanceType" not in variant
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "1"
    cfg = cfg_for("deploy=gpu", f"model_data={archive}", f"aws.role={ROLE}", "deploy.instance_type=ml.g4dn.xlarge")
    name = deploy.execute(cfg)["endpoint_name"]
    model, config = _describe(name)
    assert model["PrimaryContainer"]["Image"] == f"{ECR}/pytorch-inference:2.6.0-gpu-py312"
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge" and name.startswith("cola-bert-gpu-")


def test_deploy_s3_archive_is_used_as_is(archive, handler_container, api_calls):
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="models-bucket")
    s3.upload_file(str(archive), "models-bucket", "runs/7/model.tar.gz")
    api_calls.clear()
    uri = "s3://models-bucket/runs/7/model.tar.gz"
    result = deploy.execute(cfg_for(MOTO_CPU, f"model_data={uri}", f"aws.role={ROLE}", "endpoint_name=from-s3"))
    assert result["plan"].artifact.manifest["format"] == "torchscript"  # read from the head of the object
    (create_model,) = ops(api_calls, "CreateModel")
    assert create_model["PrimaryContainer"]["ModelDataUrl"] == uri
    assert ops(api_calls, "PutObject") == [] and ops(api_calls, "CreateMultipartUpload") == []
    # No aws.bucket: nothing needs the default bucket, so the SDK never looks it up or creates it.
    assert [c[1] for c in api_calls if c[1] in ("GetCallerIdentity", "HeadBucket", "CreateBucket")] == []


def test_a_taken_name_is_refused_before_anything_is_uploaded(archive, handler_container, api_calls):
    """SageMaker refuses an existing endpoint name, and the SDK would silently re-use an existing model's old
    archive: both are refused, without the delete hint that would remove what this run did not create."""
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model(ModelName="taken", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    api_calls.clear()
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(MOTO_CPU, f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=taken"))
    assert str(info.value).startswith("A SageMaker model named taken already exists in us-east-1. Pick another")
    assert [c[1] for c in api_calls if c[1].startswith(("Put", "Create"))] == []
    sm.delete_model(ModelName="taken")


def test_ctrl_c_while_waiting_says_what_keeps_billing(archive, handler_container, monkeypatch):
    from sagemaker.pytorch import PyTorchModel

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PyTorchModel, "deploy", interrupted)
    with pytest.raises(errors.Interrupted) as info:
        deploy.execute(cfg_for(MOTO_CPU, f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=ctrl-c"))
    assert info.value.exit_code == 130 and "goes on creating endpoint ctrl-c" in str(info.value)
    assert "python -m launch.deploy action=delete endpoint_name=ctrl-c" in str(info.value)


@pytest.mark.timeout(900)  # a full export with its verification: ~1 min alone, much longer on a shared machine
def test_deploy_training_job_exports_for_real(tiny_model_dir, tmp_path, handler_container, api_calls):
    """The job's artifact (a tarred model directory, as the container writes it) is exported here, then served."""
    import boto3

    sm, s3 = boto3.client("sagemaker", region_name=REGION), boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="jobs")
    sm.create_training_job(
        TrainingJobName="cola-job-1",
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://jobs/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    job_tar = tmp_path / "job-model.tar.gz"
    with tarfile.open(job_tar, "w:gz") as tar:
        for path in sorted(tiny_model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    s3.upload_file(str(job_tar), "jobs", "out/cola-job-1/output/model.tar.gz")

    result = deploy.execute(cfg_for(MOTO_CPU, "training_job=cola-job-1", f"aws.role={ROLE}", "endpoint_name=from-job"))
    artifact = result["plan"].artifact
    assert artifact.manifest["format"] == "torchscript" and artifact.manifest["source"]
    (create_model,) = ops(api_calls, "CreateModel")
    assert create_model["PrimaryContainer"]["ModelDataUrl"].endswith(f"/models/{artifact.digest}/model.tar.gz")
    # What the endpoint answered equals the job's weights run eagerly here.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        probs = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits.softmax(-1).tolist()
    for served, row in zip(result["predictions"], probs):
        assert served["probabilities"] == pytest.approx(row, abs=1e-5)
    assert [p["label"] for p in result["predictions"]] == [max(range(2), key=row.__getitem__) for row in probs]


def test_training_job_not_found(handler_container):
    with pytest.raises(NotFound, match="There is no training job nope in us-east-1"):
        deploy.execute(cfg_for(MOTO_CPU, "training_job=nope", f"aws.role={ROLE}"))


def test_wait_false_skips_the_smoke_test(archive, handler_container, api_calls, capsys):
    result = deploy.execute(cfg_for(MOTO_CPU, f"model_data={archive}", f"aws.role={ROLE}", "wait=false"))
    assert "predictions" not in result
    names = [c[1] for c in api_calls]
    assert "InvokeEndpoint" not in names and "DescribeEndpoint" not in names[names.index("CreateEndpoint"):]  # no wait
    assert "aws sagemaker describe-endpoint" in capsys.readouterr().out


def test_smoke_test_failure_says_how_to_clean_up(archive, handler_container):
    # {"text": [...]} is not a request the handler takes: it answers 400, which SageMaker passes on as ModelError.
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(MOTO_CPU, f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=bad-request",
                               "smoke_test.request_key=text"))  # fmt: skip
    text = str(info.value)
    assert text.startswith("The endpoint bad-request is InService but the test request failed")
    assert "(400)" in text and "action=delete endpoint_name=bad-request" in text


# --------------------------------------------------------------------------------------------------------- delete


def test_delete_removes_endpoint_config_and_model(archive, handler_container, capsys):
    import boto3

    deploy.execute(cfg_for(MOTO_CPU, f"model_data={archive}", f"aws.role={ROLE}", "endpoint_name=gone", "wait=false"))
    result = deploy.execute(cfg_for("action=delete", "endpoint_name=gone"))
    assert result["deleted"] == {"endpoint": "gone", "endpoint_config": "gone", "models": ["gone"]}
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert "Deleted model gone" in capsys.readouterr().out


def test_delete_finds_models_through_the_endpoint_config(moto_env):
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    for model in ("m-a", "m-b", "unrelated"):
        sm.create_model(ModelName=model, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    sm.create_endpoint_config(
        EndpointConfigName="cfg-x",
        ProductionVariants=[
            {"VariantName": v, "ModelName": f"m-{v}", "InstanceType": "ml.c5.large", "InitialInstanceCount": 1}
            for v in ("a", "b")
        ],
    )
    sm.create_endpoint(EndpointName="ep-x", EndpointConfigName="cfg-x")
    result = deploy.execute(cfg_for("action=delete", "endpoint_name=ep-x"))
    assert result["deleted"] == {"endpoint": "ep-x", "endpoint_config": "cfg-x", "models": ["m-a", "m-b"]}
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["unrelated"]


def test_delete_removes_what_a_failed_deploy_left(moto_env):
    """A deploy that failed after CreateModel (or CreateEndpointConfig) leaves resources under the endpoint's name."""
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model(ModelName="half-done", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    result = deploy.execute(cfg_for("action=delete", "endpoint_name=half-done"))
    assert result["deleted"] == {"endpoint": None, "endpoint_config": None, "models": ["half-done"]}
    sm.create_model(ModelName="batch-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "img"})
    assert deploy.execute(cfg_for("action=delete", "model_name=batch-model"))["deleted"]["models"] == ["batch-model"]
    assert sm.list_models()["Models"] == []
    with pytest.raises(NotFound, match="No endpoint, endpoint config or model named 'ghost' exists in us-east-1"):
        deploy.execute(cfg_for("action=delete", "endpoint_name=ghost"))


def test_delete_needs_a_name(region_only, no_http):
    with pytest.raises(LaunchError, match="action=delete needs endpoint_name"):
        deploy.execute(cfg_for("action=delete"))


# --------------------------------------------------------------------------------------------- credentials, CLI


def test_no_credentials_or_role(archive, region_only, moto_env, api_calls, monkeypatch):
    with pytest.raises(LaunchError) as info:
        deploy.execute(cfg_for(f"model_data={archive}"))  # no role: only the caller identity is looked up
    assert "aws.role=arn:aws:iam::<account>:role/<name>" in str(info.value)
    assert [c[1] for c in api_calls] == ["GetCallerIdentity"]  # nothing uploaded or created


def _run_cli(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SAGEMAKER_SUPPRESS_V2_WARNING"}
    env.update(env_extra, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-W", "default", "-m", "launch.deploy", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def test_cli_dry_run_output_is_clean_and_errors_exit_2(archive, clean_env):
    proc = _run_cli([f"model_data={archive}", "dry_run=true", "endpoint_name=cli-ep"], {"AWS_REGION": REGION}, clean_env)
    assert proc.returncode == 0, proc.stderr
    assert f"{ECR}/pytorch-inference:2.6.0-cpu-py312" in proc.stdout and "Dry run: no AWS call" in proc.stdout
    assert proc.stderr == ""  # no banners, tracebacks, INFO lines or warnings
    assert sorted(p.name for p in clean_env.iterdir() if not p.name.startswith("aws-")) == []  # Hydra wrote nothing
    proc = _run_cli([f"model_data={archive}", "deploy=elastic_inference"], {"AWS_REGION": REGION}, clean_env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("Error: deploy=elastic_inference is refused") and "Traceback" not in proc.stderr
