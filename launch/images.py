"""Which SageMaker PyTorch serving image runs an exported archive, and the Model that serves it (for `launch.deploy`
and `launch.batch`).

The image is the SDK's own (`sagemaker.image_uris.retrieve`) for the `framework_version` and `py_version` pinned in
the config: torch 2.6 + Python 3.12, the newest PyTorch inference image in SDK v2 and the one the handler
(`code/inference.py`) targets. A pin the SDK does not offer for the region or instance type is refused with the
SDK's list of the versions it does offer (Graviton images lag behind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from packaging.version import InvalidVersion, Version

from launch import validate
from launch.errors import LaunchError
from launch.session import import_sagemaker

PINS = ("framework_version", "py_version", "image_uri")  # the image settings of the deploy / batch configs
# The container runs the archive's own code/inference.py (no entry_point, no repack).
SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
# What was measured (sagemaker-contract.md): which export formats are known to load in an older container torch.
VERIFIED_OLDER_TORCH = {
    "torchscript": "a TorchScript archive exported with torch 2.13 was measured to load and serve under the torch "
    "2.6 container with probabilities equal to 1e-6",
    "onnx": "ONNX files are run by onnxruntime (pinned in code/requirements.txt), not by the container's torch",
}


@dataclass(frozen=True)
class Image:
    uri: str
    framework_version: str | None  # None with a custom image_uri
    py_version: str | None
    reason: str


def choose(region: str, instance_type: str | None, *, framework_version: str | None = None,
           py_version: str | None = None, image_uri: str | None = None, setting: str = "") -> Image:  # fmt: skip
    """`image_uri` as given, else the SDK's image for the pinned versions; `instance_type=None` means serverless
    (CPU). `setting`: the config prefix of the keys in messages (`deploy.`)."""
    fv, py = (str(v) if v else None for v in (framework_version, py_version))
    if image_uri:
        return Image(str(image_uri), fv, py, "custom image (image_uri)")
    if not fv or not py:
        raise LaunchError(
            f"Set the serving image's {setting}framework_version and {setting}py_version (e.g. "
            f"{setting}framework_version=2.6.0 {setting}py_version=py312), or your own image with "
            f"{setting}image_uri=<ECR URI>."
        )
    sm = import_sagemaker()
    from sagemaker.serverless import ServerlessInferenceConfig

    try:
        uri = sm.image_uris.retrieve("pytorch", region, version=fv, py_version=py, instance_type=instance_type,
                                     image_scope="inference",
                                     serverless_inference_config=None if instance_type else ServerlessInferenceConfig())
    except ValueError as err:
        raise LaunchError(
            f"SageMaker SDK {sm.__version__} has no PyTorch serving image for {setting}framework_version={fv} "
            f"{setting}py_version={py} on {instance_type or 'serverless'} in {region}: {' '.join(str(err).split())} "
            f"Pin an offered version, or pass your own image with {setting}image_uri=<ECR URI>."
        ) from None
    return Image(uri, fv, py, f"pytorch {fv}, {py}")


def serving_env(node: Any, *, setting: str = "env") -> dict[str, str]:
    """`node.env` as the container's environment, checked against CreateModel's Environment in botocore's service
    model (names, lengths). `setting`: the config key, for messages."""
    raw = OmegaConf.to_container(node.env, resolve=True) if isinstance(node.get("env"), DictConfig) else {}
    nested = [k for k, v in (raw or {}).items() if isinstance(v, (dict, list))]
    if nested:
        raise LaunchError(f"{setting}.{nested[0]}={validate.console_value(raw[nested[0]])} is not a plain value: "
                          f"environment variables are strings or numbers, e.g. {setting}.COLA_BATCH_SIZE=64.")
    env = {str(k): str(v) for k, v in (raw or {}).items()} | SERVING_ENV
    return validate.request_value(env, setting, "CreateModel", "PrimaryContainer.Environment")


def pytorch_model(ctx: Any, image: Image, model_data: str, name: str, env: dict[str, str], workers: int | None = None):
    """No entry_point: the container runs the archive's own code/inference.py (SAGEMAKER_PROGRAM in `env`).
    `code_location` beside the archive: nothing is uploaded there, but without it the SDK asks for its default bucket
    (an STS call and CreateBucket of sagemaker-<region>-<account>) even for an s3:// archive."""
    import_sagemaker()
    from sagemaker.pytorch import PyTorchModel

    return PyTorchModel(model_data=model_data, role=ctx.role, entry_point=None, image_uri=image.uri,
                        framework_version=image.framework_version, py_version=image.py_version, env=env, name=name,
                        model_server_workers=workers, sagemaker_session=ctx.session,
                        code_location=model_data.rsplit("/", 1)[0])  # fmt: skip


def compatibility_note(manifest: dict | None, framework_version: str | None) -> str | None:
    """A line for the plan when the archive was exported with a newer torch than the container's: what is verified."""
    manifest = manifest or {}
    try:  # by release: "2.6.0+cpu" is not newer than "2.6", "2.6.0" or "2.6.0+cu124"
        exported, container = (Version(str(v)) for v in (manifest.get("torch_version"), framework_version))
    except InvalidVersion:
        return None
    if (exported.major, exported.minor, exported.micro) <= (container.major, container.minor, container.micro):
        return None
    fmt, torch = str(manifest.get("format") or "torchscript"), manifest["torch_version"]
    if fmt in VERIFIED_OLDER_TORCH:
        return f"exported with torch {torch}, container torch {framework_version}: {VERIFIED_OLDER_TORCH[fmt]}."
    return (
        f"exported as {fmt} with torch {torch}, container torch {framework_version}: loading {fmt} files in an older "
        "torch is not verified. Export with format=torchscript or format=onnx, or pass an image with a newer torch "
        "(deploy.image_uri=<ECR URI>)."
    )
