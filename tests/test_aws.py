"""launch.aws: region/role/bucket resolution, AWS_ENDPOINT_URL handling, telemetry opt-out, error paragraphs.

No network, no AWS: AWS calls go to a moto server on 127.0.0.1 (ThreadedMotoServer) through AWS_ENDPOINT_URL, the
way a user points the launchers at LocalStack/moto; everything else is local.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


from launch import aws
from launch.aws import LaunchError

REPO_ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


def _client_error(code: str, message: str, operation: str, status: int = 400):
    from botocore.exceptions import ClientError

    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


# ------------------------------------------------------------------------------------------------------------ region


def test_region_precedence_config_then_aws_region_then_default_region(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert aws.resolve_region({}) == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert aws.resolve_region({"region": None}) == "eu-central-1"
    assert aws.resolve_region({"region": "ap-south-1"}) == "ap-south-1"


def test_region_from_profile_config(clean_env, monkeypatch):
    (clean_env / "aws-config").write_text("[profile dev]\nregion = eu-north-1\n[default]\nregion = us-west-2\n")
    assert aws.resolve_region({}) == "us-west-2"
    monkeypatch.setenv("AWS_PROFILE", "dev")
    assert aws.resolve_region({}) == "eu-north-1"
    monkeypatch.delenv("AWS_PROFILE")
    assert aws.resolve_region({"profile": "dev"}) == "eu-north-1"
    assert aws.boto_session({"profile": "dev"}).profile_name == "dev"


def test_no_region_is_one_paragraph(clean_env):
    with pytest.raises(LaunchError) as info:
        aws.resolve_region({"region": None})
    text = str(info.value)
    assert text == aws.NO_REGION_MESSAGE
    assert "aws.region=" in text and "AWS_REGION" in text and "AWS_DEFAULT_REGION" in text and "\n" not in text


def test_unknown_profile_is_a_launch_error(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "does-not-exist")
    with pytest.raises(LaunchError, match="profile"):
        aws.resolve_region({})


# --------------------------------------------------------------------------------------------- sessions / endpoints


def test_session_clients_all_use_aws_endpoint_url(moto_env):
    session = aws.sagemaker_session({"region": None, "bucket": None})
    assert session.boto_region_name == REGION
    assert session.sagemaker_client.meta.endpoint_url == moto_env
    assert session.sagemaker_runtime_client.meta.endpoint_url == moto_env
    assert session.s3_client.meta.endpoint_url == moto_env
    assert session.s3_resource.meta.client.meta.endpoint_url == moto_env
    # SDK v2 hard-codes https://sts.<region>.amazonaws.com for its STS clients: redirected too.
    sts = session.boto_session.client("sts", endpoint_url="https://sts.us-east-1.amazonaws.com")
    assert sts.meta.endpoint_url == moto_env
    # ...and the SDK's own account lookup / default bucket reach the moto server.
    assert session.account_id() == ACCOUNT
    assert session.default_bucket() == f"sagemaker-{REGION}-{ACCOUNT}"
    assert aws.configured_endpoint_url(session.boto_session, "sagemaker") == moto_env


def test_explicit_endpoints_kept_without_aws_endpoint_url(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    boto = aws.boto_session({})
    assert aws.configured_endpoint_url(boto, "sts") is None
    sts = boto.client("sts", endpoint_url="https://sts.us-east-1.amazonaws.com")
    assert sts.meta.endpoint_url == "https://sts.us-east-1.amazonaws.com"
    assert boto.client("sagemaker").meta.endpoint_url == "https://api.sagemaker.us-east-1.amazonaws.com"


def test_service_specific_endpoint_only_redirects_that_service(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    boto = aws.boto_session({})
    assert boto.client("s3").meta.endpoint_url == "http://127.0.0.1:9"
    assert boto.client("sts", endpoint_url="https://sts.us-east-1.amazonaws.com").meta.endpoint_url.startswith(
        "https://sts."
    )


def test_telemetry_is_opted_out(moto_env, monkeypatch):
    sagemaker = aws.import_sagemaker()
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH
    from sagemaker.telemetry import telemetry_logging
    from sagemaker.telemetry.constants import Feature
    from sagemaker.utils import resolve_value_from_config

    sent: list = []
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a))
    session = aws.sagemaker_session({})
    assert resolve_value_from_config(None, TELEMETRY_OPT_OUT_PATH, default_value=False, sagemaker_session=session)

    def job_for(sess):
        class Job:
            sagemaker_session = sess

            @telemetry_logging._telemetry_emitter(Feature.ESTIMATOR_V2, "estimator.fit")
            def fit(self):
                return "fitted"

        return Job()

    assert job_for(session).fit() == "fitted"
    assert sent == []
    # Control: a plain SDK session (no opt-out) would send.
    plain = sagemaker.Session(boto_session=aws.boto_session({}))
    assert job_for(plain).fit() == "fitted"
    assert len(sent) == 1


def test_user_telemetry_setting_is_respected(clean_env, monkeypatch, tmp_path):
    user_cfg = tmp_path / "sm-config.yaml"
    user_cfg.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: false\n")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(user_cfg))
    assert aws.sdk_defaults_config()["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is False
    monkeypatch.delenv("SAGEMAKER_USER_CONFIG_OVERRIDE")
    assert aws.sdk_defaults_config()["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is True


def test_importing_sdk_and_building_a_session_prints_nothing(clean_env):
    env = {k: v for k, v in os.environ.items() if k != "SAGEMAKER_SUPPRESS_V2_WARNING"}
    env["AWS_REGION"] = REGION
    code = "from launch import aws; aws.import_sagemaker(); aws.sagemaker_session({})"
    cmd = [sys.executable, "-W", "default", "-c", code]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""


# ------------------------------------------------------------------------------------------------------ role/bucket


def test_role_from_config_makes_no_call(moto_env, api_calls):
    arn = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
    session = aws.sagemaker_session({})
    assert aws.resolve_role({"role": arn}, session) == arn
    assert api_calls == []


def test_role_that_is_not_an_arn_of_a_role(moto_env):
    session = aws.sagemaker_session({})
    with pytest.raises(LaunchError, match=r"aws\.role=arn:aws:iam::<account>:role/<name>"):
        aws.resolve_role({"role": "arn:aws:iam::123:user/bob"}, session)


def test_role_name_is_expanded_through_iam(moto_env):
    import boto3

    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="ColaRole", AssumeRolePolicyDocument="{}", Path="/service-role/")
    session = aws.sagemaker_session({})
    assert aws.resolve_role({"role": "ColaRole"}, session) == f"arn:aws:iam::{ACCOUNT}:role/service-role/ColaRole"


def test_no_role_for_an_iam_user_explains_aws_role(moto_env):
    session = aws.sagemaker_session({})
    with pytest.raises(LaunchError) as info:
        aws.resolve_role({"role": None}, session)
    text = str(info.value)
    assert "aws.role=arn:aws:iam::<account>:role/<name>" in text
    assert "user/moto" in text and "not a role" in text


def test_assumed_role_credentials_resolve_to_the_role(moto_env, monkeypatch):
    import boto3

    iam = boto3.client("iam", region_name=REGION)
    role_arn = iam.create_role(RoleName="SageMakerExec", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    creds = boto3.client("sts", region_name=REGION).assume_role(RoleArn=role_arn, RoleSessionName="me")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    session = aws.sagemaker_session({})
    assert aws.resolve_role({}, session) == role_arn


def test_bucket_from_config_or_sdk_default(moto_env, api_calls):
    import boto3

    session = aws.sagemaker_session({"bucket": "my-bucket"})
    assert aws.resolve_bucket({"bucket": "my-bucket"}, session) == "my-bucket"
    assert api_calls == []
    session = aws.sagemaker_session({})
    assert aws.resolve_bucket({}, session) == f"sagemaker-{REGION}-{ACCOUNT}"
    names = [b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]]
    assert names == [f"sagemaker-{REGION}-{ACCOUNT}"]


def test_aws_context_prefix_and_uris(moto_env):
    ctx = aws.connect({"bucket": "b", "prefix": "/cola-bert/", "role": f"arn:aws:iam::{ACCOUNT}:role/R"})
    assert ctx.region == REGION
    assert ctx.s3_uri("models", "x", "model.tar.gz") == "s3://b/cola-bert/models/x/model.tar.gz"
    assert ctx.role == f"arn:aws:iam::{ACCOUNT}:role/R"
    assert ctx.endpoint_url == moto_env
    assert aws.s3_uri("b", "", "k") == "s3://b/k"
    assert aws.parse_s3_uri("s3://bucket/a/b.tar.gz") == ("bucket", "a/b.tar.gz")
    with pytest.raises(LaunchError, match="not an S3 URI"):
        aws.parse_s3_uri("/local/file")


def test_describe_targets_makes_no_call(clean_env, monkeypatch, api_calls):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    rows = aws.describe_targets({"region": "eu-west-1", "prefix": "p"})
    assert rows["region"] == "eu-west-1"
    assert rows["bucket"].startswith("sagemaker-eu-west-1-<account>")
    assert "get_execution_role" in rows["role"]
    assert rows["endpoint url"] == "http://127.0.0.1:9"
    assert api_calls == []


# ------------------------------------------------------------------------------------------------------------ errors


def test_no_credentials_is_one_paragraph(clean_env):
    with pytest.raises(LaunchError) as info:
        with aws.aws_errors("checking the account"):
            aws.boto_session({"region": REGION}).client("sts").get_caller_identity()
    text = str(info.value)
    assert text.startswith("No usable AWS credentials were found while checking the account")
    assert "AWS_PROFILE" in text and "aws sso login" in text and "AWS_ACCESS_KEY_ID" in text


def test_no_region_error_from_botocore(clean_env):
    import boto3

    with pytest.raises(LaunchError) as info:
        with aws.aws_errors():
            boto3.session.Session().client("sagemaker")
    assert str(info.value) == aws.NO_REGION_MESSAGE


def test_unreachable_endpoint(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(LaunchError, match=r"Could not reach AWS \(AWS_ENDPOINT_URL=http://127.0.0.1:9\)"):
        with aws.aws_errors():
            aws.boto_session({"region": REGION}).client("sagemaker").list_endpoints()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ("AccessDenied", "Access Denied", "PutObject", 403),
            ["Access to S3 was denied (PutObject", "aws.bucket=<name>"],
        ),
        (("403", "Forbidden", "HeadBucket", 403), ["Access to S3 was denied (HeadBucket", "s3:ListBucket"]),
        (("AccessDeniedException", "no", "CreateModel", 400), ["Access denied calling CreateModel", "iam:PassRole"]),
        (
            ("ValidationException", "Could not assume role arn:aws:iam::1:role/x", "CreateModel", 400),
            ["SageMaker rejected CreateModel", "aws.role=arn:aws:iam::<account>:role/<name>"],
        ),
        (("ExpiredTokenException", "expired", "CreateEndpoint", 400), ["AWS rejected your credentials", "AWS_PROFILE"]),
        (("ResourceLimitExceeded", "quota", "CreateEndpoint", 400), ["quota", "Service Quotas"]),
        (
            ("InternalFailure", "boom", "DescribeEndpoint", 500),
            ["AWS call DescribeEndpoint failed while deploying (InternalFailure: boom)."],
        ),
    ],
)
def test_client_errors_become_paragraphs(error, expected):
    with pytest.raises(LaunchError) as info:
        with aws.aws_errors("deploying"):
            raise _client_error(*error)
    text = str(info.value)
    for fragment in expected:
        assert fragment in text
    assert "\n" not in text
    assert isinstance(info.value.__cause__, Exception)


def test_s3_upload_failure_becomes_paragraph():
    from boto3.exceptions import S3UploadFailedError

    with pytest.raises(LaunchError, match="Access to S3 was denied while uploading"):
        with aws.aws_errors("uploading"):
            raise S3UploadFailedError("Failed to upload x: An error occurred (AccessDenied) when calling PutObject")


def test_unsupported_framework_version_from_image_uris():
    aws.import_sagemaker()
    from sagemaker import image_uris

    with pytest.raises(LaunchError) as info:
        with aws.aws_errors("resolving the image"):
            image_uris.retrieve("pytorch", REGION, version="9.9.9", py_version="py312", instance_type="ml.c5.large",
                                image_scope="inference")  # fmt: skip
    text = str(info.value)
    assert text.startswith("The SageMaker SDK rejected the settings while resolving the image")
    assert "9.9.9" in text and "2.6.0" in text  # the SDK's list of valid versions


def test_other_errors_pass_through():
    with pytest.raises(ValueError, match="a bug"):
        with aws.aws_errors():
            raise ValueError("a bug")
    with pytest.raises(KeyError):
        with aws.aws_errors():
            raise KeyError("x")


def test_exit_on_error_prints_one_paragraph_without_traceback(capsys, clean_env):
    @aws.exit_on_error
    def cli():
        import boto3

        boto3.session.Session().client("sagemaker")  # NoRegionError from botocore

    with pytest.raises(SystemExit) as info:
        cli()
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Error: No AWS region is configured.")
    assert "Traceback" not in err and "botocore" not in err
    assert len(err.strip().splitlines()) <= 4  # one paragraph (soft-wrapped at most by the terminal)


def test_exit_on_error_returns_value():
    assert aws.exit_on_error(lambda x: x + 1)(1) == 2


# ------------------------------------------------------------------------------------------------------------ output


def test_print_plan_and_dry_run(capsys):
    aws.dry_run("Deploy x", {"image uri": "123.dkr.ecr/repo:tag", "env": {"B": "2", "A": "1"}, "none": None})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Deploy x (dry run)"
    assert out[1].split() == ["image", "uri", "123.dkr.ecr/repo:tag"]
    assert out[2].split(None, 1) == ["env", '{"A": "1", "B": "2"}']
    assert out[3].split() == ["none", "-"]
    assert out[-1] == "Dry run: no AWS call was made; nothing was uploaded or created."


def test_warn_goes_to_stderr(capsys):
    aws.warn("careful [not markup]")
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "Warning: careful [not markup]"
