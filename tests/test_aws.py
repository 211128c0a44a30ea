"""The launchers' shared modules: launch.session (region/role/bucket, AWS_ENDPOINT_URL, telemetry opt-out),
launch.errors (AWS failures → one paragraph), launch.validate (checks against botocore's service model and S3's
naming rules, before any AWS call) and launch.console.

No network, no AWS: AWS calls go to the shared moto server on 127.0.0.1 through AWS_ENDPOINT_URL, the way a user
points the launchers at LocalStack/moto; everything else is local.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from moto_support import ACCOUNT, REGION

from launch import console, errors, session, validate
from launch.errors import LaunchError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _client_error(code: str, message: str, operation: str, status: int = 400):
    from botocore.exceptions import ClientError

    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


# ------------------------------------------------------------------------------------------------------------ region


def test_region_precedence_config_then_aws_region_then_default_region(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert session.resolve_region({}) == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert session.resolve_region({"region": None}) == "eu-central-1"
    assert session.resolve_region({"region": "ap-south-1"}) == "ap-south-1"


def test_region_from_profile_config(clean_env, monkeypatch):
    (clean_env / "aws-config").write_text("[profile dev]\nregion = eu-north-1\n[default]\nregion = us-west-2\n")
    assert session.resolve_region({}) == "us-west-2"
    monkeypatch.setenv("AWS_PROFILE", "dev")
    assert session.resolve_region({}) == "eu-north-1"
    monkeypatch.delenv("AWS_PROFILE")
    assert session.resolve_region({"profile": "dev"}) == "eu-north-1"
    assert session.boto_session({"profile": "dev"}).profile_name == "dev"


def test_no_region_is_one_paragraph(clean_env):
    with pytest.raises(LaunchError) as info:
        session.resolve_region({"region": None})
    text = str(info.value)
    assert text == errors.NO_REGION_MESSAGE
    assert "aws.region=" in text and "AWS_REGION" in text and "AWS_DEFAULT_REGION" in text and "\n" not in text


def test_unknown_profile_is_a_launch_error(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "does-not-exist")
    with pytest.raises(LaunchError, match="profile"):
        session.resolve_region({})


# --------------------------------------------------------------------------------------------- sessions / endpoints


def test_every_client_and_the_account_bucket_lookups_use_aws_endpoint_url(moto_env, api_calls):
    ctx = session.AwsContext({"prefix": "cola-bert"})
    sm = ctx.session
    assert sm.boto_region_name == REGION
    for client in (sm.sagemaker_client, sm.sagemaker_runtime_client, sm.s3_client, ctx.client("sts")):
        assert client.meta.endpoint_url == moto_env
    assert ctx.client("sagemaker").meta.endpoint_url == moto_env
    assert api_calls == []  # building the context asks AWS nothing
    # The account and the default bucket are looked up with our own clients (the SDK's own lookups would go to a
    # hard-coded public STS endpoint), then handed to the SDK Session, which creates the bucket.
    assert ctx.bucket == f"sagemaker-{REGION}-{ACCOUNT}" and ctx.account == ACCOUNT
    assert ctx.session.default_bucket() == ctx.bucket
    calls = [(service, op) for service, op, *_ in api_calls]
    assert ("sts", "GetCallerIdentity") in calls and ("s3", "CreateBucket") in calls
    assert all(endpoint == moto_env for *_, endpoint in api_calls)


def test_default_endpoints_without_aws_endpoint_url(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    ctx = session.AwsContext({})
    assert ctx.client("sagemaker").meta.endpoint_url == "https://api.sagemaker.us-east-1.amazonaws.com"
    assert ctx.client("sts").meta.endpoint_url.startswith("https://sts.")


def test_service_specific_endpoint_only_redirects_that_service(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    boto = session.boto_session({})
    assert boto.client("s3").meta.endpoint_url == "http://127.0.0.1:9"
    assert boto.client("sts").meta.endpoint_url.startswith("https://sts.")


def test_telemetry_is_opted_out(moto_env, monkeypatch):
    sagemaker = session.import_sagemaker()
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH
    from sagemaker.telemetry import telemetry_logging
    from sagemaker.telemetry.constants import Feature
    from sagemaker.utils import resolve_value_from_config

    sent: list = []
    monkeypatch.setattr(telemetry_logging, "_send_telemetry_request", lambda *a, **k: sent.append(a))
    ours = session.AwsContext({}).session
    assert resolve_value_from_config(None, TELEMETRY_OPT_OUT_PATH, default_value=False, sagemaker_session=ours)

    def job_for(sess):
        class Job:
            sagemaker_session = sess

            @telemetry_logging._telemetry_emitter(Feature.ESTIMATOR_V2, "estimator.fit")
            def fit(self):
                return "fitted"

        return Job()

    assert job_for(ours).fit() == "fitted"
    assert sent == []
    # Control: a plain SDK session (no opt-out) would send.
    plain = sagemaker.Session(boto_session=session.boto_session({}))
    assert job_for(plain).fit() == "fitted"
    assert len(sent) == 1


def test_user_telemetry_setting_is_respected(clean_env, monkeypatch, tmp_path):
    user_cfg = tmp_path / "sm-config.yaml"
    user_cfg.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: false\n")
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(user_cfg))
    assert session.sdk_defaults_config()["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is False
    monkeypatch.delenv("SAGEMAKER_USER_CONFIG_OVERRIDE")
    assert session.sdk_defaults_config()["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is True


def test_importing_sdk_and_building_a_session_prints_nothing(clean_env):
    env = {k: v for k, v in os.environ.items() if k != "SAGEMAKER_SUPPRESS_V2_WARNING"}
    env["AWS_REGION"] = REGION
    code = "from launch import session; session.AwsContext({})"
    cmd = [sys.executable, "-W", "default", "-c", code]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""


def test_the_sdk_is_used_through_its_public_api_only():
    """No monkeypatching of SDK internals: nothing under launch/ assigns to a sagemaker module attribute."""
    import re

    for path in (REPO_ROOT / "launch").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(sagemaker|sm)\.[\w.]+\s*=[^=]", text, re.M), path
        assert "setattr(sagemaker" not in text and "setattr(sm" not in text, path


# ------------------------------------------------------------------------------------------------------ role/bucket

ARN = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"


def test_role_from_config_makes_no_call(moto_env, api_calls):
    assert session.AwsContext({"role": ARN}).role == ARN
    assert api_calls == []


def test_role_that_is_not_an_arn_of_a_role(moto_env):
    with pytest.raises(LaunchError, match=r"aws\.role=arn:aws:iam::<account>:role/<name>"):
        session.AwsContext({"role": "arn:aws:iam::123:user/bob"}).role


def test_role_name_is_expanded_through_iam(moto_env):
    import boto3

    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName="ColaRole", AssumeRolePolicyDocument="{}", Path="/service-role/")
    assert session.AwsContext({"role": "ColaRole"}).role == f"arn:aws:iam::{ACCOUNT}:role/service-role/ColaRole"


def test_no_role_for_an_iam_user_explains_aws_role(moto_env):
    with pytest.raises(LaunchError) as info:
        session.AwsContext({"role": None}).role
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
    assert session.AwsContext({}).role == role_arn


def test_configured_bucket_is_used_without_a_call(moto_env, api_calls):
    ctx = session.AwsContext({"bucket": "my-bucket"})
    assert ctx.bucket == "my-bucket"
    assert api_calls == []


def test_bucket_names_are_checked_when_the_context_is_built(moto_env, api_calls):
    with pytest.raises(LaunchError, match="aws.bucket=My_Bucket is not a valid S3 bucket name"):
        session.AwsContext({"bucket": "My_Bucket"})
    assert api_calls == []


def test_aws_context_prefix_and_uris(moto_env):
    ctx = session.AwsContext({"bucket": "bkt", "prefix": "/cola-bert/", "role": f"arn:aws:iam::{ACCOUNT}:role/R"})
    assert ctx.region == REGION
    assert ctx.s3_uri("models", "x", "model.tar.gz") == "s3://bkt/cola-bert/models/x/model.tar.gz"
    assert ctx.role == f"arn:aws:iam::{ACCOUNT}:role/R"
    assert session.s3_uri("b", "", "k") == "s3://b/k"
    assert session.parse_s3_uri("s3://bucket/a/b.tar.gz") == ("bucket", "a/b.tar.gz")
    with pytest.raises(LaunchError, match="not an S3 URI"):
        session.parse_s3_uri("/local/file")


def test_describe_makes_no_call(clean_env, monkeypatch, api_calls):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    rows = session.AwsContext({"region": "eu-west-1", "prefix": "p"}).describe()
    assert rows["region"] == "eu-west-1" and rows["prefix"] == "p"
    assert rows["bucket"].startswith("sagemaker-eu-west-1-<account>")
    assert "looked up at run time" in rows["role"]
    assert rows["endpoint url"] == "http://127.0.0.1:9"
    assert api_calls == []


def test_download_an_object_and_a_missing_one(moto_env, tmp_path):
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="art")
    s3.put_object(Bucket="art", Key="jobs/j/output/model.tar.gz", Body=b"tar")
    ctx = session.AwsContext({})
    assert ctx.download("s3://art/jobs/j/output/model.tar.gz", tmp_path).read_bytes() == b"tar"
    with pytest.raises(errors.NotFound, match="while downloading s3://art/jobs/nope/model.tar.gz"):
        ctx.download("s3://art/jobs/nope/model.tar.gz", tmp_path)
    with pytest.raises(LaunchError, match="names no object"):
        ctx.download("s3://art/jobs/", tmp_path)


# -------------------------------------------------------------------------------------------------------- validate


def test_instance_types_come_from_botocore_and_suggest_the_closest():
    assert validate.instance_type("ml.g5.xlarge", "CreateTrainingJob") == "ml.g5.xlarge"
    with pytest.raises(LaunchError) as info:
        validate.instance_type("ml.c5.huge", "CreateEndpointConfig", setting="deploy.instance_type")
    text = str(info.value)
    assert text.startswith("deploy.instance_type=ml.c5.huge is not an instance type SageMaker accepts for "
                           "CreateEndpointConfig")  # fmt: skip
    assert "ml.c5.large" in text and "\n" not in text
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    transform = model.shape_for("TransformInstanceType").enum
    assert validate.instance_types("CreateTransformJob") == list(transform)
    assert "ml.t2.medium" in validate.instance_types("CreateEndpointConfig")  # serving only
    assert "ml.t2.medium" not in validate.instance_types("CreateTrainingJob")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("ab", "3 to 63"), ("a" * 64, "3 to 63"), ("My-Bucket", "lowercase"), ("-bucket", "starting and ending"),
     ("a..b", "next to another dot"), ("a.-b", "next to another dot"), ("192.168.1.1", "IP address"),
     ("xn--bucket", "reserved"), ("bucket-s3alias", "reserved"), ("s3://bucket", "lowercase")],
)  # fmt: skip
def test_bucket_naming_rules(name, fragment):
    with pytest.raises(LaunchError, match=fragment):
        validate.bucket_name(name)


def test_valid_bucket_names():
    for name in ("abc", "my-bucket.logs", "sagemaker-us-east-1-123456789012", "a" * 63):
        assert validate.bucket_name(name) == name


def test_role_arn_shape_comes_from_the_service_model():
    assert validate.role_arn("arn:aws-cn:iam::123456789012:role/path/Name") == "arn:aws-cn:iam::123456789012:role/path/Name"
    for bad in ("arn:aws:iam::123:role/x", "arn:aws:iam::123456789012:user/x", "SageMakerRole"):
        with pytest.raises(LaunchError, match="is not an IAM role ARN"):
            validate.role_arn(bad)


@pytest.mark.parametrize(
    ("value", "member", "fragment"),
    [(-5, "StoppingCondition.MaxRuntimeInSeconds", "must be a whole number of at least 1"),
     (True, "StoppingCondition.MaxRuntimeInSeconds", "must be a whole number"),
     ("subnet-1", "VpcConfig.Subnets", "must be a list"),
     ([f"subnet-{i}" for i in range(17)], "VpcConfig.Subnets", "must have from 1 to 16 entries"),
     ("a?b", "Tags.Value", "must match the pattern"),
     ({"1A": "x"}, "Environment", "has '1A', which must match the pattern"),
     ("yes", "EnableManagedSpotTraining", "must be true or false")],
)  # fmt: skip
def test_request_values_are_checked_against_the_service_model(value, member, fragment):
    with pytest.raises(LaunchError) as info:
        validate.request_value(value, "setting", "CreateTrainingJob", member)
    assert fragment in str(info.value) and f"(CreateTrainingJob's {member} in botocore" in str(info.value)


def test_request_values_the_service_model_allows():
    for value, member in ((3600, "StoppingCondition.MaxRuntimeInSeconds"), (["subnet-0a1"], "VpcConfig.Subnets"),
                          ("équipe nlp:/=+-@", "Tags.Value"), ({"MY_FLAG": "1"}, "Environment")):  # fmt: skip
        assert validate.request_value(value, "setting", "CreateTrainingJob", member) == value


def test_hyperparameter_limits_count_every_key():
    validate.hyperparameters({f"k{i}": '"1"' for i in range(100)}, sdk_keys=5)
    with pytest.raises(LaunchError, match=r"101 hyperparameters \(96 training overrides \+ 5 set by the SageMaker SDK\)"):
        validate.hyperparameters({f"k{i}": '"1"' for i in range(101)}, sdk_keys=5)
    with pytest.raises(LaunchError, match="Too long.*kkk"):
        validate.hyperparameters({"k" * 257: '"1"'})
    validate.hyperparameters({"task_name": '"' + "x" * 2498 + '"'})  # 2,500 characters as sent
    with pytest.raises(LaunchError, match="task_name"):
        validate.hyperparameters({"task_name": '"' + "x" * 2499 + '"'})


# ------------------------------------------------------------------------------------------------------------ errors


def test_no_credentials_is_one_paragraph(clean_env):
    with pytest.raises(LaunchError) as info:
        with errors.aws_errors("checking the account"):
            session.boto_session({"region": REGION}).client("sts").get_caller_identity()
    text = str(info.value)
    assert text.startswith("No usable AWS credentials were found while checking the account")
    assert "AWS_PROFILE" in text and "aws sso login" in text and "AWS_ACCESS_KEY_ID" in text


def test_no_region_error_from_botocore(clean_env):
    import boto3

    with pytest.raises(LaunchError) as info:
        with errors.aws_errors():
            boto3.session.Session().client("sagemaker")
    assert str(info.value) == errors.NO_REGION_MESSAGE


def test_unreachable_endpoint(clean_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    with pytest.raises(LaunchError, match=r"Could not reach AWS \(AWS_ENDPOINT_URL=http://127.0.0.1:9\)"):
        with errors.aws_errors():
            session.boto_session({"region": REGION}).client("sagemaker").list_endpoints()


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
        with errors.aws_errors("deploying"):
            raise _client_error(*error)
    text = str(info.value)
    for fragment in expected:
        assert fragment in text
    assert "\n" not in text
    assert isinstance(info.value.__cause__, Exception)


def test_s3_upload_failure_becomes_paragraph():
    from boto3.exceptions import S3UploadFailedError

    with pytest.raises(LaunchError, match="Access to S3 was denied while uploading"):
        with errors.aws_errors("uploading"):
            raise S3UploadFailedError("Failed to upload x: An error occurred (AccessDenied) when calling PutObject")


def test_unsupported_framework_version_from_image_uris():
    session.import_sagemaker()
    from sagemaker import image_uris

    with pytest.raises(LaunchError) as info:
        with errors.aws_errors("resolving the image"):
            image_uris.retrieve("pytorch", REGION, version="9.9.9", py_version="py312", instance_type="ml.c5.large",
                                image_scope="inference")  # fmt: skip
    text = str(info.value)
    assert text.startswith("The SageMaker SDK rejected the settings while resolving the image")
    assert "9.9.9" in text and "2.6.0" in text  # the SDK's list of valid versions


def test_other_errors_pass_through():
    with pytest.raises(ValueError, match="a bug"):
        with errors.aws_errors():
            raise ValueError("a bug")
    with pytest.raises(KeyError):
        with errors.aws_errors():
            raise KeyError("x")


def test_exit_on_error_prints_one_paragraph_without_traceback(capsys, clean_env):
    @errors.exit_on_error
    def cli():
        import boto3

        boto3.session.Session().client("sagemaker")  # NoRegionError from botocore

    with pytest.raises(SystemExit) as info:
        cli()
    assert info.value.code == 2  # a user error
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Error: No AWS region is configured.")
    assert "Traceback" not in err and "botocore" not in err
    assert len(err.strip().splitlines()) <= 4  # one paragraph (soft-wrapped at most by the terminal)


@pytest.mark.parametrize(
    "error",
    [("ValidationException", "Could not find model \"x\".", "DescribeModel", 400),
     ("ValidationException", "Requested resource not found.", "DescribeTrainingJob", 400),
     ("404", "Not Found", "HeadObject", 404), ("NoSuchKey", "The key does not exist", "GetObject", 404)],
)  # fmt: skip
def test_missing_resources_are_not_found(error):
    with pytest.raises(errors.NotFound) as info:
        with errors.aws_errors("looking it up"):
            raise _client_error(*error)
    assert str(info.value).startswith("Not found while looking it up")


def test_a_failed_job_exits_1(capsys):
    session.import_sagemaker()
    from sagemaker.exceptions import UnexpectedStatusException

    @errors.exit_on_error
    def cli():
        raise UnexpectedStatusException("Error for Training job j: Failed. Reason: AlgorithmError", ["Completed"], "Failed")

    with pytest.raises(SystemExit) as info:
        cli()
    assert info.value.code == 1
    assert "SageMaker reported a failure: Error for Training job j: Failed. Reason: AlgorithmError" in capsys.readouterr().err


def test_exit_on_error_returns_value():
    assert errors.exit_on_error(lambda x: x + 1)(1) == 2


# ------------------------------------------------------------------------------------------------------------ output


def test_print_plan_and_dry_run(capsys):
    console.plan("Deploy x", {"image uri": "123.dkr.ecr/repo:tag", "env": {"B": "2", "A": "1"}, "none": None},
                 dry_run=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Deploy x (dry run)"
    assert out[1].split() == ["image", "uri", "123.dkr.ecr/repo:tag"]
    assert out[2].split(None, 1) == ["env", '{"A": "1", "B": "2"}']
    assert out[3].split() == ["none", "-"]
    assert out[-1] == "Dry run: no AWS call was made; nothing was uploaded or created."


def test_warn_goes_to_stderr(capsys):
    console.warn("careful [not markup]")
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "Warning: careful [not markup]"
