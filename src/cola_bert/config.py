"""Where the Hydra configs live, the OmegaConf resolvers they use, and the checks of values the user gave.

`conf/` sits at the repository root; when the package is staged for SageMaker it sits beside `cola_bert/`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


class ConfigError(ValueError):
    """A config value given by the user (file or command line) cannot work; the message says which and what to do."""


def check_train_config(cfg: Any) -> None:
    """Refuse values that would only fail deep inside Lightning (e.g. an OverflowError from the LR schedule)."""
    trainer = cfg.trainer
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    no_step_limit = max_steps is None or max_steps == -1
    if max_epochs == -1 and no_step_limit:
        raise ConfigError(
            "trainer.max_epochs=-1 means 'no epoch limit' to Lightning, but the learning-rate schedule (linear "
            "warmup, then linear decay to 0) needs to know the total number of optimizer steps. Add "
            "trainer.max_steps=N (e.g. trainer.max_epochs=-1 trainer.max_steps=2000), or give trainer.max_epochs "
            "a positive number of epochs."
        )
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise ConfigError(
            f"trainer.max_epochs={max_epochs}: give a positive number of epochs (or -1 together with "
            "trainer.max_steps=N)."
        )
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise ConfigError(f"trainer.max_steps={max_steps}: give a positive number of steps, or -1 for no step limit.")


def _minilm_path() -> str:
    from cola_bert.backbone import minilm_path

    return minilm_path()


def _auto_precision(accelerator: str = "cpu") -> str:
    from cola_bert.precision import auto_precision

    return auto_precision(accelerator)


def register_resolvers() -> None:
    """`${minilm_path:}` → the packaged all-MiniLM-L6-v2 directory, looked up when the config is resolved.
    `${auto_precision:ACCELERATOR}` → `bf16-mixed` where that hardware computes bf16 natively, else `32-true`."""
    if not OmegaConf.has_resolver("minilm_path"):
        OmegaConf.register_new_resolver("minilm_path", _minilm_path)
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", _auto_precision)


register_resolvers()
