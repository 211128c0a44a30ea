"""AWS session and settings for the launchers: region, profile, endpoint, SageMaker session, role, bucket, S3 URIs.

Everything reads the `aws` config node (conf/aws/default.yaml): `role`, `region`, `profile`, `bucket`, `prefix`.

- Region: `aws.region`, else AWS_REGION, else AWS_DEFAULT_REGION, else the profile's region (`aws.profile`, else
  AWS_PROFILE); none → LaunchError. Building sessions makes no AWS call.
- Endpoint: botocore applies AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) to every client created here. The
  SDK's own account lookups go to a hard-coded public STS endpoint, so the launchers never ask the SDK for them:
  the account, the default bucket name `sagemaker-<region>-<account>` and the caller's role are looked up with
  clients made here and handed to `sagemaker.Session(default_bucket=...)`.
- SDK v2 noise: telemetry is opted out through the `sagemaker_config` handed to the Session (TelemetryOptOut), the
  v2 deprecation banner (SAGEMAKER_SUPPRESS_V2_WARNING) and the `sagemaker.config` INFO lines are silenced.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

from launch import console, errors, validate
from launch.errors import JobFailed, LaunchError, NotFound, aws_errors, lookup, to_launch_error

# Written by SageMaker notebook instances and Studio; sagemaker.get_execution_role() reads the role from it.
NOTEBOOK_METADATA_FILE = "/opt/ml/metadata/resource-metadata.json"
_ASSUMED_ROLE_RE = re.compile(r"^(arn:aws[a-z-]*:)sts::(\d{12}):assumed-role/([^/]+)/.*$")
NO_ROLE_MESSAGE = (
    f"No SageMaker execution role. Pass the IAM role SageMaker assumes to read and write S3 and run the training or "
    f"serving container: {errors.ROLE_HINT} (or set the SAGEMAKER_ROLE environment variable). Outside SageMaker "
    "notebooks and Studio the role cannot be discovered{detail}. The role needs the sagemaker.amazonaws.com trust "
    "relationship and access to the S3 bucket (the AmazonSageMakerFullAccess managed policy covers the default "
    "sagemaker-<region>-<account> bucket); your own credentials need iam:PassRole on it."
)


def opt(node: Any, key: str, default: Any = None) -> Any:
    """`node[key]` for dicts, DictConfigs or None; missing, None, '', 'null', 'none' and `???` give `default`."""
    try:
        value = node.get(key, default) if hasattr(node, "get") else default  # None, dicts, DictConfigs
    except Exception:  # noqa: BLE001 (omegaconf's MissingMandatoryValue for `???`)
        return default
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() in ("null", "none"):
            return default
    return default if value is None else value


def import_sagemaker():
    """The SDK, without what v2 prints that a user of these launchers cannot act on."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # "v2 is on the path of deprecation": we pin v2
    for name in ("sagemaker.config", "botocore", "boto3", "s3transfer"):
        if logging.getLogger(name).level < logging.WARNING:  # NOTSET included
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import sagemaker
    except ImportError as err:
        raise LaunchError(
            "The SageMaker launchers need the SageMaker Python SDK v2: pip install -e '.[sagemaker]' (or "
            "pip install 'sagemaker>=2.250,<3' boto3). SDK v3 has no Estimator/PyTorchModel, so stay below 3."
        ) from err
    return sagemaker


def sdk_defaults_config() -> dict:
    """The SDK defaults config (admin/user config.yaml files, if any) with `TelemetryOptOut: true` added, unless the
    user's own config sets it. SDK v2 otherwise sends usage telemetry from Estimator.fit, deploy and others."""
    import_sagemaker()
    from sagemaker.config import config_schema as key
    from sagemaker.config import load_sagemaker_config

    config = copy.deepcopy(load_sagemaker_config() or {})
    config.setdefault(key.SCHEMA_VERSION, "1.0")
    modules = config.setdefault(key.SAGEMAKER, {}).setdefault(key.PYTHON_SDK, {}).setdefault(key.MODULES, {})
    modules.setdefault(key.TELEMETRY_OPT_OUT, True)
    return config


def _profile(aws_cfg: Any) -> str | None:
    return opt(aws_cfg, "profile") or os.environ.get("AWS_PROFILE") or None


def resolve_region(aws_cfg: Any = None) -> str:
    region = opt(aws_cfg, "region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        with aws_errors():
            import boto3

            region = boto3.session.Session(profile_name=_profile(aws_cfg)).region_name
    if not region:
        raise LaunchError(errors.NO_REGION_MESSAGE)
    return str(region)


def boto_session(aws_cfg: Any = None, region: str | None = None):
    import boto3

    with aws_errors():
        return boto3.session.Session(profile_name=_profile(aws_cfg), region_name=region or resolve_region(aws_cfg))


def sagemaker_session(boto: Any, *, default_bucket: str | None = None):
    """On `boto`'s clients, so AWS_ENDPOINT_URL applies. Pass `default_bucket` whenever the SDK may need one: its
    own lookup asks a hard-coded public STS endpoint for the account."""
    sm = import_sagemaker()
    with aws_errors():
        return sm.Session(boto_session=boto, sagemaker_client=boto.client("sagemaker"),
                          sagemaker_runtime_client=boto.client("sagemaker-runtime"), default_bucket=default_bucket,
                          sagemaker_config=sdk_defaults_config())  # fmt: skip


def s3_uri(bucket: str, *parts: str | None) -> str:
    key = "/".join(str(p).strip("/") for p in parts if p is not None and str(p).strip("/"))
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    match = re.match(r"^s3://([^/]+)/?(.*)$", uri or "")
    if not match:
        raise LaunchError(f"`{uri}` is not an S3 URI; expected s3://<bucket>/<key>.")
    return match.group(1), match.group(2)


def parse_s3_object(uri: str, setting: str = "") -> tuple[str, str]:
    """`s3://bucket/key` of one object (not a bucket or a prefix) → (bucket, key); no AWS call. `setting`: the
    config key the URI came from, for the message."""
    bucket, key = parse_s3_uri(uri)
    if not key or key.endswith("/"):
        given = f"{setting}=" if setting else ""
        raise LaunchError(f"{given}{uri} names no object: give the file's full key, e.g. "
                          f"{given}s3://<bucket>/cola-bert/models/<sha256>/model.tar.gz.")  # fmt: skip
    return bucket, key


class AwsContext:
    """Region, sessions, role, bucket and prefix for one launcher run. Creating it makes no AWS call (it checks the
    shape of aws.bucket and of an aws.role ARN); the role and the bucket are resolved on first use."""

    def __init__(self, aws_cfg: Any = None):
        self.cfg = aws_cfg
        self.region = resolve_region(aws_cfg)
        self.prefix = str(opt(aws_cfg, "prefix", "")).strip("/")
        if "//" in self.prefix:
            raise LaunchError(
                f"aws.prefix={opt(aws_cfg, 'prefix')} has an empty path segment: the S3 keys under it would hold `//` "
                f"(an unnamed folder). Give the key prefix as segments separated by single slashes, e.g. "
                f"aws.prefix={'/'.join(p for p in self.prefix.split('/') if p)}."
            )
        self.configured_bucket = opt(aws_cfg, "bucket")
        if self.configured_bucket:
            validate.bucket_name(str(self.configured_bucket))
        if str(opt(aws_cfg, "role", "")).startswith("arn:"):
            validate.role_arn(str(opt(aws_cfg, "role")))
        self.boto_session = boto_session(aws_cfg, self.region)
        self.session = sagemaker_session(self.boto_session, default_bucket=self.configured_bucket)

    @functools.cached_property
    def role(self) -> str:
        """The SageMaker execution role ARN: `aws.role` (an ARN, or a role name expanded through IAM); in a SageMaker
        notebook/Studio what `sagemaker.get_execution_role()` finds; else the caller's own identity when it is a role
        (an assumed role maps to its IAM role). A plain IAM user → LaunchError explaining `aws.role=...`."""
        role, client = str(opt(self.cfg, "role", "")), self.client
        if role.startswith("arn:"):
            return validate.role_arn(role)
        if role:
            with aws_errors(f"expanding the role name {role!r} to an ARN"):
                return client("iam").get_role(RoleName=role)["Role"]["Arn"]
        if os.path.exists(NOTEBOOK_METADATA_FILE):
            try:
                with aws_errors("looking up the execution role"):
                    return import_sagemaker().get_execution_role(sagemaker_session(self.boto_session))
            except (LaunchError, ValueError) as err:
                raise LaunchError(NO_ROLE_MESSAGE.format(detail=f" here ({err})")) from err
        with aws_errors("looking up the caller identity for the execution role"):
            caller = client("sts").get_caller_identity()["Arn"]
        if ":role/" in caller:
            return caller
        match = _ASSUMED_ROLE_RE.match(caller)
        if not match:
            detail = f": your credentials belong to {caller}, which is not a role"
            raise LaunchError(NO_ROLE_MESSAGE.format(detail=detail))
        partition, account, name = match.groups()
        try:
            return client("iam").get_role(RoleName=name)["Role"]["Arn"]  # with the role's path
        except Exception:  # noqa: BLE001 (no iam:GetRole: the same fallback as the SDK)
            return f"{partition}iam::{account}:role/{name}"

    @functools.cached_property
    def account(self) -> str:
        with aws_errors("looking up the AWS account"):
            return self.client("sts").get_caller_identity()["Account"]

    @functools.cached_property
    def bucket(self) -> str:
        """`aws.bucket` as given (no call), else `sagemaker-<region>-<account>`, created by the SDK if missing."""
        if self.configured_bucket:
            return str(self.configured_bucket)
        name = f"sagemaker-{self.region}-{self.account}"
        self.session = sagemaker_session(self.boto_session, default_bucket=name)
        with aws_errors(f"finding or creating the default bucket {name}"):
            return self.session.default_bucket()

    @property
    def planned_bucket(self) -> str:
        """The bucket as far as it is known without any AWS call (for plans and dry runs)."""
        return str(self.configured_bucket or f"sagemaker-{self.region}-<account>")

    def s3_uri(self, *parts: str, planned: bool = False) -> str:
        """`s3://<bucket>/<prefix>/<parts...>`; `planned`: with `planned_bucket`, no AWS call."""
        return s3_uri(self.planned_bucket if planned else self.bucket, self.prefix, *parts)

    def client(self, service_name: str):
        return self.boto_session.client(service_name)

    def describe(self) -> dict[str, str]:
        """What a run uses, for plans and dry runs, resolved without any AWS call."""
        rows = {
            "region": self.region,
            "role": opt(self.cfg, "role") or "(looked up at run time: notebook role or your own role)",
            "bucket": self.configured_bucket or f"{self.planned_bucket} (looked up at run time)",
            "prefix": self.prefix or "-",
        }
        if _profile(self.cfg):
            rows["profile"] = str(_profile(self.cfg))
        if os.environ.get("AWS_ENDPOINT_URL"):
            rows["endpoint url"] = os.environ["AWS_ENDPOINT_URL"]
        return rows

    def training_job(self, name: str, hint: str) -> dict[str, Any]:
        """DescribeTrainingJob; an unknown name → NotFound that says how to list the region's jobs, then `hint`."""
        try:
            with aws_errors(f"looking up the training job {name}"):
                return self.session.describe_training_job(name)
        except NotFound:
            raise NotFound(
                f"There is no training job {name} in {self.region}. List them with `aws sagemaker list-training-jobs "
                f"--region {self.region} --sort-by CreationTime`, {hint}."
            ) from None

    def follow_training_job(self, name: str, *, logs: bool = True) -> dict[str, Any]:
        """Stream the job's CloudWatch log (`logs`) or only wait, until the job ends; returns its description. Without
        permission to read the log it warns and waits without it (the job is not affected). The SDK only warns about
        a Stopped job (max_run or spot max_wait reached): anything but Completed → JobFailed with its reason."""
        from botocore.exceptions import ClientError

        with aws_errors(f"following the training job {name}"):
            try:
                if logs:
                    self.session.logs_for_job(name, wait=True, log_type="All")
                else:
                    self.session.wait_for_job(name)
            except ClientError as err:
                if not err.operation_name.endswith(("LogStreams", "LogEvents")):
                    raise
                console.warn(f"The job's log cannot be read, so it is not shown: {to_launch_error(err)} Waiting for "
                             f"the job without it; the log is in CloudWatch Logs, /aws/sagemaker/TrainingJobs, {name}/*.")
                self.session.wait_for_job(name)
            described = self.session.describe_training_job(name)
        status = described["TrainingJobStatus"]
        if status != "Completed":
            reason = described.get("FailureReason") or f"secondary status {described.get('SecondaryStatus')}"
            raise JobFailed(
                f"Training job {name} ended {status}: {reason}. Its log is in CloudWatch Logs, group "
                f"/aws/sagemaker/TrainingJobs, streams {name}/*. A stopped job may have left a checkpoint; run it "
                "again with a larger sagemaker.max_run (and sagemaker.max_wait for spot)."
            )
        return described

    def upload(self, path: Path, uri: str, what: str, *, sha256: str | None = None, announce: bool = False) -> bool:
        """Upload the file `path` (`what`, for messages) to `uri`. With `sha256` (kept as object metadata) it is
        skipped, returning False, when an object of the same size and sha256 is there already: re-runs send nothing."""
        bucket, key = parse_s3_uri(uri)
        s3, size = self.client("s3"), Path(path).stat().st_size
        if sha256:
            head = lookup(s3.head_object, uri, Bucket=bucket, Key=key) or {}
            if (head.get("ContentLength"), (head.get("Metadata") or {}).get("sha256")) == (size, sha256):
                return False
        if announce:
            console.info(f"Uploading {what} ({size / 1e6:.1f} MB) to {uri}")
        with aws_errors(f"uploading {what} to {uri}"):
            s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}} if sha256 else None)
        return True

    def download(self, uri: str, dest: Path) -> Path:
        bucket, key = parse_s3_object(uri)
        target = Path(dest) / Path(key).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with aws_errors(f"downloading {uri}"):
            self.client("s3").download_file(bucket, key, str(target))
        return target

