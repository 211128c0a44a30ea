"""SageMaker automatic model tuning over cola-bert training jobs: `python -m launch.tune <overrides>`.

    python -m launch.tune sagemaker=gpu                                  # the ranges of conf/tune/default.yaml
    python -m launch.tune sagemaker=gpu tune.max_jobs=20 tune.max_parallel_jobs=4 tune.ranges.lr.max=1e-4
    python -m launch.tune experiment=minilm_cola '~tune.ranges.max_epochs' trainer.max_epochs=3 dry_run=true

The training jobs are built exactly like `python -m launch.train`'s (same configs, overrides, channels, source_dir
and entry script); a `HyperparameterTuner` maximises the objective metric (`val_mcc`: the entry script's final line,
the best checkpoint's validation MCC) read from the job logs with the same metric definitions. Each range is named by
the training override it sets (`model.optimizer.lr`, `data.batch_size`, ...): the tuner's value reaches the container
in SM_HPS under that name and is applied as `<override>=<value>`, like every forwarded override.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from launch import aws
from launch import train as launch_train
from launch.aws import LaunchError, aws_errors
from launch.overrides import is_launcher_only, split_overrides

TUNING_JOB_NAME_MAX = 32
RANGE_TYPES = ("continuous", "integer", "categorical")
SCALING_TYPES = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")


def parameter_ranges(tune_cfg: DictConfig) -> dict[str, Any]:
    """`tune.ranges` → {override key: ContinuousParameter | IntegerParameter | CategoricalParameter}."""
    aws.import_sagemaker()
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    ranges: dict[str, Any] = {}
    for name, spec in (tune_cfg.get("ranges") or {}).items():
        if spec is None:
            continue
        where = f"tune.ranges.{name}"
        key = spec.get("hyperparameter")
        if not key:
            raise LaunchError(f"{where}.hyperparameter is missing: the override it sets, e.g. data.batch_size.")
        key = str(key)
        if is_launcher_only(key.lstrip("+~").split("@", 1)[0]):
            raise LaunchError(f"{where}.hyperparameter={key} is not a training override (it stays on this machine).")
        kind = str(spec.get("type", "")).lower()
        scaling = str(spec.get("scaling") or "Auto")
        if scaling not in SCALING_TYPES:
            raise LaunchError(f"{where}.scaling={scaling} must be one of {', '.join(SCALING_TYPES)}.")
        if kind in ("continuous", "integer"):
            low, high = spec.get("min"), spec.get("max")
            if low is None or high is None or float(low) >= float(high):
                raise LaunchError(f"{where} needs min < max (min={low}, max={high}).")
            if scaling in ("Logarithmic", "ReverseLogarithmic") and float(low) <= 0:
                raise LaunchError(f"{where}: {scaling} scaling needs min > 0 (min={low}).")
            if kind == "continuous":
                ranges[key] = ContinuousParameter(float(low), float(high), scaling_type=scaling)
            else:
                ranges[key] = IntegerParameter(int(low), int(high), scaling_type=scaling)
        elif kind == "categorical":
            values = list(spec.get("values") or [])
            if not values:
                raise LaunchError(f"{where}.values is empty: list the choices, e.g. [16, 32, 64].")
            ranges[key] = CategoricalParameter(values)
        else:
            raise LaunchError(f"{where}.type={kind or None} must be one of {', '.join(RANGE_TYPES)}.")
    if not ranges:
        raise LaunchError("tune.ranges is empty: give at least one range to tune (see conf/tune/default.yaml).")
    return ranges


def tuning_job_name(tune_cfg: DictConfig) -> str:
    sm = aws.import_sagemaker()
    base = str(tune_cfg.get("base_tuning_job_name") or "cola-bert-tune")
    name = sm.utils.name_from_base(base, max_length=TUNING_JOB_NAME_MAX, short=True)
    if not launch_train.JOB_NAME_RE.match(name) or len(name) > TUNING_JOB_NAME_MAX:
        raise LaunchError(f"{name!r} is not a valid tuning job name (letters, digits, hyphens; at most 32 characters).")
    return name


def _check(tune_cfg: DictConfig) -> None:
    strategy = str(tune_cfg.strategy)
    if strategy not in STRATEGIES:
        raise LaunchError(f"tune.strategy={strategy} must be one of {', '.join(STRATEGIES)}.")
    max_jobs, max_parallel = int(tune_cfg.max_jobs), int(tune_cfg.max_parallel_jobs)
    if max_jobs < 1 or max_parallel < 1:
        raise LaunchError(f"tune.max_jobs={max_jobs} and tune.max_parallel_jobs={max_parallel} must be at least 1.")
    if str(tune_cfg.objective_type) not in ("Maximize", "Minimize"):
        raise LaunchError(f"tune.objective_type={tune_cfg.objective_type} must be Maximize or Minimize.")
    names = {d["Name"] for d in launch_train.metric_definitions()}
    if str(tune_cfg.objective_metric_name) not in names:
        raise LaunchError(
            f"tune.objective_metric_name={tune_cfg.objective_metric_name} is not one of the metrics the training "
            f"script prints: {', '.join(sorted(names))}."
        )


def _range_rows(ranges: dict[str, Any]) -> dict[str, str]:
    rows = {}
    for key, rng in ranges.items():
        if hasattr(rng, "values"):
            rows[f"range {key}"] = f"categorical {list(rng.values)}"
        else:
            rows[f"range {key}"] = f"{type(rng).__name__} [{rng.min_value}, {rng.max_value}] ({rng.scaling_type})"
    return rows


def tune(cfg: DictConfig, overrides: list[str], *, run_dir: Path | None = None) -> dict[str, Any]:
    tune_cfg = cfg.tune
    _check(tune_cfg)
    ranges = parameter_ranges(tune_cfg)
    name = tuning_job_name(tune_cfg)
    with tempfile.TemporaryDirectory(prefix="cola-bert-tune-") as tmp:
        job = launch_train.prepare_job(cfg, overrides, Path(tmp), job_name=name, static_exclude=tuple(ranges))
        aws.import_sagemaker()
        from sagemaker.tuner import HyperparameterTuner

        given = split_overrides(overrides).hyperparameters
        notes = [f"{k}={given[k]} is replaced by the tuned range" for k in ranges if k in given]
        tuner_kwargs = {
            "estimator": job.estimator,
            "objective_metric_name": str(tune_cfg.objective_metric_name),
            "hyperparameter_ranges": ranges,
            "metric_definitions": launch_train.metric_definitions(),
            "strategy": str(tune_cfg.strategy),
            "objective_type": str(tune_cfg.objective_type),
            "max_jobs": int(tune_cfg.max_jobs),
            "max_parallel_jobs": int(tune_cfg.max_parallel_jobs),
            "early_stopping_type": str(tune_cfg.early_stopping_type),
            "base_tuning_job_name": str(tune_cfg.base_tuning_job_name),
            "tags": job.kwargs["tags"] or None,
        }
        with aws_errors("checking the tuning job settings"):
            tuner = HyperparameterTuner(**tuner_kwargs)

        region = job.plan.region
        record = job.record(overrides)
        record.update(
            {
                "tuning_job_name": name,
                "objective": f"{tuner_kwargs['objective_type']} {tuner_kwargs['objective_metric_name']}",
                "ranges": {k: v.as_tuning_range(k) for k, v in ranges.items()},
                "max_jobs": tuner_kwargs["max_jobs"],
                "max_parallel_jobs": tuner_kwargs["max_parallel_jobs"],
                "console_url": f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
                f"#/hyper-tuning-jobs/{name}",
            }
        )
        record.pop("job_name", None)
        record.pop("model_data", None)

        def rows(uris: dict[str, str], actions: dict[str, str] | None = None) -> dict[str, Any]:
            base = job.rows(uris, actions)
            base.pop("job name", None)
            base.pop("wait", None)
            out = {
                "tuning job": name,
                "objective": record["objective"],
                "strategy": tuner_kwargs["strategy"],
                "max jobs": f"{tuner_kwargs['max_jobs']} ({tuner_kwargs['max_parallel_jobs']} in parallel)",
                "early stopping": tuner_kwargs["early_stopping_type"],
                **_range_rows(ranges),
                **base,
            }
            out["static hyperparameters"] = out.pop("hyperparameters")
            for i, note in enumerate(notes):
                out[f"note {i + 1}"] = note
            return out

        if job.dry:
            aws.dry_run("SageMaker hyperparameter tuning job", rows(job.channel_uris()))
            record["status"] = "dry run"
            launch_train._write_record(record, run_dir)
            return record

        uris, actions = job.upload_channels()
        record["channels"] = uris
        aws.print_plan("SageMaker hyperparameter tuning job", rows(uris, actions))
        inputs = {channel: launch_train._training_input(uri) for channel, uri in uris.items()}
        wait = bool(tune_cfg.get("wait", False))
        with aws_errors(f"starting the tuning job {name}"):
            tuner.fit(inputs=inputs, job_name=name, wait=False)
        record["status"] = "submitted"
        aws.info(f"Tuning job {name} submitted: {record['console_url']}")
        if wait:
            aws.info("Waiting for all its training jobs (Ctrl-C stops waiting, not the tuning job).")
            with aws_errors(f"waiting for the tuning job {name}"):
                tuner.wait()
                best = tuner.best_training_job()
            record["status"] = "completed"
            record["best_training_job"] = best
            aws.info(f"Best training job: {best}")
        else:
            aws.info(
                "Not waiting. The best training job so far: `aws sagemaker describe-hyper-parameter-tuning-job "
                f"--hyper-parameter-tuning-job-name {name} --query BestTrainingJob`"
            )
        launch_train._write_record(record, run_dir)
        return record


def run(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    launch_train.quiet_logs()
    return aws.exit_on_error(tune)(cfg, list(hc.overrides.task), run_dir=Path(hc.runtime.output_dir))


@hydra.main(version_base="1.3", config_path=launch_train.CONF_DIR, config_name="launch_tune")
def main(cfg: DictConfig) -> None:
    run(cfg)


__all__ = ["main", "parameter_ranges", "tune"]

if __name__ == "__main__":
    main()
