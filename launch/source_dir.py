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

import ast
import importlib.metadata as md
import shutil
from pathlib import Path

from cola_bert.config import conf_dir
from launch.errors import LaunchError

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "cola_bert"
ENTRY_POINT = "sagemaker_entry.py"
NEVER_PINNED = ("torch", "cola-bert")  # the image has torch; the package is staged as source
# Packages a logger needs at run time although the training code does not import them unless it is selected:
# (distribution, range used when it is not installed here). sagemaker-mlflow resolves managed MLflow ARNs.
LOGGER_PACKAGES = {
    "MLFlowLogger": (("mlflow", "mlflow>=2.16,<4"), ("sagemaker-mlflow", "sagemaker-mlflow>=0.1,<1")),
    "TensorBoardLogger": (("tensorboard", "tensorboard>=2.9"),),
}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "*.egg-info", "*.ckpt", "*.tmp")


def imported_modules(entry: Path = PACKAGE_DIR / ENTRY_POINT) -> set[str]:
    """Top-level modules the training code imports: every `import` (module level or inside functions) of the entry
    script and of the cola_bert modules it reaches, followed through cola_bert."""
    seen: set[str] = set()
    found: set[str] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "cola_bert" and len(parts) > 1:
                    todo.append(PACKAGE_DIR.joinpath(*parts[1:]).with_suffix(".py"))
                elif parts[0] != "cola_bert":
                    found.add(parts[0])
    return found


def _logger_targets(cfg) -> set[str]:
    """Class names of the loggers the composed training config instantiates (`MLFlowLogger`, ...)."""
    from omegaconf import OmegaConf

    loggers = OmegaConf.to_container(cfg.logger, resolve=False) if cfg.get("logger") else {}
    return {str(node.get("_target_", "")).rsplit(".", 1)[-1] for node in (loggers or {}).values()
            if isinstance(node, dict)}  # fmt: skip


def _pin(dist: str) -> str:
    meta = md.metadata(dist)
    return f"{meta['Name']}=={meta['Version']}"


def requirements(cfg=None) -> list[str]:
    """`name==version` as installed here for every distribution the training code imports (never torch), plus what
    the selected loggers need (mlflow + sagemaker-mlflow for logger=mlflow), sorted by name."""
    by_module = md.packages_distributions()
    optional = {dist for extras in LOGGER_PACKAGES.values() for dist, _ in extras}
    dists: set[str] = set()
    for module in imported_modules():
        names = {md.metadata(dist)["Name"].lower(): dist for dist in by_module.get(module, [])}
        if names.keys() & optional:  # e.g. `mlflow` (mlflow, mlflow-skinny, ...): only with its logger
            continue
        dists |= {d for n, d in names.items() if n not in NEVER_PINNED and not n.startswith(("nvidia-", "triton"))}
    lines = {md.metadata(d)["Name"].lower(): _pin(d) for d in dists}
    for target in _logger_targets(cfg) if cfg is not None else ():
        for dist, fallback in LOGGER_PACKAGES.get(target, ()):
            try:
                lines[dist] = _pin(dist)
            except md.PackageNotFoundError:
                lines[dist] = fallback
    if "pytorch-lightning" not in lines:  # a broken environment: the container would fail late
        raise LaunchError("pytorch-lightning is not installed here: pip install -e '.[sagemaker]' before launching.")
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
