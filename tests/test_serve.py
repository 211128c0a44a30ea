"""`python -m cola_bert.serve`: a real uvicorn server in a subprocess, speaking SageMaker's hosting protocol.

Hardening (issue 8 point 5): the whole artifact is verified by the installed package before any of it is imported;
oversized bodies get 413 even from clients that write everything first; deep JSON is a 400; SIGTERM answers queued
work. Concurrency (issue 10 point 4): several inference threads, every answer checked against the in-process result.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from cola_bert import inference, serve, tarball
from cola_bert.export import export_model

MAX_BODY = 64 * 1024
SENTENCES = ["The sailors rode the breeze clear of the rocks.", "Cat the mat on sat the.", "Ünïcödé 東京 😀"]

# Appended to code/inference.py (and re-hashed) to make a handler that can be held at a gate or made to fail.
TEST_HANDLER_CODE = '''

import os as _test_os
import time as _test_time

_exported_predict_fn = predict_fn


def predict_fn(input_data, model):
    gate = _test_os.environ.get("COLA_TEST_GATE")
    if gate:  # hold every request until the test creates the gate file
        give_up = _test_time.monotonic() + 300
        while not _test_os.path.exists(gate) and _test_time.monotonic() < give_up:
            _test_time.sleep(0.01)
    if "__boom__" in input_data["sentences"]:
        raise RuntimeError("boom from the test handler")
    return _exported_predict_fn(input_data, model)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def exported(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve_export")
    export_model(tiny_model_dir, out, batch_sizes=[1, 8], lengths=[1, 16, 128])
    return out


def _copy_artifact(exported: Path, dest: Path) -> Path:
    shutil.copytree(exported / "model", dest)
    return dest


def _rehash(model_dir: Path, rel: str) -> None:
    """Record ``rel``'s current sha256 in the manifest, as a legitimate re-export would."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["files"][rel] = inference.sha256_file(model_dir / rel)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(model_dir: Path, **changes) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest.update(changes)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def _tar(model_dir: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            archive.add(file, arcname=file.relative_to(model_dir).as_posix())
    return path


@pytest.fixture(scope="module")
def test_handler_artifact(exported, tmp_path_factory) -> Path:
    """The exported artifact with TEST_HANDLER_CODE appended to its handler and the manifest updated to match."""
    model_dir = _copy_artifact(exported, tmp_path_factory.mktemp("test_handler") / "model")
    with (model_dir / "code" / "inference.py").open("a") as handle:
        handle.write(TEST_HANDLER_CODE)
    _rehash(model_dir, "code/inference.py")
    return model_dir


class Server:
    """`python -m cola_bert.serve` in a subprocess; its log is collected line by line while it runs."""

    def __init__(self, model_dir: Path, *extra: str, env: dict[str, str] | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        env = dict(os.environ, COLA_MAX_SENTENCES="100", PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cola_bert.serve", "--model-dir", str(model_dir), "--port", str(self.port),
             "--max-body-bytes", str(MAX_BODY), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 120) -> None:
        """Until ``text`` appeared in ``count`` log lines (a generous cap, only so that a broken server fails)."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: sum(text in line for line in self.lines) >= count or self.proc.poll() is not None, timeout)
            if not found or sum(text in line for line in self.lines) < count:
                raise AssertionError(f"{count}× {text!r} not in the server log:\n{''.join(self.lines)}")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(10)
                raise AssertionError(f"server exited early ({self.proc.returncode}):\n{self.output}")
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
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)
        return self.proc.returncode, self.output


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
    return httpx.post(server.url + "/invocations", content=body, headers=headers, timeout=120, **kwargs)


def _expected(model, sentences) -> list[dict]:
    return json.loads(inference.transform(model, json.dumps(sentences), "application/json", None)[0])


def _same_answers(rows: list[dict], expected: list[dict]) -> bool:
    return [r["label"] for r in rows] == [r["label"] for r in expected] and all(
        r["probabilities"] == pytest.approx(e["probabilities"], abs=1e-5) for r, e in zip(rows, expected))


# ------------------------------------------------------------------------------------------------------ happy path
def test_ping_answers_200_once_loaded(server):
    assert httpx.get(server.url + "/ping", timeout=30).status_code == 200


def test_invocations_match_the_handler_in_process(server, exported):
    expected = _expected(inference.load_artifact(exported / "model"), SENTENCES)
    for body, content_type in [(json.dumps(SENTENCES), "application/json"),
                               ("\n".join(SENTENCES).encode(), "text/plain; charset=utf-8"),
                               ("\n".join(SENTENCES).encode(), "text/csv")]:
        response = _post(server, body, content_type)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert _same_answers(response.json(), expected)


def test_logits_accept_and_old_string_payload(server):
    response = _post(server, json.dumps("Somebody just left - guess who."), accept="application/x-logits+json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-logits+json")
    logits = response.json()
    assert len(logits) == 1 and len(logits[0]) == 2 and all(isinstance(x, float) for x in logits[0])
    assert _post(server, json.dumps(["x"]), accept="*/*").json()[0]["label_name"] in ("unacceptable", "acceptable")


@pytest.mark.parametrize("accept, expected", [
    ("application/json;q=0, application/jsonlines", "application/jsonlines"),
    ("application/jsonlines;q=0.1, application/json;q=1", "application/json"),
])
def test_accept_q_values_are_honoured(server, accept, expected):
    response = _post(server, json.dumps(["One.", "Two."]), accept=accept)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(expected)
    rows = [json.loads(line) for line in response.text.split("\n")] if expected.endswith("lines") else response.json()
    assert len(rows) == 2 and all(set(row) >= {"label", "probabilities"} for row in rows)


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
        ("[" * 30_000 + "]" * 30_000, "application/json", None, 400, "nested too deeply"),
        ('["x"]', "application/json; charset=rot13", None, 415, "not a text encoding"),
        (b"eA==", "text/plain; charset=base64", None, 415, "not a text encoding"),
        ('One.\n"Two, unclosed.\nThree.\n', "text/csv", None, 400, "row 2 (a quote opened there is never closed"),
        ('["x"]', "application/json", "application/json;q=0", 406, "Unsupported Accept"),
    ],
)
def test_client_errors_are_4xx_with_the_message(server, body, content_type, accept, status, match):
    response = _post(server, body, content_type, accept)
    assert response.status_code == status
    assert match in response.json()["error"]
    assert _post(server, '["still serving"]').status_code == 200


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
    assert response.json()["error"] == ("Request body of 163840 bytes exceeds the 65536-byte limit; send fewer "
                                        "sentences per request.")
    assert _post(server, '["fine"]').status_code == 200


def test_chunked_body_past_what_is_drained_says_how_much_arrived(exported):
    """In-process: a chunked body longer than limit + discard is cut off; the 413 says how many bytes arrived."""
    app = serve.create_app(serve.Endpoint(inference, None, exported / "model"), max_body_bytes=100,
                           discard_bytes=1000)

    async def run():
        async def chunks():
            for _ in range(10):
                yield b"x" * 500

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/invocations", content=chunks(), headers={"Content-Type": "text/plain"})

    response = asyncio.run(run())
    assert response.status_code == 413
    assert response.json()["error"] == ("Request body is over the 100-byte limit: 1500 bytes arrived before the server "
                                        "stopped reading; send fewer sentences per request.")


def test_client_that_disconnects_mid_body_is_one_log_line(server):
    """Content-Length 50, 10 bytes sent, connection closed: a warning line, no ClientDisconnect traceback."""
    before = len(server.lines)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50\r\n\r\n" + b'["01234567')
    server.wait_for_log("disconnected after sending 10 of 50 body bytes", timeout=60)
    assert _post(server, '["still serving"]').status_code == 200
    new = "".join(server.lines[before:])
    assert "Traceback" not in new and "ClientDisconnect" not in new, new
    assert sum("disconnected" in line for line in server.lines[before:]) == 1, new


def test_20_mb_body_from_urllib_gets_413_not_a_reset(server):
    """urllib writes the whole body before it reads the answer: the server must drain it, not reset the socket."""
    body = b'["' + b"w" * (20 * 1024 * 1024) + b'"]'
    request = urllib.request.Request(server.url + "/invocations", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=120)
    assert caught.value.code == 413
    assert "exceeds the 65536-byte limit" in json.loads(caught.value.read())["error"]
    assert _post(server, '["fine"]').status_code == 200


def test_expect_100_continue_gets_413_without_sending_the_body(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(20 * 1024 * 1024))
        conn.putheader("Expect", "100-continue")
        conn.endheaders()  # headers only: a 100-continue client waits for the server before sending the body
        response = conn.getresponse()
        assert response.status == 413 and b"byte limit" in response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------- concurrency
def test_fifty_concurrent_requests_on_four_threads_match_in_process(exported):
    model = inference.load_artifact(exported / "model")
    requests = [[f"Request {i} sentence {j} " + "word " * (i % 7) for j in range(1 + i % 4)] for i in range(50)]
    expected = [_expected(model, sentences) for sentences in requests]
    srv = Server(exported / "model", "--threads", "4")
    try:
        srv.wait_ready()

        async def run():
            async with httpx.AsyncClient(base_url=srv.url, timeout=120,
                                         limits=httpx.Limits(max_connections=50)) as client:
                return await asyncio.gather(*(
                    client.post("/invocations", content=json.dumps(sentences),
                                headers={"Content-Type": "application/json"}) for sentences in requests))

        responses = asyncio.run(run())
    finally:
        code, output = srv.stop()
    assert [r.status_code for r in responses] == [200] * 50
    mismatched = [i for i, (r, e) in enumerate(zip(responses, expected)) if not _same_answers(r.json(), e)]
    assert mismatched == []
    assert code == 0, output


def test_unexpected_handler_exception_is_a_500_and_the_server_keeps_serving(test_handler_artifact):
    srv = Server(test_handler_artifact, "--threads", "2")
    try:
        srv.wait_ready()
        response = _post(srv, json.dumps(["fine", "__boom__"]))
        assert response.status_code == 500
        assert response.json()["error"] == "RuntimeError: boom from the test handler"
        assert _post(srv, json.dumps(["fine"])).status_code == 200
    finally:
        code, output = srv.stop()
    assert code == 0 and "RuntimeError: boom from the test handler" in output


# ------------------------------------------------------------------------------------------- lifecycle / SIGTERM
def _post_in_background(srv: Server, n: int) -> tuple[list[threading.Thread], dict[int, httpx.Response]]:
    responses: dict[int, httpx.Response] = {}

    def one(i: int) -> None:
        responses[i] = _post(srv, json.dumps([f"queued request {i}"]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    return threads, responses


def test_sigterm_answers_every_queued_request(test_handler_artifact, tmp_path):
    gate = tmp_path / "gate"
    srv = Server(test_handler_artifact, "--log-level", "debug", env={"COLA_TEST_GATE": str(gate)})
    try:
        srv.wait_ready()
        threads, responses = _post_in_background(srv, 5)
        srv.wait_for_log("admitted request #", count=5)  # one held at the gate, four queued behind it
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_for_log("Shutting down")
        assert srv.proc.poll() is None  # still draining the queue
        gate.touch()
        for thread in threads:
            thread.join(120)
    finally:
        gate.touch()
        code, output = srv.stop()
    assert sorted(responses) == list(range(5))
    assert [responses[i].status_code for i in range(5)] == [200] * 5, output
    assert code == 0 and "dropped" not in output and "Traceback" not in output


def test_sigterm_past_the_grace_period_logs_what_it_dropped(test_handler_artifact, tmp_path):
    gate = tmp_path / "gate"
    srv = Server(test_handler_artifact, "--log-level", "debug", "--graceful-timeout", "0.2",
                 env={"COLA_TEST_GATE": str(gate)})
    try:
        srv.wait_ready()
        threads, responses = _post_in_background(srv, 3)
        srv.wait_for_log("admitted request #", count=3)
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_for_log("dropped request #", count=3)
        gate.touch()  # lets the one running inference finish so the process can exit
        for thread in threads:
            thread.join(120)
    finally:
        gate.touch()
        code, output = srv.stop()
    dropped = [line for line in output.splitlines() if "dropped request #" in line]
    assert sorted(line.split("dropped request #")[1].split()[0] for line in dropped) == ["1", "2", "3"]
    assert all("graceful shutdown period of 0.2 s ran out" in line for line in dropped)
    assert sum("running in thread" in line for line in dropped) == 1
    assert sum("queued behind other requests" in line for line in dropped) == 2
    assert [responses[i].status_code for i in range(3)] == [503] * 3
    assert "shut down before this request was answered" in responses[0].json()["error"]
    assert code == 0


def test_sigterm_shuts_down_cleanly(exported):
    srv = Server(exported / "model", "--threads", "2")
    try:
        srv.wait_ready()
        assert _post(srv, '["one"]').status_code == 200
    finally:
        code, output = srv.stop()
    assert code == 0, output
    assert "Application shutdown complete" in output and "Traceback" not in output


# ---------------------------------------------------------------------------------- artifact verification (strict)
def _tampered_handler(exported: Path, dest: Path, marker: Path) -> Path:
    model_dir = _copy_artifact(exported, dest)
    with (model_dir / "code" / "inference.py").open("a") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w').write('the tampered handler ran')\n")
    return model_dir


def test_tampered_handler_is_refused_before_it_is_imported(exported, tmp_path):
    marker = tmp_path / "tampered-code-ran"
    model_dir = _tampered_handler(exported, tmp_path / "model", marker)
    for source in (model_dir, _tar(model_dir, tmp_path / "model.tar.gz")):
        proc = subprocess.run([sys.executable, "-m", "cola_bert.serve", "--model-dir", str(source),
                               "--port", str(_free_port())], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "Artifact file code/inference.py is corrupt or was modified" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not marker.exists()


def _tamper_tokenizer(model_dir: Path, tmp_path: Path) -> None:
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = []
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer))


def _tokenizer_outside(model_dir: Path, tmp_path: Path) -> None:
    _edit_manifest(model_dir, tokenizer={"file": "../tokenizer.json"})
    shutil.copy(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")


def _tokenizer_absolute(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    _edit_manifest(model_dir, tokenizer={"file": str(tmp_path / "tokenizer.json")})


def _tokenizer_symlink_out(model_dir: Path, tmp_path: Path) -> None:
    """Same bytes, so the hash matches, but the file lives outside the artifact."""
    shutil.move(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (model_dir / "tokenizer.json").symlink_to(tmp_path / "tokenizer.json")


def _tokenizer_unhashed(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "tokenizer.json", model_dir / "other-tokenizer.json")
    _edit_manifest(model_dir, tokenizer={"file": "other-tokenizer.json"})


def _unlisted_code(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "code" / "helper.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")


def _cached_bytecode(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "code" / "__pycache__").mkdir()
    (model_dir / "code" / "__pycache__" / "inference.cpython-312.pyc").write_bytes(b"\x00" * 16)


def _missing_code(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "code" / "requirements.txt").unlink()


def _max_length_not_a_number(model_dir: Path, tmp_path: Path) -> None:
    _edit_manifest(model_dir, max_length="abc")


def _model_file_a_list(model_dir: Path, tmp_path: Path) -> None:
    _edit_manifest(model_dir, model_file=["model.pt"])


@pytest.mark.parametrize("tamper, message", [
    (_tamper_tokenizer, "Artifact file tokenizer.json is corrupt or was modified"),
    (_tokenizer_outside, "names the tokenizer.file '../tokenizer.json', which is not a relative path inside"),
    (_tokenizer_absolute, "which is not a relative path inside the artifact"),
    (_tokenizer_symlink_out, "Artifact file tokenizer.json is a symbolic link to"),
    (_tokenizer_unhashed, "tokenizer.file 'other-tokenizer.json' is not among the hashed `files`"),
    (_unlisted_code, "Artifact file code/helper.py is not listed in manifest.json"),
    (_cached_bytecode, "Artifact file code/__pycache__/inference.cpython-312.pyc is not listed"),
    (_missing_code, "Artifact file code/requirements.txt is missing"),
    (_max_length_not_a_number, 'gives max_length as "abc", not a positive integer'),
    (_model_file_a_list, 'gives model_file as ["model.pt"], not a file name'),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_serve_refuses_a_modified_artifact_naming_the_file(exported, tmp_path, capsys, monkeypatch, tamper, message):
    def serve_forever(self):
        raise AssertionError("the modified artifact was accepted and the server would have started")

    monkeypatch.setattr(serve._Server, "run", serve_forever)
    marker = tmp_path / "tampered-code-ran"
    model_dir = _tampered_handler(exported, tmp_path / "model", marker)
    _rehash(model_dir, "code/inference.py")  # the handler itself is in order: only `tamper` is wrong
    marker_code = (model_dir / "code" / "inference.py").read_text()
    tamper(model_dir, tmp_path)
    assert serve.main(["--model-dir", str(model_dir), "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")
    assert not marker.exists() and not (tmp_path / "ran").exists()
    assert "the tampered handler ran" in marker_code  # the handler would have left the marker, had it run


def test_serve_refuses_a_tokenizer_file_that_is_no_tokenizer(exported, tmp_path, capsys, monkeypatch):
    """tokenizer.file names a listed, hashed file that tokenizers cannot read: exit 2 and one paragraph naming it."""
    monkeypatch.setattr(serve._Server, "run", lambda self: pytest.fail("the server would have started"))
    model_dir = _copy_artifact(exported, tmp_path / "model")
    _edit_manifest(model_dir, tokenizer={"file": "tokenizer_config.json", "pad_token_id": 0})
    loaded = set(sys.modules)
    try:
        assert serve.main(["--model-dir", str(model_dir), "--port", str(_free_port())]) == 2
    finally:  # the handler module is cached by its digest; later tests must load their own copy
        for name in set(sys.modules) - loaded:
            if name.startswith("cola_artifact_inference_"):
                del sys.modules[name]
    err = capsys.readouterr().err
    assert err.startswith("error: Artifact file tokenizer_config.json (tokenizer.file) cannot be loaded as a fast "
                          "tokenizer"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_serve_refuses_a_tarball_with_an_unlisted_file_before_unpacking(exported, tmp_path, capsys, monkeypatch):
    """The export's model.tar.gz plus 8 MiB of zeros that its manifest does not list: refused, nothing unpacked."""
    monkeypatch.setattr(serve._Server, "run", lambda self: pytest.fail("the server would have started"))
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda *a, **k: pytest.fail("the archive was unpacked"))
    bomb = tmp_path / "model.tar.gz"
    with tarfile.open(exported / "model.tar.gz") as source, tarfile.open(bomb, "w:gz") as out:
        for member in source:
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
        zeros = tarfile.TarInfo("code/zeros.bin")
        zeros.size = 8 << 20
        out.addfile(zeros, io.BytesIO(bytes(zeros.size)))
    assert serve.main(["--model-dir", str(bomb), "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bomb} contains 'code/zeros.bin', which its manifest.json does not list"), err
    assert "before unpacking anything" in err


def test_unsafe_tarball_members_are_refused(tmp_path):
    def build(name: str, *members: tarfile.TarInfo) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as archive:
            for member in members:
                archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
        return path

    def info(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
        member = tarfile.TarInfo(name)
        member.type, member.linkname, member.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
        return member

    cases = {
        "symbolic link to '/etc/passwd'": build("sym.tar.gz", info("tokenizer.json", tarfile.SYMTYPE, "/etc/passwd")),
        "hard link": build("hard.tar.gz", info("a"), info("b", tarfile.LNKTYPE, "a")),
        "device": build("dev.tar.gz", info("dev", tarfile.CHRTYPE)),
        "absolute path": build("abs.tar.gz", info("/tmp/x")),
        "twice": build("dup.tar.gz", info("model.pt"), info("./model.pt")),  # manifest.json: test_inference
    }
    for problem, path in cases.items():
        with pytest.raises(inference.ArtifactError, match=problem):
            tarball.safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_cli_refuses_a_missing_or_truncated_model(exported, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cola_bert.serve", "--model-dir", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr

    data = (exported / "model.tar.gz").read_bytes()
    (tmp_path / "model.tar.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(inference.ArtifactError, match="truncated or corrupt"):
        serve.Endpoint.load(tmp_path / "model.tar.gz")


def test_endpoint_accepts_output_dir_and_runs_the_verified_handler_source(exported, tmp_path):
    model_dir = _copy_artifact(exported, tmp_path / "out" / "model")
    endpoint = serve.Endpoint.load(tmp_path / "out")
    try:
        assert endpoint.model_dir == model_dir
        assert Path(endpoint.handler.__file__) == model_dir / "code" / "inference.py"
        assert endpoint.handler is not inference
        body, media = endpoint.invoke(b'["A sentence."]', "application/json", None)
        assert media == "application/json" and json.loads(body)[0]["label"] in (0, 1)
    finally:
        endpoint.close()
    assert not (model_dir / "code" / "__pycache__").exists()  # no bytecode written that a later load could run
    inference.verify_artifact(model_dir, strict=True)  # still exactly what was exported


def test_tarball_is_unpacked_to_a_temp_dir_and_removed(exported):
    endpoint = serve.Endpoint.load(exported / "model.tar.gz")
    unpacked = endpoint.model_dir
    assert (unpacked / "manifest.json").is_file() and unpacked != exported / "model"
    endpoint.close()
    assert not unpacked.exists()
