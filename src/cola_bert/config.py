"""Where the Hydra configs live, the OmegaConf resolvers they use, and the checks of values the user gave.

`conf/` sits at the repository root; when the package is staged for SageMaker it sits beside `cola_bert/`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
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
    _check_values(cfg)
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
    _check_trainer_device(trainer)
    check_output_paths(cfg)


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float)) and not math.isnan(value)


def require_number(key: str, value: Any, example: str, *, integer: bool = False, low: float | None = None,
                   high: float | None = None, low_open: bool = False, high_open: bool = False,
                   optional: bool = False, as_list: bool = False) -> None:
    """`key=value` must be an integer / a number in the given range (`as_list`: a list of them, or one); else a
    ConfigError with an example. Shared by the training and export CLIs, so both word it the same."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    shape = f"a list of {kind.split(' ', 1)[1]}s" if as_list else kind
    is_list = isinstance(value, Sequence) and not isinstance(value, str)
    values = list(value) if is_list else [value]
    if (is_list and not as_list) or not values or not all(_is_number(v, integer) for v in values):
        raise ConfigError(f"{key}={value} is not {shape}. Give {shape}, e.g. {key}={example}.")
    too_low = low is not None and any(v <= low if low_open else v < low for v in values)
    too_high = high is not None and any(v >= high if high_open else v > high for v in values)
    if too_low or too_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        raise ConfigError(f"{key}={value} is out of range: it must be {' and '.join(p for p in (lo, hi) if p)}, "
                          f"e.g. {key}={example}.")


def _check_values(cfg: Any) -> None:
    """Types and ranges of the values users override most, before anything is built (a string where a number
    belongs would otherwise fail deep inside torch or Lightning with a traceback)."""
    trainer, data, model = cfg.trainer, cfg.get("data") or {}, cfg.get("model") or {}
    require_number("seed", cfg.get("seed"), "42", integer=True, optional=True)
    require_number("trainer.max_epochs", trainer.get("max_epochs"), "3", integer=True, optional=True)
    require_number("trainer.max_steps", trainer.get("max_steps", -1), "2000", integer=True, optional=True)
    for key, example in (("batch_size", "32"), ("eval_batch_size", "128")):
        if key in data:
            require_number(f"data.{key}", data.get(key), example, integer=True, low=1)
    if "max_length" in data:
        require_number("data.max_length", data.get("max_length"), "128", integer=True)  # >= 2: CoLADataModule says it
    if "num_workers" in data:
        require_number("data.num_workers", data.get("num_workers"), "0", integer=True, low=0)
    if "val_fraction" in data:
        require_number("data.val_fraction", data.get("val_fraction"), "0.25", low=0, high=1, low_open=True, high_open=True)
    optimizer = model.get("optimizer") or {}
    if "lr" in optimizer:
        require_number("model.optimizer.lr", optimizer.get("lr"), "5e-5", low=0, low_open=True)
    if "warmup_ratio" in model:
        require_number("model.warmup_ratio", model.get("warmup_ratio"), "0.1", low=0, high=1)
    if "weight_decay" in model:
        require_number("model.weight_decay", model.get("weight_decay"), "0.01", low=0)
    for key in ("dropout", "attention_dropout"):
        require_number(f"model.{key}", model.get(key), "0.1", low=0, high=1, high_open=True, optional=True)


# Lightning's accepted `precision` values (lightning_fabric.connector._PRECISION_INPUT).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "64", "bf16", 32, 16, 64)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _check_trainer_device(trainer: Any) -> None:
    """A precision Lightning does not know, or a GPU asked for where there is none: say so before building."""
    precision = trainer.get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision} is not a precision Lightning knows. Use one of: 32-true (fp32), "
            "bf16-mixed (bf16 autocast), 16-mixed (fp16 autocast, GPUs), bf16-true, 16-true, 64-true; or leave it "
            "out: trainer=auto (the default) picks bf16-mixed or 32-true for this hardware."
        )
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    if accelerator not in ACCELERATORS:
        raise ConfigError(
            f"trainer.accelerator={accelerator} is not an accelerator Lightning knows. Use one of: "
            f"{', '.join(ACCELERATORS)} (auto: a CUDA GPU when there is one, else the CPU)."
        )
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} asks for a CUDA GPU, but PyTorch sees none on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Train on the CPU with "
            "trainer=auto (the default) or trainer=cpu, or run on a GPU machine (e.g. "
            "python -m launch.train sagemaker=gpu trainer=gpu)."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps asks for Apple's MPS, which is not available here. "
                          "Use trainer=auto (the default) or trainer=cpu.")


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_paths(cfg: Any) -> None:
    """The run's output directories can be created and written, checked before training rather than after it."""
    paths = cfg.get("paths") or {}
    keys = ["output_dir", "checkpoint_dir"] + (["model_dir"] if cfg.get("save_model", True) else [])
    for key in keys:
        value = paths.get(key)
        if not value:
            continue
        target = Path(str(value)).expanduser().absolute()
        existing = _first_existing(target)
        if not existing.is_dir():
            raise ConfigError(
                f"paths.{key}={value} cannot be created: {existing} is a file, not a directory. Choose another "
                f"location (e.g. hydra.run.dir=outputs/my_run, or paths.{key}=...)."
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"paths.{key}={value} is not writable: {existing} does not let this user write into it. Choose a "
                f"writable location (e.g. hydra.run.dir=outputs/my_run, or paths.{key}=...)."
            )


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
