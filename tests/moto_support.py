"""Shared AWS test plumbing: one moto server on 127.0.0.1 for the session, and a spy on every botocore call."""

from __future__ import annotations

import logging

import pytest

REGION = "us-east-1"


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
