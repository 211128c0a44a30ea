"""Checks that run before any upload or AWS call, against the rules AWS itself applies.

Instance types, resource names, hyperparameter limits, tuning choices and the role ARN pattern come from botocore's
own SageMaker service model (the enums and constraints of the request shapes), not from hand-kept lists; bucket names
follow S3's naming rules.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import regex

from launch.errors import ROLE_HINT, LaunchError

# Where each operation takes its instance type.
INSTANCE_TYPE_MEMBERS = {
    "CreateTrainingJob": "ResourceConfig.InstanceType",
    "CreateEndpointConfig": "ProductionVariants.InstanceType",
    "CreateTransformJob": "TransformResources.InstanceType",
}


@functools.cache
def _service_model():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def _member_shape(operation: str, member: str, *, unwrap_last: bool = True):
    shape = _service_model().operation_model(operation).input_shape
    names = member.split(".")
    for i, name in enumerate(names):
        shape = shape.members[name]
        if shape.type_name == "list" and (unwrap_last or i < len(names) - 1):
            shape = shape.member
    return shape


def enum(shape: str) -> list[str]:
    return list(_service_model().shape_for(shape).enum)


def instance_types(operation: str, member: str | None = None) -> list[str]:
    return list(_member_shape(operation, member or INSTANCE_TYPE_MEMBERS[operation]).enum)


def instance_type(value: str, operation: str, member: str | None = None, *, setting: str = "instance_type") -> str:
    import botocore

    allowed = instance_types(operation, member)
    if value in allowed:
        return value
    close = difflib.get_close_matches(str(value), allowed, n=4, cutoff=0.6)
    family = [t for t in allowed if t.split(".")[:2] == str(value).split(".")[:2]][:6]
    suggestions = close or family
    hint = f" Closest valid types: {', '.join(suggestions)}." if suggestions else ""
    raise LaunchError(
        f"{setting}={value} is not an instance type SageMaker accepts for {operation} ({len(allowed)} types in "
        f"botocore {botocore.__version__}'s service model).{hint} If AWS launched this type recently, upgrade "
        "botocore (pip install -U boto3)."
    )


# S3 bucket naming rules: https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name(name: str, *, setting: str = "aws.bucket") -> str:
    problem = None
    if not 3 <= len(name) <= 63:
        problem = f"it has {len(name)} characters (3 to 63 allowed)"
    elif not _BUCKET_RE.match(name):
        problem = "only lowercase letters, digits, dots and hyphens are allowed, starting and ending with a letter or digit"
    elif ".." in name or ".-" in name or "-." in name:
        problem = "dots may not be next to another dot or a hyphen"
    elif name.startswith(_BUCKET_PREFIXES) or name.endswith(_BUCKET_SUFFIXES):
        problem = "the prefixes xn--, sthree-, amzn-s3-demo- and the suffixes -s3alias, --ol-s3, .mrap are reserved"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "it is formatted like an IP address"
        except ValueError:
            pass
    if problem:
        raise LaunchError(
            f"{setting}={name} is not a valid S3 bucket name: {problem}. Give the name of an existing bucket you can "
            "write to (only the name, not s3://...), or leave it unset to use sagemaker-<region>-<account>."
        )
    return name


def role_arn(arn: str, *, setting: str = "aws.role") -> str:
    shape = _service_model().shape_for("RoleArn")
    pattern, low, high = shape.metadata["pattern"], shape.metadata["min"], shape.metadata["max"]
    if not (low <= len(arn) <= high and re.fullmatch(pattern, arn)):
        raise LaunchError(f"{setting}={arn} is not an IAM role ARN; expected {ROLE_HINT}.")
    return arn


def resource_name(value: str, setting: str, operation: str = "CreateTrainingJob",
                  member: str = "TrainingJobName") -> str:
    shape = _member_shape(operation, member)
    if not (len(value) <= shape.metadata["max"] and re.fullmatch(shape.metadata["pattern"], value)):
        raise LaunchError(
            f"{setting}={value!r} is not a valid SageMaker name: up to {shape.metadata['max']} characters, letters, "
            "digits and hyphens, starting and ending with a letter or digit."
        )
    return value


def _span(low: Any, high: Any, unit: str) -> str:
    if low is not None and high is not None:
        return f"from {low} to {high}{unit}"
    return f"of at least {low}{unit}" if low is not None else f"of at most {high}{unit}"


def _problem(value: Any, shape: Any) -> str | None:
    """What is wrong with `value` for the service model's `shape` (type, min/max, pattern), or None."""
    meta, kind = shape.metadata, shape.type_name
    low, high = meta.get("min"), meta.get("max")
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number {_span(low, high, '')}"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"must be a whole number {_span(low, high, '')}"
    elif kind == "boolean":
        if not isinstance(value, bool):
            return "must be true or false"
    elif kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return f"must have {_span(low, high, ' characters')}"
        if meta.get("pattern") and not regex.fullmatch(meta["pattern"], value):  # \p{L}: `regex`, not `re`
            return f"must match the pattern {meta['pattern']}"
    elif kind in ("list", "map"):
        is_list = kind == "list"
        if not isinstance(value, (list, tuple) if is_list else Mapping):
            return "must be a list, e.g. [a,b]" if is_list else "must be a map, e.g. {NAME: value}"
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return f"must have {_span(low, high, ' entries')}"
        items = [(v, shape.member) for v in value] if is_list else \
            [p for k, v in value.items() for p in ((k, shape.key), (v, shape.value))]  # fmt: skip
        for item, item_shape in items:
            if problem := _problem(item, item_shape):
                return f"has {item!r}, which {problem}"
    elif kind == "structure":
        if not isinstance(value, Mapping):
            return "must be a map"
        for key, item in value.items():
            if key in shape.members and (problem := _problem(item, shape.members[key])):
                return f"has {key}={item!r}, which {problem}"
    return None


def request_value(value: Any, setting: str, operation: str, member: str) -> Any:
    """`value` checked against what botocore's service model allows for `member` of `operation`'s request (type,
    min/max, pattern); returned unchanged. `setting`: the config key, for the message."""
    import botocore

    problem = _problem(value, _member_shape(operation, member, unwrap_last=False))
    if problem:
        shown = console_value(value)
        raise LaunchError(
            f"{setting}={shown} {problem} ({operation}'s {member} in botocore {botocore.__version__}'s service model)."
        )
    return value


def flags(node: Any, keys: tuple[str, ...], prefix: str = "") -> None:
    """On/off settings must be true or false: `wait=maybe` or `dry_run=flase` would otherwise count as true."""
    for key in keys:
        value = node.get(key) if hasattr(node, "get") else None
        if value is not None and not isinstance(value, bool):
            raise LaunchError(f"{prefix}{key}={console_value(value)} must be true or false.")


def console_value(value: Any) -> str:
    """A config value as it would be typed on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{console_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(console_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


def hyperparameters(encoded: Mapping[str, str], *, sdk_keys: int = 0) -> None:
    """Check the job's HyperParameters map as SageMaker counts it: every key (the SDK's own `sagemaker_*` keys
    included), lengths of the JSON-encoded values as sent. `sdk_keys`: how many of them the SDK added."""
    shape = _service_model().operation_model("CreateTrainingJob").input_shape.members["HyperParameters"]
    max_count, max_key, max_value = shape.metadata["max"], shape.key.metadata["max"], shape.value.metadata["max"]
    long_keys = [k for k in encoded if len(k) > max_key]
    long_values = [k for k, v in encoded.items() if len(v) > max_value]
    if long_keys or long_values:
        names = ", ".join(f"{k[:60]}{'...' if len(k) > 60 else ''}" for k in long_keys + long_values)
        raise LaunchError(
            f"Too long for a SageMaker hyperparameter (keys up to {max_key} characters, values up to {max_value} "
            f"after JSON encoding): {names}. Put such settings in a config file under conf/ (e.g. conf/experiment/) "
            "and select it with one override."
        )
    if len(encoded) > max_count:
        user = len(encoded) - sdk_keys
        raise LaunchError(
            f"The job would have {len(encoded)} hyperparameters ({user} training overrides + {sdk_keys} set by the "
            f"SageMaker SDK); SageMaker allows {max_count}. Group the overrides in an experiment config "
            "(conf/experiment/<name>.yaml) and pass experiment=<name>."
        )
