"""Shared AWS helpers for the SageMaker launchers (`launch.deploy`, `launch.train`).

Everything reads the `aws` config node (conf/aws/default.yaml): `role`, `region`, `profile`, `bucket`, `prefix`.

- Region: `aws.region`, else AWS_REGION, else AWS_DEFAULT_REGION, else the profile's region (AWS_PROFILE or
  `aws.profile`); none → `LaunchError`.
- Endpoints: AWS_ENDPOINT_URL (and botocore's per-service AWS_ENDPOINT_URL_<SERVICE>) apply to every client the
  sessions below create, including the STS clients SageMaker SDK v2 builds with a hard-coded regional endpoint.
- SDK v2 noise: its telemetry is opted out (`TelemetryOptOut` in the SDK defaults config handed to the Session),
  the v2→v3 deprecation banner (SAGEMAKER_SUPPRESS_V2_WARNING) and the "sagemaker.config INFO - Not applying SDK
  defaults" lines are silenced.
- Errors: `aws_errors()` turns botocore/SDK exceptions into one-paragraph `LaunchError`s; `exit_on_error` prints
  them without a traceback and exits with status 1.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # pragma: no cover
    import boto3
    import sagemaker

LOG = logging.getLogger("launch")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ROLE_HINT = "aws.role=arn:aws:iam::<account>:role/<name>"
ROLE_ENV = "SAGEMAKER_ROLE"
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_ASSUMED_ROLE_RE = re.compile(r"^(arn:aws[a-z-]*:)sts::(\d{12}):assumed-role/([^/]+)/.*$")
# Written by SageMaker notebook instances and Studio; the SDK reads the execution role from it.
NOTEBOOK_METADATA_FILE = "/opt/ml/metadata/resource-metadata.json"

F = TypeVar("F", bound=Callable[..., Any])


class LaunchError(RuntimeError):
    """A problem the user can fix: one paragraph, printed by the CLIs without a traceback."""


# --------------------------------------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------------------------------------


def info(message: str) -> None:
    """A plain progress line on stdout (no rich markup interpretation)."""
    console.print(escape(message))


def warn(message: str) -> None:
    """A highlighted warning paragraph on stderr."""
    err_console.print(f"[bold yellow]Warning:[/] {escape(message)}")


def print_error(message: str) -> None:
    err_console.print(f"[bold red]Error:[/] {escape(message)}")


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, default=str) if value else "{}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "-"
    return str(value)


def print_plan(title: str, rows: Mapping[str, Any], *, dry_run: bool = False) -> None:
    """Print `title` and one `key: value` line per row (dicts as compact JSON, None as '-').

    With `dry_run=True` the title is marked as a dry run and a closing line says that nothing was created.
    Values are printed verbatim (no wrapping inside values) so URIs stay copy-pasteable.
    """
    heading = f"[bold cyan]{escape(title)}[/]" + (" [bold magenta](dry run)[/]" if dry_run else "")
    console.print(heading)
    width = max((len(k) for k in rows), default=0)
    for key, value in rows.items():
        console.print(f"  [bold]{escape(key.ljust(width))}[/]  {escape(_fmt_value(value))}")
    if dry_run:
        console.print("[magenta]Dry run: no AWS call was made; nothing was uploaded or created.[/]")


def dry_run(title: str, rows: Mapping[str, Any]) -> None:
    """Shorthand for `print_plan(title, rows, dry_run=True)`."""
    print_plan(title, rows, dry_run=True)


# --------------------------------------------------------------------------------------------------------------------
# SageMaker SDK v2 noise
# --------------------------------------------------------------------------------------------------------------------


@functools.cache
def quiet_sagemaker_sdk() -> None:
    """Silence the banners SDK v2 prints that a user of these launchers cannot act on. Call before importing it.

    - `SAGEMAKER_SUPPRESS_V2_WARNING=1`: the "SDK v2 is on path of deprecation" warning + print at import (we pin
      `sagemaker<3` on purpose: v3 has no Estimator/PyTorchModel).
    - the `sagemaker.config` logger (INFO "Not applying SDK defaults from location: ..." at import and per Session)
      goes to WARNING.
    - INFO chatter of botocore/boto3 ("Found credentials in ...", "Found endpoint for s3 via ...") goes to WARNING.
    Telemetry is switched off per Session, see `sdk_defaults_config`.
    """
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    for name in ("sagemaker.config", "botocore", "boto3", "s3transfer"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def import_sagemaker():
    """`import sagemaker` after `quiet_sagemaker_sdk()`; a missing package becomes a LaunchError."""
    quiet_sagemaker_sdk()
    try:
        import sagemaker
    except ImportError as err:
        raise LaunchError(
            "The SageMaker launchers need the SageMaker Python SDK v2: pip install 'sagemaker>=2.250,<3' boto3 "
            "(or pip install -e '.[sagemaker]'). SDK v3 has no PyTorchModel/Estimator, so stay below 3."
        ) from err
    _cache_sdk_config_validation()
    return sagemaker


@functools.cache
def _cache_sdk_config_validation() -> None:
    """Validate each distinct SDK defaults config once instead of on every config lookup.

    Once a Session carries a defaults config (ours always does: TelemetryOptOut), SDK v2 re-validates the whole
    config against its JSON schema on every lookup (`sagemaker.utils.get_sagemaker_config_value`, dozens per
    deploy), each time re-checking the schema itself too (~60 ms). Same schema, same error (jsonschema's best
    match), one compiled validator, results remembered per config content.
    """
    import sagemaker.session
    import sagemaker.utils
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for
    from sagemaker.config import validate_sagemaker_config as original
    from sagemaker.config.config_schema import SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA as schema

    validator = validator_for(schema)(schema)
    valid: set[str] = set()

    def validate_sagemaker_config(sagemaker_config: dict | None = None) -> None:
        key = json.dumps(sagemaker_config, sort_keys=True, default=str)
        if key in valid:
            return
        error = best_match(validator.iter_errors(sagemaker_config))
        if error is not None:
            raise error
        valid.add(key)

    for module in (sagemaker.utils, sagemaker.session):
        if getattr(module, "validate_sagemaker_config", None) is original:
            module.validate_sagemaker_config = validate_sagemaker_config


def sdk_defaults_config(s3_resource: Any = None) -> dict:
    """The SDK defaults config (admin/user config.yaml files, if any) with `TelemetryOptOut: true` added.

    SDK v2 sends usage telemetry (an HTTPS GET to an S3 URL) from Estimator.fit and others and logs a full traceback
    when it cannot reach it; `SageMaker.PythonSdk.Modules.TelemetryOptOut` in this config turns that off. An explicit
    `TelemetryOptOut` in the user's own config file is respected.
    """
    import_sagemaker()
    from sagemaker.config import load_sagemaker_config
    from sagemaker.config.config_schema import MODULES, PYTHON_SDK, SAGEMAKER, SCHEMA_VERSION, TELEMETRY_OPT_OUT

    config = copy.deepcopy(load_sagemaker_config(s3_resource=s3_resource) or {})
    config.setdefault(SCHEMA_VERSION, "1.0")
    modules = config.setdefault(SAGEMAKER, {}).setdefault(PYTHON_SDK, {}).setdefault(MODULES, {})
    modules.setdefault(TELEMETRY_OPT_OUT, True)  # SageMaker.PythonSDK.Modules.TelemetryOptOut
    return config


# --------------------------------------------------------------------------------------------------------------------
# Config access
# --------------------------------------------------------------------------------------------------------------------


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() in ("null", "none"):
            return default
    return default if value is None else value


def resolve_prefix(aws_cfg: Any = None) -> str:
    """`aws.prefix` without leading/trailing slashes ('' when unset)."""
    return str(_get(aws_cfg, "prefix", "") or "").strip("/")


def s3_uri(bucket: str, *parts: str) -> str:
    """`s3://bucket/part1/part2` with empty parts skipped and duplicate slashes removed."""
    key = "/".join(str(p).strip("/") for p in parts if p is not None and str(p).strip("/"))
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key); anything else → LaunchError."""
    match = re.match(r"^s3://([^/]+)/?(.*)$", uri or "")
    if not match:
        raise LaunchError(f"`{uri}` is not an S3 URI; expected s3://<bucket>/<key>.")
    return match.group(1), match.group(2)


# --------------------------------------------------------------------------------------------------------------------
# Region, sessions, endpoints
# --------------------------------------------------------------------------------------------------------------------

NO_REGION_MESSAGE = (
    "No AWS region is configured. Pass one with aws.region=<region> (for example aws.region=us-east-1), or set the "
    "AWS_REGION or AWS_DEFAULT_REGION environment variable, or put `region = ...` in the profile of ~/.aws/config "
    "(AWS_PROFILE or aws.profile picks the profile)."
)


def _profile_name(aws_cfg: Any = None) -> str | None:
    return _get(aws_cfg, "profile") or os.environ.get("AWS_PROFILE") or None


def resolve_region(aws_cfg: Any = None) -> str:
    """Region from `aws.region`, AWS_REGION, AWS_DEFAULT_REGION or the profile's config. Makes no AWS call."""
    region = _get(aws_cfg, "region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        with aws_errors():
            import boto3

            region = boto3.session.Session(profile_name=_profile_name(aws_cfg)).region_name
    if not region:
        raise LaunchError(NO_REGION_MESSAGE)
    return str(region)


def configured_endpoint_url(boto_session: Any, service_name: str) -> str | None:
    """The endpoint URL botocore applies to `service_name` from AWS_ENDPOINT_URL_<SERVICE>, AWS_ENDPOINT_URL or the
    profile's `endpoint_url` / services section; None when none is configured (or AWS_IGNORE_CONFIGURED_ENDPOINT_URLS
    is set)."""
    from botocore.configprovider import ConfiguredEndpointProvider

    core = boto_session._session if hasattr(boto_session, "_session") else boto_session
    if core.get_config_variable("ignore_configured_endpoint_urls"):
        return None
    try:
        scoped = core.get_scoped_config()
    except Exception:  # ProfileNotFound is reported where the session is used
        scoped = {}
    provider = ConfiguredEndpointProvider(
        full_config=core.full_config, scoped_config=scoped, client_name=service_name
    )
    return provider.provide()


@functools.cache
def _endpoint_aware_session_class():
    import boto3.session

    class EndpointAwareSession(boto3.session.Session):
        """boto3 Session whose clients honour AWS_ENDPOINT_URL even where SDK v2 hard-codes a public endpoint.

        SDK v2 builds its STS clients with `endpoint_url=https://sts.<region>.amazonaws.com` (default bucket name,
        account id, execution role), which would bypass a configured endpoint (moto, LocalStack, VPC endpoints).
        When botocore has a configured endpoint for the service, such hard-coded *.amazonaws.com endpoints are
        dropped so the configured one applies. Explicit non-AWS endpoints are left alone.
        """

        def _fix_endpoint(self, service_name: str, kwargs: dict) -> dict:
            explicit = kwargs.get("endpoint_url")
            if explicit and ".amazonaws.com" in explicit and configured_endpoint_url(self, service_name):
                kwargs = dict(kwargs)
                kwargs.pop("endpoint_url")
            return kwargs

        def client(self, service_name, *args, **kwargs):  # noqa: D102
            return super().client(service_name, *args, **self._fix_endpoint(service_name, kwargs))

        def resource(self, service_name, *args, **kwargs):  # noqa: D102
            return super().resource(service_name, *args, **self._fix_endpoint(service_name, kwargs))

    return EndpointAwareSession


def boto_session(aws_cfg: Any = None, region: str | None = None) -> boto3.Session:
    """A boto3 Session for `aws.profile` (else AWS_PROFILE / default chain) in the resolved region.

    Creating it makes no AWS call. Its clients honour AWS_ENDPOINT_URL (see `configured_endpoint_url`).
    """
    region = region or resolve_region(aws_cfg)
    with aws_errors():
        return _endpoint_aware_session_class()(profile_name=_profile_name(aws_cfg), region_name=region)


def sagemaker_session(aws_cfg: Any = None, *, boto: Any = None, region: str | None = None) -> sagemaker.Session:
    """A SageMaker SDK v2 Session on `boto_session(aws_cfg)`: telemetry opted out, `aws.bucket` as default bucket.

    The sagemaker, sagemaker-runtime and s3 clients all go to AWS_ENDPOINT_URL when it is set. Makes no AWS call
    (the default bucket is looked up lazily by `Session.default_bucket()`).
    """
    sm = import_sagemaker()
    boto = boto or boto_session(aws_cfg, region)
    with aws_errors():
        s3_resource = boto.resource("s3", region_name=boto.region_name)
        # The SDK builds its sagemaker / sagemaker-runtime / s3 clients from `boto`, whose clients honour
        # AWS_ENDPOINT_URL (EndpointAwareSession), so all of them go to the configured endpoint.
        return sm.Session(
            boto_session=boto,
            default_bucket=_get(aws_cfg, "bucket"),
            sagemaker_config=sdk_defaults_config(s3_resource),
        )


def account_id(boto: Any) -> str:
    """The caller's account id (sts:GetCallerIdentity)."""
    with aws_errors("looking up the AWS account"):
        return boto.client("sts", region_name=boto.region_name).get_caller_identity()["Account"]


NO_ROLE_MESSAGE = (
    "No SageMaker execution role. Pass the IAM role SageMaker assumes to read and write S3 and run the "
    f"training or serving container: {ROLE_HINT} (or set the {ROLE_ENV} environment variable). Outside SageMaker notebooks/Studio the "
    "role cannot be discovered{detail}. The role needs the sagemaker.amazonaws.com trust relationship and access to "
    "the S3 bucket (the AmazonSageMakerFullAccess managed policy covers the default sagemaker-<region>-<account> "
    "bucket); your own credentials need iam:PassRole on it."
)


def resolve_role(aws_cfg: Any, session: Any) -> str:
    """The SageMaker execution role ARN.

    `aws.role` (an ARN, or a role name expanded through IAM); else what `sagemaker.get_execution_role()` finds: the
    notebook/Studio execution role, or the caller's own identity when that is a role (an assumed role is mapped to
    its IAM role ARN). A plain IAM user (or no answer) → LaunchError explaining `aws.role=...`.
    """
    role = _get(aws_cfg, "role")
    if role:
        role = str(role)
        if role.startswith("arn:"):
            if not ROLE_ARN_RE.match(role):
                raise LaunchError(f"aws.role={role} is not an IAM role ARN; expected {ROLE_HINT}.")
            return role
        with aws_errors(f"expanding the role name {role!r} to an ARN"):
            return session.expand_role(role)

    if os.path.exists(NOTEBOOK_METADATA_FILE):
        sm = import_sagemaker()
        try:
            with aws_errors("looking up the execution role"):
                return sm.get_execution_role(session)
        except (LaunchError, ValueError) as err:
            raise LaunchError(NO_ROLE_MESSAGE.format(detail=f" here ({err})")) from err

    with aws_errors("looking up the caller identity for the execution role"):
        caller = session.boto_session.client("sts").get_caller_identity()["Arn"]
    if ":role/" in caller:
        return caller
    match = _ASSUMED_ROLE_RE.match(caller)
    if match:
        partition, account, name = match.groups()
        try:
            return session.boto_session.client("iam").get_role(RoleName=name)["Role"]["Arn"]
        except Exception:  # no iam:GetRole: same fallback as the SDK
            return f"{partition}iam::{account}:role/{name}"
    raise LaunchError(NO_ROLE_MESSAGE.format(detail=f": your credentials belong to {caller}, which is not a role"))


def resolve_bucket(aws_cfg: Any, session: Any) -> str:
    """`aws.bucket`, else the SDK default bucket `sagemaker-<region>-<account>` (created if missing)."""
    bucket = _get(aws_cfg, "bucket")
    if bucket:
        return str(bucket)
    with aws_errors("finding or creating the default SageMaker bucket"):
        return session.default_bucket()


class AwsContext:
    """Region, sessions, role, bucket and prefix for one launcher run. Role and bucket resolve on first use."""

    def __init__(self, aws_cfg: Any = None, *, region: str | None = None):
        self.cfg = aws_cfg
        self.region = region or resolve_region(aws_cfg)
        self.boto_session = boto_session(aws_cfg, self.region)
        self.session = sagemaker_session(aws_cfg, boto=self.boto_session)
        self.prefix = resolve_prefix(aws_cfg)

    @functools.cached_property
    def role(self) -> str:
        return resolve_role(self.cfg, self.session)

    @functools.cached_property
    def bucket(self) -> str:
        return resolve_bucket(self.cfg, self.session)

    def s3_uri(self, *parts: str) -> str:
        """`s3://<bucket>/<prefix>/<parts...>`."""
        return s3_uri(self.bucket, self.prefix, *parts)

    def client(self, service_name: str):
        return self.boto_session.client(service_name, region_name=self.region)

    @property
    def endpoint_url(self) -> str | None:
        return configured_endpoint_url(self.boto_session, "sagemaker")


def connect(aws_cfg: Any = None) -> AwsContext:
    """`AwsContext(aws_cfg)`: resolve the region and build the sessions (no AWS call yet)."""
    return AwsContext(aws_cfg)


def describe_targets(aws_cfg: Any = None, region: str | None = None) -> dict[str, str]:
    """What a run would use, for dry runs — resolved locally, without any AWS call."""
    region = region or resolve_region(aws_cfg)
    bucket = _get(aws_cfg, "bucket") or f"sagemaker-{region}-<account> (SDK default bucket, looked up at run time)"
    role = _get(aws_cfg, "role") or "(not set: looked up at run time via get_execution_role)"
    rows = {"region": region, "role": role, "bucket": bucket, "prefix": resolve_prefix(aws_cfg) or "-"}
    profile = _profile_name(aws_cfg)
    if profile:
        rows["profile"] = profile
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        rows["endpoint url"] = endpoint
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------

_S3_OPERATIONS = {
    "PutObject", "GetObject", "HeadObject", "HeadBucket", "CreateBucket", "ListObjects", "ListObjectsV2",
    "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "DeleteObject", "DeleteObjects",
    "GetBucketLocation", "CopyObject",
}  # fmt: skip
_ACCESS_DENIED = {
    "AccessDenied", "AccessDeniedException", "403", "Forbidden", "AllAccessDisabled", "UnauthorizedOperation",
}  # fmt: skip
_BAD_CREDENTIALS = {
    "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
    "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "RequestExpired",
}  # fmt: skip

CREDENTIALS_HELP = (
    "Configure credentials with `aws configure` or `aws sso login --profile <name>` and select the profile with "
    "AWS_PROFILE=<name> (or aws.profile=<name>), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus "
    "AWS_SESSION_TOKEN for temporary credentials)."
)


def _what(what: str | None) -> str:
    return f" while {what}" if what else ""


def _raised_by_sagemaker(err: BaseException) -> bool:
    tb = err.__traceback__
    module = ""
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "") or module
        tb = tb.tb_next
    return module == "sagemaker" or module.startswith("sagemaker.")


def _client_error_message(err: Any, what: str | None) -> str:
    error = err.response.get("Error", {}) if hasattr(err, "response") else {}
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message") or "").strip() or code
    operation = getattr(err, "operation_name", "") or "an AWS API"
    metadata = (err.response.get("ResponseMetadata") if hasattr(err, "response") else None) or {}
    status = metadata.get("HTTPStatusCode")
    if code in _BAD_CREDENTIALS:
        return (
            f"AWS rejected your credentials ({code}: {message}){_what(what)}. They may have expired. "
            f"{CREDENTIALS_HELP}"
        )
    if operation in _S3_OPERATIONS and (code in _ACCESS_DENIED or status == 403):
        return (
            f"Access to S3 was denied ({operation}{_what(what)}: {message}). The identity behind your credentials "
            "needs s3:ListBucket/GetObject/PutObject on the bucket (and s3:CreateBucket for the SDK default bucket "
            "sagemaker-<region>-<account>). Pick a bucket you can write to with aws.bucket=<name> and a key prefix "
            "with aws.prefix=<prefix>."
        )
    if operation in _S3_OPERATIONS and (code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound") or status == 404):
        return f"S3 object or bucket not found ({operation}{_what(what)}: {message}). Check the S3 URI and aws.bucket."
    if code in _ACCESS_DENIED:
        return (
            f"Access denied calling {operation}{_what(what)}: {message}. The identity behind your credentials needs "
            "permission for it (for SageMaker deployments: sagemaker:Create*/Describe*/Delete* on models, endpoint "
            "configs and endpoints, and iam:PassRole on the execution role)."
        )
    if code == "ValidationException":
        hint = ""
        if "assume" in message.lower() and "role" in message.lower():
            hint = (
                f" The execution role must trust sagemaker.amazonaws.com; pass a suitable one with {ROLE_HINT}."
            )
        return f"SageMaker rejected {operation}{_what(what)}: {message}.{hint}"
    if code in ("ResourceLimitExceeded", "ServiceQuotaExceededException"):
        return (
            f"An AWS quota was hit calling {operation}{_what(what)}: {message}. Request an increase in the Service "
            "Quotas console (SageMaker, '<instance type> for endpoint usage' / 'for training job usage'), or choose "
            "another instance type."
        )
    if code in ("ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown"):
        return f"AWS throttled {operation}{_what(what)} ({code}: {message}). Wait a moment and run again."
    return f"AWS call {operation} failed{_what(what)} ({code}: {message})."


def to_launch_error(err: BaseException, what: str | None = None) -> LaunchError | None:
    """One-paragraph LaunchError for a botocore/boto3/SDK error, or None when `err` is not one (a bug: re-raise)."""
    if isinstance(err, LaunchError):
        return err
    from botocore import exceptions as bx

    if isinstance(err, bx.NoRegionError):
        return LaunchError(NO_REGION_MESSAGE)
    if isinstance(err, bx.ProfileNotFound):
        return LaunchError(
            f"AWS profile not found: {err}. Check AWS_PROFILE / aws.profile against ~/.aws/config and "
            f"~/.aws/credentials. {CREDENTIALS_HELP}"
        )
    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return LaunchError(f"No usable AWS credentials were found{_what(what)} ({err}). {CREDENTIALS_HELP}")
    if isinstance(
        err,
        (bx.CredentialRetrievalError, bx.TokenRetrievalError, bx.SSOError, bx.SSOTokenLoadError,
         bx.UnauthorizedSSOTokenError, bx.NoAuthTokenError),
    ):  # fmt: skip
        return LaunchError(
            f"Your AWS credentials could not be loaded or have expired{_what(what)} ({err}). {CREDENTIALS_HELP}"
        )
    if isinstance(err, bx.ClientError):
        return LaunchError(_client_error_message(err, what))
    if isinstance(
        err, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError)
    ):
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        via = f" (AWS_ENDPOINT_URL={endpoint})" if endpoint else ""
        return LaunchError(
            f"Could not reach AWS{via}{_what(what)}: {err}. Check the network/proxy, the region and AWS_ENDPOINT_URL."
        )
    if isinstance(err, bx.ParamValidationError):
        return LaunchError(f"Invalid AWS request parameters{_what(what)}: {err}")
    if isinstance(err, bx.BotoCoreError):
        return LaunchError(f"AWS SDK error{_what(what)}: {err}")
    try:
        from boto3.exceptions import S3UploadFailedError
    except ImportError:  # pragma: no cover
        S3UploadFailedError = ()  # type: ignore[assignment]
    if S3UploadFailedError and isinstance(err, S3UploadFailedError):
        text = str(err)
        if "AccessDenied" in text or "403" in text:
            return LaunchError(
                f"Access to S3 was denied{_what(what)}: {text}. The identity behind your credentials needs "
                "s3:PutObject on the bucket; pick a bucket you can write to with aws.bucket=<name>."
            )
        return LaunchError(f"Upload to S3 failed{_what(what)}: {text}")
    if isinstance(err, ValueError) and _raised_by_sagemaker(err):
        text = str(err).strip()
        try:
            from sagemaker.exceptions import UnexpectedStatusException
        except ImportError:  # pragma: no cover
            UnexpectedStatusException = ()  # type: ignore[assignment]
        if UnexpectedStatusException and isinstance(err, UnexpectedStatusException):
            return LaunchError(f"SageMaker reported a failure{_what(what)}: {text}")
        return LaunchError(f"The SageMaker SDK rejected the settings{_what(what)}: {text}")
    return None


@contextlib.contextmanager
def aws_errors(what: str | None = None) -> Iterator[None]:
    """Context manager / decorator: botocore and SageMaker SDK errors leave it as one-paragraph LaunchErrors.

    `what` ("uploading the model") is woven into the message. Other exceptions pass through unchanged.
    """
    try:
        yield
    except LaunchError:
        raise
    except Exception as err:
        converted = to_launch_error(err, what)
        if converted is None:
            raise
        raise converted from err


def exit_on_error(func: F) -> F:
    """Decorator for CLI entry points: a LaunchError (or AWS error) is printed as one paragraph, exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with aws_errors():
                return func(*args, **kwargs)
        except LaunchError as err:
            print_error(str(err))
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print_error("Interrupted. Resources created so far are left as they are.")
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


__all__ = [
    "AwsContext",
    "LaunchError",
    "NO_REGION_MESSAGE",
    "ROLE_HINT",
    "account_id",
    "aws_errors",
    "boto_session",
    "configured_endpoint_url",
    "connect",
    "console",
    "describe_targets",
    "dry_run",
    "err_console",
    "exit_on_error",
    "import_sagemaker",
    "info",
    "parse_s3_uri",
    "print_error",
    "print_plan",
    "quiet_sagemaker_sdk",
    "resolve_bucket",
    "resolve_prefix",
    "resolve_region",
    "resolve_role",
    "s3_uri",
    "sagemaker_session",
    "sdk_defaults_config",
    "to_launch_error",
    "warn",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("launch.aws is a library; run `python -m launch.deploy`.")
