"""The training job's estimator: `sagemaker.*` settings → `sagemaker.pytorch.PyTorch` keyword arguments, the checks
AWS or the SDK would only make after the uploads, the training image, the job name, the metric definitions and the
HyperParameters map exactly as CreateTrainingJob will carry it. Used by launch.train and launch.tune; no AWS call.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from launch import source_dir, validate
from launch.errors import LaunchError, aws_errors
from launch.session import import_sagemaker, opt

NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"  # as printed by the training script

# `sagemaker.*` keys used by the launcher itself rather than passed to the estimator.
LAUNCHER_KEYS = ("inputs", "wait", "logs", "job_name")
_STAGED = "the launcher stages cola_bert/, conf/ and requirements.txt"
_OVERRIDES = "training overrides on the command line become the job's hyperparameters"
# Estimator arguments the launcher sets itself, and where the user's setting goes instead.
MANAGED = {
    "entry_point": "the launcher stages cola_bert/sagemaker_entry.py",
    "source_dir": _STAGED,
    "dependencies": _STAGED,
    "git_config": "the code comes from this checkout",
    "container_entry_point": "the toolkit must start cola_bert/sagemaker_entry.py",
    "container_arguments": _OVERRIDES,
    "training_recipe": "recipes are not used",
    "recipe_overrides": "recipes are not used",
    "role": "set aws.role=arn:aws:iam::<account>:role/<name>",
    "hyperparameters": _OVERRIDES,
    "metric_definitions": "they match what the training script prints (launch.estimator.metric_definitions)",
    "sagemaker_session": "set aws.region / aws.profile / AWS_ENDPOINT_URL",
    "instance_groups": "use instance_type and instance_count",
    "checkpoint_local_path": "sagemaker_entry writes /opt/ml/checkpoints/<job name>/, the directory SageMaker syncs",
    "disable_profiler": "the launcher turns SageMaker Profiler off (its side jobs only add cost and log noise)",
    "debugger_hook_config": "the launcher turns SageMaker Debugger off (its side jobs only add cost and log noise)",
}
# What the launcher sets for the two keys above.
FIXED = {"disable_profiler": True, "debugger_hook_config": False}
# Estimator arguments → where CreateTrainingJob carries them: checked against botocore's service model (type,
# min/max, pattern) before anything is uploaded.
REQUEST_MEMBERS = {
    "instance_count": "ResourceConfig.InstanceCount",
    "volume_size": "ResourceConfig.VolumeSizeInGB",
    "keep_alive_period_in_seconds": "ResourceConfig.KeepAlivePeriodInSeconds",
    "volume_kms_key": "ResourceConfig.VolumeKmsKeyId",
    "output_kms_key": "OutputDataConfig.KmsKeyId",
    "output_path": "OutputDataConfig.S3OutputPath",
    "checkpoint_s3_uri": "CheckpointConfig.S3Uri",
    "max_run": "StoppingCondition.MaxRuntimeInSeconds",
    "max_wait": "StoppingCondition.MaxWaitTimeInSeconds",
    "max_retry_attempts": "RetryStrategy.MaximumRetryAttempts",
    "use_spot_instances": "EnableManagedSpotTraining",
    "enable_network_isolation": "EnableNetworkIsolation",
    "subnets": "VpcConfig.Subnets",
    "security_group_ids": "VpcConfig.SecurityGroupIds",
    "tags": "Tags",
    "environment": "Environment",
}


def metric_definitions() -> list[dict[str, str]]:
    """Regexes for the plain lines the training script prints (cola_bert.callbacks.EpochSummary, rank 0):

        epoch=N train_loss=X val_loss=X val_mcc=X val_accuracy=X val_f1=X samples_per_second=X   (each epoch)
        step=N epoch=E train_loss_step=X                                   (every print_every_n_steps steps)
        best_epoch=N val_loss=X val_mcc=X val_accuracy=X val_f1=X          (the entry script, last: the best ckpt)
    """
    from cola_bert.callbacks import EPOCH_LINE_KEYS

    defs = [{"Name": short, "Regex": rf"\b{short}={NUMBER}"} for short, _ in EPOCH_LINE_KEYS]
    defs.append({"Name": "epoch", "Regex": r"(?:^|\s)epoch=([0-9]+)"})
    defs += [{"Name": n, "Regex": rf"\b{n}={NUMBER}"}
             for n in ("train_loss_step", "samples_per_second", "test_mcc", "test_accuracy")]  # fmt: skip
    return defs


@functools.cache
def estimator_arguments() -> frozenset[str]:
    import_sagemaker()
    from sagemaker.estimator import EstimatorBase, Framework
    from sagemaker.pytorch import PyTorch

    names: set[str] = set()
    for cls in (PyTorch, Framework, EstimatorBase):
        names |= {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
    return frozenset(names)


def sdk_settings(sm_cfg: DictConfig) -> dict[str, Any]:
    """The `sagemaker` node as estimator keyword arguments (nulls dropped); unknown or managed keys are refused."""
    accepted = sorted((estimator_arguments() - MANAGED.keys()) | set(LAUNCHER_KEYS))
    settings: dict[str, Any] = {}
    for key in sm_cfg:
        key = str(key)
        if key in MANAGED:
            raise LaunchError(f"sagemaker.{key} cannot be set: {MANAGED[key]}.")
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=3)
            raise LaunchError(
                f"sagemaker.{key} is not an argument of the SageMaker SDK's PyTorch estimator"
                + (f" (did you mean {', '.join('sagemaker.' + c for c in close)}?)" if close else "")
                + f". Accepted keys: {', '.join(accepted)}."
            )
        value = opt(sm_cfg, key)
        if key in LAUNCHER_KEYS or value is None:
            continue
        value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        if key in ("tags", "environment") and (
            not isinstance(value, dict) or any(isinstance(v, (dict, list)) for v in value.values())
        ):
            raise LaunchError(
                f"sagemaker.{key}={validate.console_value(value)} must be a map of names to plain values (strings or "
                f"numbers), one per key: +sagemaker.{key}.{'team=nlp' if key == 'tags' else 'MY_FLAG=1'}."
            )
        if key == "tags":
            value = [{"Key": str(k), "Value": str(v)} for k, v in value.items()]
        elif key == "environment":
            value = {str(k): str(v) for k, v in value.items()}
        elif key in ("framework_version", "py_version"):
            value = str(value)  # `2.8` arrives as a float
        settings[key] = value
    return settings


def check_settings(settings: dict[str, Any], pins: list[str]) -> None:
    """What AWS or the SDK would only notice after the uploads (or never)."""
    validate.instance_type(str(settings.get("instance_type")), "CreateTrainingJob", setting="sagemaker.instance_type")
    for tag in settings.get("tags") or []:
        for part in ("Key", "Value"):
            validate.request_value(tag[part], f"sagemaker.tags.{tag['Key']}", "CreateTrainingJob", f"Tags.{part}")
    for key, member in REQUEST_MEMBERS.items():
        if settings.get(key) is not None:
            validate.request_value(settings[key], f"sagemaker.{key}", "CreateTrainingJob", member)
    count = settings.get("instance_count", 1)  # a whole number by now
    if count < 1:  # the service model allows 0 (for instance groups, which the launcher does not use)
        raise LaunchError(f"sagemaker.instance_count={count} must be at least 1.")
    if count > 1 and not settings.get("distribution"):
        raise LaunchError(
            f"sagemaker.instance_count={count} without a distribution would train {count} independent copies. Use "
            "sagemaker=multi_gpu (torch_distributed on GPU instances), or sagemaker.instance_count=1."
        )
    max_run, max_wait = settings.get("max_run", 86400), settings.get("max_wait")
    if settings.get("use_spot_instances") and (max_wait is None or max_wait < max_run):
        raise LaunchError(
            f"Managed spot training needs sagemaker.max_wait >= sagemaker.max_run (max_run={max_run}, "
            f"max_wait={max_wait}): max_wait is the training time plus the time allowed to wait for spot capacity, "
            f"e.g. sagemaker.max_wait={2 * max_run}."
        )
    if bool(settings.get("subnets")) != bool(settings.get("security_group_ids")):
        raise LaunchError(
            "A VPC needs both sagemaker.subnets=[subnet-...] and sagemaker.security_group_ids=[sg-...] (the job's "
            "VpcConfig); only one was given."
        )
    if settings.get("enable_network_isolation") and not settings.get("image_uri"):
        raise LaunchError(
            "sagemaker.enable_network_isolation=true cuts the training container off the network: it cannot "
            f"pip-install the staged requirements.txt ({', '.join(pins)}), so the job would fail at start. Build an "
            "image that already has them (FROM the SageMaker PyTorch training image, RUN pip install <the pins "
            "above>), push it to ECR and pass sagemaker.image_uri=<account>.dkr.ecr.<region>.amazonaws.com/<repo>:"
            "<tag>; data and code still reach the job through S3 channels."
        )


def logs_setting(value: Any) -> str:
    text = {"true": "All", "all": "All", "false": "None", "none": "None", "null": "None"}.get(str(value).lower())
    if text is None:
        raise LaunchError(f"sagemaker.logs={value} must be All (stream the job's log while waiting) or None.")
    return text


def container_torch_version(settings: dict[str, Any]) -> str | None:
    """The torch version of the SageMaker training image (`2.8` → `2.8.0`, the SDK's version aliases); None for a
    custom `image_uri`."""
    if settings.get("image_uri") or not settings.get("framework_version"):
        return None  # without a framework_version the SDK refuses the estimator (build_estimator)
    sm, version = import_sagemaker(), str(settings["framework_version"])
    return sm.image_uris.config_for_framework("pytorch")["training"].get("version_aliases", {}).get(version, version)


def job_name_for(sm_cfg: DictConfig, job_num: int | None = None) -> str:
    fixed = opt(sm_cfg, "job_name")
    if fixed:
        return validate.resource_name(str(fixed) if job_num is None else f"{fixed}-{job_num}", "sagemaker.job_name")
    base = str(opt(sm_cfg, "base_job_name", "cola-bert"))
    name = import_sagemaker().utils.name_from_base(base if job_num is None else f"{base}-{job_num}")
    return validate.resource_name(name, "sagemaker.base_job_name (with its timestamp)")


def build_estimator(kwargs: dict[str, Any]):
    """`sagemaker.pytorch.PyTorch(**kwargs)` and its training image (the SDK's lookup for framework_version,
    py_version and instance type; no AWS call): the SDK's own checks (versions, torch_distributed instance types,
    ...) become one-paragraph errors before anything is uploaded."""
    import_sagemaker()
    from sagemaker.pytorch import PyTorch

    with aws_errors("checking the training job settings"):
        try:
            sdk_estimator = PyTorch(**kwargs)
            return sdk_estimator, sdk_estimator.training_image_uri()
        except ValueError as err:
            hint = ""
            if kwargs.get("distribution"):
                hint = (" torch_distributed (sagemaker=multi_gpu) needs GPU (ml.p*/ml.g*) or Trainium instances and "
                        "an exact framework_version from the SDK's list, e.g. sagemaker.framework_version=2.8.0.")
            raise LaunchError(
                f"The SageMaker SDK rejected the job settings (sagemaker.instance_type={kwargs.get('instance_type')}, "
                f"instance_count={kwargs.get('instance_count')}, framework_version={kwargs.get('framework_version')}, "
                f"py_version={kwargs.get('py_version')}, distribution={json.dumps(kwargs.get('distribution'))}): "
                f"{' '.join(str(err).split())}{hint}"
            ) from err


def sent_hyperparameters(estimator: Any, job_name: str, code_location: str, region: str, *, tuned: tuple[str, ...] = (),
                         objective: str | None = None) -> dict[str, str]:  # fmt: skip
    """The HyperParameters map CreateTrainingJob will carry: the estimator's (JSON-encoded, with the distribution
    keys) plus the five keys the SDK adds when it stages the code (sagemaker.model's *_PARAM_NAME constants). For a
    tuning job's trials also the `tuned` keys, the `objective` and the estimator's class and module, which the
    tuner adds (HyperparameterTuner._prepare_static_hyperparameters)."""
    from sagemaker import model as sm_model
    from sagemaker.tuner import HyperparameterTuner as Tuner

    sent = dict(estimator.hyperparameters())
    sent.update({
        sm_model.SCRIPT_PARAM_NAME: json.dumps(source_dir.ENTRY_POINT),
        sm_model.DIR_PARAM_NAME: json.dumps(f"{code_location}/{job_name}/source/sourcedir.tar.gz"),
        sm_model.CONTAINER_LOG_LEVEL_PARAM_NAME: json.dumps(logging.INFO),
        sm_model.JOB_NAME_PARAM_NAME: json.dumps(job_name),
        sm_model.SAGEMAKER_REGION_PARAM_NAME: json.dumps(region),
    })  # fmt: skip
    if tuned:
        sent |= {key: "0" for key in tuned} | {"_tuning_objective_metric": str(objective),
                 Tuner.SAGEMAKER_ESTIMATOR_CLASS_NAME: json.dumps(type(estimator).__name__),
                 Tuner.SAGEMAKER_ESTIMATOR_MODULE: json.dumps(estimator.__module__)}  # fmt: skip
    return sent
