"""SageMaker training entry point, staged as `sagemaker_entry.py` at the root of the job's source_dir.

It lives beside the code it runs: it is part of the training script's contract with the SageMaker training toolkit
(see docs/sagemaker.md). Inside the PyTorch training container (`/opt/ml/code` = source_dir: `cola_bert/`, `conf/`,
this file, `requirements.txt`) the toolkit runs `python sagemaker_entry.py --key value ...` (or `torchrun ...
sagemaker_entry.py ...` under `distribution={"torch_distributed": {"enabled": True}}`). This script:

1. reads the hyperparameters from `SM_HPS` (exact JSON; argv holds Python `str()` renderings) — each one is a Hydra
   override forwarded by `python -m launch.train` (`model.optimizer.lr` → `3e-5`, `model` → `tiny`, ...) or a value
   picked by a SageMaker tuning job — and turns them back into `key=value` overrides;
2. composes `conf/train.yaml` with the Hydra compose API (not @hydra.main: under torchrun every rank would create its
   own run directory) plus `paths=sagemaker` (data from the channels, model to SM_MODEL_DIR, outputs to
   SM_OUTPUT_DATA_DIR) and what the container decides: accelerator/devices from SM_NUM_GPUS, num_nodes from
   SM_HOSTS / torchrun's WORLD_SIZE, no progress bar, checkpoints in `/opt/ml/checkpoints/<TRAINING_JOB_NAME>/`
   and resume from its `last.ckpt`;
3. runs `cola_bert.train.train(cfg)` and, on global rank 0, adds `metrics.json` and `config.yaml` to SM_MODEL_DIR
   (next to the Hugging Face model + tokenizer) and prints a final `best_epoch=N ... val_mcc=...` line: the best
   checkpoint's scores, the last value SageMaker records per metric (a tuning job's objective).

Run by hand (outside SageMaker) it also accepts `key=value` arguments, e.g. `python sagemaker_entry.py model=tiny`.
It imports nothing from AWS.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # before any tokenizer is used or DataLoader forks

import pytorch_lightning as pl  # noqa: E402  (after the environment is set)

CHANNELS = {"train": "TRAIN", "validation": "VALIDATION", "test": "TEST"}
# The env vars conf/paths/sagemaker.yaml reads for the channel files (set here after looking into the channels).
CHANNEL_FILE_ENV = {"train": "COLA_BERT_TRAIN_FILE", "validation": "COLA_BERT_VAL_FILE", "test": "COLA_BERT_TEST_FILE"}
DATA_SUFFIXES = (".tsv", ".csv")
DEFAULT_PRINT_EVERY_N_STEPS = 50
MAX_NUM_WORKERS = 2  # /dev/shm is small in SageMaker containers (DataLoader "Bus error" beyond that)
# Not set by SageMaker (checkpoints are /opt/ml/checkpoints, or $SAGEMAKER_BASE_DIR/checkpoints): for tests/local runs.
CHECKPOINT_DIR_ENV = "SM_CHECKPOINT_DIR"
SYNC_BEST_ENV = "COLA_BERT_SYNC_BEST_WEIGHTS"  # 1/0; default: only when training spans several nodes
# A job name whose checkpoints a new job continues from (a stopped job's; its checkpoint_s3_uri must be this job's).
RESUME_FROM_ENV = "COLA_BERT_RESUME_FROM"


class EntryError(RuntimeError):
    """The container is not set up the way this script needs (missing channel, ambiguous files, ...)."""


# --------------------------------------------------------------------------------------------------------------------
# Hyperparameters → Hydra overrides
# --------------------------------------------------------------------------------------------------------------------


def _argv_hyperparameters(argv: Sequence[str]) -> dict[str, Any]:
    """`--key value` pairs (what the toolkit passes) and plain `key=value` overrides (running it by hand)."""
    hps: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
            hps[arg[2:]] = value
            i += 2 if i + 1 < len(args) and not args[i + 1].startswith("--") else 1
            continue
        if "=" in arg:
            key, value = arg.split("=", 1)
            hps[key] = value
        elif arg.startswith("~"):
            hps[arg] = ""
        else:
            raise EntryError(f"Cannot read argument {arg!r}: expected `--key value` or `key=value`.")
        i += 1
    return hps


def read_hyperparameters(environ: Mapping[str, str], argv: Sequence[str]) -> dict[str, Any]:
    """`SM_HPS` (the toolkit's exact JSON of the job's hyperparameters) when set, else argv."""
    raw = environ.get("SM_HPS")
    if raw is not None:
        hps = json.loads(raw or "{}")
        if not isinstance(hps, dict):
            raise EntryError(f"SM_HPS is not a JSON object: {raw[:200]}")
        return hps
    return _argv_hyperparameters(argv)


def is_reserved_key(key: str) -> bool:
    """SageMaker's own hyperparameters (`sagemaker_program`, `_tuning_objective_metric`, ...) are not overrides."""
    return key.startswith("sagemaker_") or key.startswith("_")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_value(value: Any, *, nested: bool = False) -> str:
    """A JSON value as Hydra override syntax. Top-level strings are Hydra value text already (forwarded as typed);
    strings inside lists/dicts are quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _quote(value) if nested else value
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{render_value(v, nested=True)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render_value(v, nested=True) for v in value) + "]"
    raise EntryError(f"Cannot turn hyperparameter value {value!r} ({type(value).__name__}) into an override.")


def hp_to_override(key: str, value: Any) -> str:
    """One hyperparameter → one Hydra override (`~key` with an empty value deletes)."""
    if key.startswith("~") and value in ("", None):
        return key
    return f"{key}={render_value(value)}"


def bare_key(key: str) -> str:
    """`++trainer.devices` → `trainer.devices`; `+model@x` → `model`."""
    return key.lstrip("+~").split("@", 1)[0]


def user_overrides(hps: Mapping[str, Any]) -> list[str]:
    """The job's hyperparameters as overrides, parents before children (`model.optimizer` before `.lr`)."""
    keys = sorted((k for k in hps if not is_reserved_key(k)), key=lambda k: (bare_key(k), k))
    return [hp_to_override(k, hps[k]) for k in keys]


# --------------------------------------------------------------------------------------------------------------------
# What the container decides
# --------------------------------------------------------------------------------------------------------------------


def _json_env(environ: Mapping[str, str], name: str, default: Any) -> Any:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def device_layout(environ: Mapping[str, str]) -> dict[str, Any]:
    """accelerator / devices / num_nodes / strategy for Lightning.

    Under torchrun (torch_distributed) Lightning's TorchElasticEnvironment needs devices × num_nodes == WORLD_SIZE:
    devices = LOCAL_WORLD_SIZE (torchrun's --nproc_per_node), num_nodes = WORLD_SIZE / LOCAL_WORLD_SIZE (the number
    of hosts). Without torchrun: all of this host's GPUs (Lightning starts the DDP processes), or 1 CPU process.
    """
    num_gpus = int(environ.get("SM_NUM_GPUS") or 0)
    hosts = _json_env(environ, "SM_HOSTS", ["algo-1"])
    accelerator = "gpu" if num_gpus > 0 else "cpu"
    if environ.get("WORLD_SIZE") and environ.get("LOCAL_WORLD_SIZE"):
        world, local = int(environ["WORLD_SIZE"]), int(environ["LOCAL_WORLD_SIZE"])
        if local < 1 or world % local:
            raise EntryError(f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local}.")
        devices, num_nodes = local, world // local
        if isinstance(hosts, list) and len(hosts) != num_nodes:
            print(f"[entry] note: torchrun runs {num_nodes} node(s), SM_HOSTS lists {len(hosts)}", flush=True)
    else:
        if isinstance(hosts, list) and len(hosts) > 1:
            raise EntryError(
                f"This job has {len(hosts)} hosts but was not started by torchrun: every host would train on its own. "
                "Launch multi-instance jobs with distribution torch_distributed (sagemaker=multi_gpu)."
            )
        devices, num_nodes = (num_gpus if num_gpus > 0 else 1), 1
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    return {"accelerator": accelerator, "devices": devices, "num_nodes": num_nodes, "strategy": strategy}


def _channel_file(channel: str, directory: Path) -> Path:
    files = sorted(
        p for p in directory.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:])
    )
    if not files:
        raise EntryError(f"The {channel} channel ({directory}) is empty: it must hold one TSV/CSV file.")
    if len(files) == 1:
        return files[0]
    preferred = [p for p in files if p.stem == channel and p.suffix.lower() in DATA_SUFFIXES]
    data = [p for p in files if p.suffix.lower() in DATA_SUFFIXES]
    if len(preferred) == 1:
        return preferred[0]
    if len(data) == 1:
        return data[0]
    raise EntryError(
        f"The {channel} channel ({directory}) holds several files ({', '.join(p.name for p in files[:10])}): give "
        f"one TSV/CSV file per channel (or name the one to use {channel}.tsv)."
    )


def channel_files(environ: Mapping[str, str]) -> dict[str, Path]:
    """The one data file in each channel directory (SM_CHANNEL_TRAIN / _VALIDATION / _TEST)."""
    found: dict[str, Path] = {}
    for channel, suffix in CHANNELS.items():
        directory = environ.get(f"SM_CHANNEL_{suffix}")
        if not directory:
            continue
        if not Path(directory).is_dir():
            raise EntryError(f"SM_CHANNEL_{suffix}={directory} is not a directory.")
        found[channel] = _channel_file(channel, Path(directory))
    missing = [c for c in ("train", "validation") if c not in found]
    if missing:
        channels = _json_env(environ, "SM_CHANNELS", [])
        raise EntryError(
            f"Missing input channel(s) {', '.join(missing)} (this job has: {channels or 'none'}). python -m "
            "launch.train uploads CoLA splits as `train` and `validation` (and `test`), or pass "
            "sagemaker.inputs.train=s3://... sagemaker.inputs.validation=s3://...."
        )
    return found


def checkpoint_dir(environ: Mapping[str, str]) -> Path:
    """Where this job writes and resumes checkpoints: `/opt/ml/checkpoints/<TRAINING_JOB_NAME>/`.

    SageMaker syncs the whole `checkpoint_s3_uri` prefix into /opt/ml/checkpoints, and every training job of a tuning
    job gets the same prefix: keyed on the job name (set in every container, different per trial, the same when a
    spot job restarts), trials never read or overwrite each other's `last.ckpt`, and a restarted spot job finds its
    own. The toolkit removes `_tuning_objective_metric` from SM_HPS, so the hyperparameters cannot tell a trial apart.
    `$SM_CHECKPOINT_DIR` or `$SAGEMAKER_BASE_DIR/checkpoints` replace /opt/ml/checkpoints when set (local runs).
    """
    if environ.get(CHECKPOINT_DIR_ENV):
        base = Path(environ[CHECKPOINT_DIR_ENV])
    else:
        base = Path(environ.get("SAGEMAKER_BASE_DIR") or "/opt/ml") / "checkpoints"
    job = environ.get("TRAINING_JOB_NAME")
    return base / job if job else base


def resume_checkpoint(environ: Mapping[str, str], own_dir: Path) -> str:
    """`last` (this job's own last.ckpt: a spot restart) unless this job has none yet and COLA_BERT_RESUME_FROM names
    an earlier job whose last.ckpt was synced down with the shared checkpoint_s3_uri."""
    earlier = environ.get(RESUME_FROM_ENV)
    if earlier and not (own_dir / "last.ckpt").is_file():
        candidate = own_dir.parent / earlier / "last.ckpt"
        if not candidate.is_file():
            raise EntryError(
                f"{RESUME_FROM_ENV}={earlier}: {candidate} does not exist. Launch with sagemaker.checkpoint_s3_uri set "
                f"to the checkpoint prefix of {earlier} (its checkpoint_s3_uri), or drop {RESUME_FROM_ENV}."
            )
        return str(candidate)
    return "last"


def _sync_best_wanted(environ: Mapping[str, str], layout: Mapping[str, Any]) -> bool:
    value = environ.get(SYNC_BEST_ENV, "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    return layout["num_nodes"] > 1


def container_overrides(
    environ: Mapping[str, str], user: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(overrides the container always sets, user overrides they replace)."""
    layout = device_layout(environ)
    ckpt_dir = checkpoint_dir(environ)
    forced = {
        "paths": "paths=sagemaker",
        "paths.checkpoint_dir": f"paths.checkpoint_dir={_quote(str(ckpt_dir))}",
        "trainer.accelerator": f"++trainer.accelerator={layout['accelerator']}",
        "trainer.devices": f"++trainer.devices={layout['devices']}",
        "trainer.num_nodes": f"++trainer.num_nodes={layout['num_nodes']}",
        "trainer.strategy": f"++trainer.strategy={layout['strategy']}",
        # resume from <checkpoint dir>/last.ckpt after a spot interruption (or from an earlier job's)
        "ckpt_path": f"ckpt_path={_quote(resume_checkpoint(environ, ckpt_dir))}",
    }
    if environ.get("TRAINING_JOB_NAME"):
        forced["trainer.enable_progress_bar"] = "++trainer.enable_progress_bar=false"  # \r redraws garble CloudWatch
    if _sync_best_wanted(environ, layout):
        target = "cola_bert.sagemaker_entry.SyncBestWeights"
        forced["callbacks.sync_best_weights"] = f"++callbacks.sync_best_weights._target_={target}"

    user_keys = {bare_key(o.split("=", 1)[0]): o for o in user}
    replaced = [o for k, o in user_keys.items() if k in forced or any(k.startswith(f + ".") for f in forced)]
    extra = []
    if environ.get("TRAINING_JOB_NAME") and "print_every_n_steps" not in user_keys:
        extra.append(f"print_every_n_steps={DEFAULT_PRINT_EVERY_N_STEPS}")  # a plain progress line every N steps
    workers = user_keys.get("data.num_workers")
    if workers is not None:
        try:
            too_many = int(workers.split("=", 1)[1]) > MAX_NUM_WORKERS
        except ValueError:
            too_many = False
        if too_many:
            replaced.append(workers)
            extra.append(f"data.num_workers={MAX_NUM_WORKERS}")
    return [*forced.values(), *extra], replaced


def compose_config(overrides: Sequence[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cola_bert.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="sagemaker"):
        return compose(config_name="train", overrides=list(overrides))


# --------------------------------------------------------------------------------------------------------------------
# Multi-node: every rank validates the best weights
# --------------------------------------------------------------------------------------------------------------------


class SyncBestWeights(pl.Callback):
    """Give every rank the best checkpoint's weights when training ends.

    Only global rank 0 writes checkpoints, on its own host's disk: ranks on other hosts cannot load the best
    checkpoint that train() re-validates, and would validate their last weights instead. Rank 0 broadcasts the best
    weights to all ranks, so every rank scores (and rank 0 saves) the same model.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size <= 1:
            return
        import torch

        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        state = None
        if trainer.is_global_zero and best and Path(best).is_file():
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        state = trainer.strategy.broadcast(state, src=0)
        if state is not None:
            pl_module.load_state_dict(state)
            if trainer.is_global_zero:
                print(f"[entry] best weights ({Path(best).name}) sent to all {trainer.world_size} ranks", flush=True)


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------


def _launch_rank(environ: Mapping[str, str]) -> int:
    """This process's rank before training: torchrun sets RANK; processes Lightning starts itself (several GPUs on
    one host, no torchrun) only LOCAL_RANK."""
    return int(environ.get("RANK") or environ.get("LOCAL_RANK") or 0)


def _rank_and_world(environ: Mapping[str, str]) -> tuple[int, int]:
    """Global rank and world size after training (from the process group Lightning set up, when there is one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    rank = getattr(rank_zero_only, "rank", None)
    return (_launch_rank(environ) if rank is None else int(rank)), int(environ.get("WORLD_SIZE") or 1)


def best_line(record: Mapping[str, Any]) -> str:
    """`best_epoch=N val_loss=... val_mcc=...` from the re-validated best checkpoint: printed last, so it is the final
    value SageMaker records for each metric (and the one a tuning job optimises)."""
    from cola_bert.callbacks import EPOCH_LINE_KEYS

    parts = [f"best_epoch={record.get('best_epoch')}"]
    for short, key in EPOCH_LINE_KEYS:
        if key.startswith("val/") and isinstance(record.get(key), (int, float)):
            parts.append(f"{short}={record[key]:.6f}")
    for key in ("test/mcc", "test/accuracy"):
        if isinstance(record.get(key), (int, float)):
            parts.append(f"{key.replace('/', '_')}={record[key]:.6f}")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    rank = _launch_rank(environ)

    hps = read_hyperparameters(environ, argv)
    files = channel_files(environ)
    for channel, path in files.items():
        os.environ[CHANNEL_FILE_ENV[channel]] = str(path)
    if "test" not in files:
        os.environ.pop(CHANNEL_FILE_ENV["test"], None)

    user = user_overrides(hps)
    forced, replaced = container_overrides(environ, user)
    overrides = [o for o in user if o not in replaced] + forced
    if rank == 0:
        import cola_bert

        print(f"[entry] cola_bert from {Path(cola_bert.__file__).parent}", flush=True)
        print(f"[entry] hyperparameters: {json.dumps(hps, sort_keys=True)}", flush=True)
        print(f"[entry] channels: {json.dumps({c: str(p) for c, p in files.items()})}", flush=True)
        if replaced:
            print(f"[entry] set by the container instead: {' '.join(replaced)}", flush=True)
        print(f"[entry] overrides: {' '.join(overrides)}", flush=True)

    cfg = compose_config(overrides)
    from cola_bert.train import train

    record = train(cfg)

    rank, world = _rank_and_world(environ)
    if world > 1:  # every rank (synced scores: the lines agree); `val/mcc=`, not the metric regexes' `val_mcc=`
        scores = " ".join(f"{k}={record[k]:.6f}" for k in ("val/loss", "val/mcc") if k in record)
        print(f"[entry] rank {rank}/{world}: {scores}", flush=True)
    if rank == 0:
        out, model_dir = Path(cfg.paths.output_dir), Path(cfg.paths.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", "config.yaml"):
            if (out / name).is_file() and out.resolve() != model_dir.resolve():
                shutil.copyfile(out / name, model_dir / name)
        print(best_line(record), flush=True)
        print(f"[entry] model, metrics.json and config.yaml written to {model_dir}", flush=True)
    return record


if __name__ == "__main__":
    try:
        main()
    except EntryError as err:
        print(f"[entry] error: {err}", file=sys.stderr, flush=True)
        if os.environ.get("SM_OUTPUT_DIR"):  # SageMaker shows this file as the job's FailureReason
            try:
                Path(os.environ["SM_OUTPUT_DIR"], "failure").write_text(str(err))
            except OSError:
                pass
        sys.exit(2)
