"""Export a trained classifier as a verified, SageMaker-ready ``model.tar.gz``.

    python -m cola_bert.export model_dir=RUN/model output_dir=OUT [format=torchscript|torch_export|onnx]
    cola-export model_dir=s3://bucket/job/output/model.tar.gz output_dir=OUT

``model_dir`` is a Hugging Face model directory (a run's ``model/``), a local ``model.tar.gz`` (e.g. a SageMaker
training job's artifact) or an ``s3://`` URI of one. The model is wrapped as ``(input_ids, attention_mask) -> logits``
and exported; the exported file is then reloaded and compared with the eager model on fresh random batches
(batch sizes 1, 8, 64 × lengths from 1 to ``max_length``). If the largest |Δlogit| exceeds ``tolerance`` the export
fails and nothing is written. Output::

    OUT/model.tar.gz              what SageMaker deploys (the files below at its root)
    OUT/model/                    the same, unpacked
        model.pt | model.pt2 | model.onnx
        config.json, model.safetensors            Hugging Face weights (the handler's fallback)
        tokenizer.json, tokenizer_config.json
        code/inference.py, code/requirements.txt
        manifest.json                             format, versions, labels, max |Δlogit|, sha256 of every file
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from cola_bert import inference

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {"torchscript": "model.pt", "torch_export": "model.pt2", "onnx": "model.onnx"}
JIT_OPTIMIZE = ("none", "freeze", "optimize_for_inference")
DEFAULT_BATCH_SIZES = (1, 8, 64)
DEFAULT_TOLERANCE = 1e-4
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model", "vocab.json")
SMOKE_SENTENCES = (
    "The sailors rode the breeze clear of the rocks.",
    "The more books I ask to whom he will give, the more he reads.",
    "Ça a l'air naïf — 東京 😀",
    "a",
    "word " * 300,
)


class ExportError(RuntimeError):
    """Bad input or settings for an export; the message says what was wrong and what to do."""


class ExportVerificationError(ExportError):
    """The exported model does not reproduce the eager model's logits within the tolerance."""

    def __init__(self, message: str, max_abs_diff: float):
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


# ------------------------------------------------------------------------------------------------------- helpers
def default_lengths(max_length: int) -> list[int]:
    """Sequence lengths spanning 1..max_length, both ends included, with the powers of two and their neighbours."""
    candidates = {1, 2, 3, max_length, max_length - 1, max(1, max_length // 2), (max_length * 3) // 4}
    power = 4
    while power < max_length:
        candidates.update({power - 1, power, power + 1})
        power *= 2
    return sorted(length for length in candidates if 1 <= length <= max_length)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _python_marker(package: str) -> str:
    """PEP 508 marker from a package's Requires-Python (``>=3.11`` → ``python_version >= "3.11"``)."""
    try:
        from packaging.specifiers import SpecifierSet

        spec = SpecifierSet(metadata.metadata(package).get("Requires-Python") or "")
    except Exception:  # noqa: BLE001 - no marker is always valid
        return ""
    clauses = []
    for item in spec:
        if item.operator in (">=", ">", "<", "<=") and "*" not in item.version:
            clauses.append(f'python_full_version {item.operator} "{item.version}"')
    return " ; " + " and ".join(clauses) if clauses else ""


def requirements_txt(fmt: str, hf_fallback: bool = True) -> str:
    """``code/requirements.txt``: pinned to the versions the export was verified with, never torch."""
    lines = [
        "# pip-installed by the SageMaker PyTorch serving container before code/inference.py is imported.",
        "# Pinned to the versions `cola_bert.export` verified with. Never add torch: the container provides it.",
    ]
    packages = ["tokenizers"]
    if hf_fallback:
        packages.append("transformers")  # only for the fallback to config.json + model.safetensors
    if fmt == "onnx":
        packages.append("onnxruntime")
    for package in packages:
        version = _version(package)
        if version is None:
            raise ExportError(f"`{package}` is not installed here, but the artifact needs it: pip install {package}")
        lines.append(f"{package}=={version}{_python_marker(package)}")
    return "\n".join(lines) + "\n"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@contextmanager
def _quiet():
    """Silence tracer/exporter chatter (TracerWarnings, transformers' load reports): the verification is the check."""
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(name) for name in ("transformers", "torch.onnx", "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        hf_logging.disable_progress_bar()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------------------- input sources
def _sagemaker_session():
    """A sagemaker.Session honouring AWS_PROFILE / AWS_REGION (boto3 itself honours AWS_ENDPOINT_URL)."""
    try:
        import boto3
        import sagemaker
    except ImportError as err:
        raise ExportError(
            f"Reading s3:// needs the SageMaker SDK: pip install 'cola-bert[sagemaker]' ({err})."
        ) from err
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    boto_session = boto3.Session(profile_name=os.environ.get("AWS_PROFILE") or None, region_name=region)
    return sagemaker.Session(boto_session=boto_session)


def _download_s3(uri: str, dest: Path) -> Path:
    from sagemaker.s3 import S3Downloader

    if not uri.endswith((".tar.gz", ".tgz")):
        raise ExportError(f"{uri}: an s3:// model_dir must point at a model.tar.gz (a SageMaker training artifact).")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        S3Downloader.download(uri, str(dest), sagemaker_session=_sagemaker_session())
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - botocore raises many types; all mean "could not download"
        raise ExportError(
            f"Cannot download {uri} ({type(err).__name__}: {err}). Check the URI, AWS credentials "
            "(AWS_PROFILE), AWS_REGION and, for a local S3, AWS_ENDPOINT_URL."
        ) from err
    files = [path for path in dest.rglob("*") if path.is_file()]
    if not files:
        raise ExportError(f"{uri} does not exist (nothing was downloaded). Check the bucket and key.")
    return files[0]


def _find_model_root(directory: Path, origin: str) -> Path:
    if (directory / "config.json").is_file():
        return directory
    nested = sorted({path.parent for path in directory.glob("*/config.json")})
    if len(nested) == 1:
        return nested[0]
    raise ExportError(
        f"{origin} holds no Hugging Face model: config.json is missing"
        + (f" (several candidates: {', '.join(str(p) for p in nested)})" if nested else "")
        + ". Pass a training run's model/ directory (config.json, model.safetensors and tokenizer files), "
        "or the model.tar.gz of a SageMaker training job."
    )


def resolve_model_dir(source: str | os.PathLike[str], workdir: Path) -> Path:
    """A local directory holding config.json + weights + tokenizer, from a directory, a .tar.gz or an s3:// URI."""
    text = str(source)
    if text.startswith("s3://"):
        tarball = _download_s3(text, workdir / "download")
        origin = text
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise ExportError(
                f"model_dir={text} does not exist. Pass a training run's model/ directory, a model.tar.gz or an "
                "s3://…/model.tar.gz."
            )
        if path.is_dir():
            root = _find_model_root(path, f"model_dir={text}")
            _check_model_dir(root, text)
            return root
        tarball, origin = path, text
    try:
        unpacked = inference.extract_tarball(tarball, workdir / "source")
    except inference.ArtifactError as err:
        raise ExportError(f"model_dir={origin}: {err}") from err
    root = _find_model_root(unpacked, f"The archive {origin}")
    _check_model_dir(root, origin)
    return root


def _check_model_dir(root: Path, origin: str) -> None:
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ExportError(
            f"{origin} has config.json but no tokenizer files ({', '.join(TOKENIZER_FILES)}). Save the tokenizer "
            "beside the model (tokenizer.save_pretrained(dir)); training runs write both into RUN/model/."
        )
    if not any(root.glob("*.safetensors")) and not any(root.glob("pytorch_model*.bin")):
        raise ExportError(
            f"{origin} has config.json but no weights (model.safetensors). Pass the model/ directory written by "
            "a finished training run."
        )
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except ValueError as err:
        raise ExportError(f"{origin}: config.json is not valid JSON ({err}).") from err
    architectures = config.get("architectures") or []
    if architectures and not any(str(name).endswith("ForSequenceClassification") for name in architectures):
        raise ExportError(
            f"{origin} holds a {', '.join(architectures)}, not a sequence classifier: its classification head "
            "would be random. Export the model/ directory of a fine-tuned run instead."
        )


# --------------------------------------------------------------------------------------------------------- model
class LogitsWrapper(torch.nn.Module):
    """``(input_ids, attention_mask) -> logits`` as a plain tensor (transformers 5 has no ``torchscript=True``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).logits


def _load_eager(root: Path, max_length: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(root), use_fast=True)
            model = AutoModelForSequenceClassification.from_pretrained(str(root))
    except (OSError, ValueError, KeyError) as err:
        raise ExportError(f"Cannot load the model in {root} with transformers ({type(err).__name__}: {err}).") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{root}: only fast tokenizers (tokenizer.json) can be served; re-save it with transformers.")
    model.eval()
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > int(limit):
        raise ExportError(f"max_length={max_length} exceeds the model's max_position_embeddings={limit}.")
    return model, tokenizer


def _example_inputs(length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, the second padded: the attention mask is a real int64 mask with zeros, never all ones."""
    generator = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(1000, 2000, (2, length), generator=generator, dtype=torch.long)
    attention_mask = torch.ones((2, length), dtype=torch.long)
    if length > 1:
        attention_mask[1, max(1, length // 2):] = 0
        input_ids[1, max(1, length // 2):] = pad_id
    return input_ids, attention_mask


def _write_torchscript(wrapper: LogitsWrapper, example: tuple, path: Path, jit_optimize: str) -> None:
    with torch.no_grad(), _quiet():
        module = torch.jit.trace(wrapper, example, check_trace=False, strict=True)
        module.eval()
        if jit_optimize == "freeze":
            module = torch.jit.freeze(module)
        elif jit_optimize == "optimize_for_inference":
            module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
        torch.jit.save(module, str(path))


def _write_torch_export(wrapper: LogitsWrapper, example: tuple, path: Path, max_length: int) -> None:
    from torch.export import Dim

    batch, seq = Dim("batch", min=1), Dim("seq", min=1, max=max_length)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with torch.no_grad(), _quiet():
        program = torch.export.export(wrapper, example, dynamic_shapes=shapes, strict=False)
        torch.export.save(program, str(path))


def _write_onnx(wrapper: LogitsWrapper, example: tuple, path: Path, max_length: int) -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ExportError(
            f"format=onnx needs onnx, onnxscript and onnxruntime: pip install 'cola-bert[onnx]' ({err})"
        ) from err
    from torch.export import Dim

    batch, seq = Dim("batch", min=1), Dim("seq", min=1, max=max_length)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            wrapper, example, str(path), input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False,
        )


# ------------------------------------------------------------------------------------------------- verification
def _random_batch(generator: torch.Generator, batch: int, length: int, vocab: int, pad_id: int):
    input_ids = torch.randint(0, vocab, (batch, length), generator=generator, dtype=torch.long)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length  # at least one unpadded row; batch 1 is never padded
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, pad_id)
    return input_ids, attention_mask


def max_abs_logit_diff(
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_sizes: Iterable[int],
    lengths: Iterable[int],
    vocab_size: int,
    pad_id: int = 0,
    seed: int = 0,
) -> tuple[float, tuple[int, int]]:
    """Largest |reference - candidate| over fresh random batches of every (batch size, length); and where."""
    generator = torch.Generator().manual_seed(seed)
    worst, where = -1.0, (0, 0)
    for batch in batch_sizes:
        for length in lengths:
            input_ids, attention_mask = _random_batch(generator, batch, length, vocab_size, pad_id)
            with torch.inference_mode():
                expected = reference(input_ids, attention_mask).float()
            got = candidate(input_ids, attention_mask).float()
            if tuple(got.shape) != tuple(expected.shape):
                raise ExportVerificationError(
                    f"the exported model returned shape {tuple(got.shape)} instead of {tuple(expected.shape)} "
                    f"for batch {batch} × length {length}", float("inf"),
                )
            diff = float((expected - got).abs().max())
            if diff != diff:  # NaN
                diff = float("inf")
            if diff > worst:
                worst, where = diff, (batch, length)
    return max(worst, 0.0), where


# -------------------------------------------------------------------------------------------------------- export
def export_model(
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    format: str = "torchscript",  # noqa: A002 - mirrors the CLI's `format=`
    max_length: int = 128,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    lengths: Sequence[int] | None = None,
    seed: int = 0,
    jit_optimize: str = "freeze",
    hf_fallback: bool = True,
) -> Path:
    """Export, verify and package a classifier; returns ``output_dir/model.tar.gz``.

    ``output_dir/model/`` (unpacked) and ``output_dir/model.tar.gz`` are replaced only when everything succeeded;
    on any error nothing under ``output_dir`` changes. Raises ``ExportError`` (``ExportVerificationError`` when
    max |Δlogit| > ``tolerance``).
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown format={format!r}. Choose one of: {', '.join(FORMATS)} (default torchscript).")
    if jit_optimize not in JIT_OPTIMIZE:
        raise ExportError(f"Unknown jit_optimize={jit_optimize!r}. Choose one of: {', '.join(JIT_OPTIMIZE)}.")
    if not isinstance(max_length, int) or max_length < 1:
        raise ExportError(f"max_length must be a positive integer, got {max_length!r}.")
    lengths = sorted(set(int(n) for n in lengths)) if lengths else default_lengths(max_length)
    if lengths[0] < 1 or lengths[-1] > max_length:
        raise ExportError(f"verification lengths must lie in 1..max_length={max_length}, got {lengths}.")
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 1:
        raise ExportError(f"batch_sizes must be positive integers, got {batch_sizes}.")
    output_dir = Path(output_dir).expanduser().resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"output_dir={output_dir} exists and is not a directory.")
    parent = output_dir.parent
    parent.mkdir(parents=True, exist_ok=True)

    work = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.export-", dir=parent))
    try:
        root = resolve_model_dir(model_dir, work)
        log.info("exporting %s as %s (max_length=%d)", root, format, max_length)
        model, tokenizer = _load_eager(root, max_length)
        label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        vocab_size = int(model.config.vocab_size)

        stage = work / "model"
        (stage / "code").mkdir(parents=True)
        wrapper = LogitsWrapper(model).eval()
        example = _example_inputs(min(max_length, 16), pad_id)
        model_file = FORMATS[format]
        try:
            if format == "torchscript":
                _write_torchscript(wrapper, example, stage / model_file, jit_optimize)
            elif format == "torch_export":
                _write_torch_export(wrapper, example, stage / model_file, max_length)
            else:
                _write_onnx(wrapper, example, stage / model_file, max_length)
        except ExportError:
            raise
        except Exception as err:  # noqa: BLE001 - tracer/exporter errors: say which format failed
            others = ", ".join(name for name in FORMATS if name != format)
            raise ExportError(
                f"format={format} failed for this model ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
                f"Try another format ({others})."
            ) from err

        runner = inference.load_runner(stage / model_file, format, torch.device("cpu"))
        worst, where = max_abs_logit_diff(wrapper, runner, batch_sizes, lengths, vocab_size, pad_id, seed)
        log.info("max |Δlogit| exported vs eager: %.3g (at batch %d × length %d)", worst, *where)
        if not worst <= tolerance:
            raise ExportVerificationError(
                f"Verification failed: the {format} export differs from the eager model by max |Δlogit| = "
                f"{worst:.3g} (batch {where[0]} × length {where[1]}), above the tolerance {tolerance:g}. Nothing "
                f"was written. Try another format or jit_optimize=none.", worst,
            )

        with _quiet():
            model.save_pretrained(str(stage), safe_serialization=True)
            tokenizer.save_pretrained(str(stage))
        for stray in ("special_tokens_map.json", "added_tokens.json"):
            if (stage / stray).is_file() and not (root / stray).is_file():
                (stage / stray).unlink()
        if not (stage / "tokenizer.json").is_file():
            raise ExportError(f"{root}: the tokenizer did not save a tokenizer.json; a fast tokenizer is required.")
        shutil.copyfile(inference.__file__, stage / "code" / "inference.py")
        (stage / "code" / "requirements.txt").write_text(requirements_txt(format, hf_fallback), encoding="utf-8")

        for path in stage.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # save_pretrained writes some files 0600
        manifest = _manifest(
            stage, format=format, model_file=model_file, max_length=max_length, label_names=label_names,
            max_abs_diff=worst, tolerance=tolerance, batch_sizes=batch_sizes, lengths=lengths, seed=seed,
            jit_optimize=jit_optimize if format == "torchscript" else None, pad_token=tokenizer.pad_token,
            pad_id=pad_id, source=str(model_dir), model_type=getattr(model.config, "model_type", None),
        )
        (stage / inference.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

        _smoke_test(stage, wrapper, tokenizer, max_length, tolerance)
        tarball = work / "model.tar.gz"
        _write_tarball(stage, tarball)
        _install(work, output_dir, {"model": stage, "model.tar.gz": tarball})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output_dir / "model.tar.gz"


def _manifest(stage: Path, **info: Any) -> dict[str, Any]:
    files = {
        path.relative_to(stage).as_posix(): inference.sha256_file(path)
        for path in sorted(stage.rglob("*"))
        if path.is_file() and path.name != inference.MANIFEST_NAME
    }
    torch_full = torch.__version__
    return {
        "schema_version": inference.MANIFEST_SCHEMA_VERSION,
        "format": info["format"],
        "model_file": info["model_file"],
        "torch_version": torch_full.split("+")[0],
        "torch_version_full": torch_full,
        "transformers_version": _version("transformers"),
        "tokenizers_version": _version("tokenizers"),
        "onnxruntime_version": _version("onnxruntime") if info["format"] == "onnx" else None,
        "python_version": platform.python_version(),
        "max_length": info["max_length"],
        "label_names": info["label_names"],
        "num_labels": len(info["label_names"]),
        "model_type": info["model_type"],
        "inputs": {"input_ids": "int64 [batch, seq]", "attention_mask": "int64 [batch, seq]"},
        "output": "logits float32 [batch, num_labels]",
        "tokenizer": {"file": "tokenizer.json", "pad_token": info["pad_token"], "pad_token_id": info["pad_id"]},
        "jit_optimize": info["jit_optimize"],
        "max_abs_logit_diff": info["max_abs_diff"],
        "verification": {
            "tolerance": info["tolerance"],
            "batch_sizes": list(info["batch_sizes"]),
            "lengths": list(info["lengths"]),
            "seed": info["seed"],
            "reference": "eager transformers model, same weights, fresh random int64 batches with right padding",
        },
        "source": info["source"],
        "created": _utc_now(),
        "files": files,
    }


def _smoke_test(stage: Path, wrapper: LogitsWrapper, tokenizer: Any, max_length: int, tolerance: float) -> None:
    """Load the staged artifact exactly as the handler will and compare with the eager model on real sentences."""
    loaded = inference.load_artifact(stage, device=torch.device("cpu"))
    manifest = loaded.manifest
    if loaded.backend != manifest["format"]:
        raise ExportError(
            f"The packaged {manifest['model_file']} could not be loaded by the handler (it fell back to "
            f"{loaded.backend}); see the warning above."
        )
    sentences = list(SMOKE_SENTENCES)
    expected_ids = tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]
    if loaded.encode(sentences) != [list(ids) for ids in expected_ids]:
        raise ExportError(
            "The serving tokenizer (tokenizers, tokenizer.json) does not reproduce the transformers tokenizer's ids; "
            "re-save the tokenizer with a current transformers version."
        )
    enc = tokenizer(sentences, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = wrapper(enc["input_ids"], enc["attention_mask"].long())
    got = loaded.logits(sentences)
    diff = float((expected - got).abs().max())
    if not diff <= tolerance:
        raise ExportVerificationError(
            f"Verification failed: the packaged artifact's predictions differ from the eager model by {diff:.3g} "
            f"on real sentences (tolerance {tolerance:g}). Nothing was written.", diff,
        )


def _write_tarball(stage: Path, tarball: Path) -> None:
    def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o644
        return info

    # manifest.json first, so that a reader streaming the start of the archive (e.g. the deploy launcher reading an
    # s3:// artifact) finds it before the weights. Weights barely compress: level 1 is much faster than 9.
    files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: (p.name != inference.MANIFEST_NAME, p))
    with tarfile.open(tarball, "w:gz", compresslevel=1) as archive:
        for path in files:
            archive.add(path, arcname=path.relative_to(stage).as_posix(), recursive=False, filter=_reset)


def _install(work: Path, output_dir: Path, items: dict[str, Path]) -> None:
    """Move the finished outputs into place (renames on one filesystem); old ones are removed afterwards."""
    output_dir.mkdir(parents=True, exist_ok=True)
    trash = work / "replaced"
    trash.mkdir()
    for name, source in items.items():
        target = output_dir / name
        if target.exists() or target.is_symlink():
            os.replace(target, trash / name)
        os.replace(source, target)


# ----------------------------------------------------------------------------------------------------------- CLI
def _conf_dir() -> Path:
    try:
        from cola_bert.config import conf_dir

        return conf_dir()
    except (ImportError, FileNotFoundError):
        here = Path(__file__).resolve()
        for candidate in (here.parents[2] / "conf", here.parents[1] / "conf"):
            if (candidate / "export.yaml").is_file():
                return candidate
        raise ExportError(
            "Cannot find conf/export.yaml. Run from a checkout of cola-bert (pip install -e .) or set COLA_BERT_CONF."
        ) from None


def run(cfg: Any) -> Path:
    """Run an export from a Hydra/OmegaConf config (conf/export.yaml) and print a summary."""
    from omegaconf import OmegaConf

    for key in ("model_dir", "output_dir"):
        if OmegaConf.is_missing(cfg, key) or not cfg.get(key):
            raise ExportError(
                f"{key}= is required: python -m cola_bert.export model_dir=RUN/model output_dir=OUT "
                "[format=torchscript|torch_export|onnx]"
            )
    tarball = export_model(
        cfg.model_dir, cfg.output_dir, format=str(cfg.format), max_length=int(cfg.max_length),
        tolerance=float(cfg.tolerance), batch_sizes=list(cfg.batch_sizes),
        lengths=list(cfg.lengths) if cfg.get("lengths") else None, seed=int(cfg.seed),
        jit_optimize=str(cfg.jit_optimize), hf_fallback=bool(cfg.hf_fallback),
    )
    manifest = json.loads((tarball.parent / "model" / inference.MANIFEST_NAME).read_text(encoding="utf-8"))
    verification = manifest["verification"]
    print(f"Exported {manifest['format']} model: {tarball} ({tarball.stat().st_size / 1e6:.1f} MB)")
    print(f"  unpacked:  {tarball.parent / 'model'}")
    print(
        f"  verified:  max |Δlogit| vs eager = {manifest['max_abs_logit_diff']:.3g} (tolerance "
        f"{verification['tolerance']:g}) over batch sizes {verification['batch_sizes']} × "
        f"{len(verification['lengths'])} lengths 1..{manifest['max_length']}"
    )
    print(
        f"  versions:  torch {manifest['torch_version']}, transformers {manifest['transformers_version']}; "
        f"labels: {', '.join(manifest['label_names'])}"
    )
    return tarball


def main() -> None:
    """Console entry point (`cola-export`, `python -m cola_bert.export`): Hydra overrides on the command line."""
    try:
        config_path = str(_conf_dir())
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None

    import hydra

    @hydra.main(version_base="1.3", config_path=config_path, config_name="export")
    def _app(cfg) -> None:
        logging.basicConfig(level=logging.INFO if cfg.get("verbose") else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            run(cfg)
        except ExportError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    _app()


if __name__ == "__main__":
    main()
