"""Which SageMaker PyTorch serving image runs an exported archive (shared by `launch.deploy` and `launch.batch`).

The versions come from the SDK's own image table (`sagemaker.image_uris.config_for_framework("pytorch")`), never
from a list kept here. Without a pin the newest image the SDK offers for the region and processor is used: the
handler (`code/inference.py`) targets it (torch 2.6 + Python 3.12 in SDK v2), and a TorchScript archive exported
here with torch 2.13 was measured to load and serve under it with probabilities equal to 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    framework_version: str
    py_version: str | None
    reason: str


def _release(version: str) -> tuple[int, ...] | None:
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(str(version)).release  # "2.13.0+cpu" -> (2, 13, 0)
    except InvalidVersion:
        return None
    return tuple(release) + (0,) * (3 - len(release))


def available_versions(region: str, instance_type: str | None = None) -> dict[str, list[str]]:
    """PyTorch serving versions SDK v2 offers in `region` for this instance type (None: serverless, CPU) → their
    py_versions, oldest first."""
    import_sagemaker()
    from packaging.version import Version
    from sagemaker import image_uris
    from sagemaker.fw_utils import GRAVITON_ALLOWED_TARGET_INSTANCE_FAMILY
    from sagemaker.utils import get_instance_type_family

    family = get_instance_type_family(instance_type) if instance_type else ""
    scope = "inference_graviton" if family in GRAVITON_ALLOWED_TARGET_INSTANCE_FAMILY else "inference"
    wanted = "gpu" if family[:1] in ("g", "p") else "cpu"
    config = image_uris.config_for_framework("pytorch")[scope]
    out: dict[str, list[str]] = {}
    for version, vconf in config.get("versions", {}).items():
        if region not in (vconf.get("registries") or {}):
            continue
        processors = config.get("processors") or vconf.get("processors")
        if processors and wanted not in processors and scope != "inference_graviton":
            continue
        out[version] = sorted(vconf.get("py_versions") or [], key=lambda py: (len(py), py))  # py38 < py312
    return dict(sorted(out.items(), key=lambda kv: Version(kv[0])))


def choose(region: str, instance_type: str | None, *, framework_version: str | None = None,
           py_version: str | None = None, image_uri: str | None = None) -> Image:  # fmt: skip
    """`image_uri` as given, else the pinned `framework_version`, else the newest offered; `instance_type=None`
    means serverless (CPU)."""
    versions = available_versions(region, instance_type)
    if not versions:
        raise LaunchError(
            f"SageMaker SDK v2 offers no PyTorch serving image in {region} for {instance_type or 'serverless'}. "
            "Pick another region (aws.region=...) or instance type, or pass your own image with "
            "deploy.image_uri=<ECR URI>."
        )
    newest = list(versions)[-1]
    fv = str(framework_version) if framework_version else None
    py = str(py_version) if py_version else None
    if image_uri:
        return Image(str(image_uri), fv or newest, py, "custom image (image_uri)")
    reason = "pinned (framework_version)" if fv else f"newest SageMaker SDK v2 offers in {region}"
    fv = fv or newest
    if py is None and versions.get(fv):
        py = versions[fv][-1]
    sm = import_sagemaker()
    from sagemaker.serverless import ServerlessInferenceConfig

    try:
        uri = sm.image_uris.retrieve("pytorch", region, version=fv, py_version=py, instance_type=instance_type,
                                     image_scope="inference",
                                     serverless_inference_config=None if instance_type else ServerlessInferenceConfig())
    except ValueError as err:
        offered = ", ".join(f"{v} ({'/'.join(p)})" for v, p in versions.items())
        raise LaunchError(
            f"No PyTorch serving image for framework_version={fv} py_version={py} on "
            f"{instance_type or 'serverless'} in {region} (SageMaker SDK {sm.__version__}: {err}). Offered here: "
            f"{offered}. Pin one of them, or leave framework_version and py_version null for the newest."
        ) from None
    return Image(uri, fv, py, reason)


def serving_env(node: Any) -> dict[str, str]:
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.to_container(node.env, resolve=True) if isinstance(node.get("env"), DictConfig) else {}
    return {str(k): str(v) for k, v in (raw or {}).items()} | SERVING_ENV


def pytorch_model(ctx: Any, image: Image, model_data: str, name: str, env: dict[str, str], workers: int | None = None):
    """No entry_point: the container runs the archive's own code/inference.py (SAGEMAKER_PROGRAM in `env`)."""
    import_sagemaker()
    from sagemaker.pytorch import PyTorchModel

    return PyTorchModel(model_data=model_data, role=ctx.role, entry_point=None, image_uri=image.uri,
                        framework_version=image.framework_version, py_version=image.py_version, env=env, name=name,
                        model_server_workers=workers, sagemaker_session=ctx.session)  # fmt: skip


def compatibility_note(manifest: dict | None, framework_version: str) -> str | None:
    """A line for the plan when the archive was exported with a newer torch than the container's: what is verified."""
    manifest = manifest or {}
    exported, container = _release(manifest.get("torch_version") or ""), _release(framework_version)
    if not exported or not container or exported <= container:
        return None
    fmt = str(manifest.get("format") or "torchscript")
    verified = VERIFIED_OLDER_TORCH.get(fmt)
    if verified:
        return f"exported with torch {manifest['torch_version']}, container torch {framework_version}: {verified}."
    return (
        f"exported as {fmt} with torch {manifest['torch_version']}, container torch {framework_version}: loading "
        f"{fmt} files in an older torch is not verified. Export with format=torchscript or format=onnx, or pass an "
        "image with a newer torch (deploy.image_uri=<ECR URI>)."
    )
