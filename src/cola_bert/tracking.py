"""MLflow tracking for `logger=mlflow`: the flattened config as params, sweep tags, the run's files as artifacts.

Lightning's `MLFlowLogger` (conf/logger/mlflow.yaml) logs the per-epoch metrics itself. `start` runs before `fit`:
it creates the experiment when missing (a local SQLite store keeps its artifacts next to the database instead of
in `./mlruns` of whatever directory you launched from), tags the run with its run dir and, in a multirun, with
`sweep_dir`/`sweep_job`/`overrides` so every job of a sweep can be found with one filter, and logs the resolved
config as dotted params (`model.optimizer.lr`, `data.batch_size`, ...). `log_outputs` runs after the run's files
are written and uploads metrics.json, config.yaml and plots/. Every other logger is left alone.

The tracking URI is passed to MLflow unchanged: a `sqlite:///` path, an `http(s)://` server, or a SageMaker
managed MLflow ARN (`arn:aws:sagemaker:...:mlflow-tracking-server/...`, resolved by the `sagemaker-mlflow` plugin).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

SQLITE_PREFIX = "sqlite:///"
RUN_FILES = ("metrics.json", "config.yaml")

# "Creating initial MLflow database tables... / Updating database tables" on every new local store: not news.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def _mlflow_pairs(cfg: DictConfig, loggers: Iterable[Logger]) -> list[tuple[DictConfig, Any]]:
    """(config node, logger) for each MLflow logger; `loggers` were instantiated from `cfg.logger` in order."""
    nodes = [n for n in (cfg.get("logger") or {}).values() if isinstance(n, DictConfig) and "_target_" in n]
    try:
        from pytorch_lightning.loggers import MLFlowLogger
    except ImportError:  # pragma: no cover - mlflow is an optional extra; instantiating the logger would fail first
        return []
    return [(node, lg) for node, lg in zip(nodes, loggers) if isinstance(lg, MLFlowLogger)]


def flatten_config(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as `{"model.optimizer.lr": "0.001", ...}`: dotted keys as in overrides, text values."""
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node if isinstance(node, str) else json.dumps(node)

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return flat


def local_artifact_root(tracking_uri: str) -> str | None:
    """`<db dir>/mlartifacts` as a file URI for a local SQLite store, else None (the server decides)."""
    if not tracking_uri.startswith(SQLITE_PREFIX) or tracking_uri.startswith(SQLITE_PREFIX + ":memory:"):
        return None
    db = Path(tracking_uri[len(SQLITE_PREFIX):])
    return (db.parent / "mlartifacts").resolve().as_uri()


def _hydra_run_info(cfg: DictConfig) -> tuple[dict[str, str], str | None]:
    """Tags that place the run (run dir; sweep dir, job number and overrides in a multirun) and a default name."""
    from hydra.core.hydra_config import HydraConfig

    tags = {"run_dir": str(Path(cfg.paths.output_dir).resolve())}
    if not HydraConfig.initialized():
        return tags, None
    hc = HydraConfig.get()
    task = cfg.get("task_name") or hc.job.name
    if hc.mode is not None and str(hc.mode) == "RunMode.MULTIRUN":
        sweep_dir = str(Path(hc.sweep.dir).resolve())
        tags.update(sweep_dir=sweep_dir, sweep_job=str(hc.job.num), overrides=" ".join(hc.overrides.task))
        return tags, f"{task}/{Path(sweep_dir).name}/{hc.job.num}"
    return tags, f"{task}/{Path(hc.runtime.output_dir).name}"


def _check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """An http(s) tracking server that does not answer is reported within `timeout` seconds instead of after
    MLflow's own retries (about 4 minutes). The request is MLflow's own, so its TLS, proxy and credential settings
    apply (MLFLOW_TRACKING_INSECURE_TLS, REQUESTS_CA_BUNDLE, user:password@host, ...); any HTTP answer counts, even
    401 or 404: MLflow explains what follows."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        http_request(get_default_host_creds(tracking_uri), "/health", "GET", max_retries=0, timeout=timeout,
                     raise_on_status=False)  # fmt: skip
    except MlflowException as err:
        raise MlflowException(f"no answer within {timeout:g} s: {err}") from None


def _without_password(text: str, uri: str) -> str:
    """`text` with the password of `uri` (http://user:password@host) masked."""
    from urllib.parse import urlsplit

    password = urlsplit(uri).password if "://" in uri else None
    return text.replace(f":{password}@", ":***@") if password else text


def _ensure_experiment(node: DictConfig) -> None:
    from mlflow.tracking import MlflowClient

    _check_reachable(str(node.tracking_uri))
    client = MlflowClient(node.tracking_uri)
    experiment = client.get_experiment_by_name(node.experiment_name)
    if experiment is not None and experiment.lifecycle_stage != "deleted":
        return
    location = node.get("artifact_location") or local_artifact_root(str(node.tracking_uri))
    client.create_experiment(node.experiment_name, artifact_location=location)


def start(cfg: DictConfig, loggers: Iterable[Logger]) -> None:
    """Before `fit`: experiment, run name, tags and the flattened config on every MLflow logger (rank 0 only)."""
    if rank_zero_only.rank != 0:
        return
    for node, logger in _mlflow_pairs(cfg, loggers):
        _ensure_experiment(node)
        tags, name = _hydra_run_info(cfg)
        logger.tags = {**tags, **(logger.tags or {})}
        if name and not node.get("run_name"):
            from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

            logger.tags.setdefault(MLFLOW_RUN_NAME, name)
        logger.log_hyperparams(flatten_config(cfg))


def explain_error(cfg: DictConfig, err: BaseException) -> Exception | None:
    """An MLflow failure behind `err` while the MLflow logger starts (an unknown URI scheme, a server that cannot be
    reached, ...) as a ConfigError that names the tracking URI and what to do; None for any other error."""
    from cola_bert.config import ConfigError

    nodes = [n for n in (cfg.get("logger") or {}).values()
             if isinstance(n, DictConfig) and str(n.get("_target_", "")).endswith("MLFlowLogger")]
    cause: BaseException | None = err
    while cause is not None and not type(cause).__module__.startswith("mlflow"):
        cause = cause.__cause__ or cause.__context__
    if not nodes or cause is None:
        return None
    uri = str(nodes[0].get("tracking_uri"))
    reason = _without_password(" ".join(str(cause).split())[:300], uri)
    uri = _without_password(uri, uri)
    return ConfigError(
        f"logger=mlflow cannot use tracking_uri={uri} ({type(cause).__name__}: {reason}). Give a working URI with "
        "logger.mlflow.tracking_uri=... (sqlite:///outputs/mlflow.db for a local store, http://host:5000 for a "
        "running MLflow server, or a SageMaker managed MLflow ARN) or unset MLFLOW_TRACKING_URI, start the server, "
        "or train without MLflow (logger=csv)."
    )


def log_outputs(cfg: DictConfig, loggers: Iterable[Logger], out_dir: Path) -> None:
    """After the run's files are written: metrics.json, config.yaml and plots/ as artifacts of each MLflow run."""
    for _, logger in _mlflow_pairs(cfg, loggers):
        client, run_id = logger.experiment, logger.run_id
        for name in RUN_FILES:
            if (out_dir / name).is_file():
                client.log_artifact(run_id, str(out_dir / name))
        if (out_dir / "plots").is_dir():
            client.log_artifacts(run_id, str(out_dir / "plots"), artifact_path="plots")
