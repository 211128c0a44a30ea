"""Where the Hydra configs live and the OmegaConf resolvers they use.

`conf/` sits at the repository root; when the package is staged for SageMaker it sits beside `cola_bert/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

_PACKAGE_DIR = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The `conf/` directory: $COLA_BERT_CONF, else the repo layout (src/cola_bert/../../conf), else a sibling."""
    candidates = [Path(os.environ["COLA_BERT_CONF"])] if os.environ.get("COLA_BERT_CONF") else []
    candidates += [_PACKAGE_DIR.parents[1] / "conf", _PACKAGE_DIR.parent / "conf"]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "Cannot find the Hydra configs (conf/train.yaml). Run from a checkout of cola-bert (pip install -e .) "
        f"or set COLA_BERT_CONF to the conf/ directory. Looked in: {', '.join(map(str, candidates))}"
    )


def _minilm_path() -> str:
    from cola_bert.backbone import minilm_path

    return minilm_path()


def register_resolvers() -> None:
    """`${minilm_path:}` → the packaged all-MiniLM-L6-v2 directory, looked up when the config is resolved."""
    if not OmegaConf.has_resolver("minilm_path"):
        OmegaConf.register_new_resolver("minilm_path", _minilm_path)


register_resolvers()
