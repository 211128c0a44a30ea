"""`python -m cola_bert.serve`: a real uvicorn server in a subprocess, speaking SageMaker's hosting protocol."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cola_bert import inference, serve
from cola_bert.export import export_model

MAX_BODY = 64 * 1024
SENTENCES = ["The sailors rode the breeze clear of the rocks.", "Cat the mat on sat the.", "Ünïcödé 東京 😀"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def exported(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve_export")
    export_model(tiny_model_dir, out, batch_sizes=[1, 8], lengths=[1, 16, 128])
    return out


class Server:
    def __init__(self, model_dir: Path, *extra: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, COLA_MAX_SENTENCES="100", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cola_bert.serve", "--model-dir", str(model_dir), "--port", str(self.port),
             "--max-body-bytes", str(MAX_BODY), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early ({self.proc.returncode}):\n{self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/ping", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not answer /ping in time")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            output, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return self.proc.returncode, output


@pytest.fixture(scope="module")
def server(exported):
    srv = Server(exported / "model.tar.gz")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _post(server, body, content_type="application/json", accept=None, **kwargs) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    if accept:
        headers["Accept"] = accept
    return httpx.post(server.url + "/invocations", content=body, headers=headers, timeout=60, **kwargs)


# ------------------------------------------------------------------------------------------------------ happy path
def test_ping_is_fast(server):
    start = time.perf_counter()
    response = httpx.get(server.url + "/ping", timeout=2)
    assert response.status_code == 200 and time.perf_counter() - start < 2


def test_invocations_match_the_handler_in_process(server, exported):
    model = inference.load_artifact(exported / "model")
    expected = json.loads(inference.transform(model, json.dumps(SENTENCES), "application/json", None)[0])
    for body, content_type in [(json.dumps(SENTENCES), "application/json"),
                               ("\n".join(SENTENCES).encode(), "text/plain; charset=utf-8"),
                               ("\n".join(SENTENCES).encode(), "text/csv")]:
        response = _post(server, body, content_type)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        rows = response.json()
        assert [r["label"] for r in rows] == [r["label"] for r in expected]
        assert [r["probabilities"] for r in rows] == [pytest.approx(r["probabilities"], abs=1e-6) for r in expected]


def test_logits_accept_and_old_string_payload(server):
    response = _post(server, json.dumps("Somebody just left - guess who."), accept="application/x-logits+json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-logits+json")
    logits = response.json()
    assert len(logits) == 1 and len(logits[0]) == 2 and all(isinstance(x, float) for x in logits[0])
    assert _post(server, json.dumps(["x"]), accept="*/*").json()[0]["label_name"] in ("unacceptable", "acceptable")


# ----------------------------------------------------------------------------------------------------- 4xx cases
@pytest.mark.parametrize(
    "body, content_type, accept, status, match",
    [
        ("{broken", "application/json", None, 400, "Invalid JSON"),
        ("[]", "application/json", None, 400, "No sentences"),
        ("[1]", "application/json", None, 400, "Item 0 of the input is int"),
        (b"\xff\xfe", "application/json", None, 400, "not valid UTF-8"),
        ("x", "application/octet-stream", None, 415, "Unsupported Content-Type"),
        ("x", None, None, 415, "Unsupported Content-Type"),
        ('["x"]', "application/json", "text/html", 406, "Unsupported Accept"),
        (json.dumps(["s"] * 101), "application/json", None, 413, "limit is 100"),
    ],
)
def test_client_errors_are_4xx_with_the_message(server, body, content_type, accept, status, match):
    response = _post(server, body, content_type, accept)
    assert response.status_code == status
    assert match in response.json()["error"]


def test_body_over_the_limit_is_413(server):
    big = json.dumps(["word " * 100] * 200)
    assert len(big) > MAX_BODY
    response = _post(server, big)
    assert response.status_code == 413 and "byte limit" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(40):
            yield b"x" * 4096

    response = httpx.post(server.url + "/invocations", content=chunks(), headers={"Content-Type": "text/plain"},
                          timeout=60)
    assert response.status_code == 413
    # the server is still healthy afterwards
    assert _post(server, '["fine"]').status_code == 200


def test_fifty_concurrent_requests_without_5xx(server):
    async def run():
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            async def one(i: int):
                sentences = [f"Request {i} sentence {j} " + "word " * (i % 7) for j in range(1 + i % 4)]
                response = await client.post("/invocations", content=json.dumps(sentences),
                                             headers={"Content-Type": "application/json"})
                return i, sentences, response

            return await asyncio.gather(*(one(i) for i in range(50)))

    results = asyncio.run(run())
    statuses = [response.status_code for _, _, response in results]
    assert statuses == [200] * 50
    # each answer belongs to its own request (no cross-talk between concurrent requests)
    for _, sentences, response in results[::7]:
        again = _post(server, json.dumps(sentences)).json()
        assert [r["probabilities"] for r in response.json()] == [
            pytest.approx(r["probabilities"], abs=1e-6) for r in again]


# ------------------------------------------------------------------------------------------- lifecycle / inputs
def test_sigterm_shuts_down_cleanly(exported):
    srv = Server(exported / "model", "--threads", "2")
    try:
        srv.wait_ready()
        assert _post(srv, '["one"]').status_code == 200
    finally:
        code, output = srv.stop()
    assert code == 0, output
    assert "Application shutdown complete" in output and "Traceback" not in output


def test_cli_refuses_a_missing_or_truncated_model(exported, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cola_bert.serve", "--model-dir", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr

    data = (exported / "model.tar.gz").read_bytes()
    (tmp_path / "model.tar.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(inference.ArtifactError, match="truncated or corrupt"):
        serve.Endpoint.load(tmp_path / "model.tar.gz")


def test_endpoint_accepts_output_dir_and_uses_the_artifact_handler(exported):
    endpoint = serve.Endpoint.load(exported)
    try:
        assert endpoint.model_dir == exported / "model"
        assert Path(endpoint.handler.__file__) == exported / "model" / "code" / "inference.py"
        body, media = endpoint.invoke(b'["A sentence."]', "application/json", None)
        assert media == "application/json" and json.loads(body)[0]["label"] in (0, 1)
    finally:
        endpoint.close()


def test_tarball_is_unpacked_to_a_temp_dir_and_removed(exported):
    endpoint = serve.Endpoint.load(exported / "model.tar.gz")
    unpacked = endpoint.model_dir
    assert (unpacked / "manifest.json").is_file() and unpacked != exported / "model"
    endpoint.close()
    assert not unpacked.exists()
