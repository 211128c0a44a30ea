"""A local endpoint speaking SageMaker's hosting protocol, driven by the artifact's own ``code/inference.py``.

    python -m cola_bert.serve --model-dir OUT/model.tar.gz --port 8080      (console script: cola-serve)
    curl -s localhost:8080/ping
    curl -s localhost:8080/invocations -H 'Content-Type: application/json' -d '["The cat sat on the mat."]'

``GET /ping`` answers 200 once the model is loaded (it is loaded before the port opens). ``POST /invocations`` runs
``input_fn → predict_fn → output_fn`` in a worker thread, honouring ``Content-Type`` and ``Accept`` like the
SageMaker PyTorch inference toolkit (JSON and CSV bodies are decoded to ``str``, others stay ``bytes``; a missing or
``*/*`` Accept means ``$SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` or application/json). Handler errors that carry a
4xx/5xx ``status_code`` keep it; anything else is a 500. Bodies above ``--max-body-bytes`` (6 MiB, SageMaker's
real-time payload limit) get 413. SIGTERM/SIGINT: finish in-flight requests, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import types
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cola_bert import inference as package_handler

log = logging.getLogger("cola_bert.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
MAX_BODY_ENV = "COLA_SERVE_MAX_BODY_BYTES"
UTF8_TYPES = ("application/json", "text/csv")  # sagemaker_inference.content_types.UTF8_TYPES


class ServeError(RuntimeError):
    """The endpoint cannot start; the message says why."""


def load_handler(model_dir: Path) -> types.ModuleType:
    """The artifact's ``code/inference.py`` (what SageMaker would import), else the installed cola_bert.inference."""
    path = model_dir / "code" / "inference.py"
    if not path.is_file():
        log.warning("%s has no code/inference.py; using the installed cola_bert.inference", model_dir)
        return package_handler
    name = "cola_artifact_inference_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    for required in ("model_fn", "input_fn", "predict_fn", "output_fn"):
        if not callable(getattr(module, required, None)):
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
                model_dir = package_handler.extract_tarball(source, tmpdir)
            except Exception:
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
            handler = load_handler(model_dir)
            model = handler.model_fn(str(model_dir))
        except Exception:
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


def create_app(endpoint: Endpoint, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, inference_threads: int = 1):
    """The FastAPI app; model inference runs in a pool of ``inference_threads`` threads, off the event loop."""
    executor = ThreadPoolExecutor(max_workers=max(1, inference_threads), thread_name_prefix="cola-infer")

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            executor.shutdown(wait=True)
            endpoint.close()

    app = FastAPI(title="cola-bert local endpoint", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.endpoint = endpoint

    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    # Plain Starlette routes (FastAPI's add_route): no request validation or dependency solving per call.
    async def ping(request: Request) -> Response:
        return Response(status_code=200 if endpoint.model is not None else 503)

    async def execution_parameters(request: Request) -> JSONResponse:  # asked by SageMaker batch transform
        return JSONResponse({"MaxConcurrentTransforms": max(1, inference_threads), "BatchStrategy": "MULTI_RECORD",
                             "MaxPayloadInMB": max(1, max_body_bytes // (1024 * 1024))})

    async def invocations(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"Request body of {declared} bytes exceeds the {max_body_bytes}-byte limit; "
                               "send fewer sentences per request.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return _error(413, f"Request body exceeds the {max_body_bytes}-byte limit; send fewer sentences "
                                   "per request.")
            chunks.append(chunk)
        body = b"".join(chunks)
        content_type = request.headers.get("content-type")
        accept = request.headers.get("accept")
        loop = asyncio.get_running_loop()
        try:
            payload, media_type = await loop.run_in_executor(executor, endpoint.invoke, body, content_type, accept)
        except Exception as err:  # noqa: BLE001 - mapped to a status like SageMaker's toolkit does
            status = _status_of(err)
            if status is None:
                log.exception("invocation failed")
                return _error(500, f"{type(err).__name__}: {err}")
            if status >= 500:
                log.error("invocation failed with %d: %s", status, getattr(err, "message", err))
            return _error(status, str(getattr(err, "message", None) or err))
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

    def __init__(self, app, host: str, port: int, log_level: str, access_log: bool):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                timeout_graceful_shutdown=30, lifespan="on")
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
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.max_body_bytes < 1 or args.threads < 1:
        parser.error("--max-body-bytes and --threads must be positive")

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        endpoint = Endpoint.load(args.model_dir)
    except (ServeError, package_handler.ArtifactError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the handler module's own ArtifactError class, load failures
        if type(err).__name__ in ("ArtifactError", "ServeError"):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    log.info("serving %s model from %s on http://%s:%d", getattr(endpoint.model, "backend", "?"),
             endpoint.model_dir, args.host, args.port)
    app = create_app(endpoint, max_body_bytes=args.max_body_bytes, inference_threads=args.threads)
    try:
        _Server(app, args.host, args.port, args.log_level, args.access_log).run()
    except ServeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        endpoint.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
