"""Hydra entry point: `python -m cola_bert.train [overrides]` (or `cola-train`).

Builds data, model, callbacks, loggers and trainer from `conf/` with `hydra.utils.instantiate`, trains, re-scores the
best checkpoint on the validation set, and writes the run's artifacts (layout in README, "Outputs of a run").
Returns the metric named by `optimized_metric` so Hydra sweepers (grid or Optuna) can maximise it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers.utils import logging as hf_logging

from cola_bert import plots, tracking
from cola_bert import console
from cola_bert.archive import ArchiveError
from cola_bert.callbacks import EpochSummary, RunHeader
from cola_bert.config import ConfigError, check_train_config, conf_dir
from cola_bert.data import DataFormatError
from cola_bert.precision import explain as explain_precision

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
hf_logging.disable_progress_bar()  # per-file save/load bars; Lightning's bar is the one that matters


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    return [instantiate(node) for node in (group or {}).values() if isinstance(node, DictConfig) and "_target_" in node]


# Mistakes in what the user gave (files, archive, config values): one paragraph and exit 2, no traceback.
USER_ERRORS = (ConfigError, ArchiveError, DataFormatError)


def resolve_ckpt_path(ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """`last` → `<checkpoint_dir>/last.ckpt` when it exists (else start fresh); a path must exist."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        last = checkpoint_dir / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(ckpt_path).is_file():
        what = "is a directory, not a checkpoint file" if Path(ckpt_path).is_dir() else "does not exist"
        raise ConfigError(
            f"ckpt_path={ckpt_path} {what}. Give a checkpoint file (e.g. RUN/checkpoints/last.ckpt), or "
            "ckpt_path=last to resume from this run directory's last.ckpt when there is one."
        )
    return ckpt_path


def check_checkpoint(ckpt_path: str, module: pl.LightningModule) -> None:
    """The checkpoint to resume from is a readable Lightning checkpoint of this very model (same weight shapes)."""
    try:
        if not zipfile.is_zipfile(ckpt_path):  # torch.save writes a zip archive; a cut-off one has no directory
            raise ValueError("not a complete zip archive, which is what torch.save writes")
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated, not a checkpoint at all, or unpicklable without trusting its code
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(
            f"ckpt_path={ckpt_path} cannot be read as a Lightning checkpoint ({type(err).__name__}: {reason}). "
            "The file is truncated, corrupt or not a checkpoint: give another .ckpt (e.g. the best "
            "RUN/checkpoints/epoch_NNN.ckpt), or start fresh without ckpt_path."
        ) from err
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(
            f"ckpt_path={ckpt_path} is not a Lightning training checkpoint (no state_dict). Give a .ckpt from "
            "RUN/checkpoints/; a model/ directory is used with model.pretrained=RUN/model instead."
        )
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    different = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or different or set(state) - set(expected):
        saved = checkpoint.get("hyper_parameters") or {}
        detail = (f"{different[0]} has shape {tuple(state[different[0]].shape)} there, "
                  f"{tuple(expected[different[0]].shape)} here" if different else
                  f"{len(missing)} weights missing, {len(set(state) - set(expected))} unexpected")
        raise ConfigError(
            f"ckpt_path={ckpt_path} was written by a different model than this run's ({detail}; the checkpoint's "
            f"model: pretrained={saved.get('pretrained')}, tiny={saved.get('tiny')}, "
            f"labels={saved.get('label_names')}). "
            "Resume with the same model settings as the run that wrote it (its RUN/config.yaml), or start fresh "
            "without ckpt_path."
        )


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float, torch.Tensor)) and torch.as_tensor(value).numel() == 1
    }


def _best_epoch(history: list[dict[str, float]], monitor: str | None, mode: str) -> int | None:
    scored = [row for row in history if monitor in row and not math.isnan(row[monitor])]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return int(pick(scored, key=lambda row: row[monitor])["epoch"])


def _write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_model_dir(module: pl.LightningModule, tokenizer: Any, target: Path) -> None:
    """`save_pretrained` model + tokenizer into a temp dir, then move it into place.

    An existing target (e.g. SageMaker's mounted SM_MODEL_DIR, which cannot be replaced) is filled file by file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        module.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not target.exists():
            os.replace(tmp, target)
            return
        for item in tmp.iterdir():
            dest = target / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_run_outputs(
    cfg: DictConfig, trainer: pl.Trainer, module: Any, datamodule: Any, summary: EpochSummary, metrics: dict
) -> dict[str, Any]:
    out = Path(cfg.paths.output_dir)
    ckpt = trainer.checkpoint_callback
    monitor = getattr(ckpt, "monitor", None) or cfg.optimized_metric
    mode = getattr(ckpt, "mode", "max")
    last_epoch = summary.history[-1] if summary.history else {}
    record = {
        **{k: v for k, v in last_epoch.items() if k.startswith("train/")},
        **metrics,
        "best_epoch": _best_epoch(summary.history, monitor, mode),
        "best_checkpoint": getattr(ckpt, "best_model_path", "") or None,
        "train_samples_per_second": summary.train_samples_per_second,
        "epochs_trained": trainer.current_epoch,
        "global_step": trainer.global_step,
        "history": summary.history,
    }
    if cfg.get("save_model", True):
        save_model_dir(module, datamodule.tokenizer, Path(cfg.paths.get("model_dir") or out / "model"))
    if summary.history:
        plots.learning_curves(summary.history, out / "plots" / "learning_curves.png")
    confusion = getattr(module, "last_confusion", None)
    if confusion is not None:
        plots.confusion_matrix(
            confusion.tolist(), module.label_names, out / "plots" / "confusion_matrix.png",
            f"validation (MCC {metrics.get('val/mcc', float('nan')):.3f})",
        )
    _write_json(record, out / "metrics.json")
    tmp = out / "config.yaml.tmp"
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, out / "config.yaml")
    return record


def _is_automatic_precision(cfg: DictConfig) -> bool:
    raw = OmegaConf.to_container(cfg.trainer, resolve=False).get("precision")
    return isinstance(raw, str) and raw.replace(" ", "").startswith("${auto_precision:")


def describe_model(cfg: DictConfig, module: Any) -> str:
    """`all-MiniLM-L6-v2 (packaged), BertForSequenceClassification: 6 layers, hidden 384, 22.7M parameters, ...`"""
    model = module.model
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    if cfg.model.get("tiny"):
        name, head = "tiny random BERT (model=tiny)", "random weights"
    else:
        from cola_bert.backbone import minilm_path

        pretrained = str(cfg.model.pretrained)
        name = "all-MiniLM-L6-v2 (packaged)" if Path(pretrained) == Path(minilm_path()) else pretrained
        trained_head = any("ForSequenceClassification" in a for a in (config.architectures or []))
        head = "classifier head from the checkpoint" if trained_head else "new classifier head"
    return (
        f"{name}, {type(model).__name__}: {getattr(config, 'num_hidden_layers', '?')} layers, hidden "
        f"{getattr(config, 'hidden_size', '?')}, {params / 1e6:.1f}M parameters, {head} for {config.num_labels} labels"
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, re-validate the best checkpoint, test when a test split exists, write outputs. Returns the metrics."""
    console.quiet_libraries()
    check_train_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.checkpoint_dir))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    # Plain containers (not DictConfig) so checkpoints hold only plain hyperparameters.
    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.model, _convert_="all")
    positions = getattr(module.model.config, "max_position_embeddings", None)
    if positions and cfg.data.get("max_length") and cfg.data.max_length > positions:
        raise ConfigError(
            f"data.max_length={cfg.data.max_length} exceeds the model's max_position_embeddings={positions}: a "
            f"longer sentence would fail in the middle of training. Give data.max_length={positions} or less "
            "(CoLA's longest sentence is under 64 tokens; the default is 128)."
        )
    if ckpt_path:
        check_checkpoint(ckpt_path, module)
    summary = EpochSummary(print_every_n_steps=cfg.get("print_every_n_steps", 0))
    header = RunHeader(
        run_dir=str(cfg.paths.output_dir),
        model=describe_model(cfg, module),
        precision=lambda trainer: explain_precision(
            cfg.trainer.accelerator, str(trainer.precision), _is_automatic_precision(cfg)
        ),
        schedule=(
            f"max_epochs {cfg.trainer.max_epochs}, max_steps {cfg.trainer.max_steps}, batch "
            f"{cfg.data.batch_size}, lr {cfg.model.optimizer.get('lr')}, seed {cfg.seed}"
        ),
        resume=ckpt_path,
    )
    callbacks = [header, summary, *_instantiate_all(cfg.get("callbacks"))]
    # A progress bar only on a terminal: captured output (a file, a pipe, CloudWatch) gets the per-epoch lines.
    progress_bar = bool(cfg.trainer.get("enable_progress_bar", True)) and console.is_terminal()
    if not progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    try:
        loggers = _instantiate_all(cfg.get("logger"))
        tracking.start(cfg, loggers)  # MLflow: experiment, sweep tags, the flattened config as params
    except Exception as err:
        known = tracking.explain_error(cfg, err)  # a bad or unreachable MLflow tracking URI
        if known is None:
            raise
        raise known from err
    if not loggers:  # the learning-rate monitor only writes to loggers, and refuses to run without one
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, enable_progress_bar=progress_bar
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if best and not Path(best).is_file():
        best = None
    # Score (and save) the best weights, not the last ones. Loading that checkpoint also restores callback
    # state, which would roll the epoch history back to the best epoch: keep the full history of the fit.
    fit_history = copy.deepcopy(summary.state_dict())
    metrics = _scalar_metrics(trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)[0])
    if datamodule.has_test:
        metrics.update(_scalar_metrics(trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)[0]))
    summary.load_state_dict(fit_history)
    if trainer.is_global_zero:
        record = write_run_outputs(cfg, trainer, module, datamodule, summary, metrics)
        tracking.log_outputs(cfg, loggers, Path(cfg.paths.output_dir))
        return record
    return metrics


def _print_summary(record: dict[str, Any], output_dir: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cola-bert run: {output_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(k for k, v in record.items() if isinstance(v, float)):
        table.add_row(key, f"{record[key]:.4f}")
    table.add_row("best_epoch", str(record.get("best_epoch")))
    Console().print(table)


def _user_error(err: BaseException) -> BaseException | None:
    """The known user error behind `err` (Hydra wraps errors raised while instantiating a config node)."""
    while err is not None:
        if isinstance(err, USER_ERRORS):
            return err
        err = err.__cause__
    return None


def _single_run() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    console.config_composed()
    try:
        record = train(cfg)
    except Exception as err:
        # A sweep records the error per job (sweep_summary.csv); HYDRA_FULL_ERROR=1 asks for the traceback.
        known = _user_error(err)
        if known is None or not _single_run() or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(console.error_paragraph(known), file=sys.stderr, flush=True)
        sys.exit(2)
    if os.environ.get("RANK", "0") == "0":
        _print_summary(record, cfg.paths.output_dir)
    value = record.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    if cfg.get("optimized_metric") and value is None:
        raise KeyError(f"optimized_metric={cfg.optimized_metric} was not logged; logged: {sorted(record)}")
    return value


def cli() -> None:
    """`cola-train` and `python -m cola_bert.train`: a command line Hydra cannot compose exits 2."""
    console.run_hydra(main)


if __name__ == "__main__":
    cli()
