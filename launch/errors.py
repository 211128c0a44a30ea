"""The one place where AWS and SageMaker SDK failures become messages a user can act on.

- `LaunchError`: a problem the user can fix, one paragraph, printed without a traceback (exit status 2).
  `NotFound` (a LaunchError) marks "that resource does not exist", so callers can treat "already gone" as success
  without looking inside botocore exceptions (`lookup`: a Describe*/HeadObject answer, or None).
- `aws_errors(what)`: context manager (and decorator) turning botocore / boto3 / SDK exceptions into LaunchErrors;
  `what` ("uploading the model") is woven into the message. Anything else passes through unchanged: it is a bug.
- `exit_on_error(main)`: for CLI entry points; prints the paragraph and exits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ROLE_HINT = "aws.role=arn:aws:iam::<account>:role/<name>"
NO_REGION_MESSAGE = (
    "No AWS region is configured. Pass one with aws.region=<region> (for example aws.region=us-east-1), or set the "
    "AWS_REGION or AWS_DEFAULT_REGION environment variable, or put `region = ...` in the profile of ~/.aws/config "
    "(AWS_PROFILE or aws.profile picks the profile)."
)
CREDENTIALS_HELP = (
    "Configure credentials with `aws configure` or `aws sso login --profile <name>` and select the profile with "
    "AWS_PROFILE=<name> (or aws.profile=<name>), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus "
    "AWS_SESSION_TOKEN for temporary credentials)."
)
S3_HELP = (
    "The identity behind your credentials needs s3:ListBucket/GetObject/PutObject on the bucket (and s3:CreateBucket "
    "for the default bucket sagemaker-<region>-<account>). Pick a bucket you can write to with aws.bucket=<name>."
)


class LaunchError(RuntimeError):
    """A problem the user can fix: one paragraph, printed by the CLIs without a traceback."""

    exit_code = 2


class NotFound(LaunchError):
    """The named AWS resource (job, endpoint, model, S3 object) does not exist."""


class Interrupted(LaunchError):
    """Ctrl-C while waiting, with what was left running and how to remove it (exit status 130)."""

    exit_code = 130


class JobFailed(LaunchError):
    """A SageMaker job ended Failed or Stopped: the user's command ran, AWS reported a failure (exit status 1)."""

    exit_code = 1


_BAD_CREDENTIALS = {
    "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
    "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "RequestExpired",
}  # fmt: skip
_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "403", "Forbidden", "AllAccessDisabled"}
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound", "ResourceNotFound", "ResourceNotFoundException"}
_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown"}


def _while(what: str | None) -> str:
    return f" while {what}" if what else ""


def _client_error(err: Any, what: str | None) -> LaunchError:
    error = err.response.get("Error", {})
    code, message = str(error.get("Code", "Unknown")), str(error.get("Message") or "").strip()
    message = message or code
    status = (err.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    operation = getattr(err, "operation_name", "") or "an AWS API"
    s3 = operation.endswith(("Object", "Objects", "Bucket", "Upload", "Part", "ObjectsV2", "BucketLocation"))
    if code in _BAD_CREDENTIALS:
        return LaunchError(f"AWS rejected your credentials ({code}: {message}){_while(what)}. {CREDENTIALS_HELP}")
    if code in _ACCESS_DENIED or status == 403:
        if s3:
            return LaunchError(f"Access to S3 was denied ({operation}{_while(what)}: {message}). {S3_HELP}")
        return LaunchError(
            f"Access denied calling {operation}{_while(what)}: {message}. The identity behind your credentials needs "
            "permission for it (sagemaker:Create*/Describe*/Delete* on the resources involved, and iam:PassRole on "
            "the execution role)."
        )
    # SageMaker answers a missing job/endpoint/model with ValidationException "Could not find ...", "... does not
    # exist" or "Requested resource not found."; S3 with 404/NoSuchKey.
    lowered = message.lower()
    missing = code in _NOT_FOUND or status == 404 or (
        code == "ValidationException" and any(t in lowered for t in ("could not find", "does not exist", "not found"))
    )
    if missing:
        return NotFound(f"Not found{_while(what)}: {message} ({operation}).")
    if code == "ValidationException":
        hint = ""
        if "role" in message.lower() and "assume" in message.lower():
            hint = f" The execution role must trust sagemaker.amazonaws.com; pass a suitable one with {ROLE_HINT}."
        return LaunchError(f"SageMaker rejected {operation}{_while(what)}: {message}.{hint}")
    if code in ("ResourceLimitExceeded", "ServiceQuotaExceededException"):
        return LaunchError(
            f"An AWS quota was hit calling {operation}{_while(what)}: {message}. Request an increase in the Service "
            "Quotas console (SageMaker, '<instance type> for training job usage' / 'for endpoint usage'), or choose "
            "another instance type."
        )
    if code in _THROTTLED:
        return LaunchError(f"AWS throttled {operation}{_while(what)} ({code}: {message}). Wait a moment and run again.")
    return LaunchError(f"AWS call {operation} failed{_while(what)} ({code}: {message}).")


def to_launch_error(err: BaseException, what: str | None = None) -> LaunchError | None:
    """The LaunchError for a botocore / boto3 / SageMaker SDK exception; None for anything else (a bug)."""
    if isinstance(err, LaunchError):
        return err
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions as bx

    text, where = " ".join(str(err).split()), _while(what)
    if isinstance(err, bx.ClientError):
        return _client_error(err, what)
    if isinstance(err, bx.NoRegionError):
        return LaunchError(NO_REGION_MESSAGE)
    if isinstance(err, bx.ProfileNotFound):
        return LaunchError(f"AWS profile not found: {text}. Check AWS_PROFILE / aws.profile. {CREDENTIALS_HELP}")
    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return LaunchError(f"No usable AWS credentials were found{where} ({text}). {CREDENTIALS_HELP}")
    if isinstance(err, (bx.CredentialRetrievalError, bx.TokenRetrievalError, bx.SSOError, bx.NoAuthTokenError)):
        return LaunchError(f"Your AWS credentials could not be loaded or have expired{where} ({text}). "
                           f"{CREDENTIALS_HELP}")  # fmt: skip
    if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                        bx.ConnectionClosedError)):  # fmt: skip
        via = f" (AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']})" if os.environ.get("AWS_ENDPOINT_URL") else ""
        return LaunchError(f"Could not reach AWS{via}{where}: {text}. Check the network or proxy, the region and "
                           "AWS_ENDPOINT_URL.")  # fmt: skip
    if isinstance(err, bx.BotoCoreError):  # ParamValidationError included
        return LaunchError(f"AWS SDK error{where}: {text}")
    if isinstance(err, S3UploadFailedError):
        denied = "AccessDenied" in text or "403" in text
        return LaunchError(f"Access to S3 was denied{where}: {text}. {S3_HELP}" if denied else
                           f"Upload to S3 failed{where}: {text}")  # fmt: skip
    smx = sys.modules.get("sagemaker.exceptions")  # imported already by whatever raised one of its errors
    if smx is not None and isinstance(err, smx.UnexpectedStatusException):
        return JobFailed(f"SageMaker reported a failure{where}: {text}")
    if isinstance(err, ValueError) and _raised_by_sagemaker(err):
        return LaunchError(f"The SageMaker SDK rejected the settings{where}: {text}")
    return None


def _raised_by_sagemaker(err: BaseException) -> bool:
    """The SDK reports bad settings (unknown framework version, instance type...) as plain ValueErrors."""
    tb, module = err.__traceback__, ""
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "") or module
        tb = tb.tb_next
    return module == "sagemaker" or module.startswith("sagemaker.")


@contextlib.contextmanager
def aws_errors(what: str | None = None, hint: str = "") -> Iterator[None]:
    """botocore / SDK errors raised inside leave as one-paragraph LaunchErrors (NotFound for missing resources);
    `hint` is appended to every LaunchError that leaves (where to look next, how to clean up)."""
    try:
        yield
    except Exception as err:
        converted = to_launch_error(err, what)
        if converted is None or (converted is err and not hint):
            raise
        raise (type(converted)(f"{converted}{hint}") if hint else converted) from err


def lookup(call: Callable[..., Any], what: str, **kwargs: Any) -> Any:
    """`call(**kwargs)` (a Describe* or HeadObject), or None when the resource does not exist."""
    try:
        with aws_errors(f"looking up {what}"):
            return call(**kwargs)
    except NotFound:
        return None


def exit_on_error(func: F) -> F:
    """For CLI entry points: a LaunchError (or AWS error) is printed as one paragraph, then exit 2 (1 for JobFailed)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from launch import console

        try:
            with aws_errors():
                return func(*args, **kwargs)
        except LaunchError as err:
            console.error(str(err))
            raise SystemExit(err.exit_code) from None
        except KeyboardInterrupt:
            console.error("Interrupted. Jobs and resources created so far are left as they are.")
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
