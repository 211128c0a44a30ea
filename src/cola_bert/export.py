"""Export a trained classifier as a verified, SageMaker-ready ``model.tar.gz``.

    python -m cola_bert.export model_dir=RUN/model output_dir=OUT [format=torchscript|torch_export|onnx]
    python -m cola_bert.export model_dir=RUN/model output_dir=OUT format=onnx quantize=int8
    cola-export model_dir=outputs/sagemaker/jobs/JOB/model output_dir=OUT   (after `python -m launch.train attach=JOB`)

``model_dir`` is a Hugging Face model directory (a run's ``model/``) or a local ``model.tar.gz`` (e.g. a SageMaker
training job's artifact); the export never talks to AWS (``launch.train attach=JOB`` downloads a job's model). The
model is wrapped as ``(input_ids, attention_mask) -> logits`` and exported; the exported file is then reloaded and
compared with the eager model on fresh random batches (batch sizes 1, 8, 64 × lengths from 1 to ``max_length``). If
the largest |Δlogit| exceeds ``tolerance`` the export fails and nothing is written. ``quantize=int8`` (ONNX only)
fuses the verified fp32 graph and quantizes it with ONNX Runtime's own tools (8-bit block-wise MatMuls). Every
export is then loaded through the handler and compared with the fp32 eager model on real sentences (GLUE dev when
the CoLA archive is found, else a shipped sample): label agreement below ``min_agreement`` (default 0.97) refuses
the export. Output::

    OUT/model.tar.gz              what SageMaker deploys (the files below at its root)
    OUT/model/                    the same, unpacked
        model.pt | model.pt2 | model.onnx        the weights, once
        tokenizer.json, tokenizer_config.json
        code/inference.py, code/requirements.txt
        manifest.json                             format, versions, labels, max |Δlogit|, agreement, sha256 of files
        config.json, model.safetensors            only with hf_fallback=true (the handler's fallback)

This module reads the input, drives the export and packages it (manifest, tarball, install) and is the CLI; the
wrapper and graph writers are in ``cola_bert.export_formats``, the checks against the eager model in
``cola_bert.agreement``.
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
from importlib import metadata
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch

from cola_bert import console, inference
from cola_bert.agreement import (
    DEFAULT_MIN_AGREEMENT, DEFAULT_TOLERANCE, agreement_sentences, check_agreement, find_cola_archive,
    max_abs_logit_diff,
)
from cola_bert.config import ConfigError, require_number
from cola_bert.export_formats import (
    JIT_OPTIMIZE, ExportError, ExportVerificationError, LogitsWrapper, example_inputs, load_eager, package_version,
    quantize_onnx, quiet, write_onnx, write_onnx_fusable, write_torch_export, write_torchscript,
)
from cola_bert.tarball import safe_extract

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {"torchscript": "model.pt", "torch_export": "model.pt2", "onnx": "model.onnx"}
DEFAULT_BATCH_SIZES = (1, 8, 64)
QUANTIZE = ("none", "int8")
INT8_MATMUL = ("per_token", "blockwise", "per_tensor")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "spiece.model", "vocab.json")
SMOKE_SENTENCES = (
    "The sailors rode the breeze clear of the rocks.",
    "The more books I ask to whom he will give, the more he reads.",
    "Ça a l'air naïf — 東京 😀",
    "a",
    "word " * 300,
)


# ------------------------------------------------------------------------------------------------------- helpers
def default_lengths(max_length: int) -> list[int]:
    """Sequence lengths spanning 1..max_length, both ends included, with the powers of two and their neighbours."""
    candidates = {1, 2, 3, max_length, max_length - 1, max(1, max_length // 2), (max_length * 3) // 4}
    power = 4
    while power < max_length:
        candidates.update({power - 1, power, power + 1})
        power *= 2
    return sorted(length for length in candidates if 1 <= length <= max_length)


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


def requirements_txt(fmt: str, hf_fallback: bool = False, onnxruntime_package: str = "onnxruntime") -> str:
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
        version = package_version(package)
        if package == "onnxruntime" and onnxruntime_package != "onnxruntime":
            # onnxruntime-gpu is released in lockstep with onnxruntime: same version, CUDA execution provider.
            package = onnxruntime_package
        if version is None:
            raise ExportError(f"`{package}` is not installed here, but the artifact needs it: pip install {package}")
        lines.append(f"{package}=={version}{_python_marker(package)}")
    return "\n".join(lines) + "\n"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------- input sources
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
    """A local directory holding config.json + weights + tokenizer, from a directory or a .tar.gz."""
    text = str(source)
    if text.startswith("s3://"):
        raise ExportError(
            f"model_dir={text}: the export reads local files only (AWS is the launchers' job). Download the training "
            "job's model first: `python -m launch.train attach=<job name>` lays it out as a run directory (pass "
            "model_dir=outputs/sagemaker/jobs/<job name>/model), or `aws s3 cp <uri> .` and pass the model.tar.gz; `python -m launch.deploy "
            "training_job=<job name>` downloads, exports and deploys in one step."
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise ExportError(
            f"model_dir={text} does not exist. Pass a training run's model/ directory or a model.tar.gz (a SageMaker "
            "training job's artifact)."
        )
    if path.is_dir():
        root = _find_model_root(path, f"model_dir={text}")
        _check_model_dir(root, text)
        return root
    tarball, origin = path, text
    try:
        unpacked = safe_extract(tarball, workdir / "source")
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
    hf_fallback: bool = False,
    quantize: str = "none",
    int8_matmul: str = "per_token",
    block_size: int = 128,
    per_channel: bool = True,
    reduce_range: bool = False,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    cola_archive: str | os.PathLike[str] | None = None,
    agreement_file: str | os.PathLike[str] | None = None,
    onnxruntime_package: str = "onnxruntime",
) -> Path:
    """Export, verify and package a classifier; returns ``output_dir/model.tar.gz``.

    ``output_dir/model/`` (unpacked) and ``output_dir/model.tar.gz`` are replaced only when everything succeeded;
    on any error nothing under ``output_dir`` changes. Raises ``ExportError`` (``ExportVerificationError`` when
    max |Δlogit| > ``tolerance`` for the fp32 graph, or when the label agreement with the fp32 eager model on real
    sentences is below ``min_agreement``). ``quantize="int8"`` (ONNX only) quantizes the verified fp32 graph.
    ``hf_fallback`` adds ``config.json`` + ``model.safetensors`` (the weights a second time) for the handler's
    transformers fallback.
    """
    if format not in FORMATS:
        raise ExportError(f"Unknown format={format!r}. Choose one of: {', '.join(FORMATS)} (default torchscript).")
    if quantize not in QUANTIZE:
        raise ExportError(f"Unknown quantize={quantize!r}. Choose one of: {', '.join(QUANTIZE)}.")
    if quantize == "int8" and format != "onnx":
        raise ExportError(
            f"quantize=int8 is offered for format=onnx only (ONNX Runtime's fusion and quantizers; see docs/serving.md "
            f"for why not {format}). Use: format=onnx quantize=int8."
        )
    if int8_matmul not in INT8_MATMUL:
        raise ExportError(f"Unknown int8_matmul={int8_matmul!r}. Choose one of: {', '.join(INT8_MATMUL)}.")
    if not isinstance(block_size, int) or block_size < 16 or block_size & (block_size - 1):
        raise ExportError(f"block_size must be a power of two >= 16 (e.g. 32, 64, 128), got {block_size!r}.")
    if not 0.0 <= float(min_agreement) <= 1.0:
        raise ExportError(f"min_agreement must lie in 0..1 (a share of labels), got {min_agreement!r}.")
    if onnxruntime_package not in ("onnxruntime", "onnxruntime-gpu"):
        raise ExportError(f"onnxruntime_package must be onnxruntime or onnxruntime-gpu, got {onnxruntime_package!r}.")
    if quantize == "int8" and onnxruntime_package == "onnxruntime-gpu":
        raise ExportError(
            "quantize=int8 targets CPU endpoints (its 8-bit MatMulNBits kernels run on the CPU), so pairing it with "
            "onnxruntime_package=onnxruntime-gpu would run most of it on the CPU of a GPU instance. For a GPU endpoint "
            "export fp32 (format=onnx onnxruntime_package=onnxruntime-gpu, or format=torchscript); for a CPU endpoint "
            "drop onnxruntime_package."
        )
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
    source = Path(model_dir).expanduser().resolve()
    for target in (output_dir / "model", output_dir / "model.tar.gz"):
        if source == target or target in source.parents:  # the export would replace its own input
            raise ExportError(
                f"output_dir={output_dir} would overwrite the model being exported: the export writes {target}, "
                f"and model_dir={source} is {'that path' if source == target else 'inside it'}. Choose another "
                f"output_dir, e.g. output_dir={source.parent / 'export'}."
            )
    parent = output_dir.parent
    sentences, sentence_source = agreement_sentences(find_cola_archive(cola_archive, None) if cola_archive else None,
                                                     agreement_file)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.export-", dir=parent))
    except OSError as err:
        raise ExportError(
            f"output_dir={output_dir} cannot be written ({err.strerror or err}: {err.filename or parent}). Choose a "
            "directory you can write to, e.g. output_dir=outputs/export."
        ) from None
    try:
        root = resolve_model_dir(model_dir, work)
        log.info("exporting %s as %s (max_length=%d)", root, format, max_length)
        model, tokenizer = load_eager(root, max_length)
        label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        vocab_size = int(model.config.vocab_size)

        stage = work / "model"
        (stage / "code").mkdir(parents=True)
        wrapper = LogitsWrapper(model).eval()
        example = example_inputs(min(max_length, 16), pad_id)
        model_file = FORMATS[format]
        # The fp32 graph is verified against the tolerance; an int8 graph is made from it afterwards.
        graph_path = work / "fp32.onnx" if quantize == "int8" else stage / model_file
        try:
            if format == "torchscript":
                write_torchscript(wrapper, example, graph_path, jit_optimize)
            elif format == "torch_export":
                write_torch_export(wrapper, example, graph_path, max_length)
            elif quantize == "int8":
                write_onnx_fusable(wrapper, example, graph_path)
            else:
                write_onnx(wrapper, example, graph_path, max_length)
        except ExportError:
            raise
        except Exception as err:  # noqa: BLE001 - tracer/exporter errors: say which format failed
            others = ", ".join(name for name in FORMATS if name != format)
            raise ExportError(
                f"format={format} failed for this model ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
                f"Try another format ({others})."
            ) from err

        runner = inference.load_runner(graph_path, format, torch.device("cpu"))
        worst, where = max_abs_logit_diff(wrapper, runner, batch_sizes, lengths, vocab_size, pad_id, seed)
        log.info("max |Δlogit| exported vs eager: %.3g (at batch %d × length %d)", worst, *where)
        if not worst <= tolerance:
            raise ExportVerificationError(
                f"Verification failed: the {format} export differs from the eager model by max |Δlogit| = "
                f"{worst:.3g} (batch {where[0]} × length {where[1]}), above the tolerance {tolerance:g}. Nothing "
                f"was written. Try another format or jit_optimize=none.", worst,
            )
        quantization = None
        if quantize == "int8":
            del runner
            quantization = quantize_onnx(graph_path, stage / model_file, model.config, int8_matmul, block_size,
                                         per_channel, reduce_range)
            quantized = inference.load_runner(stage / model_file, format, torch.device("cpu"))
            quantization["fp32_max_abs_logit_diff"] = worst
            quantization["max_abs_logit_diff"], _ = max_abs_logit_diff(
                wrapper, quantized, batch_sizes, lengths, vocab_size, pad_id, seed)
            graph_path.unlink()

        with quiet():
            if hf_fallback:
                model.save_pretrained(str(stage), safe_serialization=True)
            tokenizer.save_pretrained(str(stage))
        for stray in ("special_tokens_map.json", "added_tokens.json"):
            if (stage / stray).is_file() and not (root / stray).is_file():
                (stage / stray).unlink()
        if not (stage / "tokenizer.json").is_file():
            raise ExportError(f"{root}: the tokenizer did not save a tokenizer.json; a fast tokenizer is required.")
        shutil.copyfile(inference.__file__, stage / "code" / "inference.py")
        (stage / "code" / "requirements.txt").write_text(
            requirements_txt(format, hf_fallback, onnxruntime_package), encoding="utf-8")

        for path in stage.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # save_pretrained writes some files 0600
        manifest = _manifest(
            stage, format=format, model_file=model_file, max_length=max_length, label_names=label_names,
            max_abs_diff=worst, tolerance=tolerance, batch_sizes=batch_sizes, lengths=lengths, seed=seed,
            jit_optimize=jit_optimize if format == "torchscript" else None, pad_token=tokenizer.pad_token,
            pad_id=pad_id, source=str(model_dir), model_type=getattr(model.config, "model_type", None),
            quantization=quantization, hf_fallback=hf_fallback,
        )
        manifest_path = stage / inference.MANIFEST_NAME
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

        loaded = _smoke_test(stage, wrapper, tokenizer, max_length, None if quantization else tolerance)
        manifest["agreement"] = check_agreement(loaded, wrapper, tokenizer, sentences, sentence_source,
                                                max_length, float(min_agreement), format, quantize)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        del loaded
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
        "transformers_version": package_version("transformers"),
        "tokenizers_version": package_version("tokenizers"),
        "onnxruntime_version": package_version("onnxruntime") if info["format"] == "onnx" else None,
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
        "quantization": info["quantization"],
        "hf_fallback": info["hf_fallback"],
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


def _smoke_test(stage: Path, wrapper: LogitsWrapper, tokenizer: Any, max_length: int,
                tolerance: float | None) -> Any:
    """Load the staged artifact exactly as the handler will and compare with the eager model on real sentences.

    Returns the loaded model. ``tolerance=None`` (quantized graphs) checks the tokenizer only: the agreement check
    judges the predictions.
    """
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
    if tolerance is not None and not diff <= tolerance:
        raise ExportVerificationError(
            f"Verification failed: the packaged artifact's predictions differ from the eager model by {diff:.3g} "
            f"on real sentences (tolerance {tolerance:g}). Nothing was written.", diff,
        )
    return loaded


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
    from cola_bert.config import conf_dir

    try:
        return conf_dir()
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None


def run(cfg: Any) -> Path:
    """Run an export from a Hydra/OmegaConf config (conf/export.yaml) and print a summary."""
    from omegaconf import OmegaConf

    for key in ("model_dir", "output_dir"):
        if OmegaConf.is_missing(cfg, key) or not cfg.get(key):
            raise ExportError(
                f"{key}= is required: python -m cola_bert.export model_dir=RUN/model output_dir=OUT "
                "[format=torchscript|torch_export|onnx] [quantize=int8]"
            )
    def number(key: str, kind: type, example: str, as_list: bool = False) -> Any:
        """cfg[key] as `kind` (`as_list`: a list of them; one value counts as a list of one)."""
        value = cfg.get(key)
        try:
            require_number(key, value, example, integer=kind is int, as_list=as_list)
        except ConfigError as err:
            raise ExportError(str(err)) from None
        converted = [kind(item) for item in (value if OmegaConf.is_list(value) else [value])]
        return converted if as_list else converted[0]

    data = cfg.get("data") or {}
    archive = find_cola_archive(data.get("archive"), data.get("data_dir"))
    tarball = export_model(
        cfg.model_dir, cfg.output_dir, format=str(cfg.format), max_length=number("max_length", int, "128"),
        tolerance=number("tolerance", float, "1e-4"),
        batch_sizes=number("batch_sizes", int, "[1,8,64]", as_list=True),
        lengths=number("lengths", int, "[1,16,128]", as_list=True) if cfg.get("lengths") else None,
        seed=number("seed", int, "0"),
        jit_optimize=str(cfg.jit_optimize), hf_fallback=bool(cfg.hf_fallback), quantize=str(cfg.quantize),
        int8_matmul=str(cfg.int8_matmul), block_size=number("block_size", int, "128"),
        per_channel=bool(cfg.per_channel), reduce_range=bool(cfg.reduce_range),
        min_agreement=number("min_agreement", float, "0.97"), cola_archive=archive,
        agreement_file=cfg.get("agreement_sentences"),
        onnxruntime_package=str(cfg.onnxruntime_package),
    )
    manifest = json.loads((tarball.parent / "model" / inference.MANIFEST_NAME).read_text(encoding="utf-8"))
    verification = manifest["verification"]
    quantization = manifest.get("quantization")
    kind = manifest["format"] + (" int8" if quantization else "")
    graph_mb = (tarball.parent / "model" / manifest["model_file"]).stat().st_size / 1e6
    print(f"Exported {kind} model: {tarball} ({tarball.stat().st_size / 1e6:.1f} MB; "
          f"{manifest['model_file']} {graph_mb:.1f} MB)")
    print(f"  unpacked:  {tarball.parent / 'model'}")
    print(
        f"  verified:  max |Δlogit| vs eager = {manifest['max_abs_logit_diff']:.3g} (tolerance "
        f"{verification['tolerance']:g}) over batch sizes {verification['batch_sizes']} × "
        f"{len(verification['lengths'])} lengths 1..{manifest['max_length']}"
        + (" (the fp32 graph, before quantization)" if quantization else "")
    )
    if quantization:
        block = f", block {quantization['block_size']}" if quantization["block_size"] else ""
        ops = ", ".join(f"{n} {op}" for op, n in quantization["int8_ops"].items())
        print(f"  int8:      {quantization['matmul']} MatMuls{block}, per_channel={quantization['per_channel']}, "
              f"reduce_range={quantization['reduce_range']} ({ops}); max |Δlogit| vs eager = "
              f"{quantization['max_abs_logit_diff']:.3g}")
    agreement = manifest["agreement"]
    print(
        f"  agreement: {100 * agreement['label_agreement']:.2f}% labels ({agreement['agreeing']}/"
        f"{agreement['count']}) vs the fp32 eager model, max |Δprob| = {agreement['max_abs_prob_diff']:.3g} "
        f"(min_agreement {agreement['min_agreement']:g}); sentences: {agreement['sentences']}"
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
        console.config_composed()
        logging.basicConfig(level=logging.INFO if cfg.get("verbose") else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        try:
            run(cfg)
        except ExportError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    console.run_hydra(_app)  # a command line Hydra cannot compose exits 2 as well


if __name__ == "__main__":
    main()
