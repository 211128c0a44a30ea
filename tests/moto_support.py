"""Shared AWS test plumbing: one moto server on 127.0.0.1 for the session, and a spy on every botocore call."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REGION = "us-east-1"

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
    from launch import aws

    for var in list(os.environ):
        if var in AWS_VARS or var.startswith("AWS_ENDPOINT_URL_"):
            monkeypatch.delenv(var, raising=False)
    for key, value in clean_environ({}, tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(aws, "NOTEBOOK_METADATA_FILE", str(tmp_path / "no-notebook-metadata.json"))
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
