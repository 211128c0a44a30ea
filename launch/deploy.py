"""Deploy an exported cola-bert model to a SageMaker endpoint, smoke-test it, or delete an endpoint.

    python -m launch.deploy model_data=outputs/export/model.tar.gz            # deploy=cpu (default)
    python -m launch.deploy deploy=serverless model_data=s3://bucket/key/model.tar.gz
    python -m launch.deploy deploy=gpu training_job=<training job name>       # export the job's model, then deploy
    python -m launch.deploy ... dry_run=true                                  # print the plan; no AWS call
    python -m launch.deploy action=delete endpoint_name=<name>                # endpoint + config + model(s)

The archive is the one `cola_bert.export` writes (format=torchscript): model.pt, HF weights and tokenizer,
code/inference.py (+ code/requirements.txt) and manifest.json. The container runs the archive's own
code/inference.py: the model is created with SAGEMAKER_PROGRAM=inference.py and
SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code and no `entry_point`, so SDK v2 does not repack the archive (repacking
downloads and re-uploads it only to copy the same file into code/).
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from launch import aws
from launch.aws import LaunchError, aws_errors

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

SAGEMAKER_PROGRAM = "inference.py"
CONTAINER_CODE_DIR = "/opt/ml/model/code"
ENTRY_POINT_MEMBER = "code/inference.py"
MANIFEST_MEMBER = "manifest.json"
MODES = ("realtime", "serverless", "elastic_inference")
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
EI_ACCELERATOR_RE = re.compile(r"^ml\.eia[12]\.(medium|large|xlarge)$")
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
MAX_NAME_LEN = 63
# For s3:// archives, manifest.json is read by streaming the archive; give up after this many compressed bytes.
S3_MANIFEST_BUDGET = 16 * 1024 * 1024

EI_WARNING = (
    "Elastic Inference is no longer available: AWS closed it to new customers on 2023-04-15 and now documents it as "
    "no longer available (the endpoint config field AcceleratorType is documented as no longer supported), so this "
    "deployment will most likely be rejected. EI containers run torch 1.5.1 at most (pytorch-inference-eia 1.3.1 "
    "and 1.5.1), which cannot load TorchScript written by torch {torch} (TorchScript loads only in the same or a "
    "newer torch), "
    "and the bundled handler's fallback needs a current transformers. Recommended instead: deploy=cpu (small "
    "real-time CPU endpoint), deploy=serverless (pay per request) or deploy=gpu."
)


# --------------------------------------------------------------------------------------------------------------------
# Archive inspection
# --------------------------------------------------------------------------------------------------------------------


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


@dataclass
class ArchiveInfo:
    """What we know about a model.tar.gz before deploying it."""

    source: str  # local path or s3:// URI
    manifest: dict | None = None
    has_entry_point: bool | None = None  # None: not checked (s3 archive)
    notes: list[str] = field(default_factory=list)

    @property
    def torch_version(self) -> str | None:
        value = (self.manifest or {}).get("torch_version")
        return str(value) if value else None


def inspect_local_archive(path: Path) -> ArchiveInfo:
    """Read manifest.json, check code/inference.py and the manifest's sha256 list. Any problem → LaunchError."""
    if not path.is_file():
        raise LaunchError(f"model_data={path} does not exist (or is not a file).")
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as err:
        raise LaunchError(
            f"model_data={path} is not a tar archive ({err}). Deploy the model.tar.gz written by "
            "`cola-export ... format=torchscript`."
        ) from err
    manifest_bytes: bytes | None = None
    digests: dict[str, str] = {}
    with tar:
        try:
            for member in tar:
                name = _member_name(member.name)
                if not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is None:  # pragma: no cover - regular files always have data
                    continue
                if name == MANIFEST_MEMBER:
                    manifest_bytes = handle.read()
                    digests[name] = hashlib.sha256(manifest_bytes).hexdigest()
                    continue
                sha = hashlib.sha256()
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(chunk)
                digests[name] = sha.hexdigest()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise LaunchError(f"model_data={path} is a damaged archive ({err}). Export it again.") from err

    info = ArchiveInfo(source=str(path), has_entry_point=ENTRY_POINT_MEMBER in digests)
    if not info.has_entry_point:
        raise LaunchError(
            f"model_data={path} has no {ENTRY_POINT_MEMBER}. Without it the PyTorch serving container silently "
            "falls back to its default handlers, which cannot serve a BERT classifier. Deploy the archive written "
            "by `cola-export ... format=torchscript` (it bundles code/inference.py and code/requirements.txt)."
        )
    if manifest_bytes is None:
        info.notes.append(f"{path} has no manifest.json: the container version is picked without the export's torch.")
        return info
    try:
        info.manifest = json.loads(manifest_bytes)
    except ValueError as err:
        raise LaunchError(f"manifest.json in {path} is not valid JSON ({err}). Export the model again.") from err
    _check_manifest_files(info.manifest, digests, str(path))
    return info


def _check_manifest_files(manifest: dict, digests: dict[str, str], source: str) -> None:
    files = manifest.get("files") or {}
    if not isinstance(files, dict):
        return
    missing = sorted(_member_name(p) for p in files if _member_name(p) not in digests)
    changed = sorted(
        _member_name(p) for p, sha in files.items() if _member_name(p) in digests and digests[_member_name(p)] != sha
    )
    if missing or changed:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if changed:
            parts.append(f"sha256 mismatch: {', '.join(changed)}")
        raise LaunchError(
            f"{source} does not match its manifest.json ({'; '.join(parts)}). The archive was modified or damaged "
            "after export; export the model again."
        )


class _BudgetExceeded(Exception):
    pass


class _LimitedReader:
    """File-like wrapper that stops reading after `budget` bytes (for streaming the head of an S3 object)."""

    def __init__(self, body: Any, budget: int):
        self.body = body
        self.left = budget

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise _BudgetExceeded
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.body.read(size)
        self.left -= len(data)
        return data


def read_s3_manifest(ctx: aws.AwsContext, uri: str, budget: int = S3_MANIFEST_BUDGET) -> ArchiveInfo:
    """Stream the archive's first `budget` bytes from S3 looking for manifest.json (cheap when export writes it
    first); give up with a note otherwise. A missing object → LaunchError."""
    bucket, key = aws.parse_s3_uri(uri)
    info = ArchiveInfo(source=uri)
    with aws_errors(f"reading {uri}"):
        body = ctx.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with tarfile.open(fileobj=_LimitedReader(body, budget), mode="r|gz") as tar:
            for member in tar:
                name = _member_name(member.name)
                if name == MANIFEST_MEMBER and member.isfile():
                    handle = tar.extractfile(member)
                    info.manifest = json.loads(handle.read()) if handle else None
                    break
    except _BudgetExceeded:
        info.notes.append(
            f"manifest.json is not within the first {budget // (1024 * 1024)} MiB of {uri}; skipped reading it "
            "(the container version is picked without the export's torch version)."
        )
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        info.notes.append(
            f"could not read manifest.json from {uri} ({err}); the container version is picked without it."
        )
    finally:
        body.close()
    if info.manifest is None and not info.notes:
        info.notes.append(f"{uri} has no manifest.json; the container version is picked without it.")
    files = (info.manifest or {}).get("files")
    if isinstance(files, dict):
        info.has_entry_point = ENTRY_POINT_MEMBER in {_member_name(p) for p in files}
        if not info.has_entry_point:
            raise LaunchError(
                f"{uri} has no {ENTRY_POINT_MEMBER} according to its manifest.json. Without it the PyTorch serving "
                "container falls back to its default handlers, which cannot serve a BERT classifier. Deploy the "
                "archive written by `cola-export ... format=torchscript`."
            )
    return info


# --------------------------------------------------------------------------------------------------------------------
# Container version / image
# --------------------------------------------------------------------------------------------------------------------


def _version_key(version: str):
    from packaging.version import Version

    return Version(version)


def _release(version: str) -> tuple[int, ...] | None:
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(str(version)).release  # "2.13.0+cpu" → (2, 13, 0)
    except InvalidVersion:
        return None
    return tuple(release) + (0,) * (3 - len(release))


def _py_key(py_version: str) -> tuple[int, int]:
    digits = re.sub(r"\D", "", py_version or "")
    return (int(digits[:1] or 0), int(digits[1:] or 0))


def image_scope(instance_type: str | None, accelerator_type: str | None) -> str:
    """SDK image_uri_config scope: 'eia' with an accelerator, 'inference_graviton' on Graviton, else 'inference'."""
    if accelerator_type:
        return "eia"
    aws.import_sagemaker()
    from sagemaker.fw_utils import GRAVITON_ALLOWED_TARGET_INSTANCE_FAMILY
    from sagemaker.utils import get_instance_type_family

    if get_instance_type_family(instance_type) in GRAVITON_ALLOWED_TARGET_INSTANCE_FAMILY:
        return "inference_graviton"
    return "inference"


def _processor(instance_type: str | None, serverless: bool) -> str:
    if serverless or not instance_type:
        return "cpu"
    from sagemaker.utils import get_instance_type_family

    family = get_instance_type_family(instance_type)
    return "gpu" if family[:1] in ("g", "p") else "cpu"


def available_versions(
    region: str, instance_type: str | None = None, accelerator_type: str | None = None, serverless: bool = False
) -> dict[str, list[str]]:
    """PyTorch serving container versions SDK v2 offers for this region / instance type → their py_versions,
    oldest first (read from sagemaker/image_uri_config/pytorch.json)."""
    aws.import_sagemaker()
    from sagemaker import image_uris

    scope = image_scope(instance_type, accelerator_type)
    config = image_uris.config_for_framework("pytorch")[scope]
    processor = _processor(instance_type, serverless)
    out: dict[str, list[str]] = {}
    for version, vconf in config.get("versions", {}).items():
        if region not in (vconf.get("registries") or {}):
            continue
        processors = config.get("processors") or vconf.get("processors")
        if processors and processor not in processors and scope != "inference_graviton":
            continue
        out[version] = sorted(vconf.get("py_versions") or [], key=_py_key)
    return dict(sorted(out.items(), key=lambda kv: _version_key(kv[0])))


@dataclass
class VersionChoice:
    framework_version: str
    py_version: str | None
    reason: str
    warning: str | None = None


def pick_framework_version(torch_version: str | None, versions: dict[str, list[str]]) -> VersionChoice:
    """The oldest offered container whose torch is >= the export's `torch_version` (TorchScript loads only in the
    same or a newer torch; the closest one changes least). None is new enough → the newest, with a warning."""
    if not versions:
        raise LaunchError("SageMaker SDK v2 offers no PyTorch serving container for this region and instance type.")
    ordered = list(versions)
    newest = ordered[-1]

    def choice(version: str, reason: str, warning: str | None = None) -> VersionChoice:
        pys = versions[version]
        return VersionChoice(version, pys[-1] if pys else None, reason, warning)

    wanted = _release(torch_version) if torch_version else None
    if wanted is None:
        if torch_version:
            why = f"torch_version {torch_version!r} in the manifest is not a version"
        else:
            why = "no torch_version known for the archive"
        return choice(newest, f"newest offered; {why}")
    for version in ordered:
        if _release(version) >= wanted:
            return choice(version, f"oldest offered with torch >= {torch_version}, the export's torch")
    py = versions[newest][-1] if versions[newest] else "?"
    warning = (
        f"The archive was exported with torch {torch_version}, but the newest PyTorch serving container SageMaker "
        f"SDK v2 offers here is {newest} ({py}). TorchScript loads only in the same or a newer torch, so the "
        "endpoint's handler will not load model.pt and falls back to the bundled Hugging Face weights "
        "(config.json + model.safetensors): same predictions, eager-mode speed. To serve the TorchScript file "
        f"itself, export with torch <= {newest} or pass your own image with deploy.image_uri=<ECR URI>."
    )
    return choice(newest, f"newest offered; none is >= the export's torch {torch_version}", warning)


def resolve_image_uri(
    region: str,
    framework_version: str,
    py_version: str | None,
    instance_type: str | None,
    accelerator_type: str | None,
    serverless: bool,
) -> str:
    """`sagemaker.image_uris.retrieve` for the PyTorch serving image; an unsupported combination → LaunchError with
    the SDK's list of valid values."""
    sm = aws.import_sagemaker()
    from sagemaker import image_uris
    from sagemaker.serverless import ServerlessInferenceConfig

    try:
        return image_uris.retrieve(
            "pytorch",
            region,
            version=framework_version,
            py_version=py_version,
            instance_type=instance_type,
            accelerator_type=accelerator_type,
            image_scope="inference",
            serverless_inference_config=ServerlessInferenceConfig() if serverless else None,
        )
    except ValueError as err:
        if "Unsupported region" in str(err):
            hint = "Pick a listed region with aws.region=<region>."
        else:
            hint = (
                "Pick a listed version with deploy.framework_version=<version> deploy.py_version=<py>, or leave both "
                "null to pick automatically."
            )
        target = "serverless" if serverless else str(instance_type)
        if accelerator_type:
            target += f" + {accelerator_type}"
        raise LaunchError(
            f"No PyTorch serving image for framework_version={framework_version} py_version={py_version} on {target} "
            f"in {region} (SageMaker SDK {sm.__version__}): {err} {hint}"
        ) from err


# --------------------------------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    mode: str
    region: str
    endpoint_name: str
    image_uri: str
    framework_version: str
    py_version: str | None
    version_reason: str
    env: dict[str, str]
    source: str  # what the user gave: local path, s3 URI or training job
    source_kind: str  # local | s3 | training_job
    instance_type: str | None = None
    initial_instance_count: int | None = None
    accelerator_type: str | None = None
    memory_size_in_mb: int | None = None
    max_concurrency: int | None = None
    model_server_workers: int | None = None
    archive: ArchiveInfo | None = None
    warnings: list[str] = field(default_factory=list)

    def rows(self, targets: dict[str, str], model_data: str) -> dict[str, Any]:
        rows: dict[str, Any] = {
            "endpoint": self.endpoint_name,
            "endpoint config": self.endpoint_name,
            "model": self.endpoint_name,
            "mode": self.mode,
            "image uri": self.image_uri,
            "framework": f"pytorch {self.framework_version} {self.py_version or ''} ({self.version_reason})".replace(
                "  ", " "
            ),
            "model source": f"{self.source_kind}: {self.source}",
            "model data": model_data,
        }
        if self.archive and self.archive.manifest:
            m = self.archive.manifest
            rows["manifest"] = {
                k: m.get(k) for k in ("format", "torch_version", "transformers_version", "max_length", "label_names")
            }
        if self.mode == "serverless":
            rows["serverless"] = {"MemorySizeInMB": self.memory_size_in_mb, "MaxConcurrency": self.max_concurrency}
        else:
            rows["instance"] = f"{self.initial_instance_count} x {self.instance_type}"
        if self.accelerator_type:
            rows["accelerator"] = self.accelerator_type
        rows["env"] = self.container_env()
        rows.update(targets)
        return rows

    def container_env(self) -> dict[str, str]:
        """The environment CreateModel will carry (the SDK adds log level and region; workers when set)."""
        env = dict(self.env)
        env["SAGEMAKER_CONTAINER_LOG_LEVEL"] = "20"
        env["SAGEMAKER_REGION"] = self.region
        if self.model_server_workers:
            env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(self.model_server_workers)
        return dict(sorted(env.items()))


def _opt(cfg: Any, key: str) -> Any:
    value = cfg.get(key) if cfg is not None else None
    if isinstance(value, str) and value.strip().lower() in ("", "null", "none"):
        return None
    return value


def _validate_name(name: str, what: str) -> str:
    if len(name) > MAX_NAME_LEN or not NAME_RE.match(name):
        raise LaunchError(
            f"{what}={name!r} is not a valid SageMaker name: up to {MAX_NAME_LEN} characters, letters, digits and "
            "hyphens, starting and ending with a letter or digit."
        )
    return name


def endpoint_name_for(cfg: DictConfig) -> str:
    given = _opt(cfg, "endpoint_name")
    if given:
        return _validate_name(str(given), "endpoint_name")
    base = str(_opt(cfg.deploy, "base_name") or "cola-bert")
    _validate_name(base, "deploy.base_name")
    aws.import_sagemaker()
    from sagemaker.utils import name_from_base

    return name_from_base(base, max_length=MAX_NAME_LEN)


def _validate_deploy_node(d: DictConfig) -> str:
    mode = str(_opt(d, "mode") or "")
    if mode not in MODES:
        raise LaunchError(
            f"deploy.mode={mode!r} is not one of {', '.join(MODES)} "
            "(choose deploy=cpu|gpu|serverless|elastic_inference)."
        )
    if mode == "serverless":
        memory = _opt(d, "memory_size_in_mb")
        if memory not in SERVERLESS_MEMORY_MB:
            raise LaunchError(
                f"deploy.memory_size_in_mb={memory} is not a serverless memory size; use one of "
                f"{', '.join(map(str, SERVERLESS_MEMORY_MB))}."
            )
        conc = _opt(d, "max_concurrency")
        if not isinstance(conc, int) or not 1 <= conc <= 200:
            raise LaunchError(f"deploy.max_concurrency={conc} must be an integer from 1 to 200.")
        if _opt(d, "accelerator_type"):
            raise LaunchError("Serverless endpoints take no accelerator: set deploy.accelerator_type=null.")
        return mode
    instance = _opt(d, "instance_type")
    if not instance or not str(instance).startswith("ml."):
        raise LaunchError(
            f"deploy.instance_type={instance!r}: a real-time endpoint needs an instance type like ml.c5.large."
        )
    count = _opt(d, "initial_instance_count")
    if not isinstance(count, int) or count < 1:
        raise LaunchError(f"deploy.initial_instance_count={count} must be a positive integer.")
    accel = _opt(d, "accelerator_type")
    if mode == "elastic_inference":
        if not accel or not EI_ACCELERATOR_RE.match(str(accel)):
            raise LaunchError(
                f"deploy.accelerator_type={accel!r}: Elastic Inference needs ml.eia2.medium, ml.eia2.large or "
                "ml.eia2.xlarge."
            )
    elif accel:
        raise LaunchError(
            f"deploy.accelerator_type={accel} only works with deploy=elastic_inference (which is no longer available); "
            "use deploy=gpu for a GPU endpoint."
        )
    return mode


def _local_model_path(value: str) -> Path:
    path = Path(value).expanduser()
    if path.is_dir() and (path / "model.tar.gz").is_file():
        return path / "model.tar.gz"
    if path.is_dir():
        raise LaunchError(
            f"model_data={value} is a directory without model.tar.gz. Pass the model.tar.gz written by "
            "`cola-export ... format=torchscript`, an s3:// URI, or training_job=<name>."
        )
    return path


def make_plan(cfg: DictConfig, *, archive: ArchiveInfo | None, source: str, source_kind: str) -> Plan:
    """Everything about the deployment that can be decided without AWS: mode, image, env, endpoint name."""
    d = cfg.deploy
    mode = _validate_deploy_node(d)
    region = aws.resolve_region(cfg.aws)
    serverless = mode == "serverless"
    instance_type = None if serverless else str(_opt(d, "instance_type"))
    accelerator = str(_opt(d, "accelerator_type")) if mode == "elastic_inference" else None
    warnings: list[str] = list(archive.notes) if archive else []

    torch_version = archive.torch_version if archive else None
    if source_kind == "training_job" and torch_version is None:
        # The job's model is exported here, so the manifest will carry the local torch version.
        from importlib.metadata import version as dist_version

        torch_version = dist_version("torch")

    image_uri = _opt(d, "image_uri")
    fv = _opt(d, "framework_version")
    py = _opt(d, "py_version")
    fv = str(fv) if fv is not None else None
    py = str(py) if py is not None else None
    versions = available_versions(region, instance_type, accelerator, serverless)
    if image_uri:
        reason = "custom image (deploy.image_uri)"
        if fv is None:  # the SDK still needs a version string; it does not affect a custom image
            fv = list(versions)[-1] if versions else "2.6.0"
    elif fv:
        reason = "pinned (deploy.framework_version)"
        if py is None and fv in versions and versions[fv]:
            py = versions[fv][-1]
        image_uri = resolve_image_uri(region, fv, py, instance_type, accelerator, serverless)
        wanted, have = _release(torch_version) if torch_version else None, _release(fv)
        if wanted and have and have < wanted and mode != "elastic_inference":
            warnings.append(
                f"deploy.framework_version={fv} is older than the export's torch {torch_version}: the container cannot "
                "load model.pt and the handler falls back to the bundled Hugging Face weights."
            )
    else:
        choice = pick_framework_version(torch_version, versions)
        fv, reason = choice.framework_version, choice.reason
        py = py or choice.py_version
        if choice.warning:
            warnings.append(choice.warning)
        image_uri = resolve_image_uri(region, fv, py, instance_type, accelerator, serverless)

    manifest = (archive.manifest if archive else None) or {}
    fmt = manifest.get("format")
    if fmt and fmt != "torchscript":
        warnings.append(
            f"The archive was exported as {fmt!r}; the PyTorch serving container expects format=torchscript "
            "(its code/inference.py must install whatever else it needs via code/requirements.txt)."
        )

    raw_env = d.get("env")
    if isinstance(raw_env, DictConfig):
        raw_env = OmegaConf.to_container(raw_env, resolve=True)
    env = {str(k): str(v) for k, v in (raw_env or {}).items()}
    # The archive's own code/inference.py is the handler: no entry_point, so the SDK does not repack the archive.
    env["SAGEMAKER_PROGRAM"] = SAGEMAKER_PROGRAM
    env["SAGEMAKER_SUBMIT_DIRECTORY"] = CONTAINER_CODE_DIR
    workers = _opt(d, "model_server_workers")

    return Plan(
        mode=mode,
        region=region,
        endpoint_name=endpoint_name_for(cfg),
        image_uri=str(image_uri),
        framework_version=str(fv),
        py_version=py,
        version_reason=reason,
        env=env,
        source=source,
        source_kind=source_kind,
        instance_type=instance_type,
        initial_instance_count=None if serverless else int(_opt(d, "initial_instance_count")),
        accelerator_type=accelerator,
        memory_size_in_mb=int(_opt(d, "memory_size_in_mb")) if serverless else None,
        max_concurrency=int(_opt(d, "max_concurrency")) if serverless else None,
        model_server_workers=int(workers) if workers else None,
        archive=archive,
        warnings=warnings,
    )


# --------------------------------------------------------------------------------------------------------------------
# AWS steps
# --------------------------------------------------------------------------------------------------------------------


def model_data_key(ctx: aws.AwsContext, endpoint_name: str) -> str:
    return "/".join(p for p in (ctx.prefix, "models", endpoint_name, "model.tar.gz") if p)


def upload_archive(ctx: aws.AwsContext, path: Path, endpoint_name: str) -> str:
    """Upload a local model.tar.gz to s3://<bucket>/<prefix>/models/<endpoint>/model.tar.gz."""
    bucket = ctx.bucket
    key = model_data_key(ctx, endpoint_name)
    uri = f"s3://{bucket}/{key}"
    size_mb = path.stat().st_size / 1e6
    aws.info(f"Uploading {path} ({size_mb:.1f} MB) to {uri}")
    with aws_errors(f"uploading the model archive to {uri}"):
        ctx.client("s3").upload_file(str(path), bucket, key)
    return uri


def _is_validation_error(cause: BaseException | None) -> bool:
    """SageMaker answers Describe* for a name that does not exist with a ValidationException."""
    from botocore.exceptions import ClientError

    return isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ValidationException"


def export_training_job(ctx: aws.AwsContext, job_name: str, workdir: Path) -> Path:
    """Describe the training job, download its model artifact (a tarred HF model dir), export it to TorchScript."""
    try:
        with aws_errors(f"describing training job {job_name}"):
            desc = ctx.session.sagemaker_client.describe_training_job(TrainingJobName=job_name)
    except LaunchError as err:
        cause = err.__cause__
        if _is_validation_error(cause):
            raise LaunchError(
                f"Training job {job_name!r} was not found in {ctx.region}. List jobs with "
                f"`aws sagemaker list-training-jobs --region {ctx.region}`, or pass model_data=<model.tar.gz|s3 URI>."
            ) from cause
        raise
    status = desc.get("TrainingJobStatus")
    artifact = (desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if status != "Completed" or not artifact:
        raise LaunchError(
            f"Training job {job_name} is {status} and has {'a' if artifact else 'no'} model artifact; only a "
            "Completed job's model can be deployed."
        )
    bucket, key = aws.parse_s3_uri(artifact)
    local = workdir / "training-model.tar.gz"
    aws.info(f"Downloading {artifact}")
    with aws_errors(f"downloading {artifact}"):
        ctx.client("s3").download_file(bucket, key, str(local))
    try:
        from cola_bert.export import export_model
    except ImportError as err:
        raise LaunchError(f"Exporting the training job's model needs cola_bert.export ({err}).") from err
    aws.info(f"Exporting the model of {job_name} to TorchScript")
    try:
        out = Path(export_model(local, workdir / "export", format="torchscript"))
    except Exception as err:
        if type(err).__name__ in ("ExportError", "ExportVerificationError"):  # cola_bert.export's user errors
            raise LaunchError(f"Exporting the model of training job {job_name} failed: {err}") from err
        raise
    if out.is_dir():
        out = out / "model.tar.gz"
    return out


def deploy_model(ctx: aws.AwsContext, plan: Plan, model_data: str, *, wait: bool) -> None:
    """PyTorchModel(...).deploy(...): CreateModel, CreateEndpointConfig, CreateEndpoint (and wait)."""
    aws.import_sagemaker()
    from sagemaker.pytorch import PyTorchModel
    from sagemaker.serverless import ServerlessInferenceConfig

    model = PyTorchModel(
        model_data=model_data,
        role=ctx.role,
        entry_point=None,  # the archive's code/inference.py (SAGEMAKER_PROGRAM); no repack
        framework_version=plan.framework_version,
        py_version=plan.py_version,
        image_uri=plan.image_uri,
        env=plan.env,
        name=plan.endpoint_name,
        model_server_workers=plan.model_server_workers,
        predictor_cls=None,
        sagemaker_session=ctx.session,
    )
    kwargs: dict[str, Any] = {"endpoint_name": plan.endpoint_name, "wait": wait}
    if plan.mode == "serverless":
        kwargs["serverless_inference_config"] = ServerlessInferenceConfig(
            memory_size_in_mb=plan.memory_size_in_mb, max_concurrency=plan.max_concurrency
        )
    else:
        kwargs["instance_type"] = plan.instance_type
        kwargs["initial_instance_count"] = plan.initial_instance_count
        if plan.accelerator_type:
            kwargs["accelerator_type"] = plan.accelerator_type
    waiting = " (waiting until InService)" if wait else ""
    aws.info(f"Creating model, endpoint config and endpoint {plan.endpoint_name}{waiting}")
    try:
        with aws_errors(f"deploying endpoint {plan.endpoint_name}"):
            model.deploy(**kwargs)
    except LaunchError as err:
        raise LaunchError(
            f"{err} Container logs: CloudWatch log group /aws/sagemaker/Endpoints/{plan.endpoint_name}. Remove what "
            f"was created with: python -m launch.deploy action=delete endpoint_name={plan.endpoint_name}"
            + (f" aws.region={ctx.region}" if ctx.region else "")
        ) from err.__cause__
    finally:
        if wait:  # the SDK's waiter prints progress marks ("---!") without a trailing newline
            aws.console.print()


def parse_predictions(response: Any, sentences: list[str]) -> list[dict[str, Any]]:
    """Normalise the handler's JSON answer into [{sentence, label, label_name, score}] (one per sentence)."""
    items = response
    if isinstance(response, dict):
        for key in ("predictions", "outputs", "results", "labels"):
            if key in response:
                items = response[key]
                break
        else:
            items = [response]
    if not isinstance(items, list):
        raise LaunchError(f"The endpoint answered with unexpected JSON: {json.dumps(response)[:500]}")
    out = []
    for sentence, item in zip(sentences, items):
        if isinstance(item, dict):
            out.append(
                {
                    "sentence": sentence,
                    "label": item.get("label"),
                    "label_name": item.get("label_name"),
                    "score": item.get("score"),
                }
            )
        else:
            out.append({"sentence": sentence, "label": item, "label_name": None, "score": None})
    return out


def smoke_test(ctx: aws.AwsContext, endpoint_name: str, sentences: list[str], request_key: str) -> list[dict]:
    """One JSON request with `sentences` through a sagemaker Predictor; prints label, label_name and score."""
    aws.import_sagemaker()
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    predictor = Predictor(
        endpoint_name, sagemaker_session=ctx.session, serializer=JSONSerializer(), deserializer=JSONDeserializer()
    )

    def failed(detail: str) -> LaunchError:
        return LaunchError(
            f"The endpoint {endpoint_name} is InService but the test request failed: {detail} Container logs: "
            f"CloudWatch log group /aws/sagemaker/Endpoints/{endpoint_name}. It keeps running (and billing) until you "
            f"delete it: python -m launch.deploy action=delete endpoint_name={endpoint_name}"
        )

    try:
        with aws_errors(f"invoking endpoint {endpoint_name}"):
            response = predictor.predict({request_key: sentences})
        predictions = parse_predictions(response, sentences)
    except LaunchError as err:
        raise failed(str(err)) from (err.__cause__ or err)
    except ValueError as err:  # the JSON deserializer
        raise failed(f"the answer is not JSON ({err}).") from err
    aws.console.print("[bold]Test request[/]")
    for p in predictions:
        score = f"{p['score']:.3f}" if isinstance(p["score"], (int, float)) else "-"
        aws.info(f"  {p['sentence']!r}: label={p['label']} ({p['label_name']}) score={score}")
    return predictions


def delete_endpoint(ctx: aws.AwsContext, endpoint_name: str) -> dict[str, Any]:
    """Delete the endpoint, its endpoint config and the model(s) of its production variants."""
    sm = ctx.session.sagemaker_client
    try:
        with aws_errors(f"looking up endpoint {endpoint_name}"):
            desc = sm.describe_endpoint(EndpointName=endpoint_name)
    except LaunchError as err:
        cause = err.__cause__
        if _is_validation_error(cause):
            raise LaunchError(
                f"Endpoint {endpoint_name!r} does not exist in {ctx.region}; nothing to delete. List endpoints with "
                f"`aws sagemaker list-endpoints --region {ctx.region}` (or pass aws.region=<region>)."
            ) from cause
        raise
    config_name = desc.get("EndpointConfigName")
    models: list[str] = []
    if config_name:
        try:
            with aws_errors(f"looking up endpoint config {config_name}"):
                config = sm.describe_endpoint_config(EndpointConfigName=config_name)
            variants = (config.get("ProductionVariants") or []) + (config.get("ShadowProductionVariants") or [])
            models = list(dict.fromkeys(v["ModelName"] for v in variants if v.get("ModelName")))
        except LaunchError as err:
            aws.warn(f"Could not read endpoint config {config_name} ({err}); its models are left in place.")
            config_name_exists = False
        else:
            config_name_exists = True
    else:
        config_name_exists = False

    deleted: dict[str, Any] = {"endpoint": None, "endpoint_config": None, "models": []}
    with aws_errors(f"deleting endpoint {endpoint_name}"):
        sm.delete_endpoint(EndpointName=endpoint_name)
    deleted["endpoint"] = endpoint_name
    aws.info(f"Deleted endpoint {endpoint_name}")
    if config_name and config_name_exists:
        if _delete_quietly(
            lambda: sm.delete_endpoint_config(EndpointConfigName=config_name), f"endpoint config {config_name}"
        ):
            deleted["endpoint_config"] = config_name
    for model in models:
        if _delete_quietly(lambda m=model: sm.delete_model(ModelName=m), f"model {model}"):
            deleted["models"].append(model)
    return deleted


def _delete_quietly(call, what: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        with aws_errors(f"deleting {what}"):
            call()
    except LaunchError as err:
        cause = err.__cause__
        if isinstance(cause, ClientError) and "Could not find" in cause.response.get("Error", {}).get("Message", ""):
            aws.warn(f"{what} was already gone.")
            return False
        raise
    aws.info(f"Deleted {what}")
    return True


# --------------------------------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------------------------------


def _source(cfg: DictConfig) -> tuple[str, str]:
    model_data = _opt(cfg, "model_data")
    job = _opt(cfg, "training_job")
    if bool(model_data) == bool(job):
        raise LaunchError(
            "Say what to deploy with exactly one of model_data=<model.tar.gz or s3://.../model.tar.gz> (written by "
            "`cola-export ... format=torchscript`) or training_job=<SageMaker training job name>."
        )
    if job:
        return "training_job", _validate_name(str(job), "training_job")
    model_data = str(model_data)
    return ("s3", model_data) if model_data.startswith("s3://") else ("local", model_data)


def run_deploy(cfg: DictConfig) -> dict[str, Any]:
    kind, source = _source(cfg)
    dry = bool(cfg.get("dry_run"))
    archive: ArchiveInfo | None = None
    local_path: Path | None = None
    if kind == "local":
        local_path = _local_model_path(source)
        archive = inspect_local_archive(local_path)
    elif kind == "s3":
        aws.parse_s3_uri(source)

    if _opt(cfg.deploy, "mode") == "elastic_inference":  # before anything else happens
        torch = archive.torch_version if archive and archive.torch_version else "2.x"
        aws.warn(EI_WARNING.format(torch=torch))

    ctx: aws.AwsContext | None = None
    if kind == "s3" and not dry:
        # Read manifest.json (cheaply) before planning so the container version can follow the export's torch.
        _validate_deploy_node(cfg.deploy)
        ctx = aws.AwsContext(cfg.aws)
        archive = read_s3_manifest(ctx, source)
    plan = make_plan(cfg, archive=archive, source=source, source_kind=kind)
    for message in plan.warnings:
        aws.warn(message)

    targets = aws.describe_targets(cfg.aws, plan.region)
    if not dry:
        # Resolve role and bucket before anything is uploaded or created, and show the real values.
        ctx = ctx or aws.AwsContext(cfg.aws, region=plan.region)
        targets["role"] = ctx.role
        targets["bucket"] = ctx.bucket
    destination = aws.s3_uri(
        targets["bucket"].split(" ")[0], aws.resolve_prefix(cfg.aws), "models", plan.endpoint_name, "model.tar.gz"
    )
    if kind == "local":
        model_data_view = f"{destination} (uploaded from {local_path})"
    elif kind == "s3":
        model_data_view = f"{source} (used as is)"
    else:
        model_data_view = (
            f"{destination} (the model artifact of training job {source}, exported to TorchScript here, then uploaded)"
        )
    rows = plan.rows(targets, model_data_view)
    if kind == "s3" and dry:
        rows["manifest"] = "not read in a dry run (reading it from S3 is an AWS call); newest container picked"
    rows["wait"] = bool(cfg.get("wait", True))
    smoke = cfg.get("smoke_test") or {}
    rows["smoke test"] = list(smoke.get("sentences") or []) if smoke.get("enabled", True) else "off"
    result: dict[str, Any] = {"plan": plan, "rows": rows, "dry_run": dry}
    if dry:
        aws.dry_run(f"Deploy {plan.endpoint_name}", rows)
        return result

    aws.print_plan(f"Deploy {plan.endpoint_name}", rows)
    assert ctx is not None
    with tempfile.TemporaryDirectory(prefix="cola-deploy-") as tmp:
        if kind == "training_job":
            local_path = export_training_job(ctx, source, Path(tmp))
            archive = inspect_local_archive(local_path)
            plan.archive = archive
            torch_after = archive.torch_version
            if torch_after and not _opt(cfg.deploy, "framework_version") and not _opt(cfg.deploy, "image_uri"):
                # Re-pick in case the exported torch differs from the prediction.
                replanned = make_plan(cfg, archive=archive, source=source, source_kind=kind)
                if replanned.image_uri != plan.image_uri:
                    plan.image_uri, plan.framework_version = replanned.image_uri, replanned.framework_version
                    plan.py_version, plan.version_reason = replanned.py_version, replanned.version_reason
                    aws.info(f"Container image for the export: {plan.image_uri}")
        model_data = upload_archive(ctx, local_path, plan.endpoint_name) if local_path else source
        result["model_data"] = model_data
        wait = bool(cfg.get("wait", True))
        deploy_model(ctx, plan, model_data, wait=wait)

    result.update(endpoint_name=plan.endpoint_name, image_uri=plan.image_uri, region=plan.region)
    state = "is InService." if wait else "is being created."
    aws.console.print(f"[bold green]Endpoint {plan.endpoint_name}[/] {state}")
    if wait and smoke.get("enabled", True) and smoke.get("sentences"):
        result["predictions"] = smoke_test(
            ctx, plan.endpoint_name, [str(s) for s in smoke.sentences], str(smoke.get("request_key") or "inputs")
        )
    elif not wait:
        aws.info(
            f"Check its status with: aws sagemaker describe-endpoint --endpoint-name {plan.endpoint_name} "
            f"--region {plan.region}"
        )
    if plan.mode == "serverless":
        cost = "billed per request (nothing while idle)"
    else:
        cost = f"billed per hour for {plan.initial_instance_count} x {plan.instance_type} until deleted"
    aws.info(
        f"The endpoint is {cost}. Delete it with: python -m launch.deploy action=delete "
        f"endpoint_name={plan.endpoint_name} aws.region={plan.region}"
    )
    return result


def run_delete(cfg: DictConfig) -> dict[str, Any]:
    name = _opt(cfg, "endpoint_name")
    if not name:
        raise LaunchError("action=delete needs endpoint_name=<name> (see `aws sagemaker list-endpoints`).")
    _validate_name(str(name), "endpoint_name")
    region = aws.resolve_region(cfg.aws)
    if cfg.get("dry_run"):
        rows = {
            "endpoint": name,
            "deletes": "the endpoint, its endpoint config (describe_endpoint → EndpointConfigName) and the model(s) "
            "of its production variants",
            **aws.describe_targets(cfg.aws, region),
        }
        aws.dry_run(f"Delete {name}", rows)
        return {"dry_run": True, "rows": rows}
    ctx = aws.AwsContext(cfg.aws, region=region)
    deleted = delete_endpoint(ctx, str(name))
    aws.info(
        "The model archive in S3 (if this tool uploaded it: .../models/<endpoint>/model.tar.gz) is kept; remove it "
        "with `aws s3 rm` when no longer needed."
    )
    return {"dry_run": False, "deleted": deleted}


def execute(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured action; problems raise LaunchError (one paragraph)."""
    action = str(cfg.get("action") or "deploy")
    if action == "deploy":
        return run_deploy(cfg)
    if action == "delete":
        return run_delete(cfg)
    raise LaunchError(f"action={action} is not one of deploy, delete.")


cli = aws.exit_on_error(execute)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="deploy")
def main(cfg: DictConfig) -> None:
    aws.quiet_sagemaker_sdk()
    cli(cfg)


if __name__ == "__main__":
    main()
