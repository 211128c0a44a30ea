"""Shared AWS test plumbing: one moto server on 127.0.0.1 for the session, and a spy on every botocore call."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
DEFAULT_BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"  # the SDK's default bucket name in that account

# Every variable through which the machine's own AWS setup could leak into a test.
AWS_VARS = (
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "SAGEMAKER_ROLE",
)  # fmt: skip


def clean_environ(environ: dict[str, str], home: Path) -> dict[str, str]:
    """`environ` without AWS settings, pointed at empty config files and no instance metadata (for subprocesses)."""
    env = {k: v for k, v in environ.items() if k not in AWS_VARS and not k.startswith("AWS_ENDPOINT_URL_")}
    env.update(
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="1",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No AWS settings from the machine: no region, credentials, profile files, instance metadata or endpoints."""
    from launch import session

    for var in list(os.environ):
        if var in AWS_VARS or var.startswith("AWS_ENDPOINT_URL_"):
            monkeypatch.delenv(var, raising=False)
    for key, value in clean_environ({}, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(session, "NOTEBOOK_METADATA_FILE", str(tmp_path / "no-notebook-metadata.json"))
    return tmp_path


@pytest.fixture(scope="session")
def moto_url():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def point_at_moto(monkeypatch, moto_url: str) -> str:
    """Reset moto's state and send every client there with fake credentials (call after clearing AWS_* vars)."""
    import requests

    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    return moto_url


@pytest.fixture
def moto_env(clean_env, moto_url, monkeypatch):
    """Fake credentials + region; every client goes to the moto server (state reset per test)."""
    return point_at_moto(monkeypatch, moto_url)


@pytest.fixture
def api_calls(monkeypatch):
    """Every botocore API call made in the test: (service, operation, params, endpoint_url)."""
    from botocore.client import BaseClient

    calls: list[tuple] = []
    original = BaseClient._make_api_call

    def spy(self, operation_name, api_params):
        calls.append((self.meta.service_model.service_name, operation_name, api_params, self.meta.endpoint_url))
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    return calls


@pytest.fixture
def sdk_waits_without_sleeping(monkeypatch):
    """The SDK's waiters (endpoint InService, transform job done) poll without their 5-30 s sleeps: moto finishes at
    once. Only `sagemaker.session._wait_until` is replaced; every other sleep in the process is untouched."""
    from launch.session import import_sagemaker

    import_sagemaker()
    import sagemaker.session

    def wait_until(callable_fn, poll=5):
        for _ in range(100):
            result = callable_fn()
            if result is not None:
                return result
        raise AssertionError("a SageMaker waiter never finished under moto")

    monkeypatch.setattr(sagemaker.session, "_wait_until", wait_until)


class HandlerContainer:
    """Plays SageMaker's PyTorch serving container under moto with the archive's own code/inference.py.

    InvokeEndpoint: the endpoint's model archive is fetched from (moto) S3, unpacked, loaded with the handler's
    model_fn, and moto answers with what input_fn → predict_fn → output_fn return for the request. CreateTransformJob:
    what Batch Transform would write: each input object split at line ends (SplitType Line), mini-batches of whole
    lines up to MaxPayloadInMB (MultiRecord) sent with the job's ContentType/Accept/Environment, answers joined with
    newlines (AssembleWith Line) into <output>/<name>.out.
    """

    def __init__(self, moto_url: str, workdir: Path):
        import boto3

        self.moto_url, self.workdir = moto_url, workdir
        self.sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=moto_url)
        self.s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
        self.loaded: dict[str, tuple] = {}
        self.requests: list[dict] = []

    def handler_for_model(self, model_name: str):
        import importlib.util
        import tarfile

        url = self.sm.describe_model(ModelName=model_name)["PrimaryContainer"]["ModelDataUrl"]
        if url not in self.loaded:
            bucket, key = url[5:].split("/", 1)
            root = self.workdir / f"model{len(self.loaded)}"
            root.mkdir(parents=True)
            self.s3.download_file(bucket, key, str(root / "model.tar.gz"))
            with tarfile.open(root / "model.tar.gz") as tar:
                tar.extractall(root / "model", filter="data")
            spec = importlib.util.spec_from_file_location(f"served_{len(self.loaded)}", root / "model/code/inference.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.loaded[url] = (module, module.model_fn(str(root / "model")))
        return self.loaded[url]

    def answer(self, model_name: str, body: str, content_type: str, accept: str, env: dict | None = None) -> tuple:
        module, model = self.handler_for_model(model_name)
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            self.requests.append({"model": model_name, "body": body, "content_type": content_type, "accept": accept})
            return module.output_fn(module.predict_fn(module.input_fn(body, content_type), model), accept)
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    def invoke(self, params: dict) -> None:
        import requests

        endpoint = self.sm.describe_endpoint(EndpointName=params["EndpointName"])
        config = self.sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        model_name = config["ProductionVariants"][0]["ModelName"]
        body = params["Body"].decode() if isinstance(params["Body"], bytes) else params["Body"]
        try:
            answer, content_type = self.answer(model_name, body, params.get("ContentType"), params.get("Accept"))
        except Exception as err:  # what SageMaker returns when the container answers an error status
            from botocore.exceptions import ClientError

            status = getattr(err, "status_code", 500)
            kind = "client" if 400 <= status < 500 else "server"
            message = f"Received {kind} error ({status}) from primary with message \"{err}\"."
            error = {"Error": {"Code": "ModelError", "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 424}}
            raise ClientError(error, "InvokeEndpoint") from None
        payload = {"results": [{"Body": answer, "ContentType": content_type}]}
        url = f"{self.moto_url}/moto-api/static/sagemaker/endpoint-results"
        requests.post(url, json=payload, timeout=10).raise_for_status()

    def transform(self, params: dict) -> None:
        source = params["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = source[5:].split("/", 1)
        out_bucket, _, out_prefix = params["TransformOutput"]["S3OutputPath"][5:].partition("/")
        limit = params.get("MaxPayloadInMB", 6) << 20
        for obj in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            data = self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
            batches, batch = [], []
            for line in data.splitlines():
                if batch and len("\n".join(batch + [line]).encode()) > limit:
                    batches.append(batch)
                    batch = []
                batch.append(line)
            batches += [batch] if batch else []
            answers = [
                self.answer(params["ModelName"], "\n".join(b), params["TransformInput"]["ContentType"],
                            params["TransformOutput"]["Accept"], params.get("Environment"))[0]
                for b in batches
            ]  # fmt: skip
            # <output>/<path of the object below the input prefix>.out (its file name when the input is one object)
            name = obj["Key"][len(prefix) :].lstrip("/") or obj["Key"].rsplit("/", 1)[-1]
            key = f"{out_prefix.strip('/')}/{name}" if out_prefix.strip("/") else name
            self.s3.put_object(Bucket=out_bucket, Key=f"{key}.out", Body="\n".join(answers).encode())


@pytest.fixture
def handler_container(moto_env, api_calls, sdk_waits_without_sleeping, monkeypatch, tmp_path):
    """moto plays the serving container with the archive's real handler (see HandlerContainer)."""
    from botocore.client import BaseClient

    container = HandlerContainer(moto_env, tmp_path / "container")
    spy = BaseClient._make_api_call  # the api_calls spy: requests stay recorded

    def play(self, operation_name, api_params):
        if operation_name == "InvokeEndpoint":
            container.invoke(api_params)
        answer = spy(self, operation_name, api_params)
        if operation_name == "CreateTransformJob":
            container.transform(api_params)
        return answer

    monkeypatch.setattr(BaseClient, "_make_api_call", play)
    return container
