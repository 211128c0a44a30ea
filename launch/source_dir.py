"""Stage the SageMaker `source_dir` of a training job from this checkout.

Layout (what `/opt/ml/code` holds in the container):

    sagemaker_entry.py  src/cola_bert/sagemaker_entry.py, the script the toolkit runs (sagemaker_program)
    cola_bert/          the package, from src/cola_bert (no caches)
    conf/               the Hydra configs (cola_bert.config.conf_dir() finds conf/ beside cola_bert/)
    requirements.txt    exact versions, installed by the toolkit before the entry script runs (see `requirements`)
    constraints.txt     torch pinned to the container's version, so pip never swaps the container's CUDA build

No setup.py / pyproject.toml (the toolkit would `pip install .` the directory and torch_distributed refuses
packages), no data, outputs, checkpoints, caches or virtual environments.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
from pathlib import Path

from packaging.requirements import Requirement

from cola_bert.config import conf_dir
from launch.errors import LaunchError

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "cola_bert"
ENTRY_POINT = "sagemaker_entry.py"
INSTALL = "pip install -e '.[sagemaker]' before launching"
NEVER_PINNED = ("torch",)  # the image has it (constraints.txt keeps its build)
# Packages a logger needs at run time (optional extras, so not in the declared list):
# (distribution, range used when it is not installed here). sagemaker-mlflow resolves managed MLflow ARNs.
LOGGER_PACKAGES = {
    "MLFlowLogger": (("mlflow", "mlflow>=2.16,<4"), ("sagemaker-mlflow", "sagemaker-mlflow>=0.1,<1")),
    "TensorBoardLogger": (("tensorboard", "tensorboard>=2.9"),),
}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "*.egg-info", "*.ckpt", "*.tmp")


def _logger_targets(cfg) -> set[str]:
    """Class names of the loggers the composed training config instantiates (`MLFlowLogger`, ...)."""
    from omegaconf import OmegaConf

    loggers = OmegaConf.to_container(cfg.logger, resolve=False) if cfg.get("logger") else {}
    return {str(node.get("_target_", "")).rsplit(".", 1)[-1] for node in (loggers or {}).values()
            if isinstance(node, dict)}  # fmt: skip


def _pin(dist: str, fallback: str | None = None) -> str:
    """`Name==version` as installed here; `fallback` (a range) when it is not installed, else LaunchError."""
    try:
        meta = md.metadata(dist)
    except md.PackageNotFoundError:
        if fallback:
            return fallback
        raise LaunchError(f"{dist} is not installed here: {INSTALL}.") from None
    return f"{meta['Name']}=={meta['Version']}"


def requirements(cfg=None) -> list[str]:
    """`name==version` as installed here for each dependency cola-bert declares (pyproject `dependencies`; never
    torch, the image has it), plus what the selected loggers need (mlflow + sagemaker-mlflow for logger=mlflow),
    sorted by name. The declared list rather than the imports, so tokenizers and safetensors are pinned too."""
    try:
        declared = md.requires("cola-bert") or []
    except md.PackageNotFoundError:
        raise LaunchError(f"cola-bert is not installed here: {INSTALL}.") from None
    lines = {}
    for req in map(Requirement, declared):  # an extra's carry the marker `extra == "..."`
        if (not req.marker or req.marker.evaluate({"extra": ""})) and req.name.lower() not in NEVER_PINNED:
            lines[req.name.lower()] = _pin(req.name)
    for target in _logger_targets(cfg) if cfg is not None else ():
        lines |= {dist: _pin(dist, fallback) for dist, fallback in LOGGER_PACKAGES.get(target, ())}
    return [lines[name] for name in sorted(lines)]


def stage(dest: Path, pins: list[str], *, torch_version: str | None = None) -> Path:
    """Fill `dest` (created, must be empty or missing) with the source_dir layout; returns `dest`."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    shutil.copytree(PACKAGE_DIR, dest / "cola_bert", ignore=_IGNORE)
    shutil.copytree(conf_dir(), dest / "conf", ignore=_IGNORE)
    shutil.copyfile(PACKAGE_DIR / ENTRY_POINT, dest / ENTRY_POINT)
    header = ["# Training dependencies of cola-bert at the versions installed where the job was launched",
              "# (python -m launch.train). torch is not listed: the PyTorch training image provides it."]  # fmt: skip
    constraints = ["-c constraints.txt"] if torch_version else []
    (dest / "requirements.txt").write_text("\n".join(header + constraints + pins) + "\n")
    if torch_version:
        (dest / "constraints.txt").write_text("# The torch of the SageMaker PyTorch container (its CUDA build); pip "
                                              f"must not replace it.\ntorch=={torch_version}\n")  # fmt: skip
    return dest


def describe(source_dir: str | Path) -> str:
    """`sagemaker_entry.py, cola_bert/ (14 files), conf/ (40 files), requirements.txt, ...` for plans."""
    parts = []
    for item in sorted(Path(source_dir).iterdir(), key=lambda p: (p.name != ENTRY_POINT, p.is_file(), p.name)):
        count = sum(1 for p in item.rglob("*") if p.is_file()) if item.is_dir() else 0
        parts.append(f"{item.name}/ ({count} files)" if item.is_dir() else item.name)
    return ", ".join(parts)
