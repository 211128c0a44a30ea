"""SageMaker automatic model tuning over cola-bert training jobs: `python -m launch.tune <overrides>`.

    python -m launch.tune sagemaker=gpu                                  # the ranges of conf/tune/default.yaml
    python -m launch.tune sagemaker=gpu tune.max_jobs=20 tune.max_parallel_jobs=4 tune.ranges.lr.max=1e-4
    python -m launch.tune experiment=minilm_cola '~tune.ranges.max_epochs' trainer.max_epochs=3 dry_run=true

The training jobs are built exactly like `python -m launch.train`'s; a `HyperparameterTuner` optimises the objective
metric (`val_mcc`: the entry script's final line, the best checkpoint's validation MCC) read from the job logs with
the same metric definitions. Each range is named by the training override it sets (`model.optimizer.lr`, ...): the
tuner's value reaches the container in SM_HPS under that name and is applied like every forwarded override. All
trials share one checkpoint_s3_uri; each writes and resumes only `/opt/ml/checkpoints/<its job name>/`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from cola_bert.console import config_composed, run_hydra
from launch import console, validate
from launch import train as launch_train
from launch.errors import JobFailed, LaunchError, aws_errors, exit_on_error
from launch.overrides import is_launcher_only, refuse_before_hydra, split_overrides
from launch.session import import_sagemaker

OPERATION = "CreateHyperParameterTuningJob"
# tune.* settings → the service model's enum of their values.
CHOICES = {"strategy": "HyperParameterTuningJobStrategyType", "objective_type": "HyperParameterTuningJobObjectiveType",
           "early_stopping_type": "TrainingJobEarlyStoppingType"}  # fmt: skip


def check(tune_cfg: DictConfig) -> None:
    """The tuning job's settings, against the service model and the rules it states only in words."""
    validate.flags(tune_cfg, ("wait",), "tune.")
    for key, shape in CHOICES.items():
        if str(tune_cfg[key]) not in (allowed := validate.enum(shape)):
            raise LaunchError(f"tune.{key}={tune_cfg[key]} must be one of {', '.join(allowed)}.")
    for key, member in (("max_jobs", "MaxNumberOfTrainingJobs"), ("max_parallel_jobs", "MaxParallelTrainingJobs")):
        validate.request_value(tune_cfg.get(key), f"tune.{key}", OPERATION,
                               f"HyperParameterTuningJobConfig.ResourceLimits.{member}")
    # HyperParameterTuningJobConfig.TrainingJobEarlyStoppingType: "Because the Hyperband strategy has its own advanced
    # internal early stopping mechanism, TrainingJobEarlyStoppingType must be OFF to use Hyperband."
    if str(tune_cfg.strategy) == "Hyperband" and str(tune_cfg.early_stopping_type) != "Off":
        raise LaunchError(f"tune.strategy=Hyperband stops unpromising training jobs itself, so SageMaker refuses "
                          f"tune.early_stopping_type={tune_cfg.early_stopping_type} with it: pass "
                          "tune.early_stopping_type=Off, or choose another tune.strategy.")  # fmt: skip
    names = {d["Name"] for d in launch_train.metric_definitions()}
    if str(tune_cfg.objective_metric_name) not in names:
        raise LaunchError(f"tune.objective_metric_name={tune_cfg.objective_metric_name} is not one of the metrics the "
                          f"training script prints: {', '.join(sorted(names))}.")  # fmt: skip


def parameter_ranges(tune_cfg: DictConfig) -> dict[str, Any]:
    """`tune.ranges` → {override key: ContinuousParameter | IntegerParameter | CategoricalParameter}."""
    import_sagemaker()
    from sagemaker import tuner

    ranges: dict[str, Any] = {}
    not_categorical: list[str] = []
    for name, spec in (tune_cfg.get("ranges") or {}).items():
        if spec is None:
            continue
        where = f"tune.ranges.{name}"
        if not isinstance(spec, DictConfig):
            raise LaunchError(f"{where}={spec} is not a range: give its hyperparameter, type (continuous, integer or "
                              "categorical) and min/max or values, as in conf/tune/default.yaml.")  # fmt: skip
        key = str(spec.get("hyperparameter") or "")
        if not key:
            raise LaunchError(f"{where}.hyperparameter is missing: the override it sets, e.g. data.batch_size.")
        if is_launcher_only(key):
            raise LaunchError(f"{where}.hyperparameter={key} is not a training override (it stays on this machine).")
        kind, scaling = str(spec.get("type", "")).lower(), str(spec.get("scaling") or "Auto")
        if scaling not in (allowed := validate.enum("HyperParameterScalingType")):
            raise LaunchError(f"{where}.scaling={scaling} must be one of {', '.join(allowed)}.")
        if kind in ("continuous", "integer"):
            low, high = spec.get("min"), spec.get("max")
            number = (int, float) if kind == "continuous" else int
            if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)) or low >= high:
                raise LaunchError(f"{where} needs {'numbers' if kind == 'continuous' else 'whole numbers'} min < max "
                                  f"(min={low}, max={high}).")  # fmt: skip
            if scaling in ("Logarithmic", "ReverseLogarithmic") and low <= 0:
                raise LaunchError(f"{where}: {scaling} scaling needs min > 0 (min={low}).")
            cls, cast = (tuner.ContinuousParameter, float) if kind == "continuous" else (tuner.IntegerParameter, int)
            ranges[key] = cls(cast(low), cast(high), scaling_type=scaling)
            not_categorical.append(f"{where} ({kind})")
        elif kind == "categorical":
            values = spec.get("values")
            if not isinstance(values, ListConfig):
                raise LaunchError(f"{where}.values={values} is not a list of choices: give them as a list, e.g. "
                                  f"{where}.values=[16,32,64].")  # fmt: skip
            ranges[key] = tuner.CategoricalParameter(list(OmegaConf.to_container(values, resolve=True)))
            validate.request_value(ranges[key].values, f"{where}.values", OPERATION,
                                   "HyperParameterTuningJobConfig.ParameterRanges.CategoricalParameterRanges.Values")
        else:
            raise LaunchError(f"{where}.type={kind or None} must be one of continuous, integer, categorical.")
    if not ranges:
        raise LaunchError("tune.ranges is empty: give at least one range to tune (see conf/tune/default.yaml).")
    # Grid search tries every combination of categorical values; SageMaker refuses other ranges with it.
    if str(tune_cfg.strategy) == "Grid" and not_categorical:
        raise LaunchError(f"tune.strategy=Grid searches categorical ranges only, and {', '.join(not_categorical)} "
                          f"{'is' if len(not_categorical) == 1 else 'are'} not: drop them ('~tune.ranges.<name>'), "
                          "make them categorical (type: categorical, values: [...]), or choose another tune.strategy.")
    return ranges


def tuning_job_name(tune_cfg: DictConfig) -> str:
    """<base, cut to 16 characters>-<unix time>-<4 random hex digits>: unique even for two runs in the same second
    (each run uploads code/<name>/source/sourcedir.tar.gz, which its trials download later)."""
    name = import_sagemaker().utils.unique_name_from_base(
        str(tune_cfg.get("base_tuning_job_name") or "cola-bert-tune"), max_length=32)  # fmt: skip
    return validate.resource_name(name, "tune.base_tuning_job_name (with its timestamp and random suffix)", OPERATION,
                                  "HyperParameterTuningJobName")  # fmt: skip


def tune(cfg: DictConfig, overrides: list[str], *, run_dir: Path | None = None) -> dict[str, Any]:
    tune_cfg = cfg.tune
    check(tune_cfg)
    ranges = parameter_ranges(tune_cfg)
    name = tuning_job_name(tune_cfg)
    settings = {k: str(tune_cfg[k]) for k in ("objective_metric_name", *CHOICES)}
    limits = {"max_jobs": int(tune_cfg.max_jobs), "max_parallel_jobs": int(tune_cfg.max_parallel_jobs)}
    if settings["strategy"] == "Grid":  # one training job per combination
        limits["max_jobs"] = math.prod(len(r.values) for r in ranges.values())
    with tempfile.TemporaryDirectory(prefix="cola-bert-tune-") as tmp:
        job = launch_train.prepare_job(cfg, overrides, Path(tmp), job_name=name, tuned=tuple(ranges),
                                       objective=settings["objective_metric_name"])  # fmt: skip
        from sagemaker.exceptions import UnexpectedStatusException
        from sagemaker.tuner import HyperparameterTuner

        with aws_errors("checking the tuning job settings"):
            tuner = HyperparameterTuner(
                estimator=job.estimator, hyperparameter_ranges=ranges, tags=job.kwargs.get("tags"),
                metric_definitions=job.kwargs["metric_definitions"],
                base_tuning_job_name=str(tune_cfg.base_tuning_job_name), **settings, **limits,
            )  # fmt: skip
        record = {k: v for k, v in job.record(overrides).items() if k not in ("job_name", "model_data")}
        record.update(
            tuning_job_name=name, objective=f"{settings['objective_type']} {settings['objective_metric_name']}",
            ranges={k: v.as_tuning_range(k) for k, v in ranges.items()}, **limits,
            console_url=launch_train.console_url(job.ctx.region, f"hyper-tuning-jobs/{name}"),
        )  # fmt: skip
        given = split_overrides(overrides).hyperparameters

        def rows() -> dict[str, Any]:
            out: dict[str, Any] = {"tuning job": name, "objective": record["objective"], **settings, **limits}
            for key, r in record["ranges"].items():
                out[f"range {key}"] = r.get("Values") or f"[{r['MinValue']}, {r['MaxValue']}] {r['ScalingType']}"
            out |= {k: v for k, v in job.rows().items() if k not in ("job name", "wait")}
            out["static hyperparameters"] = out.pop("hyperparameters")
            return out | {f"note: {k}": "replaced by the tuned range" for k in ranges if k in given}

        inputs = job.plan("SageMaker hyperparameter tuning job", rows, record, run_dir)
        if inputs is None:
            return record
        with aws_errors(f"starting the tuning job {name}"):
            tuner.fit(inputs=inputs, job_name=name, wait=False)
    record["status"] = "submitted"
    console.info(f"Tuning job {name} submitted: {record['console_url']}")
    if not tune_cfg.get("wait", False):
        console.info("Not waiting. The best training job so far: `aws sagemaker describe-hyper-parameter-tuning-job "
                     f"--hyper-parameter-tuning-job-name {name} --query BestTrainingJob`")  # fmt: skip
        launch_train.write_record(record, run_dir)
        return record
    console.info("Waiting for all its training jobs (Ctrl-C stops waiting, not the tuning job).")
    with aws_errors(f"waiting for the tuning job {name}"):
        with contextlib.suppress(UnexpectedStatusException):
            tuner.wait()  # a Failed job raises (reported below), a Stopped one only logs a warning
        described = tuner.describe()
    status, best = described.get("HyperParameterTuningJobStatus"), described.get("BestTrainingJob") or {}
    record.update(status=str(status).lower(), best_training_job=best.get("TrainingJobName"))
    if status != "Completed" or not best:
        reason = f": {described['FailureReason']}" if described.get("FailureReason") else ""
        so_far = (f" Its best training job so far: {best['TrainingJobName']}." if best else
                  f" No training job reported {settings['objective_metric_name']}, so there is no best one.")
        record["error"] = (f"Tuning job {name} ended {status}{reason}.{so_far} See its training jobs and their logs "
                           f"at {record['console_url']}")  # fmt: skip
        launch_train.write_record(record, run_dir)
        raise JobFailed(record["error"])
    console.info(f"Best training job: {record['best_training_job']}")
    console.info(f"Download its model: python -m launch.train attach={record['best_training_job']}")
    launch_train.write_record(record, run_dir)
    return record


@hydra.main(version_base="1.3", config_path=launch_train.CONF_DIR, config_name="launch_tune")
def main(cfg: DictConfig) -> None:
    config_composed()
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    launch_train.quiet_logs()
    exit_on_error(tune)(cfg, list(hc.overrides.task), run_dir=Path(hc.runtime.output_dir))


if __name__ == "__main__":
    exit_on_error(refuse_before_hydra)(sys.argv[1:])
    run_hydra(main)
