"""The model.tar.gz a SageMaker Model serves: check it, read its manifest, upload it once, or export a training job's.

A local archive gets the strict check `cola_bert.serve` runs (`cola_bert.tarball.verify_tarball`: the endpoint runs
the archive's own code/inference.py unrepacked, so every file must match the sha256 its manifest.json records), and
must hold code/inference.py. An `s3://` archive is used as is; its manifest.json (written first by the export) is
read by streaming the head of the object.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.console import info
from launch.errors import LaunchError, aws_errors
from launch.session import AwsContext, parse_s3_uri

ENTRY_POINT = "code/inference.py"
EXPORT_HINT = "Export the model with `python -m cola_bert.export model_dir=RUN/model output_dir=OUT` and pass OUT."
NO_HANDLER = ("the PyTorch serving container would fall back to its default handlers, which cannot serve a BERT "
              f"classifier. {EXPORT_HINT}")  # fmt: skip
S3_MANIFEST_BYTES = 1 << 20  # an s3:// archive's manifest.json is looked for in this head (export writes it first)


@dataclass
class Artifact:
    """A checked model archive: where it is, its manifest.json and a digest that names its upload and batch Model."""

    source: str  # local path or s3:// URI
    manifest: dict[str, Any]
    digest: str  # sha256 of a local archive; of URI + ETag for an s3:// one

    @property
    def local(self) -> bool:
        return not self.source.startswith("s3://")


def inspect_local(value: str) -> Artifact:
    """Unpack and verify a local archive exactly as `cola_bert.serve` would; any problem → LaunchError. A directory
    holding model.tar.gz (an export's output_dir) stands for that file."""
    from cola_bert import inference, tarball

    path = Path(value).expanduser()
    if path.is_dir():
        path /= "model.tar.gz"
        if not path.is_file():
            raise LaunchError(f"model_data={value} is a directory without model.tar.gz. {EXPORT_HINT}")
    elif not path.is_file():
        raise LaunchError(f"model_data={value} does not exist. {EXPORT_HINT}")
    with tempfile.TemporaryDirectory(prefix="cola-artifact-") as tmp:
        try:
            manifest = tarball.verify_tarball(path, Path(tmp))
        except inference.ArtifactError as err:
            raise LaunchError(f"model_data={path} cannot be deployed: {err}") from None
        if not (Path(tmp) / ENTRY_POINT).is_file():
            raise LaunchError(f"model_data={path} has no {ENTRY_POINT}: {NO_HANDLER}")
    return Artifact(str(path), manifest, inference.sha256_file(path))


def inspect_s3(ctx: AwsContext, uri: str, head_bytes: int = S3_MANIFEST_BYTES) -> Artifact:
    """Read manifest.json from the head of an s3:// archive (an AWS call)."""
    bucket, key = parse_s3_uri(uri)
    with aws_errors(f"reading {uri}"):
        obj = ctx.client("s3").get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")
        head = obj["Body"].read()
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|gz") as tar:
            member = next(m for m in tar if m.name.lstrip("./") == "manifest.json" and m.isfile())
            manifest = json.loads(tar.extractfile(member).read())
    except (StopIteration, tarfile.TarError, EOFError, OSError, ValueError) as err:
        raise LaunchError(
            f"{uri} has no manifest.json within its first {head_bytes >> 10} KiB ({type(err).__name__}), so it is not "
            f"an archive written by cola_bert.export (which writes manifest.json first). {EXPORT_HINT}"
        ) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or ENTRY_POINT not in files:
        raise LaunchError(f"{uri} has no {ENTRY_POINT} according to its manifest.json: {NO_HANDLER}")
    return Artifact(uri, manifest, hashlib.sha256(f"{uri}\n{obj.get('ETag', '')}".encode()).hexdigest())


def upload_uri(ctx: AwsContext, artifact: Artifact, *, planned: bool = False) -> str:
    """Where a local archive goes: s3://<bucket>/<prefix>/models/<sha256>/model.tar.gz."""
    return ctx.s3_uri("models", artifact.digest, "model.tar.gz", planned=planned)


def upload_once(ctx: AwsContext, artifact: Artifact) -> str:
    """The s3:// URI a Model serves the archive from: an s3:// archive's own, or a local one's uploaded copy (sent
    only when no object with its sha256 is there yet)."""
    if not artifact.local:
        return artifact.source
    uri = upload_uri(ctx, artifact)
    if not ctx.upload(Path(artifact.source), uri, artifact.source, sha256=artifact.digest, announce=True):
        info(f"Model archive already uploaded: {uri} (same sha256)")
    return uri


def export_training_job(ctx: AwsContext, job_name: str, workdir: Path, fmt: str = "torchscript") -> Artifact:
    """Download a Completed training job's model artifact and export it with `cola_bert.export` here."""
    desc = ctx.training_job(job_name, "or pass model_data=<model.tar.gz or s3 URI>")
    status = desc.get("TrainingJobStatus")
    uri = (desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if status != "Completed" or not uri:
        raise LaunchError(f"Training job {job_name} is {status}; only a Completed job's model can be deployed.")
    info(f"Downloading {uri}")
    local = ctx.download(uri, workdir / "job")
    from cola_bert.export import ExportError, export_model

    info(f"Exporting the model of {job_name} ({fmt})")
    try:
        out = export_model(local, workdir / "export", format=fmt)
    except ExportError as err:
        raise LaunchError(f"Exporting the model of training job {job_name} failed: {err}") from None
    return inspect_local(str(out))
