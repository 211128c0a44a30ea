"""Run `python -m cola_bert.train <overrides>` as a SageMaker training job: `python -m launch.train <overrides>`.

    python -m launch.train experiment=minilm_cola sagemaker=gpu                   # one ml.g5.xlarge
    python -m launch.train model.optimizer.lr=3e-5 trainer.max_epochs=3           # sagemaker=cpu (default)
    python -m launch.train sagemaker=multi_gpu                                    # 2 GPU hosts, torchrun + DDP
    python -m launch.train sagemaker=spot                                         # managed spot, resumes itself
    python -m launch.train -m model.optimizer.lr=1e-5,3e-5 sagemaker=gpu          # one job per combination
    python -m launch.train ... dry_run=true                                       # print the job, no AWS call

Same Hydra configs as the local CLI (conf/launch_train.yaml = conf/train.yaml + `aws` + a `sagemaker` option).
Training overrides become the job's hyperparameters (launch/overrides.py) and are applied to conf/train.yaml in
the container by launch/entry.py; the CoLA splits are prepared here and uploaded once (launch/channels.py); the
source_dir (cola_bert/, conf/, entry.py, requirements.txt) is staged from this checkout (launch/source_dir.py).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from cola_bert.sweep import SweepTable, describe_failure
from launch import aws, channels, source_dir
from launch.aws import LaunchError, aws_errors
from launch.overrides import SplitOverrides, split_overrides

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
JOB_RECORD = "sagemaker_job.json"
JOBS_TABLE = "sagemaker_jobs.csv"
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/looked-up-at-launch"
PLACEHOLDER_BUCKET = "bucket-looked-up-at-launch"
JOB_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")

# Numbers as printed by the training script (`{:.6f}`, `{:.1f}`, ints), optionally signed / in exponent notation.
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_definitions() -> list[dict[str, str]]:
    """Regexes for the plain lines the training script prints (cola_bert.callbacks.EpochSummary, rank 0):

        epoch=N train_loss=X val_loss=X val_mcc=X val_accuracy=X val_f1=X samples_per_second=X   (each epoch)
        step=N epoch=E train_loss_step=X                                   (every print_every_n_steps steps)
        best_epoch=N val_loss=X val_mcc=X val_accuracy=X val_f1=X          (the entry script, last: the best ckpt)

    SageMaker records each match in CloudWatch and the console; a tuning job optimises the final `val_mcc`.
    """
    from cola_bert.callbacks import EPOCH_LINE_KEYS

    defs = [{"Name": short, "Regex": rf"\b{short}={NUMBER}"} for short, _ in EPOCH_LINE_KEYS]
    defs += [
        {"Name": "epoch", "Regex": r"(?:^|\s)epoch=([0-9]+)"},
        {"Name": "train_loss_step", "Regex": rf"\btrain_loss_step={NUMBER}"},
        {"Name": "samples_per_second", "Regex": rf"\bsamples_per_second={NUMBER}"},
        {"Name": "test_mcc", "Regex": rf"\btest_mcc={NUMBER}"},
        {"Name": "test_accuracy", "Regex": rf"\btest_accuracy={NUMBER}"},
    ]
    return defs


# --------------------------------------------------------------------------------------------------------------------
# Job settings
# --------------------------------------------------------------------------------------------------------------------


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _opt(node: Any, key: str, default: Any = None) -> Any:
    value = node.get(key, default) if node is not None else default
    if isinstance(value, str) and value.strip().lower() in ("", "null", "none"):
        return default
    return default if value is None else value


def container_torch_version(framework_version: str) -> str:
    """`2.8` → `2.8.0` (the SDK's version aliases), exact versions unchanged."""
    sm = aws.import_sagemaker()
    try:
        aliases = sm.image_uris.config_for_framework("pytorch")["training"]["version_aliases"]
    except Exception:  # pragma: no cover - SDK layout change: the given version is still a fine pin
        return framework_version
    return aliases.get(str(framework_version), str(framework_version))


def resolve_image_uri(sm_cfg: DictConfig, region: str) -> str:
    """The training image for framework_version/py_version on this instance type (local lookup, no AWS call)."""
    if _opt(sm_cfg, "image_uri"):
        return str(sm_cfg.image_uri)
    fv, pv, instance_type = _opt(sm_cfg, "framework_version"), _opt(sm_cfg, "py_version"), sm_cfg.instance_type
    if not fv or not pv:
        raise LaunchError(
            "Set sagemaker.framework_version and sagemaker.py_version (e.g. sagemaker.framework_version=2.8.0 "
            "sagemaker.py_version=py312), or a custom training image with sagemaker.image_uri=...."
        )
    sm = aws.import_sagemaker()
    try:
        return sm.image_uris.retrieve(
            "pytorch", region, version=str(fv), py_version=str(pv), instance_type=instance_type, image_scope="training"
        )
    except ValueError as err:
        raise LaunchError(
            f"There is no SageMaker PyTorch training image for sagemaker.framework_version={fv} "
            f"sagemaker.py_version={pv} on {instance_type} in {region}: {str(err).strip()} Pick a supported "
            "combination, e.g. sagemaker.framework_version=2.8.0 sagemaker.py_version=py312."
        ) from err


def check_settings(sm_cfg: DictConfig) -> None:
    """What the SDK would only notice late (or never): instance count vs distribution, spot timing."""
    count = int(sm_cfg.instance_count)
    if count < 1:
        raise LaunchError(f"sagemaker.instance_count={count} must be at least 1.")
    distribution = _plain(_opt(sm_cfg, "distribution")) or {}
    if count > 1 and not distribution:
        raise LaunchError(
            f"sagemaker.instance_count={count} without a distribution would train {count} independent copies. Use "
            "sagemaker=multi_gpu (torch_distributed on GPU instances), or sagemaker.instance_count=1."
        )
    max_run = int(sm_cfg.max_run)
    if _opt(sm_cfg, "use_spot_instances", False):
        max_wait = _opt(sm_cfg, "max_wait")
        if max_wait is None or int(max_wait) < max_run:
            raise LaunchError(
                f"Managed spot training needs sagemaker.max_wait >= sagemaker.max_run (max_run={max_run}, "
                f"max_wait={max_wait}): max_wait is the training time plus the time allowed to wait for spot "
                f"capacity, e.g. sagemaker.max_wait={2 * max_run}."
            )
    logs = _logs_arg(sm_cfg.get("logs", "All"))
    if logs not in ("All", "None", "Rules"):
        raise LaunchError(f"sagemaker.logs={logs} must be All or None.")


@dataclass
class JobPlan:
    """Everything about one training job, before any AWS call."""

    job_name: str
    region: str
    image_uri: str
    torch_version: str | None
    hyperparameters: dict[str, str]
    launcher_only: list[str]
    prepared: channels.PreparedData | None  # None when sagemaker.inputs gives existing S3 data
    given_inputs: dict[str, str] | None
    wait: bool
    notes: list[str] = field(default_factory=list)


def job_name_for(sm_cfg: DictConfig, job_num: int | None = None) -> str:
    sm = aws.import_sagemaker()
    fixed = _opt(sm_cfg, "job_name")
    if fixed:
        name = str(fixed) if job_num is None else f"{fixed}-{job_num}"
    else:
        base = str(_opt(sm_cfg, "base_job_name", "cola-bert"))
        name = sm.utils.name_from_base(base if job_num is None else f"{base}-{job_num}")
    if not JOB_NAME_RE.match(name):
        raise LaunchError(
            f"{name!r} is not a valid SageMaker job name: letters, digits and hyphens, starting with a letter or "
            "digit, at most 63 characters (sagemaker.base_job_name / sagemaker.job_name)."
        )
    return name


def plan_job(
    cfg: DictConfig, overrides: list[str], workdir: Path, *, region: str, job_num: int | None = None,
    multirun: bool = False,
) -> JobPlan:  # fmt: skip
    sm_cfg = cfg.sagemaker
    split: SplitOverrides = split_overrides(overrides)
    check_settings(sm_cfg)
    image_uri = resolve_image_uri(sm_cfg, region)
    torch_version = None if _opt(sm_cfg, "image_uri") else container_torch_version(str(sm_cfg.framework_version))
    given = channels.given_inputs(_opt(sm_cfg, "inputs"))
    prepared = None if given else channels.prepare(cfg, workdir / "channels")
    wait = bool(_opt(sm_cfg, "wait", True))
    notes = []
    if multirun and wait:
        wait = False
        notes.append("sweep: not waiting for each job (sagemaker.wait=false)")
    return JobPlan(
        job_name=job_name_for(sm_cfg, job_num),
        region=region,
        image_uri=image_uri,
        torch_version=torch_version,
        hyperparameters=split.hyperparameters,
        launcher_only=split.launcher_only,
        prepared=prepared,
        given_inputs=given,
        wait=wait,
        notes=notes,
    )


@dataclass
class Locations:
    bucket: str
    output_path: str
    code_location: str
    checkpoint_s3_uri: str | None


def locations(sm_cfg: DictConfig, bucket: str, prefix: str, job_name: str) -> Locations:
    output_path = _opt(sm_cfg, "output_path") or aws.s3_uri(bucket, prefix, "jobs")
    code_location = _opt(sm_cfg, "code_location") or aws.s3_uri(bucket, prefix, "code")
    checkpoint = _opt(sm_cfg, "checkpoint_s3_uri")
    if not checkpoint and _opt(sm_cfg, "use_spot_instances", False):
        # One prefix per job: a new job must not resume another job's last.ckpt.
        checkpoint = aws.s3_uri(bucket, prefix, "checkpoints", job_name)
    return Locations(bucket, str(output_path).rstrip("/"), str(code_location).rstrip("/"), checkpoint)


def estimator_kwargs(
    sm_cfg: DictConfig, plan: JobPlan, loc: Locations, *, role: str, staged_dir: Path, session: Any
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "entry_point": source_dir.ENTRY_POINT,
        "source_dir": str(staged_dir),
        "role": role,
        "instance_type": str(sm_cfg.instance_type),
        "instance_count": int(sm_cfg.instance_count),
        "volume_size": int(sm_cfg.volume_size),
        "max_run": int(sm_cfg.max_run),
        "base_job_name": str(_opt(sm_cfg, "base_job_name", "cola-bert")),
        "output_path": loc.output_path,
        "code_location": loc.code_location,
        "hyperparameters": dict(plan.hyperparameters),
        "metric_definitions": metric_definitions(),
        "environment": {str(k): str(v) for k, v in (_plain(_opt(sm_cfg, "environment")) or {}).items()},
        "tags": [{"Key": str(k), "Value": str(v)} for k, v in (_plain(_opt(sm_cfg, "tags")) or {}).items()],
        # No SageMaker Debugger hook / profiler rule jobs: they add containers, cost and log noise.
        "disable_profiler": True,
        "debugger_hook_config": False,
        "sagemaker_session": session,
    }
    if _opt(sm_cfg, "image_uri"):
        kwargs["image_uri"] = str(sm_cfg.image_uri)
    else:
        kwargs["framework_version"] = str(sm_cfg.framework_version)
        kwargs["py_version"] = str(sm_cfg.py_version)
    distribution = _plain(_opt(sm_cfg, "distribution"))
    if distribution:
        kwargs["distribution"] = distribution
    if _opt(sm_cfg, "use_spot_instances", False):
        kwargs["use_spot_instances"] = True
        kwargs["max_wait"] = int(sm_cfg.max_wait)
    if loc.checkpoint_s3_uri:
        kwargs["checkpoint_s3_uri"] = loc.checkpoint_s3_uri
        kwargs["checkpoint_local_path"] = str(_opt(sm_cfg, "checkpoint_local_path", "/opt/ml/checkpoints"))
    return kwargs


def build_estimator(kwargs: dict[str, Any]):
    """`sagemaker.pytorch.PyTorch(**kwargs)`; the SDK's own checks (torch_distributed versions and instance types,
    ...) become one-paragraph errors before anything is uploaded."""
    aws.import_sagemaker()
    from sagemaker.pytorch import PyTorch

    try:
        return PyTorch(**kwargs)
    except ValueError as err:
        text = " ".join(str(err).split())
        raise LaunchError(
            f"The SageMaker SDK rejected the job settings (sagemaker.instance_type={kwargs.get('instance_type')}, "
            f"instance_count={kwargs.get('instance_count')}, framework_version={kwargs.get('framework_version')}, "
            f"py_version={kwargs.get('py_version')}, distribution={json.dumps(kwargs.get('distribution'))}): {text}"
            + (
                " torch_distributed (sagemaker=multi_gpu) needs GPU (ml.p*/ml.g*) or Trainium instances and an exact "
                "framework_version from the SDK's list, e.g. sagemaker.framework_version=2.8.0."
                if kwargs.get("distribution")
                else ""
            )
        ) from err


def console_url(region: str, job_name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{job_name}"


def _channel_rows(plan: JobPlan, uris: dict[str, str], actions: dict[str, str] | None = None) -> dict[str, str]:
    rows = {}
    for channel, uri in uris.items():
        if plan.prepared is not None and channel in plan.prepared.files:
            detail = f"{plan.prepared.rows[channel]} rows"
            if actions and channel in actions:
                detail += f", {actions[channel]}"
            rows[f"channel {channel}"] = f"{uri} ({detail})"
        else:
            rows[f"channel {channel}"] = uri
    return rows


def plan_rows(
    plan: JobPlan, kwargs: dict[str, Any], uris: dict[str, str], staged: Path, targets: dict[str, str],
    actions: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    spot = "no"
    if kwargs.get("use_spot_instances"):
        spot = f"yes (max_wait {kwargs['max_wait']} s)"
    rows: dict[str, Any] = {
        "job name": plan.job_name,
        **targets,
        "image uri": plan.image_uri,
        "entry point": f"{kwargs['entry_point']} (source_dir: {source_dir.describe(staged)})",
        "instances": f"{kwargs['instance_type']} x {kwargs['instance_count']}",
        "distribution": kwargs.get("distribution") or "-",
        "spot": spot,
        "checkpoints": kwargs.get("checkpoint_s3_uri") or "- (/opt/ml/checkpoints, not synced)",
        "max run": f"{kwargs['max_run']} s",
        "volume": f"{kwargs['volume_size']} GiB",
        "output path": kwargs["output_path"],
        "code location": kwargs["code_location"],
        "data": plan.prepared.source if plan.prepared else "sagemaker.inputs (existing S3 data)",
        **_channel_rows(plan, uris, actions),
        "hyperparameters": plan.hyperparameters or "{} (the defaults of conf/train.yaml)",
        "launcher only": plan.launcher_only or "-",
        "metrics": [d["Name"] for d in kwargs["metric_definitions"]],
        "environment": kwargs["environment"],
        "tags": {t["Key"]: t["Value"] for t in kwargs["tags"]},
        "requirements": ", ".join(source_dir.REQUIREMENTS)
        + (f" (torch=={plan.torch_version} from the container)" if plan.torch_version else ""),
        "wait": f"{plan.wait} (logs: {kwargs.get('_logs', '-')})" if plan.wait else "no",
    }
    if plan.notes:
        rows["notes"] = "; ".join(plan.notes)
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------------------------------


def _record_path(run_dir: Path | None) -> Path | None:
    return Path(run_dir) / JOB_RECORD if run_dir else None


def _write_record(record: dict[str, Any], run_dir: Path | None) -> None:
    path = _record_path(run_dir)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def _logs_arg(value: Any) -> str:
    """`sagemaker.logs`: All | None (also true/false/null) → what Estimator.fit(logs=...) takes."""
    if value is None or value is False:
        return "None"
    if value is True:
        return "All"
    text = str(value).strip()
    return {"true": "All", "false": "None", "null": "None", "none": "None", "all": "All"}.get(text.lower(), text)


@dataclass
class PreparedJob:
    """A checked job: plan, sessions, staged source_dir, estimator arguments and the estimator itself."""

    plan: JobPlan
    ctx: aws.AwsContext
    staged: Path
    kwargs: dict[str, Any]
    estimator: Any
    targets: dict[str, str]
    bucket: str
    prefix: str
    locations: Locations
    logs: Any
    dry: bool

    def channel_uris(self) -> dict[str, str]:
        return self.plan.given_inputs or channels.channel_uris(self.bucket, self.prefix, self.plan.prepared)

    def rows(self, uris: dict[str, str], actions: dict[str, str] | None = None) -> dict[str, Any]:
        display = {**self.kwargs, "_logs": self.logs}
        return plan_rows(self.plan, display, uris, self.staged, self.targets, actions)

    def upload_channels(self) -> tuple[dict[str, str], dict[str, str] | None]:
        if self.plan.prepared is None:
            return self.channel_uris(), None
        return channels.upload(self.ctx, self.plan.prepared)

    def record(self, overrides: list[str]) -> dict[str, Any]:
        plan, kwargs, loc = self.plan, self.kwargs, self.locations
        return {
            "job_name": plan.job_name,
            "region": plan.region,
            "image_uri": plan.image_uri,
            "instance_type": kwargs["instance_type"],
            "instance_count": kwargs["instance_count"],
            "distribution": kwargs.get("distribution"),
            "spot": bool(kwargs.get("use_spot_instances")),
            "checkpoint_s3_uri": kwargs.get("checkpoint_s3_uri"),
            "hyperparameters": plan.hyperparameters,
            "overrides": list(overrides),
            "channels": self.channel_uris(),
            "rows": dict(plan.prepared.rows) if plan.prepared else None,
            "output_path": loc.output_path,
            "model_data": f"{loc.output_path}/{plan.job_name}/output/model.tar.gz",
            "console_url": console_url(plan.region, plan.job_name),
        }


def prepare_job(
    cfg: DictConfig, overrides: list[str], workdir: Path, *, job_num: int | None = None, multirun: bool = False,
    job_name: str | None = None, static_exclude: tuple[str, ...] = (),
) -> PreparedJob:  # fmt: skip
    """Everything up to the first AWS call that changes something: checks, channel files, source_dir, estimator.

    Dry runs make no AWS call at all; otherwise the role and bucket are looked up (STS/S3 reads, default bucket
    creation). `static_exclude`: hyperparameters left out of the estimator (a tuner sets them).
    """
    aws.quiet_sagemaker_sdk()
    sm_cfg = cfg.sagemaker
    dry = bool(cfg.get("dry_run", False))
    region = aws.resolve_region(cfg.aws)
    plan = plan_job(cfg, overrides, workdir, region=region, job_num=job_num, multirun=multirun)
    if job_name:
        plan.job_name = job_name
    for key in static_exclude:
        plan.hyperparameters.pop(key, None)
    staged = source_dir.stage(workdir / "source", torch_version=plan.torch_version)

    ctx = aws.AwsContext(cfg.aws, region=region)  # sessions only: no AWS call yet
    prefix = aws.resolve_prefix(cfg.aws)
    # The SDK's own checks (torch_distributed versions / instance types, ...) before any AWS call or upload.
    with aws_errors("checking the training job settings"):
        placeholder = locations(sm_cfg, PLACEHOLDER_BUCKET, prefix, plan.job_name)
        estimator = build_estimator(
            estimator_kwargs(sm_cfg, plan, placeholder, role=PLACEHOLDER_ROLE, staged_dir=staged, session=ctx.session)
        )
    if dry:
        targets = aws.describe_targets(cfg.aws, region)
        bucket = _opt(cfg.aws, "bucket") or f"sagemaker-{region}-<account>"
        role = _opt(cfg.aws, "role") or PLACEHOLDER_ROLE
    else:
        role = ctx.role  # before any upload: a missing role is the most common first error
        bucket = ctx.bucket
        targets = {"region": region, "role": role, "bucket": bucket, "prefix": prefix or "-"}
    loc = locations(sm_cfg, bucket, prefix, plan.job_name)
    kwargs = estimator_kwargs(sm_cfg, plan, loc, role=role, staged_dir=staged, session=ctx.session)
    if not dry:
        with aws_errors("checking the training job settings"):
            estimator = build_estimator(kwargs)
    logs = _logs_arg(sm_cfg.get("logs", "All"))
    return PreparedJob(plan, ctx, staged, kwargs, estimator, targets, bucket, prefix, loc, logs, dry)


def launch(
    cfg: DictConfig, overrides: list[str], *, run_dir: Path | None = None, job_num: int | None = None,
    multirun: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Prepare, (dry-)print and submit one training job. `overrides`: the command line's task overrides."""
    with tempfile.TemporaryDirectory(prefix="cola-bert-sm-") as tmp:
        job = prepare_job(cfg, overrides, Path(tmp), job_num=job_num, multirun=multirun)
        plan = job.plan
        record = job.record(overrides)
        if job.dry:
            aws.dry_run("SageMaker training job", job.rows(job.channel_uris()))
            record["status"] = "dry run"
            _write_record(record, run_dir)
            return record

        uris, actions = job.upload_channels()
        record["channels"] = uris
        aws.print_plan("SageMaker training job", job.rows(uris, actions))
        inputs = {channel: _training_input(uri) for channel, uri in uris.items()}
        if plan.wait:
            aws.info(f"Starting {plan.job_name} and waiting for it (Ctrl-C stops waiting, not the job).")
        with aws_errors(f"starting the training job {plan.job_name}"):
            job.estimator.fit(inputs=inputs, job_name=plan.job_name, wait=plan.wait, logs=job.logs)
        record["status"] = "submitted"
        if plan.wait:
            with aws_errors(f"reading the result of {plan.job_name}"):
                description = job.estimator.latest_training_job.describe()
            record["status"] = str(description.get("TrainingJobStatus", "Completed")).lower()
            record["model_data"] = description.get("ModelArtifacts", {}).get("S3ModelArtifacts", record["model_data"])
            aws.info("")
            aws.info(f"Training job {plan.job_name}: {description.get('TrainingJobStatus')}. {record['console_url']}")
            aws.info(f"Model artifact (HF model + metrics.json + config.yaml): {record['model_data']}")
        else:
            aws.info(f"Training job {plan.job_name} submitted: {record['console_url']}")
            aws.info(
                f"Not waiting. Follow it in the console or with `aws sagemaker describe-training-job "
                f"--training-job-name {plan.job_name}`; its model will be {record['model_data']}"
            )
        _write_record(record, run_dir)
        return record


def _training_input(uri: str):
    aws.import_sagemaker()
    from sagemaker.inputs import TrainingInput

    return TrainingInput(s3_data=uri)


# --------------------------------------------------------------------------------------------------------------------
# Sweeps (-m): one job per combination, table of jobs
# --------------------------------------------------------------------------------------------------------------------

TABLE_COLUMNS = ("job", "job_name", "status", "overrides", "instance", "console_url", "model_data", "error")


class SageMakerJobsTable(SweepTable):
    """Hydra callback for `python -m launch.train -m ...`: keeps `sagemaker_jobs.csv` in the sweep directory (one row
    per submitted job: its name and overrides) and prints the table when the sweep ends."""

    file_name = JOBS_TABLE
    columns = TABLE_COLUMNS

    def row(self, config: DictConfig, job_return: Any) -> dict[str, Any]:
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.COMPLETED and isinstance(job_return._return_value, dict):
            record = job_return._return_value
        else:
            record = {"status": "failed", "error": describe_failure(job_return)}
        instance = ""
        if record.get("instance_type"):
            instance = f"{record['instance_type']} x {record.get('instance_count', 1)}"
        return {
            "job_name": record.get("job_name", ""),
            "status": record.get("status", ""),
            "instance": instance,
            "console_url": record.get("console_url", ""),
            "model_data": record.get("model_data", ""),
            "error": str(record.get("error", "")).replace("\n", " "),
        }

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.rows:
            return
        from rich.table import Table

        table = Table(title="SageMaker training jobs")
        table.add_column("job")
        table.add_column("job_name", no_wrap=True)  # copy-pasteable
        table.add_column("status", no_wrap=True)
        table.add_column("overrides", overflow="fold")
        for row in self.sorted_rows():
            table.add_row(str(row["job"]), row["job_name"] or "-", row["status"], row["overrides"])
        aws.console.print(table)
        aws.info(f"Written to {self.path}")
        failed = [r for r in self.rows if r["status"] == "failed"]
        if failed:
            aws.print_error(f"{len(failed)} of {len(self.rows)} jobs could not be submitted (see above).")
            raise SystemExit(1)


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def quiet_logs() -> None:
    """For the CLIs, besides launch.aws.quiet_sagemaker_sdk: SDK v2 logs its telemetry notice at INFO even when
    telemetry is opted out, and `sagemaker.experiments` calls logging.basicConfig(level=INFO) when Estimator.fit
    imports it, which would print every SDK INFO record ("Creating training-job with name ...") to stderr. The
    launchers print their own progress lines; SDK warnings and errors still show."""
    aws.import_sagemaker()
    try:
        import sagemaker.experiments._metrics  # noqa: F401  (its basicConfig(INFO) runs now, not mid-launch)
    except ImportError:  # pragma: no cover - SDK layout change
        pass
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("sagemaker").setLevel(logging.WARNING)


def _hydra_context() -> tuple[list[str], Path | None, int | None, bool]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return list(hc.overrides.task), Path(hc.runtime.output_dir), (hc.job.num if multirun else None), multirun


def run(cfg: DictConfig) -> dict[str, Any]:
    overrides, run_dir, job_num, multirun = _hydra_context()
    quiet_logs()
    if not multirun:
        return aws.exit_on_error(launch)(cfg, overrides, run_dir=run_dir)
    aws.console.print(f"[bold]Sweep job #{job_num}:[/] {escape(' '.join(overrides))}")
    try:  # a sweep goes on with the next combination; the table lists what failed
        with aws_errors():
            return launch(cfg, overrides, run_dir=run_dir, job_num=job_num, multirun=True)
    except LaunchError as err:
        aws.print_error(str(err))
        return {"status": "failed", "error": str(err), "overrides": overrides}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="launch_train")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run(cfg)  # in a sweep, SageMakerJobsTable reads this record


__all__ = ["SageMakerJobsTable", "launch", "main", "metric_definitions", "prepare_job"]

if __name__ == "__main__":
    main()
