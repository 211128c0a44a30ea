"""launch.batch: SageMaker Batch Transform over a file of sentences, with the real SDK v2 against a moto server.

moto completes a transform job at once but writes no output; the `handler_container` fixture plays Batch Transform
with the archive's own code/inference.py (split at line ends, mini-batches up to MaxPayloadInMB sent as the job's
ContentType/Accept with its Environment, answers joined with newlines), so the downloaded .out is what the real
handler answers for the requests the job's fields describe. Expected answers are computed here, in-process, with
`cola_bert.inference` on the same export.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cola_bert import inference
from cola_bert.config import conf_dir
from launch import batch
from launch.errors import LaunchError

REPO_ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
DEFAULT_BUCKET = "sagemaker-us-east-1-123456789012"
SENTENCES = ["The cat sat on the mat.", "Cat the mat on sat the.", "Ünïcödé 東京 😀 naïve", "He left.", "a"]


def cfg_for(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("batch", overrides=list(overrides))


def ops(calls, name: str) -> list[dict]:
    return [c[2] for c in calls if c[1] == name]


@pytest.fixture(scope="module")
def archive(tiny_export) -> Path:
    return tiny_export / "model.tar.gz"


@pytest.fixture
def sentences_file(tmp_path) -> Path:
    path = tmp_path / "in" / "sentences.txt"
    path.parent.mkdir()
    path.write_bytes(("\r\n".join(SENTENCES[:2]) + "\n" + "\n".join(SENTENCES[2:]) + "\n").encode())  # mixed EOLs
    return path


@pytest.fixture
def output_bucket(handler_container):
    import boto3

    boto3.client("s3", region_name=REGION).create_bucket(Bucket="results")
    return "s3://results/cola/batch/"


def expected_rows(tiny_export) -> list[dict]:
    model = inference.model_fn(str(tiny_export / "model"))
    body, _ = inference.output_fn(inference.predict_fn({"sentences": SENTENCES}, model), "application/json")
    return json.loads(body)


def test_transform_job_fields_upload_and_output(archive, tiny_export, sentences_file, output_bucket, api_calls,
                                                handler_container, capsys):  # fmt: skip
    import boto3

    cfg = cfg_for(f"model_data={archive}", f"input={sentences_file}", f"output={output_bucket}", f"aws.role={ROLE}",
                  "job_name=job-1", "instance_type=ml.c5.2xlarge", "instance_count=2")  # fmt: skip
    result = batch.execute(cfg)
    (create_model,) = ops(api_calls, "CreateModel")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    container = create_model["PrimaryContainer"]
    assert container["ModelDataUrl"] == f"s3://{DEFAULT_BUCKET}/cola-bert/models/{digest}/model.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Image"].endswith("/pytorch-inference:2.6.0-cpu-py312")
    (job,) = ops(api_calls, "CreateTransformJob")
    assert job["TransformJobName"] == "job-1" and job["ModelName"] == result["model_name"] == create_model["ModelName"]
    assert job["BatchStrategy"] == "MultiRecord" and job["MaxPayloadInMB"] == 1
    assert job["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                        "S3Uri": f"s3://{DEFAULT_BUCKET}/cola-bert/batch/job-1/input/sentences.txt"}},
        "ContentType": "text/plain",
        "SplitType": "Line",
    }  # fmt: skip
    assert job["TransformOutput"] == {"S3OutputPath": "s3://results/cola/batch", "Accept": "application/jsonlines",
                                      "AssembleWith": "Line"}  # fmt: skip
    assert job["TransformResources"] == {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 2}
    # A 1 MiB mini-batch can hold up to 524288 lines of one character: the handler's cap must allow them.
    assert job["Environment"]["COLA_MAX_SENTENCES"] == str((1 << 20) // 2)
    # ... and the serving toolkit's 60 s / TorchServe's 6.5 MB defaults must not cut a large mini-batch short.
    assert job["Environment"]["SAGEMAKER_MODEL_SERVER_TIMEOUT"] == "3600"
    assert int(job["Environment"]["TS_MAX_REQUEST_SIZE"]) > 1 << 20 and job["ModelClientConfig"] == {
        "InvocationsTimeoutInSeconds": 3600}  # fmt: skip
    # The uploaded input is the file, byte for byte.
    s3 = boto3.client("s3", region_name=REGION)
    uploaded = s3.get_object(Bucket=DEFAULT_BUCKET, Key="cola-bert/batch/job-1/input/sentences.txt")["Body"].read()
    assert uploaded == sentences_file.read_bytes()
    # One request with every line (they fit one mini-batch), answered as JSON lines.
    (request,) = handler_container.requests
    assert (request["content_type"], request["accept"]) == ("text/plain", "application/jsonlines")
    # Downloaded next to the input: exactly one JSON object per input line, in order, as the handler answers them.
    out_file = sentences_file.parent / "sentences.txt.out"
    assert Path(result["summary"]["file"]) == out_file
    rows = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert rows == expected_rows(tiny_export)
    labels = {}
    for row in rows:
        labels[row["label_name"]] = labels.get(row["label_name"], 0) + 1
    assert result["summary"] == {"count": len(SENTENCES), "labels": labels, "file": str(out_file)}
    out = capsys.readouterr().out
    assert f"{out_file}: {len(SENTENCES)} predictions" in out


def test_more_lines_than_the_handlers_default_cap_stay_aligned(archive, tiny_export, tmp_path, output_bucket,
                                                               handler_container):  # fmt: skip
    """1,200 lines in one MultiRecord request: over the handler's default cap of 1,000 sentences per request, so the
    job's COLA_MAX_SENTENCES is what lets it through; one answer per line, in order."""
    lines = [f"Item {i} is {'good' if i % 3 else 'bad'}." for i in range(1200)]
    path = tmp_path / "many.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = batch.execute(cfg_for(f"model_data={archive}", f"input={path}", f"output={output_bucket}",
                                   f"aws.role={ROLE}"))  # fmt: skip
    (request,) = handler_container.requests
    assert request["body"].split("\n") == lines
    rows = (tmp_path / "many.txt.out").read_text(encoding="utf-8").splitlines()
    assert result["summary"]["count"] == len(rows) == len(lines)
    model = inference.model_fn(str(tiny_export / "model"))
    picks = [0, 1, 2, 600, len(lines) - 1]
    data = inference.predict_fn({"sentences": [lines[i] for i in picks]}, model)
    for i, row in zip(picks, json.loads(inference.output_fn(data, "application/json")[0])):
        assert json.loads(rows[i])["probabilities"] == pytest.approx(row["probabilities"], abs=1e-6)


def test_model_is_created_once_per_archive_digest(archive, sentences_file, output_bucket, api_calls, tmp_path):
    common = [f"input={sentences_file}", f"output={output_bucket}", f"aws.role={ROLE}", "wait=false"]
    first = batch.execute(cfg_for(f"model_data={archive}", *common))
    second = batch.execute(cfg_for(f"model_data={archive.parent}", *common))  # same archive, given as its dir
    assert (first["model_created"], second["model_created"]) == (True, False)
    assert first["model_name"] == second["model_name"]
    assert len(ops(api_calls, "CreateModel")) == 1 and len(ops(api_calls, "CreateTransformJob")) == 2
    puts = [p["Key"].split("/")[1] for p in ops(api_calls, "PutObject") if p["Bucket"] == DEFAULT_BUCKET]
    assert sorted(puts) == ["batch", "batch", "models"]  # the archive once, the input once per job
    other = tmp_path / "other.tar.gz"  # different bytes, same content: a different digest, a new model
    other.write_bytes(archive.read_bytes() + b"\0" * 1024)
    third = batch.execute(cfg_for(f"model_data={other}", *common))
    assert third["model_created"] and third["model_name"] != first["model_name"]


def test_s3_input_and_model_are_used_as_is(archive, sentences_file, output_bucket, api_calls, tiny_export, tmp_path):
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="data")
    s3.upload_file(str(archive), "data", "models/model.tar.gz")
    s3.upload_file(str(sentences_file), "data", "in/sentences.txt")
    api_calls.clear()
    result = batch.execute(cfg_for("model_data=s3://data/models/model.tar.gz", "input=s3://data/in/sentences.txt",
                                   f"output={output_bucket}", f"aws.role={ROLE}", f"download_dir={tmp_path / 'dl'}"))
    assert [p["Bucket"] for p in ops(api_calls, "PutObject")] == ["results"]  # only the job's output
    assert [c[1] for c in api_calls if c[1] in ("GetCallerIdentity", "CreateBucket")] == []  # no default bucket
    (job,) = ops(api_calls, "CreateTransformJob")
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://data/in/sentences.txt"
    (model,) = ops(api_calls, "CreateModel")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://data/models/model.tar.gz"
    out = tmp_path / "dl" / "sentences.txt.out"
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == expected_rows(tiny_export)
    assert result["summary"]["count"] == len(SENTENCES)


@pytest.mark.parametrize("uri", ["s3://data/prefix/", "s3://data/prefix"])
def test_an_s3_prefix_gives_one_out_per_object_and_nothing_to_download(uri, archive, sentences_file, output_bucket,
                                                                       handler_container, tmp_path):  # fmt: skip
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="data")
    for name in ("a.txt", "b.txt"):
        s3.upload_file(str(sentences_file), "data", f"prefix/{name}")
    result = batch.execute(cfg_for(f"model_data={archive}", f"input={uri}", f"output={output_bucket}",
                                   f"aws.role={ROLE}", f"download_dir={tmp_path}"))  # fmt: skip
    assert "summary" not in result and result["output"] == "s3://results/cola/batch/<input file>.out"
    listed = s3.list_objects_v2(Bucket="results", Prefix="cola/batch/")["Contents"]
    assert {o["Key"] for o in listed} >= {"cola/batch/a.txt.out", "cola/batch/b.txt.out"}
    with pytest.raises(LaunchError, match=r"input=s3://data/nothing is neither an S3 object nor a prefix"):
        batch.execute(cfg_for(f"model_data={archive}", "input=s3://data/nothing", f"output={output_bucket}",
                              f"aws.role={ROLE}"))  # fmt: skip


def test_dry_run_makes_no_call(archive, sentences_file, clean_env, monkeypatch, capsys):
    from botocore.endpoint import Endpoint

    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setattr(Endpoint, "make_request", lambda *a, **k: pytest.fail("an AWS request was sent"))
    result = batch.execute(cfg_for(f"model_data={archive}", f"input={sentences_file}", "output=s3://results/x/",
                                   "dry_run=true", "job_name=dry"))  # fmt: skip
    rows = result["rows"]
    assert rows["request"] == {"ContentType": "text/plain", "SplitType": "Line", "BatchStrategy": "MultiRecord",
                               "MaxPayloadInMB": 1, "AssembleWith": "Line", "Accept": "application/jsonlines"}  # fmt: skip
    assert rows["output"] == "s3://results/x/sentences.txt.out"
    assert f"({len(SENTENCES)} lines, uploaded from {sentences_file})" in rows["input"]
    assert "Dry run: no AWS call was made" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "content", "fragment"),
    [
        (["instance_type=ml.c5.huge"], None, "ml.c5.huge is not an instance type SageMaker accepts for"),
        (["instance_type=ml.t2.medium"], None, "not an instance type SageMaker accepts for CreateTransformJob"),
        (["max_payload_mb=101"], None, "must be a whole number of MiB from 1 to 100"),
        (["max_payload_mb=50", "max_concurrent_transforms=4"], None, "MaxPayloadInMB x MaxConcurrentTransforms"),
        (["output=/tmp/out"], None, "must be an S3 prefix"),
        (["output=s3://Bad_Bucket/x/"], None, "is not a valid S3 bucket name"),
        (["instance_count=0"], None, "instance_count=0 must be a whole number of at least 1 (CreateTransformJob"),
        ([], b"one\n\ntwo\n", "blank lines: 2"),
        ([], b"one\rtwo\n", "lines with a carriage return inside: 1"),
        ([], b"\xff\xfe\n", "is not UTF-8 text"),
        ([], b"", "it is empty"),
        (["max_concurrent_transforms=abc"], None, "max_concurrent_transforms=abc must be a whole number"),
        (["max_concurrent_transforms=-3"], None, "CreateTransformJob's MaxConcurrentTransforms in botocore"),
        (["input=s3://"], None, "`s3://` is not an S3 URI"),
        (["model_data=s3://bucket/models/"], None, "model_data=s3://bucket/models/ names no object"),
        (["+env.A={B:1}"], None, "env.A={B:1} is not a plain value"),
        (["aws.prefix=/a//b/"], None, "aws.prefix=/a//b/ has an empty path segment"),
        (["dry_run=flase"], None, "dry_run=flase must be true or false"),
    ],
)
def test_bad_settings_and_inputs_are_refused_before_any_call(overrides, content, fragment, archive, sentences_file,
                                                             clean_env, monkeypatch):  # fmt: skip
    from botocore.endpoint import Endpoint

    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setattr(Endpoint, "make_request", lambda *a, **k: pytest.fail("an AWS request was sent"))
    if content is not None:
        sentences_file.write_bytes(content)
    with pytest.raises(LaunchError) as info:
        batch.execute(cfg_for(f"model_data={archive}", f"input={sentences_file}", "output=s3://results/x/",
                              *overrides))  # fmt: skip
    assert fragment in str(info.value) and info.value.exit_code == 2


def test_cli_missing_arguments_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([sys.executable, "-m", "launch.batch", "input=x.txt"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**env, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: model_data= is missing. Usage: python -m launch.batch")
