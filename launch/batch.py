"""Score a file of sentences (one per line) with SageMaker Batch Transform.

    python -m launch.batch model_data=OUT/model.tar.gz input=sentences.txt output=s3://bucket/cola/batch/
    python -m launch.batch model_data=s3://b/k/model.tar.gz input=s3://b/in/sentences.txt output=s3://b/out/ wait=false
    python -m launch.batch ... instance_type=ml.c5.2xlarge instance_count=2 dry_run=true

The job splits the input at line ends (SplitType Line), sends mini-batches of whole lines up to max_payload_mb as
text/plain (BatchStrategy MultiRecord), asks for application/jsonlines and joins the answers with newlines
(AssembleWith Line): `<output>/<input file name>.out` holds one JSON object per input line, in order. A local
input file is uploaded byte for byte; a local model.tar.gz is checked like `cola_bert.serve` checks it and uploaded
once per sha256; the SageMaker Model is created once per archive digest and serving image, then re-used. With
wait=true the .out file is downloaded next to the input (download_dir for s3:// inputs) and summarised.
"""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from cola_bert.config import conf_dir
from cola_bert.console import config_composed, run_hydra
from launch import console, images, model_artifact, validate
from launch.console import info
from launch.deploy import delete_command
from launch.errors import LaunchError, aws_errors, exit_on_error, lookup
from launch.session import AwsContext, import_sagemaker, opt, parse_s3_object, parse_s3_uri

MAX_PAYLOAD_MB = 100  # SageMaker: MaxPayloadInMB <= 100 and MaxPayloadInMB x MaxConcurrentTransforms <= 100
INVOCATION_TIMEOUT_S = 3600  # SageMaker's maximum; the serving toolkit's own default is 60 s per request
# The request fields of the job (CreateTransformJob names): one JSON line answered per input line, in order.
TRANSFORM = {"ContentType": "text/plain", "SplitType": "Line", "BatchStrategy": "MultiRecord",
             "AssembleWith": "Line", "Accept": "application/jsonlines"}  # fmt: skip


def check_input_file(path: Path, max_payload_mb: int) -> int:
    """A UTF-8 file with one non-blank sentence per line, each within the payload limit; returns the line count.

    The handler skips blank lines and also splits at a lone carriage return, which would shift every later answer
    against its input line, so such files are refused with the line numbers."""
    if not path.is_file():
        raise LaunchError(f"input={path} does not exist (or is not a file): give a text file, one sentence per line.")
    blank, stray_cr, too_long, count = [], [], [], 0
    with open(path, "rb") as handle:
        for count, raw in enumerate(handle, start=1):
            try:
                text = (raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")).decode("utf-8")
            except UnicodeDecodeError as err:
                raise LaunchError(f"input={path} is not UTF-8 text (line {count}: {err}). Save it as UTF-8.") from None
            if not text.strip():
                blank.append(count)
            if "\r" in text:
                stray_cr.append(count)
            if len(raw) > max_payload_mb << 20:
                too_long.append(count)
    problems = []
    for numbers, what in ((blank, "blank lines"), (stray_cr, "lines with a carriage return inside"),
                          (too_long, "lines longer than max_payload_mb")):  # fmt: skip
        if numbers:
            shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
            problems.append(f"{what}: {shown}")
    if problems or not count:
        raise LaunchError(
            f"input={path} cannot be scored line by line: {'; '.join(problems) or 'it is empty'}. Batch Transform "
            f"answers one JSON line per sentence, so give one non-blank sentence per line (lines up to "
            f"max_payload_mb={max_payload_mb} MiB, newline \\n or \\r\\n)."
        )
    return count


def check_settings(cfg: DictConfig) -> None:
    validate.flags(cfg, ("wait", "dry_run"))
    for key in ("model_data", "input", "output"):
        if not opt(cfg, key):
            raise LaunchError(
                f"{key}= is missing. Usage: python -m launch.batch model_data=<model.tar.gz or s3://...> "
                "input=<sentences.txt or s3://...> output=s3://<bucket>/<prefix>/ [instance_type=... wait=true]."
            )
    validate.instance_type(str(opt(cfg, "instance_type")), "CreateTransformJob", setting="instance_type")
    validate.request_value(opt(cfg, "instance_count"), "instance_count", "CreateTransformJob",
                           "TransformResources.InstanceCount")
    payload = opt(cfg, "max_payload_mb")
    concurrent = opt(cfg, "max_concurrent_transforms")
    if concurrent is not None:
        validate.request_value(concurrent, "max_concurrent_transforms", "CreateTransformJob", "MaxConcurrentTransforms")
    concurrent = concurrent or 1
    if not isinstance(payload, int) or payload < 1 or payload * concurrent > MAX_PAYLOAD_MB:
        raise LaunchError(
            f"max_payload_mb={payload} (x max_concurrent_transforms={concurrent}) must be a whole number of MiB from "
            f"1 to {MAX_PAYLOAD_MB} in total: SageMaker's limit for MaxPayloadInMB x MaxConcurrentTransforms."
        )
    if not str(opt(cfg, "output")).startswith("s3://"):
        raise LaunchError(f"output={opt(cfg, 'output')} must be an S3 prefix, e.g. output=s3://<bucket>/cola/batch/.")
    validate.bucket_name(parse_s3_uri(str(cfg.output))[0], setting="output")
    if str(cfg.model_data).startswith("s3://"):
        parse_s3_object(str(cfg.model_data), "model_data")
    if str(cfg.input).startswith("s3://"):
        parse_s3_uri(str(cfg.input))
    for key, operation, member in (("job_name", "CreateTransformJob", "TransformJobName"),
                                   ("model_name", "CreateModel", "ModelName")):  # fmt: skip
        if opt(cfg, key):
            validate.resource_name(str(cfg[key]), key, operation, member)


def container_env(cfg: DictConfig) -> dict[str, str]:
    """The serving container sized for one mini-batch of up to max_payload_mb of lines. Its defaults would fail
    large ones: TorchServe takes requests and answers of at most 6.5 MB (its answer is one JSON object per line, up to
    ~50x a short line) within 60 s (SAGEMAKER_MODEL_SERVER_TIMEOUT), and the handler caps sentences per request
    (COLA_MAX_SENTENCES; a line holds at least 2 bytes). TorchServe reads TS_* variables (enable_envvars_config)."""
    payload = int(cfg.max_payload_mb) << 20
    limits = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": str(INVOCATION_TIMEOUT_S), "TS_MAX_REQUEST_SIZE": str(payload + 4096),
              "TS_MAX_RESPONSE_SIZE": str(2**31 - 1), "COLA_MAX_SENTENCES": str(payload // 2)}  # fmt: skip
    return limits | images.serving_env(cfg)


def s3_input_name(ctx: AwsContext, uri: str) -> str:
    """The file name of an s3:// input object, or "" for a prefix (the job then writes one .out per object)."""
    bucket, key = parse_s3_uri(uri)
    if not key or uri.endswith("/"):
        return ""
    if lookup(ctx.client("s3").head_object, uri, Bucket=bucket, Key=key):
        return Path(key).name
    with aws_errors(f"listing {uri}/"):
        if not ctx.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{key}/", MaxKeys=1).get("KeyCount"):
            raise LaunchError(f"input={uri} is neither an S3 object nor a prefix holding one. Check the URI.")
    return ""


def model_name_for(cfg: DictConfig, digest: str, image: images.Image, env: dict[str, str]) -> str:
    """One SageMaker Model per archive digest + serving image + environment: re-running re-uses it."""
    if opt(cfg, "model_name"):
        return str(cfg.model_name)
    key = hashlib.sha256(json.dumps([digest, image.uri, env], sort_keys=True).encode()).hexdigest()
    return f"{opt(cfg, 'base_name') or 'cola-bert-batch'}-{key[:16]}"


def ensure_model(ctx: AwsContext, name: str, model_data: str, image: images.Image, env: dict[str, str]) -> bool:
    """Create the Model unless it exists with the same archive and image; True when it was created."""
    existing = lookup(ctx.session.sagemaker_client.describe_model, f"model {name}", ModelName=name)
    if existing:
        container = existing.get("PrimaryContainer") or {}
        if (container.get("ModelDataUrl"), container.get("Image")) != (model_data, image.uri):
            raise LaunchError(
                f"Model {name} exists but serves {container.get('ModelDataUrl')} with {container.get('Image')}, "
                f"not {model_data} with {image.uri}. Pass another model_name=, or remove it with: "
                f"{delete_command(ctx, name, 'model_name')}"
            )
        info(f"Re-using model {name} (same archive and image)")
        return False
    model = images.pytorch_model(ctx, image, model_data, name, env)
    info(f"Creating model {name}")
    with aws_errors(f"creating model {name}"):
        model.create()
    return True


def summarise(out_file: Path, expected_lines: int | None) -> dict[str, Any]:
    """Print how many answers of each label the job's .out file holds."""
    with open(out_file, encoding="utf-8") as handle:
        rows = (json.loads(line) for line in handle if line.strip())
        labels = collections.Counter(str(row.get("label_name", row.get("label"))) for row in rows)
    count = labels.total()
    console.out.print(f"[bold]{out_file}[/]: {count} predictions")
    for label, n in labels.most_common():
        info(f"  {label}: {n} ({n / max(count, 1):.1%})")
    if expected_lines is not None and count != expected_lines:
        console.warn(f"{out_file} has {count} answers for {expected_lines} input lines.")
    return {"count": count, "labels": dict(labels), "file": str(out_file)}


def execute(cfg: DictConfig) -> dict[str, Any]:
    check_settings(cfg)
    source, data = str(cfg.model_data), str(cfg.input)
    artifact = None if source.startswith("s3://") else model_artifact.inspect_local(source)
    local_input = None if data.startswith("s3://") else Path(data).expanduser()
    lines = check_input_file(local_input, int(cfg.max_payload_mb)) if local_input else None
    ctx = AwsContext(cfg.aws)
    image = images.choose(ctx.region, str(cfg.instance_type), **{k: opt(cfg, k) for k in images.PINS})
    env = container_env(cfg)
    job = str(opt(cfg, "job_name") or import_sagemaker().utils.name_from_base("cola-bert-batch"))
    output = str(cfg.output).rstrip("/")
    input_name = local_input.name if local_input else ("" if data.endswith("/") else Path(parse_s3_uri(data)[1]).name)
    staged = ("batch", job, "input", input_name)  # where a local input file goes, under <bucket>/<prefix>/
    output_file = f"{output}/{input_name or '<input file>'}.out"
    rows: dict[str, Any] = {
        "transform job": job,
        "model": model_name_for(cfg, artifact.digest, image, env) if artifact else "cola-bert-batch-<archive digest>",
        "image": f"{image.uri} ({image.reason})",
        "model data": model_artifact.upload_uri(ctx, artifact, planned=True) if artifact else source,
        "input": f"{ctx.s3_uri(*staged, planned=True)} ({lines} lines, uploaded from {local_input})" if local_input
        else data,
        "output": output_file, "request": {**TRANSFORM, "MaxPayloadInMB": cfg.max_payload_mb},
        "instances": f"{cfg.instance_count} x {cfg.instance_type}", "environment": env, **ctx.describe(),
        "wait": bool(cfg.wait),
    }  # fmt: skip
    console.plan(f"Batch Transform {job}", rows, dry_run=bool(cfg.dry_run))
    if cfg.dry_run:
        return {"dry_run": True, "rows": rows, "job_name": job}
    _ = ctx.role  # resolved (or refused) before anything is uploaded or created
    artifact = artifact or model_artifact.inspect_s3(ctx, source)
    model_name = model_name_for(cfg, artifact.digest, image, env)
    created = ensure_model(ctx, model_name, model_artifact.upload_once(ctx, artifact), image, env)
    if local_input:
        input_uri = ctx.s3_uri(*staged)
        ctx.upload(local_input, input_uri, str(local_input), announce=True)
    else:
        input_uri, input_name = data, s3_input_name(ctx, data)
        output_file = f"{output}/{input_name or '<input file>'}.out"
    from sagemaker.transformer import Transformer

    transformer = Transformer(
        model_name=model_name, instance_count=int(cfg.instance_count), instance_type=str(cfg.instance_type),
        strategy=TRANSFORM["BatchStrategy"], assemble_with=TRANSFORM["AssembleWith"], output_path=output,
        accept=TRANSFORM["Accept"], max_concurrent_transforms=opt(cfg, "max_concurrent_transforms"),
        max_payload=int(cfg.max_payload_mb), env=env, sagemaker_session=ctx.session,
    )  # fmt: skip
    info(f"Starting transform job {job}")
    with aws_errors(f"starting transform job {job}"):
        transformer.transform(input_uri, data_type="S3Prefix", content_type=TRANSFORM["ContentType"],
                              split_type=TRANSFORM["SplitType"], job_name=job, wait=False, logs=False,
                              model_client_config={"InvocationsTimeoutInSeconds": INVOCATION_TIMEOUT_S})  # fmt: skip
    result: dict[str, Any] = {"dry_run": False, "job_name": job, "model_name": model_name, "model_created": created,
                              "input": input_uri, "output": output_file}  # fmt: skip
    if not cfg.wait:
        info(f"Status: aws sagemaker describe-transform-job --transform-job-name {job} --region {ctx.region}")
        return result
    logs = f"CloudWatch log group /aws/sagemaker/TransformJobs, streams {job}/*"
    info(f"Waiting for {job} ({logs})")
    with console.sdk_waiter(), aws_errors(f"running transform job {job}", f" Container logs: {logs}."):
        transformer.wait(logs=False)
    if not input_name:  # an s3:// prefix: one .out per input object
        info(f"Done: one <input file>.out per input file under {output}/ (aws s3 ls {output}/).")
        return result
    target_dir = Path(opt(cfg, "download_dir") or (local_input.parent if local_input else "."))
    result["summary"] = summarise(ctx.download(output_file, target_dir), lines)
    return result


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="batch")
def main(cfg: DictConfig) -> None:
    config_composed()
    exit_on_error(execute)(cfg)


if __name__ == "__main__":
    run_hydra(main)
