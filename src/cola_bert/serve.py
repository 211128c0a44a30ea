"""A local endpoint speaking SageMaker's hosting protocol, driven by the artifact's own ``code/inference.py``.

    python -m cola_bert.serve --model-dir OUT/model.tar.gz --port 8080      (console script: cola-serve)
    curl -s localhost:8080/ping
    curl -s localhost:8080/invocations -H 'Content-Type: application/json' -d '["The cat sat on the mat."]'

Before anything from the artifact is imported, the installed (trusted) ``cola_bert.inference`` unpacks it safely and
verifies it strictly: every file its manifest lists, ``code/`` included, matches its sha256, ``tokenizer.file`` is a
hashed path inside the artifact, and no unlisted file is present. Only then is the verified source of
``code/inference.py`` executed (never cached bytecode) and its ``model_fn`` called. ``GET /ping`` answers 200 once the
model is loaded (before the port opens).

``POST /invocations`` runs ``input_fn → predict_fn → output_fn`` in a pool of worker threads, honouring
``Content-Type`` and ``Accept`` like the SageMaker PyTorch inference toolkit (JSON and CSV bodies are decoded to
``str``, others stay ``bytes``; a missing or ``*/*`` Accept means ``$SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` or
application/json). Handler errors that carry a 4xx/5xx ``status_code`` keep it; anything else is a 500 with the
exception's message, and the server keeps serving. Bodies above ``--max-body-bytes`` (6 MiB, SageMaker's real-time
payload limit) get 413: the rest of the body is read and discarded (up to ``DISCARD_BYTES`` more) so that clients
which write the whole body before reading the answer see the 413, not a connection reset; a client that sends
``Expect: 100-continue`` gets the 413 without sending the body. A request not answered within
``--request-timeout`` seconds of its arrival gets 504.

SIGTERM/SIGINT: stop accepting connections, finish in-flight requests for up to ``--graceful-timeout`` seconds
(default: the request timeout plus a margin, so every queued request gets its answer), log each request dropped
when that runs out, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import itertools
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from cola_bert import inference as package_handler
from cola_bert.tarball import safe_extract

log = logging.getLogger("cola_bert.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
MAX_BODY_ENV = "COLA_SERVE_MAX_BODY_BYTES"
DISCARD_BYTES = 64 * 1024 * 1024  # read and drop up to this much of an oversized body so the client sees the 413
DEFAULT_REQUEST_TIMEOUT = 60.0  # SageMaker real-time endpoints answer within 60 s or the client gets an error
GRACE_MARGIN = 5.0  # seconds on top of the request timeout for the last answers to be written
UTF8_TYPES = ("application/json", "text/csv")  # sagemaker_inference.content_types.UTF8_TYPES
HANDLER_FILE = "code/inference.py"
HANDLER_API = ("model_fn", "input_fn", "predict_fn", "output_fn")


class ServeError(RuntimeError):
    """The endpoint cannot start; the message says why."""


def load_handler(model_dir: Path, manifest: dict[str, Any]) -> types.ModuleType:
    """The artifact's ``code/inference.py`` (what SageMaker would import), else the installed cola_bert.inference.

    The source is read once, checked against the manifest's sha256 and executed from those very bytes: no bytecode
    cache is read or written, and a file swapped after verification is not picked up.
    """
    path = model_dir / HANDLER_FILE
    if not path.is_file():
        log.warning("%s has no %s; using the installed cola_bert.inference", model_dir, HANDLER_FILE)
        return package_handler
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if digest != manifest["files"].get(HANDLER_FILE):
        raise package_handler.ArtifactError(
            f"Artifact file {HANDLER_FILE} changed while the endpoint was starting (sha256 {digest}, manifest "
            f"{manifest['files'].get(HANDLER_FILE)}); refusing to run it."
        )
    name = "cola_artifact_inference_" + digest[:16]
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name, "code/inference.py of a cola-bert artifact")
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name while it executes
    try:
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - verified source
    except BaseException:
        del sys.modules[name]
        raise
    for required in HANDLER_API:
        if not callable(getattr(module, required, None)):
            del sys.modules[name]
            raise ServeError(f"{path} does not define {required}(); it is not a SageMaker inference handler.")
    return module


class Endpoint:
    """A loaded model plus the handler module that serves it (and the temp dir a tarball was unpacked into)."""

    def __init__(self, handler: types.ModuleType, model: Any, model_dir: Path, tmpdir: Path | None = None):
        self.handler = handler
        self.model = model
        self.model_dir = model_dir
        self._tmpdir = tmpdir

    @classmethod
    def load(cls, source: str | os.PathLike[str]) -> Endpoint:
        """Accepts OUT/model/ (an exported directory), OUT/ (holding model/) or a model.tar.gz."""
        source = Path(source).expanduser()
        tmpdir = None
        if source.is_file():
            tmpdir = Path(tempfile.mkdtemp(prefix="cola-serve-"))
            try:
                model_dir = safe_extract(source, tmpdir)
            except BaseException:
                shutil.rmtree(tmpdir, ignore_errors=True)
                raise
        elif source.is_dir():
            model_dir = source
            nested = source / "model" / package_handler.MANIFEST_NAME
            if not (source / package_handler.MANIFEST_NAME).is_file() and nested.is_file():
                model_dir = source / "model"
        else:
            raise ServeError(
                f"--model-dir {source} does not exist. Pass an exported directory (OUT/model) or OUT/model.tar.gz "
                "written by `python -m cola_bert.export`."
            )
        try:
            # The installed package verifies the whole artifact before a single line of it is imported.
            manifest = package_handler.verify_artifact(model_dir, strict=True)
            handler = load_handler(model_dir, manifest)
            model = handler.model_fn(str(model_dir))
        except BaseException:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return cls(handler, model, model_dir, tmpdir)

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[Any, str]:
        """What the inference toolkit's Transformer does for one request: decode, input_fn, predict_fn, output_fn."""
        handler = self.handler
        if not accept or accept.strip() == "*/*":
            accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or "application/json"
        data: Any = body
        if content_type in UTF8_TYPES:
            try:
                data = body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _client_error(handler, 400, f"The request body is not valid UTF-8 ({err}).") from None
        parsed = handler.input_fn(data, content_type)
        prediction = handler.predict_fn(parsed, self.model)
        result = handler.output_fn(prediction, accept)
        if isinstance(result, tuple):
            return result[0], result[1]
        return result, accept

    def close(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _client_error(handler: types.ModuleType, status: int, message: str) -> Exception:
    cls = getattr(handler, "RequestError", None)
    return cls(status, message) if cls is not None else package_handler.RequestError(status, message)


def _status_of(err: BaseException) -> int | None:
    status = getattr(err, "status_code", None)
    return status if isinstance(status, int) and 400 <= status <= 599 else None


@dataclass
class InFlight:
    """One admitted invocation, for the log when a shutdown drops it."""

    number: int
    client: str
    size: int
    content_type: str | None
    arrived: float
    state: str = "queued behind other requests"

    def describe(self) -> str:
        age = time.monotonic() - self.arrived
        return (f"request #{self.number} from {self.client} ({self.size} bytes, {self.content_type or 'no type'}; "
                f"{self.state}; arrived {age:.1f} s ago)")


def create_app(endpoint: Endpoint, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, inference_threads: int = 1,
               request_timeout: float = DEFAULT_REQUEST_TIMEOUT, graceful_timeout: float | None = None,
               discard_bytes: int = DISCARD_BYTES):
    """The FastAPI app; model inference runs in a pool of ``inference_threads`` threads, off the event loop."""
    executor = ThreadPoolExecutor(max_workers=max(1, inference_threads), thread_name_prefix="cola-infer")
    in_flight: dict[int, InFlight] = {}
    numbers = itertools.count(1)
    grace = graceful_timeout if graceful_timeout is not None else request_timeout + GRACE_MARGIN

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            # Off the event loop, so answers of requests being dropped can still be written meanwhile.
            await asyncio.to_thread(functools.partial(executor.shutdown, wait=True, cancel_futures=True))
            endpoint.close()

    app = FastAPI(title="cola-bert local endpoint", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.endpoint = endpoint
    app.state.in_flight = in_flight

    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def _too_large(size: int, stopped: bool = False) -> JSONResponse:
        if stopped:  # the rest of the body was not read
            what = f"is over the {max_body_bytes}-byte limit: {size} bytes arrived before the server stopped reading"
        else:
            what = f"of {size} bytes exceeds the {max_body_bytes}-byte limit"
        return _error(413, f"Request body {what}; send fewer sentences per request.")

    def _run(entry: InFlight, body: bytes, content_type: str | None, accept: str | None) -> tuple[Any, str]:
        entry.state = f"running in thread {threading.current_thread().name}"
        return endpoint.invoke(body, content_type, accept)

    # Plain Starlette routes (FastAPI's add_route): no request validation or dependency solving per call.
    async def ping(request: Request) -> Response:
        return Response(status_code=200 if endpoint.model is not None else 503)

    async def execution_parameters(request: Request) -> JSONResponse:  # asked by SageMaker batch transform
        return JSONResponse({"MaxConcurrentTransforms": max(1, inference_threads), "BatchStrategy": "MULTI_RECORD",
                             "MaxPayloadInMB": max(1, max_body_bytes // (1024 * 1024))})

    async def invocations(request: Request) -> Response:
        declared = request.headers.get("content-length")
        declared_size = int(declared) if declared is not None and declared.isdigit() else None
        if declared_size is not None and declared_size > max_body_bytes:
            waits_for_continue = "100-continue" in request.headers.get("expect", "").lower()
            if waits_for_continue or declared_size > max_body_bytes + discard_bytes:
                # The client sends nothing before a 100 Continue, or the body is too big to drain: answer now.
                return _too_large(declared_size)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():  # past the limit: keep reading, drop the bytes, answer 413 at the end
                size += len(chunk)
                if size <= max_body_bytes:
                    chunks.append(chunk)
                elif size > max_body_bytes + discard_bytes:
                    break
        except ClientDisconnect:  # nobody is left to answer: one log line, no traceback
            client = f"{request.client.host}:{request.client.port}" if request.client else "unknown client"
            log.warning("client %s disconnected after sending %d of %s body bytes; request dropped", client, size,
                        declared if declared is not None else "an unannounced number of")
            return _error(400, "The client disconnected before the request body was complete.")
        if size > max_body_bytes:
            return _too_large(size, stopped=size > max_body_bytes + discard_bytes)
        body = b"".join(chunks)
        content_type = request.headers.get("content-type")
        client = f"{request.client.host}:{request.client.port}" if request.client else "unknown client"
        entry = InFlight(next(numbers), client, size, content_type, time.monotonic())
        in_flight[entry.number] = entry
        log.debug("admitted %s", entry.describe())
        loop = asyncio.get_running_loop()
        try:
            work = loop.run_in_executor(executor, _run, entry, body, content_type, request.headers.get("accept"))
            payload, media_type = await asyncio.wait_for(work, request_timeout)
        except asyncio.TimeoutError:
            log.error("%s timed out after %g s (--request-timeout)", entry.describe(), request_timeout)
            return _error(504, f"The request was not answered within {request_timeout:g} s (--request-timeout); "
                               "send fewer sentences per request or raise the timeout.")
        except asyncio.CancelledError:
            # uvicorn cancels what is still in flight when the graceful shutdown period runs out.
            log.error("graceful shutdown period of %g s ran out (--graceful-timeout): dropped %s", grace,
                      entry.describe())
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):  # Python >= 3.11: answer instead of dying
                task.uncancel()
            return _error(503, "The endpoint shut down before this request was answered; send it again.")
        except Exception as err:  # noqa: BLE001 - mapped to a status like SageMaker's toolkit does
            status = _status_of(err)
            if status is None:
                log.exception("%s failed", entry.describe())
                return _error(500, f"{type(err).__name__}: {err}")
            if status >= 500:
                log.error("%s failed with %d: %s", entry.describe(), status, getattr(err, "message", err))
            return _error(status, str(getattr(err, "message", None) or err))
        finally:
            in_flight.pop(entry.number, None)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        return Response(content=payload, media_type=media_type)

    app.add_route("/ping", ping, methods=["GET"])
    app.add_route("/execution-parameters", execution_parameters, methods=["GET"])
    app.add_route("/invocations", invocations, methods=["POST"])
    return app


class _Server:
    """uvicorn.Server that exits 0 after a graceful SIGTERM/SIGINT shutdown.

    uvicorn re-raises the captured signal after shutting down (so the process would die of SIGTERM, exit -15);
    with a no-op handler installed first, that re-raise lands on it and ``main`` returns normally.
    """

    def __init__(self, app, host: str, port: int, log_level: str, access_log: bool, graceful_timeout: float):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                timeout_graceful_shutdown=graceful_timeout, lifespan="on")
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not self.server.started:
            raise ServeError("the server did not start (see the log above: port in use?)")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw and raw.strip().isdigit() else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cola-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True,
                        help="exported directory (OUT/model), OUT itself, or OUT/model.tar.gz")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1; 0.0.0.0 to expose)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--max-body-bytes", type=int, default=_env_int(MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES),
                        help=f"413 above this (default 6 MiB, SageMaker's limit; env {MAX_BODY_ENV})")
    parser.add_argument("--threads", type=int, default=1,
                        help="inference worker threads (default 1: torch already uses every core per request)")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT,
                        help="seconds from arrival until a request gets 504 (default 60, as SageMaker)")
    parser.add_argument("--graceful-timeout", type=float, default=None,
                        help="seconds SIGTERM waits for in-flight requests (default: request timeout + "
                             f"{GRACE_MARGIN:g}, enough for every queued request to be answered)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.max_body_bytes < 1 or args.threads < 1:
        parser.error("--max-body-bytes and --threads must be positive")
    if not args.request_timeout > 0 or (args.graceful_timeout is not None and not args.graceful_timeout >= 0):
        parser.error("--request-timeout must be positive and --graceful-timeout zero or more (seconds)")
    grace = args.graceful_timeout if args.graceful_timeout is not None else args.request_timeout + GRACE_MARGIN

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        endpoint = Endpoint.load(args.model_dir)
    except (ServeError, package_handler.ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the artifact handler's own ArtifactError class, load failures
        if type(err).__name__ in ("ArtifactError", "ServeError"):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    log.info("serving %s model from %s on http://%s:%d (graceful shutdown period %g s)",
             getattr(endpoint.model, "backend", "?"), endpoint.model_dir, args.host, args.port, grace)
    app = create_app(endpoint, max_body_bytes=args.max_body_bytes, inference_threads=args.threads,
                     request_timeout=args.request_timeout, graceful_timeout=grace)
    try:
        _Server(app, args.host, args.port, args.log_level, args.access_log, grace).run()
    except ServeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        endpoint.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
