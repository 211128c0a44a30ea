"""SageMaker PyTorch serving handler for CoLA classifiers exported by `python -m cola_bert.export`.

This file is copied verbatim into the artifact as ``code/inference.py``. It must stay standalone: it imports torch,
``tokenizers`` and the standard library only (``transformers`` lazily for the Hugging Face fallback, ``onnxruntime``
lazily for ONNX artifacts) and nothing from the training code. Python 3.8 syntax.

Contract (SageMaker PyTorch inference toolkit): ``model_fn(model_dir)``, ``input_fn(body, content_type)``,
``predict_fn(data, model)``, ``output_fn(prediction, accept)``.

Requests
    ``application/json``: ``"a sentence"``, ``["s1", "s2"]`` or ``{"inputs": "s" | ["s1", ...],
    "parameters": {"return_logits": true}}``; ``text/plain``: one sentence per line; ``text/csv``: one sentence per
    row (quote sentences that contain commas).
Responses
    ``application/json`` (default): one object per sentence, in request order:
    ``{"label": 1, "label_name": "acceptable", "score": 0.93, "probabilities": [0.07, 0.93]}``
    (plus ``"logits"`` when ``parameters.return_logits`` is true).
    ``application/x-logits+json``: the raw logits, ``[[l0, l1], ...]`` (what the original blog-post endpoint returned).
    ``application/jsonlines``: the same objects as ``application/json``, one per line, in request order, no trailing
    newline: what Batch Transform (SplitType Line, MultiRecord, AssembleWith Line) writes, one line per input line.
Client mistakes raise ``RequestError`` (4xx). When ``sagemaker_inference`` is importable it derives from its
``GenericInferenceToolkitError`` so the container keeps the status code; otherwise from a local class with the same
attributes (``status_code``, ``message``).

Environment: ``COLA_MAX_SENTENCES`` (default 1000) caps sentences per request, ``COLA_BATCH_SIZE`` (default 32) is
the chunk size of one forward pass, ``COLA_DEVICE`` forces ``cpu``/``cuda``, ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``
is the response type when the request has no Accept (or ``*/*``).

Devices: on a GPU host the exported graph runs on the GPU (TorchScript files are exported device-free, ONNX needs
``onnxruntime-gpu``); when it cannot, loading fails with the reason instead of silently running on the CPU.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import os
import posixpath
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
FORMATS = ("torchscript", "torch_export", "onnx")

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
TEXT_TYPE = "text/plain"
LOGITS_TYPE = "application/x-logits+json"
JSONLINES_TYPE = "application/jsonlines"
CONTENT_TYPES = (JSON_TYPE, TEXT_TYPE, CSV_TYPE)
ACCEPT_TYPES = (JSON_TYPE, JSONLINES_TYPE, LOGITS_TYPE)

MAX_SENTENCES_ENV = "COLA_MAX_SENTENCES"
DEFAULT_MAX_SENTENCES = 1000
BATCH_SIZE_ENV = "COLA_BATCH_SIZE"
DEFAULT_BATCH_SIZE = 32
MAX_PADDING = 0.25  # a chunk's padded tokens, as a share of its real ones (ColaModel.logits)
DEVICE_ENV = "COLA_DEVICE"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"

_HASH_CHUNK = 1 << 20
PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------------------- errors
class LocalInferenceError(Exception):
    """Stand-in for ``sagemaker_inference.errors.GenericInferenceToolkitError`` outside SageMaker's containers."""

    def __init__(self, status_code: int, message: Optional[str] = None, phrase: Optional[str] = None):
        self.status_code = int(status_code)
        self.message = message or "Invalid Request"
        self.phrase = phrase or self.message
        super().__init__(self.status_code, self.message, self.phrase)

    def __str__(self) -> str:
        return self.message


try:  # SageMaker's containers return the status of this exception type; anything else becomes a 500.
    from sagemaker_inference.errors import GenericInferenceToolkitError as _ToolkitErrorBase

    TOOLKIT_ERRORS = True
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _ToolkitErrorBase = LocalInferenceError  # type: ignore[misc,assignment]
    TOOLKIT_ERRORS = False


class RequestError(_ToolkitErrorBase):  # type: ignore[misc,valid-type]
    """A client mistake: ``status_code`` is a 4xx and ``message`` says what was wrong and what to send instead."""

    def __init__(self, status_code: int, message: str):
        super().__init__(status_code, message, message)

    def __str__(self) -> str:
        return self.message


class ArtifactError(RuntimeError):
    """The model artifact is missing, incomplete, corrupt or was modified; the message names the file."""


# ------------------------------------------------------------------------------------------- artifact integrity
def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(model_dir: PathLike) -> Dict[str, Any]:
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            "{} has no {}: it is not an artifact written by `python -m cola_bert.export` (or it was unpacked "
            "incompletely). Export the trained model with `python -m cola_bert.export model_dir=RUN/model "
            "output_dir=OUT` and deploy OUT/model.tar.gz.".format(model_dir, MANIFEST_NAME)
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        message = "{} is not valid JSON ({}): the artifact is corrupt; re-export it.".format(path, err)
        raise ArtifactError(message) from err
    if not isinstance(manifest, dict):
        raise ArtifactError("{} does not hold a JSON object: the artifact is corrupt; re-export it.".format(path))
    missing = [key for key in ("format", "model_file", "max_length", "label_names", "files") if key not in manifest]
    if missing:
        raise ArtifactError("{} lacks {}: the artifact is corrupt or too old; re-export it.".format(path, missing))
    if manifest["format"] not in FORMATS:
        raise ArtifactError(
            "{} names format {!r}; this handler serves {}.".format(path, manifest["format"], ", ".join(FORMATS))
        )
    tokenizer = manifest.get("tokenizer")
    checks = [
        ("model_file", manifest["model_file"], isinstance(manifest["model_file"], str), "a file name (a string)"),
        ("max_length", manifest["max_length"], _is_int(manifest["max_length"], 1), "a positive integer"),
        ("label_names", manifest["label_names"], isinstance(manifest["label_names"], list)
         and bool(manifest["label_names"]) and all(isinstance(n, str) for n in manifest["label_names"]),
         "a list of label names (strings)"),
        ("files", manifest["files"], isinstance(manifest["files"], dict), "an object {path: sha256}"),
        ("tokenizer", tokenizer, tokenizer is None or isinstance(tokenizer, dict), "an object"),
    ]
    if isinstance(tokenizer, dict):
        checks.append(("tokenizer.file", tokenizer.get("file"), isinstance(tokenizer.get("file", ""), str),
                       "a file name (a string)"))
        checks.append(("tokenizer.pad_token_id", tokenizer.get("pad_token_id"),
                       _is_int(tokenizer.get("pad_token_id", 0), 0), "a token id (an integer >= 0)"))
    for key, value, ok, expected in checks:
        if not ok:
            raise ArtifactError(
                "{} gives {} as {}, not {}: the manifest was edited or is corrupt. Refusing the artifact; re-export "
                "the model.".format(path, key, _short(value), expected)
            )
    return manifest


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _safe_relpath(rel: Any) -> bool:
    """A relative POSIX path that stays inside the artifact: a non-empty string, not absolute, no ``..``, no ``\\``."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    norm = posixpath.normpath(rel)
    return not norm.startswith("/") and norm != "." and ".." not in norm.split("/")


def artifact_path(model_dir: PathLike, rel: Any, what: str = "file") -> Path:
    """``model_dir/rel`` after checking that ``rel`` is relative, has no ``..`` and no symlink leads outside."""
    if not _safe_relpath(rel):
        raise ArtifactError(
            "{} names the {} {!r}, which is not a relative path inside the artifact (absolute paths and '..' are "
            "refused): the manifest was edited or is corrupt. Refusing the artifact; re-export the model.".format(
                Path(model_dir) / MANIFEST_NAME, what, rel
            )
        )
    root = Path(model_dir).resolve()
    path = Path(model_dir) / posixpath.normpath(rel)
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ArtifactError(
            "Artifact {} {} is a symbolic link to {}, outside {}. Refusing the artifact: replace the link with the "
            "file itself or re-export the model.".format(what, rel, resolved, model_dir)
        )
    return path


def _listed_files(model_dir: Path, manifest: Dict[str, Any]) -> Dict[str, str]:
    """The manifest's ``files`` ({relative path: sha256}) with every path checked and normalised."""
    files = manifest["files"]
    where = model_dir / MANIFEST_NAME
    if not isinstance(files, dict) or manifest["model_file"] not in files:
        raise ArtifactError(
            "{}: `files` does not list the model file {!r}; the artifact is corrupt; re-export it.".format(
                where, manifest["model_file"]
            )
        )
    listed = {}
    for rel, digest in files.items():
        artifact_path(model_dir, rel, "file")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ArtifactError(
                "{} records {!r} for {}, not a sha256 hex digest: the manifest is corrupt; re-export the "
                "model.".format(where, digest, rel)
            )
        listed[posixpath.normpath(rel)] = digest
    return listed


def tokenizer_file(model_dir: PathLike, manifest: Dict[str, Any]) -> Path:
    """The manifest's ``tokenizer.file``, path-checked and required to be one of the hashed ``files``."""
    model_dir = Path(model_dir)
    tokenizer = manifest.get("tokenizer") or {}
    name = tokenizer.get("file", "tokenizer.json") if isinstance(tokenizer, dict) else tokenizer
    path = artifact_path(model_dir, name, "tokenizer.file")
    files = manifest.get("files")
    if not isinstance(files, dict) or posixpath.normpath(name) not in {posixpath.normpath(k) for k in files}:
        raise ArtifactError(
            "{}: tokenizer.file {!r} is not among the hashed `files`, so it cannot be verified. Refusing the "
            "artifact; re-export the model.".format(model_dir / MANIFEST_NAME, name)
        )
    return path


def _unlisted_files(model_dir: Path, listed: Dict[str, str]) -> List[str]:
    """Files (and directory symlinks) under ``model_dir`` that the manifest does not list, manifest.json aside."""
    unlisted = []
    for root, dirs, names in os.walk(str(model_dir)):  # does not follow directory symlinks
        base = Path(root).relative_to(model_dir).as_posix()
        prefix = "" if base == "." else base + "/"
        for name in [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            unlisted.append(prefix + name)
            dirs.remove(name)
        unlisted.extend(prefix + name for name in names if prefix + name not in listed)
    return sorted(rel for rel in unlisted if rel != MANIFEST_NAME)


def verify_artifact(model_dir: PathLike, strict: bool = False) -> Dict[str, Any]:
    """Check the artifact directory against its manifest; return the manifest.

    Always: every path in ``files`` and ``tokenizer.file`` is relative, without ``..``, and no symlink leads outside
    ``model_dir``; ``tokenizer.file`` is one of the hashed files; every listed file outside ``code/`` exists and
    matches its sha256. A problem raises ``ArtifactError`` naming the file.

    ``strict=False`` (the handler itself, inside SageMaker's container): files under ``code/`` that differ or are
    missing only warn, because SageMaker may legitimately repack ``code/`` (``PyTorchModel(entry_point=...,
    source_dir=...)``) and a handler checking its own hash would prove nothing.

    ``strict=True`` (``cola_bert.serve`` and the deploy launcher, run by the installed package before anything from
    the artifact is imported): ``code/`` is held to the same standard, and a file the manifest does not list
    (``__pycache__`` included: Python may run cached bytecode instead of the verified source) is refused too.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    listed = _listed_files(model_dir, manifest)
    tokenizer_file(model_dir, manifest)
    if strict:
        unlisted = _unlisted_files(model_dir, listed)
        if unlisted:
            raise ArtifactError(
                "Artifact file {} is not listed in {}{}: an exported artifact holds exactly the files its manifest "
                "hashes, so this one was added afterwards. Refusing to load it; delete the file(s) or re-export the "
                "model.".format(
                    unlisted[0], MANIFEST_NAME,
                    " (nor are {})".format(", ".join(unlisted[1:6]) + (", ..." if len(unlisted) > 6 else ""))
                    if len(unlisted) > 1 else "",
                )
            )
    for rel, expected in sorted(listed.items()):
        path = model_dir / rel
        lenient = not strict and rel.split("/")[0] == "code"
        if not path.is_file():
            if lenient:
                logger.warning("artifact file %s listed in the manifest is missing (SageMaker repack?)", rel)
                continue
            raise ArtifactError(
                "Artifact file {} is missing (the manifest lists it): the artifact is incomplete or was unpacked "
                "partially; re-export or re-upload model.tar.gz.".format(rel)
            )
        actual = sha256_file(path)
        if actual != expected:
            if lenient:
                logger.warning("%s differs from the exported version (sha256 %s, manifest %s)", rel, actual, expected)
                continue
            raise ArtifactError(
                "Artifact file {} is corrupt or was modified: its sha256 is {} ({} bytes) but the manifest records "
                "{}. The file was truncated or tampered with; re-export the model or re-upload model.tar.gz.".format(
                    rel, actual, path.stat().st_size, expected
                )
            )
    return manifest


# --------------------------------------------------------------------------------------------------------- runners
def _grad_context():
    inference_mode = getattr(torch, "inference_mode", None)  # torch >= 1.9
    return inference_mode() if inference_mode is not None else torch.no_grad()


class Runner(object):
    """``runner(input_ids, attention_mask) -> logits`` (float32, CPU) for int64 ``[batch, seq]`` inputs."""

    backend = "base"

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchModuleRunner(Runner):
    """A TorchScript module, a ``torch.export`` program's module, or a Hugging Face model."""

    def __init__(self, module: Any, device: torch.device, backend: str):
        super().__init__(device)
        self.module = module
        self.backend = backend

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.backend == "huggingface":
            out = self.module(input_ids=input_ids, attention_mask=attention_mask)
            return out[0] if isinstance(out, (tuple, list)) else out.logits
        return self.module(input_ids, attention_mask)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        with _grad_context():
            logits = self._forward(input_ids, attention_mask)
        return logits.detach().float().cpu()


class OnnxRunner(Runner):
    backend = "onnx"

    def __init__(self, session: Any, device: torch.device):
        super().__init__(device)
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_name = session.get_outputs()[0].name

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        out = self.session.run([self.output_name], {name: feeds[name] for name in self.input_names})[0]
        return torch.from_numpy(out).float()


def pick_device() -> torch.device:
    forced = os.environ.get(DEVICE_ENV)
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_runner(path: PathLike, fmt: str, device: Optional[torch.device] = None) -> Runner:
    """Load an exported model file (``model.pt``, ``model.pt2`` or ``model.onnx``) as a ``Runner``."""
    device = device or pick_device()
    path = str(path)
    if fmt == "torchscript":
        with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit deprecated; loading is still supported
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(path, map_location=device)  # the graph is device-free (cola_bert.export)
        module.eval()
        return TorchModuleRunner(module, device, "torchscript")
    if fmt == "torch_export":
        program = torch.export.load(path)
        if device.type != "cpu":
            move = getattr(getattr(torch.export, "passes", None), "move_to_device_pass", None)
            if move is None:
                raise ArtifactError(
                    "torch {} cannot move a torch.export program to {} (torch.export.passes.move_to_device_pass "
                    "is missing); serve format=torchscript on this GPU instead.".format(torch.__version__, device)
                )
            program = move(program, device)
        return TorchModuleRunner(program.module(), device, "torch_export")
    if fmt == "onnx":
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ArtifactError(
                    "This host has a GPU but the installed onnxruntime {} has no CUDAExecutionProvider, so the ONNX "
                    "model would run on the CPU. Export with onnxruntime_package=onnxruntime-gpu for GPU endpoints, "
                    "deploy this artifact on a CPU instance, or set {}=cpu to run it on the CPU on purpose.".format(
                        onnxruntime.__version__, DEVICE_ENV)
                )
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many as torch (OMP_NUM_THREADS, set_num_threads)
        session = onnxruntime.InferenceSession(path, options, providers=providers)
        return OnnxRunner(session, device)
    raise ArtifactError("unknown model format {!r}; expected one of {}".format(fmt, ", ".join(FORMATS)))


def load_hf_runner(model_dir: PathLike, device: Optional[torch.device] = None) -> Runner:
    """The fallback: the Hugging Face weights (config.json + model.safetensors) shipped beside the exported file."""
    device = device or pick_device()
    try:
        from transformers import AutoModelForSequenceClassification
    except ImportError as err:
        raise ArtifactError(
            "The Hugging Face fallback needs `transformers`, which is not importable here ({}). Add a transformers "
            "version compatible with this container's torch to code/requirements.txt.".format(err)
        ) from err
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
    model.eval().to(device)
    return TorchModuleRunner(model, device, "huggingface")


# ---------------------------------------------------------------------------------------------------------- model
class ColaModel(object):
    """What ``model_fn`` returns: the runner, the tokenizer and the manifest's settings."""

    def __init__(self, runner: Runner, tokenizer: Any, manifest: Dict[str, Any], model_dir: Path):
        self.runner = runner
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.model_dir = model_dir
        self.label_names = [str(name) for name in manifest["label_names"]]
        self.max_length = int(manifest["max_length"])
        tok = manifest.get("tokenizer") or {}
        self.pad_token_id = int(tok.get("pad_token_id", 0))

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def device(self) -> torch.device:
        return self.runner.device

    def encode(self, sentences: Sequence[str]) -> List[List[int]]:
        """Token ids with special tokens, truncated at ``max_length`` (no padding)."""
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(sentences))]

    def logits(self, sentences: Sequence[str], batch_size: Optional[int] = None) -> torch.Tensor:
        """Logits ``[len(sentences), num_labels]`` in input order.

        Sentences are sorted by length and run in chunks of at most ``batch_size`` rows, padded to the chunk's longest;
        a chunk also ends where padding would exceed ``MAX_PADDING`` of its real tokens. Padded positions cost as
        much as real ones, and GLUE-dev lengths spread from 3 to 40 tokens: measured on this project's CPU
        (2026-11-26, 1 thread), 32 random GLUE-dev sentences ran 1.7x (eager) to 2x (int8) faster this way than as
        one padded batch of 32.
        """
        batch_size = batch_size or _env_int(BATCH_SIZE_ENV, DEFAULT_BATCH_SIZE)
        ids = self.encode(sentences)
        out = torch.empty((len(ids), len(self.label_names)), dtype=torch.float32)
        for chunk in _chunks([len(row) for row in ids], batch_size):
            width = len(ids[chunk[-1]])
            input_ids = torch.full((len(chunk), width), self.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)  # int64: SDPA traces need it
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                attention_mask[row, : len(ids[i])] = 1
            out[torch.tensor(chunk, dtype=torch.long)] = self.runner(input_ids, attention_mask)
        return out


def _chunks(lengths: List[int], batch_size: int) -> List[List[int]]:
    """Indices sorted by length, cut into chunks of at most ``batch_size`` with padding <= ``MAX_PADDING``."""
    chunks: List[List[int]] = []
    current: List[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        rows = len(current) + 1
        if current and (rows > batch_size or rows * lengths[i] > (1 + MAX_PADDING) * (real + lengths[i])):
            chunks.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    return chunks + [current] if current else chunks


def load_tokenizer(model_dir: Path, manifest: Dict[str, Any]) -> Any:
    from tokenizers import Tokenizer

    path = tokenizer_file(model_dir, manifest)  # path-checked, and one of the hashed files
    if not path.is_file():
        raise ArtifactError("{} is missing: the artifact has no fast-tokenizer file; re-export it.".format(path))
    try:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()  # padding is per chunk, to the chunk's longest sentence
        tokenizer.enable_truncation(max_length=int(manifest["max_length"]))
    except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot parse
        raise ArtifactError(
            "Artifact file {} (tokenizer.file) cannot be loaded as a fast tokenizer with max_length {} ({}: {}). "
            "It must be the tokenizer.json the export wrote; refusing the artifact, re-export the model.".format(
                path.relative_to(model_dir).as_posix(), manifest["max_length"], type(err).__name__,
                " ".join(str(err).split())[:300])
        ) from err
    return tokenizer


def load_artifact(
    model_dir: PathLike, device: Optional[torch.device] = None, verify: bool = True
) -> ColaModel:
    """Load an exported artifact directory: verify hashes, load the exported model and the tokenizer.

    When the exported file cannot be loaded or run here (e.g. TorchScript written by a newer torch) and the artifact
    carries the Hugging Face weights (``hf_fallback=true`` at export), fall back to them on the same device and log
    why; without them, raise ``ArtifactError`` with the reason. Never moves to another device on its own.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ArtifactError("{} is not a directory.".format(model_dir))
    manifest = verify_artifact(model_dir) if verify else read_manifest(model_dir)
    device = device or pick_device()
    tokenizer = load_tokenizer(model_dir, manifest)
    model_path = model_dir / manifest["model_file"]
    try:
        runner = load_runner(model_path, manifest["format"], device)
        model = ColaModel(runner, tokenizer, manifest, model_dir)
        _warm_up(model)
    except ArtifactError:
        raise
    except Exception as err:  # noqa: BLE001 - any load/run failure of the exported file triggers the fallback
        if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
            raise ArtifactError(
                "{} cannot be loaded or run on {} with torch {} ({}: {}). The artifact carries no Hugging Face "
                "weights to fall back to: serve it with the torch version it was exported with ({}), or re-export "
                "with hf_fallback=true.".format(
                    model_path.name, device, torch.__version__, type(err).__name__, str(err)[:500],
                    manifest.get("torch_version", "see manifest.json"))
            ) from err
        logger.warning(
            "Cannot use %s (%s: %s) with torch %s on %s; falling back to the Hugging Face weights in %s",
            model_path.name, type(err).__name__, err, torch.__version__, device, model_dir,
        )
        model = ColaModel(load_hf_runner(model_dir, device), tokenizer, manifest, model_dir)
        _warm_up(model)
    logger.info("loaded %s model from %s on %s", model.backend, model_dir, device)
    return model


def _warm_up(model: ColaModel) -> None:
    logits = model.logits(["Warm-up sentence.", "Another one, a little longer than the first."])
    if tuple(logits.shape) != (2, len(model.label_names)):
        raise ArtifactError(
            "the model returns logits of shape {} but the manifest lists {} labels".format(
                tuple(logits.shape), len(model.label_names)
            )
        )


# ------------------------------------------------------------------------------------------------- request parsing
def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        logger.warning("ignoring %s=%r (not an integer); using %d", name, raw, default)
        return default
    if value < 1:
        logger.warning("ignoring %s=%r (must be >= 1); using %d", name, raw, default)
        return default
    return value


def _media_type(header: Optional[str]) -> Tuple[str, Dict[str, str]]:
    """``"Text/Plain; charset=UTF-8"`` → ``("text/plain", {"charset": "UTF-8"})``."""
    if not header:
        return "", {}
    parts = [part.strip() for part in str(header).split(";")]
    params = {}
    for part in parts[1:]:
        if "=" in part:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


def _decode(body: Any, charset: Optional[str]) -> str:
    if isinstance(body, str):
        return body[1:] if body.startswith("\ufeff") else body
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, bytes):
        raise RequestError(400, "Unreadable request body of type {}.".format(type(body).__name__))
    encoding = charset or "utf-8"
    try:
        if not getattr(codecs.lookup(encoding), "_is_text_encoding", True):
            raise LookupError(encoding)  # a bytes-to-bytes codec such as base64, hex, zlib, bz2, rot13
        text = body.decode(encoding)
    except LookupError:  # unknown, or not a text encoding
        raise RequestError(415, "Unknown charset {!r} in Content-Type (not a text encoding); send UTF-8.".format(
            encoding)) from None
    except UnicodeError as err:
        raise RequestError(400, "The request body is not valid {} text ({}).".format(encoding, err)) from None
    return text[1:] if text.startswith("\ufeff") else text


def _check_sentences(sentences: List[Any], where: str) -> List[str]:
    if not sentences:
        raise RequestError(400, "No sentences in the request ({}). Send at least one non-empty sentence.".format(where))
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise RequestError(
                400,
                "Item {} of the input is {} ({}), not a string. Send sentences as JSON strings, e.g. "
                '["The cat sat.", "Cat the sat."].'.format(index, type(sentence).__name__, _short(sentence)),
            )
        if not sentence.strip():
            raise RequestError(400, "Sentence {} is empty. Every sentence must contain some text.".format(index))
        try:
            sentence.encode("utf-8")
        except UnicodeEncodeError:
            message = "Sentence {} is not valid Unicode (it has a lone surrogate).".format(index)
            raise RequestError(400, message) from None
    limit = _env_int(MAX_SENTENCES_ENV, DEFAULT_MAX_SENTENCES)
    if len(sentences) > limit:
        raise RequestError(
            413,
            "Too many sentences: {} in one request, the limit is {} ({}). Split the input into several "
            "requests.".format(len(sentences), limit, MAX_SENTENCES_ENV),
        )
    return sentences


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_json(text: str) -> Dict[str, Any]:
    if not text.strip():
        raise RequestError(400, "Empty request body. Send a JSON string, a list of strings or {\"inputs\": [...]}.")
    try:
        payload = json.loads(text)
    except RecursionError:
        raise RequestError(
            400,
            "The JSON body is nested too deeply to parse. Send a JSON string, a list of strings or "
            "{\"inputs\": [...]} (at most three levels deep).",
        ) from None
    except ValueError as err:
        raise RequestError(
            400,
            "Invalid JSON ({}). Send a JSON string, a list of strings or {{\"inputs\": [...]}} with Content-Type "
            "application/json; for raw sentences use text/plain.".format(err),
        ) from None
    return_logits = False
    if isinstance(payload, dict):
        unknown = sorted(set(payload) - {"inputs", "parameters"})
        if "inputs" not in payload or unknown:
            raise RequestError(
                400,
                'A JSON object must look like {{"inputs": "sentence" | ["s1", ...], "parameters": '
                '{{"return_logits": false}}}}; got keys {}.'.format(sorted(payload)),
            )
        params = payload.get("parameters") or {}
        if not isinstance(params, dict):
            raise RequestError(400, '"parameters" must be a JSON object, got {}.'.format(type(params).__name__))
        unknown = sorted(set(params) - {"return_logits"})
        if unknown:
            raise RequestError(400, "Unknown parameter(s) {}; supported: return_logits.".format(unknown))
        return_logits = params.get("return_logits", False)
        if not isinstance(return_logits, bool):
            raise RequestError(400, '"parameters.return_logits" must be true or false.')
        payload = payload["inputs"]
    if isinstance(payload, str):
        sentences = [payload]
    elif isinstance(payload, list):
        sentences = payload
    else:
        raise RequestError(
            400,
            "The JSON input is {} ({}); send a string, a list of strings or {{\"inputs\": [...]}}.".format(
                type(payload).__name__, _short(payload)
            ),
        )
    return {"sentences": _check_sentences(sentences, "JSON"), "return_logits": return_logits}


def _parse_text(text: str) -> Dict[str, Any]:
    # Only \n, \r\n and \r end a line (str.splitlines would also split at U+2028 and friends inside a sentence).
    sentences = [line.strip() for line in io.StringIO(text, newline=None) if line.strip()]
    return {"sentences": _check_sentences(sentences, "text/plain, one sentence per line"), "return_logits": False}


def _parse_csv(text: str) -> Dict[str, Any]:
    sentences = []
    number = 0
    try:
        # strict: a quote that is never closed is an error, not every later row read into one sentence
        for number, row in enumerate(csv.reader(io.StringIO(text), strict=True), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 1:
                raise RequestError(
                    400,
                    "CSV row {} has {} columns; send one sentence per row and quote sentences that contain "
                    'commas ("like, this").'.format(number, len(row)),
                )
            sentences.append(row[0].strip())
    except csv.Error as err:
        problem = ("a quote opened there is never closed" if "unexpected end of data" in str(err)
                   else "text after a closing quote" if "expected after" in str(err) else str(err))
        raise RequestError(
            400,
            'Invalid CSV at row {} ({}: {}). Quote a sentence as "like, this", double any quote inside it '
            '("say ""hi"""), or send text/plain, one sentence per line.'.format(number + 1, problem, err),
        ) from None
    return {"sentences": _check_sentences(sentences, "text/csv, one sentence per row"), "return_logits": False}


# ---------------------------------------------------------------------------------------- SageMaker handler API
def model_fn(model_dir):
    """Load the exported model (verified against its manifest) and the tokenizer."""
    return load_artifact(model_dir)


def input_fn(request_body, request_content_type):
    """Parse a request into ``{"sentences": [...], "return_logits": bool}``; never unpickles anything."""
    media, params = _media_type(request_content_type)
    if media not in CONTENT_TYPES:
        raise RequestError(
            415,
            "Unsupported Content-Type {!r}; send {}.".format(request_content_type, ", ".join(CONTENT_TYPES)),
        )
    if request_body is None:
        raise RequestError(400, "Empty request body.")
    text = _decode(request_body, params.get("charset"))
    if media == JSON_TYPE:
        return _parse_json(text)
    if not text.strip():
        raise RequestError(400, "Empty request body. Send one sentence per {}.".format(
            "line" if media == TEXT_TYPE else "row"))
    if media == TEXT_TYPE:
        return _parse_text(text)
    return _parse_csv(text)


def predict_fn(input_data, model):
    """Run the classifier over ``input_data["sentences"]`` in chunks; returns logits and probabilities."""
    if isinstance(input_data, str):
        input_data = {"sentences": [input_data]}
    elif isinstance(input_data, (list, tuple)):
        input_data = {"sentences": list(input_data)}
    sentences = _check_sentences(list(input_data["sentences"]), "predict_fn")
    logits = model.logits(sentences)
    return {
        "logits": logits,
        "probabilities": torch.softmax(logits, dim=-1),
        "label_names": model.label_names,
        "return_logits": bool(input_data.get("return_logits", False)),
    }


def select_accept(accept: Optional[str]) -> str:
    """The response media type for an Accept header, by RFC 9110 q-values.

    The supported type with the highest ``q`` wins (default 1; ``q=0`` excludes it); ties go to the entry listed
    first. ``*/*`` stands for the default first (``application/*`` for application/json), then the other supported
    types, each at the wildcard's ``q`` unless the header names that type itself.
    """
    default = os.environ.get(DEFAULT_ACCEPT_ENV) or JSON_TYPE
    if not accept or not str(accept).strip():
        accept = default
    entries = [_media_type(entry) for entry in str(accept).split(",")]
    named = {media for media, _ in entries if "*" not in media}
    best, best_q = None, 0.0
    for media, params in entries:
        try:
            q = min(float(params.get("q", 1)), 1.0)
        except ValueError:
            q = 1.0  # not a qvalue: as if it were absent
        first = _media_type(default)[0] if media == "*/*" else JSON_TYPE if media == "application/*" else None
        for candidate in ([first] + list(ACCEPT_TYPES) if first else [media]):
            if candidate in ACCEPT_TYPES and (candidate == media or candidate not in named) and q > best_q:
                best, best_q = candidate, q
    if best is None:
        raise RequestError(406, "Unsupported Accept {!r}; ask for {} (with q > 0).".format(
            accept, ", ".join(ACCEPT_TYPES)))
    return best


def output_fn(prediction, accept):
    """Serialise to JSON; returns ``(body, content_type)`` as the inference toolkit allows."""
    media = select_accept(accept)
    logits = prediction["logits"].tolist()
    if media == LOGITS_TYPE:
        return json.dumps(logits), LOGITS_TYPE
    rows = prediction_rows(prediction)
    if media == JSONLINES_TYPE:
        return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows), JSONLINES_TYPE
    return json.dumps(rows, ensure_ascii=False), JSON_TYPE


def prediction_rows(prediction: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One ``{"label", "label_name", "score", "probabilities"[, "logits"]}`` object per sentence, in order."""
    logits = prediction["logits"].tolist()
    names = prediction["label_names"]
    rows = []
    for row_logits, probs in zip(logits, prediction["probabilities"].tolist()):
        label = max(range(len(probs)), key=probs.__getitem__)
        row = {
            "label": label,
            "label_name": names[label] if label < len(names) else str(label),
            "score": probs[label],
            "probabilities": probs,
        }
        if prediction.get("return_logits"):
            row["logits"] = row_logits
        rows.append(row)
    return rows


def transform(model: ColaModel, body: Any, content_type: Optional[str], accept: Optional[str]) -> Tuple[str, str]:
    """input_fn → predict_fn → output_fn, as the toolkit chains them (used by the local endpoint and tests)."""
    return output_fn(predict_fn(input_fn(body, content_type), model), accept)


__all__ = [
    "ArtifactError", "ColaModel", "LocalInferenceError", "RequestError", "Runner", "artifact_path",
    "tokenizer_file",
    "input_fn", "load_artifact", "load_hf_runner", "load_runner", "model_fn", "output_fn", "predict_fn",
    "prediction_rows",
    "read_manifest", "select_accept", "sha256_file", "transform", "verify_artifact",
]
