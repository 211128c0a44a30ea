"""Run `python -m cola_bert.train <overrides>` as a SageMaker training job: `python -m launch.train <overrides>`.

    python -m launch.train experiment=minilm_cola sagemaker=gpu                   # one ml.g5.xlarge
    python -m launch.train model.optimizer.lr=3e-5 trainer.max_epochs=3           # sagemaker=cpu (default)
    python -m launch.train sagemaker=multi_gpu                                    # 2 GPU hosts, torchrun + DDP
    python -m launch.train sagemaker=spot                                         # managed spot, resumes itself
    python -m launch.train -m model.optimizer.lr=1e-5,3e-5 sagemaker=gpu          # one job per combination
    python -m launch.train ... dry_run=true                                       # print the job, no AWS call
    python -m launch.train attach=JOB_NAME                                        # follow a job, download its model

Same Hydra configs as the local CLI (conf/launch_train.yaml = conf/train.yaml + `aws` + a `sagemaker` option). Every
`sagemaker.*` key is an argument of the SDK's `sagemaker.pytorch.PyTorch` estimator of the same name (or one of the
launcher's own: inputs, wait, logs, job_name); anything else is refused. Training overrides become the job's
hyperparameters (launch/overrides.py), applied in the container by cola_bert.sagemaker_entry; the data channels are
prepared here and uploaded once (launch/channels.py); the source_dir is staged from this checkout with pinned
requirements (launch/source_dir.py). Everything is checked before the first upload (launch/validate.py).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from cola_bert.config import conf_dir
from cola_bert.console import config_composed, run_hydra
from cola_bert.sweep import SweepTable, describe_failure
from launch import channels, console, estimator, source_dir, validate
from launch.errors import LaunchError, aws_errors, exit_on_error
from launch.estimator import logs_setting, metric_definitions
from launch.overrides import SplitOverrides, refuse_before_hydra, split_overrides
from launch.session import AwsContext, import_sagemaker, opt, s3_uri

CONF_DIR = str(conf_dir())
JOB_RECORD = "sagemaker_job.json"
JOBS_TABLE = "sagemaker_jobs.csv"
PLACEHOLDER_ROLE = "arn:aws:iam::000000000000:role/looked-up-at-launch"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# Estimator arguments with a plan row of their own (the image's versions: its URI).
OWN_ROWS = ("instance_type", "instance_count", "use_spot_instances", "max_wait", "checkpoint_s3_uri", "output_path",
            "image_uri", "framework_version", "py_version")  # fmt: skip

# -------------------------------------------------------------------------------------------------------- the job


@dataclass
class PreparedJob:
    """A checked job: everything up to the first AWS call that changes something."""

    name: str
    ctx: AwsContext
    kwargs: dict[str, Any]  # the estimator's
    estimator: Any
    image_uri: str
    split: SplitOverrides
    pins: list[str]
    prepared: channels.PreparedData | None  # None when sagemaker.inputs gives existing S3 data
    uris: dict[str, str]  # channel → S3 URI
    wait: bool
    logs: str
    dry: bool
    notes: list[str] = field(default_factory=list)
    uploads: dict[str, str] = field(default_factory=dict)  # channel → what its upload did

    def plan(self, title: str, rows: Callable[[], dict[str, Any]], record: dict[str, Any], run_dir: Path | None):
        """Print the plan, `rows()`. A dry run stops here: its record is written and None returned. Otherwise the
        channels are uploaded first (the plan says what each upload did) and the job's TrainingInputs returned."""
        if self.dry:
            console.plan(title, rows(), dry_run=True)
            record["status"] = "dry run"
            write_record(record, run_dir)
            return None
        if self.prepared:
            self.uploads = channels.upload(self.ctx, self.prepared)
        console.plan(title, rows())
        from sagemaker.inputs import TrainingInput

        return {channel: TrainingInput(s3_data=uri) for channel, uri in self.uris.items()}

    def rows(self) -> dict[str, Any]:
        kw, ctx = self.kwargs, self.ctx
        rows: dict[str, Any] = {"job name": self.name, **(ctx.describe() if self.dry else {
            "region": ctx.region, "role": kw["role"], "bucket": ctx.bucket, "prefix": ctx.prefix or "-"})}
        rows |= {
            "image uri": self.image_uri,
            "entry point": f"{kw['entry_point']} (source_dir: {source_dir.describe(kw['source_dir'])})",
            "instances": f"{kw['instance_type']} x {kw.get('instance_count', 1)}",
            "spot": f"yes (max_wait {kw['max_wait']} s)" if kw.get("use_spot_instances") else "no",
            "checkpoints": kw.get("checkpoint_s3_uri") or "- (not synced to S3)",
            "output path": kw["output_path"],
        }
        for channel, uri in self.uris.items():
            count = f" ({self.prepared.rows[channel]} rows)" if self.prepared else ""
            rows[f"channel {channel}"] = uri + count + (f", {self.uploads[channel]}" if channel in self.uploads else "")
        rows["hyperparameters"] = self.split.hyperparameters or "{} (the defaults of conf/train.yaml)"
        rows["launcher only"] = self.split.launcher_only or "-"
        rows["requirements"] = " ".join(self.pins) + ("" if kw.get("image_uri") else " (torch from the image)")
        rows["metrics"] = [d["Name"] for d in kw["metric_definitions"]]
        for key, value in kw.items():  # the other settings: the user's and the launcher's S3 locations
            if key not in OWN_ROWS and key not in estimator.MANAGED:
                rows[f"sagemaker.{key}"] = {t["Key"]: t["Value"] for t in value} if key == "tags" else value
        rows["wait"] = f"yes (logs: {self.logs})" if self.wait else "no"
        if self.notes:
            rows["notes"] = "; ".join(self.notes)
        return rows

    def record(self, overrides: list[str]) -> dict[str, Any]:
        """The job as sagemaker_job.json keeps it (and a sweep's table lists it)."""
        region, kw = self.ctx.region, self.kwargs
        return {
            "job_name": self.name, "region": region, "image_uri": self.image_uri,
            "instance_type": kw["instance_type"], "instance_count": kw.get("instance_count", 1),
            "distribution": kw.get("distribution"), "spot": bool(kw.get("use_spot_instances")),
            "checkpoint_s3_uri": kw.get("checkpoint_s3_uri"), "hyperparameters": self.split.hyperparameters,
            "requirements": self.pins, "overrides": list(overrides), "channels": self.uris,
            "rows": dict(self.prepared.rows) if self.prepared else None, "output_path": kw["output_path"],
            "model_data": f"{kw['output_path']}/{self.name}/output/model.tar.gz",
            "console_url": console_url(region, f"jobs/{self.name}"),
        }  # fmt: skip


def console_url(region: str, page: str) -> str:
    return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/{page}"


def prepare_job(
    cfg: DictConfig, overrides: list[str], workdir: Path, *, job_num: int | None = None, multirun: bool = False,
    job_name: str | None = None, tuned: tuple[str, ...] = (), objective: str | None = None,
) -> PreparedJob:  # fmt: skip
    """Check everything, prepare the channel files and the source_dir, build the estimator. Dry runs make no AWS
    call; otherwise the role and bucket are looked up last (STS/IAM/S3 reads, default bucket creation).
    `tuned`: hyperparameters a tuner sets (left out here, counted with its `objective` metric)."""
    import_sagemaker()
    validate.flags(cfg, ("dry_run",))
    validate.flags(cfg.sagemaker, ("wait",), "sagemaker.")
    sm_cfg, dry = cfg.sagemaker, bool(cfg.get("dry_run", False))
    logs = logs_setting(sm_cfg.get("logs", "All"))
    ctx = AwsContext(cfg.aws)  # checks aws.bucket and aws.role's shape; no AWS call
    split = split_overrides(overrides)
    for key in tuned:
        split.hyperparameters.pop(key, None)
    settings = estimator.sdk_settings(sm_cfg)
    pins = source_dir.requirements(cfg)
    estimator.check_settings(settings, pins)
    given = channels.given_inputs(opt(sm_cfg, "inputs"))
    prepared = None if given else channels.prepare(cfg, workdir / "channels")
    staged = source_dir.stage(workdir / "source", pins, torch_version=estimator.container_torch_version(settings))
    name = job_name or estimator.job_name_for(sm_cfg, job_num)
    wait, notes = bool(opt(sm_cfg, "wait", True)), []
    if multirun and wait:
        wait, notes = False, ["sweep: not waiting for each job"]

    def arguments(role: str, bucket: str) -> dict[str, Any]:
        """The estimator's keyword arguments, its S3 locations in `bucket`."""
        kw = {**settings, "entry_point": source_dir.ENTRY_POINT, "source_dir": str(staged), "role": role,
              "hyperparameters": dict(split.hyperparameters), "metric_definitions": metric_definitions(),
              "sagemaker_session": ctx.session, **estimator.FIXED}  # fmt: skip
        kw.setdefault("output_path", s3_uri(bucket, ctx.prefix, "jobs"))
        kw.setdefault("code_location", s3_uri(bucket, ctx.prefix, "code"))
        if kw.get("use_spot_instances") and not kw.get("checkpoint_s3_uri"):
            kw["checkpoint_s3_uri"] = s3_uri(bucket, ctx.prefix, "checkpoints", name)  # one prefix per job
        if kw.get("checkpoint_s3_uri"):
            kw["checkpoint_local_path"] = CHECKPOINT_LOCAL_PATH  # where sagemaker_entry writes
        for key in ("output_path", "code_location"):
            kw[key] = str(kw[key]).rstrip("/")
        if kw.get("image_uri"):
            kw.pop("framework_version", None), kw.pop("py_version", None)
        return kw

    # The SDK's own checks and the hyperparameter count need an estimator: one with the role and bucket as far as
    # they are known without an AWS call, then (unless a dry run) the real one.
    role = str(opt(cfg.aws, "role", ""))
    kwargs = arguments(role if role.startswith("arn:") else PLACEHOLDER_ROLE, ctx.planned_bucket)
    sdk_estimator, image_uri = estimator.build_estimator(kwargs)
    sent = estimator.sent_hyperparameters(sdk_estimator, name, kwargs["code_location"], ctx.region, tuned=tuned,
                                          objective=objective)  # fmt: skip
    validate.hyperparameters(sent, sdk_keys=len(sent) - len(split.hyperparameters) - len(tuned))
    if not dry:  # the role first: a missing role is the most common first error, and nothing is uploaded yet
        kwargs = arguments(ctx.role, ctx.bucket)
        sdk_estimator, image_uri = estimator.build_estimator(kwargs)
    uris = given or channels.channel_uris(ctx.planned_bucket if dry else ctx.bucket, ctx.prefix, prepared)
    return PreparedJob(name=name, ctx=ctx, kwargs=kwargs, estimator=sdk_estimator, image_uri=image_uri, split=split,
                       pins=pins, prepared=prepared, uris=uris, wait=wait, logs=logs, dry=dry, notes=notes)


def write_record(record: dict[str, Any], run_dir: Path | None) -> None:
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / JOB_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def launch(
    cfg: DictConfig, overrides: list[str], *, run_dir: Path | None = None, job_num: int | None = None,
    multirun: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Prepare, (dry-)print and submit one training job. `overrides`: the command line's task overrides."""
    with tempfile.TemporaryDirectory(prefix="cola-bert-sm-") as tmp:
        job = prepare_job(cfg, overrides, Path(tmp), job_num=job_num, multirun=multirun)
        record = job.record(overrides)
        inputs = job.plan("SageMaker training job", job.rows, record, run_dir)
        if inputs is None:
            return record
        with aws_errors(f"starting the training job {job.name}"):
            job.estimator.fit(inputs=inputs, job_name=job.name, wait=False)
        record["status"] = "submitted"
        console.info(f"Training job {job.name} submitted: {record['console_url']}")
        if job.wait:
            console.info("Waiting for it (Ctrl-C stops waiting, not the job).")
            try:
                described = job.ctx.follow_training_job(job.name, logs=job.logs == "All")
            except LaunchError as err:
                write_record(record | {"status": "failed", "error": str(err)}, run_dir)
                raise
            record["status"], record["model_data"] = "completed", described["ModelArtifacts"]["S3ModelArtifacts"]
            console.info(f"\nTraining job {job.name}: Completed. Model artifact (HF model + metrics.json + "
                         f"config.yaml): {record['model_data']}")  # fmt: skip
        console.info(f"Follow it and download its model: python -m launch.train attach={job.name}")
        write_record(record, run_dir)
        return record


# ------------------------------------------------------------------------------------------------------------ CLI


class SageMakerJobsTable(SweepTable):
    """Hydra callback for `python -m launch.train -m ...`: `sagemaker_jobs.csv` in the sweep directory (one row per
    submitted job: its name and overrides) and a table when the sweep ends."""

    file_name = JOBS_TABLE
    columns = ("job", "job_name", "status", "overrides", "instance", "console_url", "model_data", "error")

    def row(self, config: DictConfig, job_return: Any) -> dict[str, Any]:
        from hydra.core.utils import JobStatus

        record = job_return._return_value if job_return.status == JobStatus.COMPLETED else None
        if not isinstance(record, dict):
            record = {"status": "failed", "error": describe_failure(job_return)}
        instance = f"{record['instance_type']} x {record.get('instance_count', 1)}" if "instance_type" in record else ""
        return {key: record.get(key, "") for key in ("job_name", "status", "console_url", "model_data")} | {
            "instance": instance, "error": str(record.get("error", "")).replace("\n", " ")}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.rows:
            return
        rows = [[str(r["job"]), r["job_name"] or "-", r["status"], r["overrides"]] for r in self.sorted_rows()]
        console.table("SageMaker training jobs", ["job", "job_name", "status", "overrides"], rows)
        console.info(f"Written to {self.path}")
        failed = [r for r in self.rows if r["status"] == "failed"]
        if failed:
            console.error(f"{len(failed)} of {len(self.rows)} jobs could not be submitted (see above).")
            raise SystemExit(2)


def quiet_logs() -> None:
    """Only warnings on the root logger: SDK v2 logs its telemetry notice and every request at INFO, and parts of it
    call logging.basicConfig(level=INFO), which does nothing once the root logger has a handler."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sagemaker").setLevel(logging.WARNING)


def run(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    overrides, run_dir = list(hc.overrides.task), Path(hc.runtime.output_dir)
    quiet_logs()
    if opt(cfg, "attach"):
        from launch import attach

        return exit_on_error(attach.attach)(cfg, run_dir=run_dir)
    if hc.mode != RunMode.MULTIRUN:
        return exit_on_error(launch)(cfg, overrides, run_dir=run_dir)
    console.info(f"Sweep job #{hc.job.num}: {' '.join(overrides)}")
    try:  # a sweep goes on with the next combination; the table lists what failed
        with aws_errors():
            return launch(cfg, overrides, run_dir=run_dir, job_num=hc.job.num, multirun=True)
    except LaunchError as err:
        console.error(str(err))
        return {"status": "failed", "error": str(err), "overrides": overrides}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="launch_train")
def main(cfg: DictConfig) -> dict[str, Any]:
    config_composed()
    return run(cfg)  # in a sweep, SageMakerJobsTable reads this record


if __name__ == "__main__":
    exit_on_error(refuse_before_hydra)(sys.argv[1:])
    run_hydra(main)
