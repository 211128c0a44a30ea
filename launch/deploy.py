"""Deploy an exported cola-bert model to a SageMaker endpoint, smoke-test it, or delete what a deploy created.

    python -m launch.deploy model_data=outputs/export/model.tar.gz            # deploy=cpu (default)
    python -m launch.deploy deploy=serverless model_data=s3://bucket/key/model.tar.gz
    python -m launch.deploy deploy=gpu training_job=<training job name>       # export the job's model, then deploy
    python -m launch.deploy ... dry_run=true                                  # the plan; no AWS call
    python -m launch.deploy action=delete endpoint_name=<name>                # endpoint + config + model(s)

Stages: check the settings and the archive (no AWS call) → plan → upload once per archive digest → PyTorchModel
.deploy (CreateModel, CreateEndpointConfig, CreateEndpoint) → one test request through a Predictor. The container
runs the archive's own code/inference.py (SAGEMAKER_PROGRAM, no entry_point), so the SDK never repacks the archive.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from cola_bert.config import conf_dir
from cola_bert.console import config_composed, run_hydra
from launch import console, images, model_artifact, validate
from launch.console import info
from launch.errors import Interrupted, LaunchError, NotFound, aws_errors, exit_on_error, lookup
from launch.model_artifact import Artifact
from launch.session import AwsContext, import_sagemaker, opt, parse_s3_object

SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
EI_REFUSAL = (
    "deploy=elastic_inference is refused: Elastic Inference no longer exists. AWS stopped it for new customers on "
    "2023-04-15 and now documents it as no longer available; botocore documents the endpoint config's "
    "AcceleratorType as no longer supported. Even where an account still had it, this model could not run there: "
    "the EI containers (pytorch-inference-eia 1.3.1 / 1.5.1) are torch <= 1.5.1 on Python 3.6, which cannot load "
    "a TorchScript file written by torch 2 nor import the handler (it uses `from __future__ import annotations`). "
    "Nothing was uploaded or created. What does the job today: a small CPU endpoint, `python -m launch.deploy "
    "deploy=cpu model_data=OUT/model.tar.gz`; pay per request with nothing billed while idle, `python -m "
    "launch.deploy deploy=serverless model_data=OUT/model.tar.gz`; a GPU endpoint, `python -m launch.deploy "
    "deploy=gpu model_data=OUT/model.tar.gz`; and the fast int8 CPU path that replaces EI's low-latency promise, "
    "`python -m cola_bert.export model_dir=RUN/model output_dir=OUT format=onnx quantize=int8` followed by "
    "`python -m launch.deploy deploy=cpu model_data=OUT/model.tar.gz` (docs/sagemaker.md, 'Deploying')."
)


def delete_command(ctx: AwsContext, name: str, key: str = "endpoint_name") -> str:
    """The command that removes an endpoint with its config and models, or (`key="model_name"`) one model."""
    return f"python -m launch.deploy action=delete {key}={name} aws.region={ctx.region}"


@dataclass
class Plan:
    """What a deploy creates, decided before any AWS call."""

    endpoint_name: str
    image: images.Image
    env: dict[str, str]
    instance_type: str | None  # None: serverless
    artifact: Artifact | None  # None: a training job's (exported at run time) or an unread s3:// one (dry run)


def check_settings(cfg: DictConfig) -> None:
    """The deploy node and names checked locally (aws.* by AwsContext, a local archive by model_artifact)."""
    d, mode, smoke = cfg.deploy, opt(cfg.deploy, "mode"), cfg.get("smoke_test") or {}
    if mode == "elastic_inference" or opt(d, "accelerator_type"):
        raise LaunchError(EI_REFUSAL)  # before anything else
    validate.flags(cfg, ("wait", "dry_run"))
    validate.flags(smoke, ("enabled",), "smoke_test.")
    sentences = smoke.get("sentences")
    if sentences is not None and (isinstance(sentences, str) or not all(isinstance(x, str) for x in sentences)):
        raise LaunchError(f"smoke_test.sentences={validate.console_value(sentences)} must be a list of sentences, "
                          "e.g. 'smoke_test.sentences=[\"The cat sat on the mat.\"]'.")  # fmt: skip
    if mode == "serverless":
        if opt(d, "memory_size_in_mb") not in SERVERLESS_MEMORY_MB:  # the service model has only 1024..6144
            raise LaunchError(
                f"deploy.memory_size_in_mb={opt(d, 'memory_size_in_mb')} is not a serverless memory size; use one "
                f"of {', '.join(map(str, SERVERLESS_MEMORY_MB))}."
            )
        validate.request_value(opt(d, "max_concurrency"), "deploy.max_concurrency", "CreateEndpointConfig",
                               "ProductionVariants.ServerlessConfig.MaxConcurrency")
    elif mode == "realtime":
        validate.instance_type(str(opt(d, "instance_type")), "CreateEndpointConfig", setting="deploy.instance_type")
        validate.request_value(opt(d, "initial_instance_count"), "deploy.initial_instance_count",
                               "CreateEndpointConfig", "ProductionVariants.InitialInstanceCount")
    else:
        raise LaunchError(f"deploy.mode={mode!r} is not realtime or serverless; choose deploy=cpu|gpu|serverless.")
    workers = opt(d, "model_server_workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise LaunchError(f"deploy.model_server_workers={workers} must be a whole number of at least 1 (TorchServe "
                          "workers per instance), or null for one per vCPU.")  # fmt: skip
    names = {"endpoint_name": opt(cfg, "endpoint_name"), "deploy.base_name": opt(d, "base_name") or "cola-bert"}
    for setting, name in names.items():
        if name:
            validate.resource_name(str(name), setting, "CreateEndpoint", "EndpointName")
    model_data, job = opt(cfg, "model_data"), opt(cfg, "training_job")
    if bool(model_data) == bool(job):
        raise LaunchError(
            "Say what to deploy with exactly one of model_data=<model.tar.gz or s3://.../model.tar.gz> (written by "
            "`python -m cola_bert.export`) or training_job=<SageMaker training job name>."
        )
    if job:
        validate.resource_name(str(job), "training_job")
    elif str(model_data).startswith("s3://"):
        parse_s3_object(str(model_data), "model_data")


def deploy_model(ctx: AwsContext, d: DictConfig, plan: Plan, model_data: str, *, wait: bool) -> None:
    name = plan.endpoint_name
    model = images.pytorch_model(ctx, plan.image, model_data, name, plan.env, opt(d, "model_server_workers"))
    if plan.instance_type:
        capacity = {"instance_type": plan.instance_type, "initial_instance_count": int(d.initial_instance_count)}
    else:
        from sagemaker.serverless import ServerlessInferenceConfig

        capacity = {"serverless_inference_config": ServerlessInferenceConfig(
            memory_size_in_mb=int(d.memory_size_in_mb), max_concurrency=int(d.max_concurrency))}  # fmt: skip
    info(f"Creating model, endpoint config and endpoint {name}" + (" (waiting)" if wait else ""))
    hint = (f" Container logs: CloudWatch log group /aws/sagemaker/Endpoints/{name}. Remove what was created with: "
            f"{delete_command(ctx, name)}")  # fmt: skip
    try:
        with console.sdk_waiter(wait), aws_errors(f"deploying endpoint {name}", hint):
            model.deploy(endpoint_name=name, wait=wait, **capacity)
    except KeyboardInterrupt:
        raise Interrupted(f"Interrupted: SageMaker goes on creating endpoint {name}, which bills until deleted."
                          f"{hint}") from None  # fmt: skip


def refuse_taken_name(ctx: AwsContext, name: str) -> None:
    """Before anything is uploaded: SageMaker refuses an existing endpoint or endpoint config name, and the SDK
    silently re-uses an existing model of that name (its old archive). So the delete hints name only this run's."""
    sm = ctx.session.sagemaker_client
    taken = [what for what, call, key in (("endpoint", sm.describe_endpoint, "EndpointName"),
                                          ("endpoint config", sm.describe_endpoint_config, "EndpointConfigName"),
                                          ("model", sm.describe_model, "ModelName"))
             if lookup(call, f"{what} {name}", **{key: name})]  # fmt: skip
    if taken:
        raise LaunchError(
            f"A SageMaker {' and '.join(taken)} named {name} already exists in {ctx.region}. Pick another "
            "endpoint_name= (or leave it unset for a new timestamped name); to replace it, delete it first: "
            f"{delete_command(ctx, name)}"
        )


def smoke_test(ctx: AwsContext, name: str, sentences: list[str], request_key: str) -> list[dict]:
    """One JSON request through a sagemaker Predictor; prints and returns the handler's answer per sentence."""
    import_sagemaker()
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    predictor = Predictor(name, sagemaker_session=ctx.session, serializer=JSONSerializer(),
                          deserializer=JSONDeserializer())  # fmt: skip
    detail = ""
    try:
        with aws_errors(f"invoking endpoint {name}"):
            answer = predictor.predict({request_key: sentences})
        if not (isinstance(answer, list) and len(answer) == len(sentences) and all(isinstance(a, dict) for a in answer)):
            detail = f"expected one JSON object per sentence, got {str(answer)[:300]}."
    except LaunchError as err:
        detail = str(err)
    except ValueError as err:  # the JSON deserializer
        detail = f"the answer is not JSON ({err})."
    if detail:
        raise LaunchError(
            f"The endpoint {name} is InService but the test request failed: {detail} Container logs: CloudWatch log "
            f"group /aws/sagemaker/Endpoints/{name}. It keeps running (and billing) until you delete it: "
            f"{delete_command(ctx, name)}"
        )
    console.out.print("[bold]Test request[/]")
    for sentence, row in zip(sentences, answer):
        info(f"  {sentence!r}: label={row.get('label')} ({row.get('label_name')}) score={row.get('score', 0):.3f}")
    return answer


def delete(ctx: AwsContext, endpoint: str | None, model_name: str | None) -> dict[str, Any]:
    """Delete an endpoint, its endpoint config and its models — or, after a deploy that failed half-way, the config
    and model this launcher created under the endpoint's name. `model_name` alone deletes one model (batch)."""
    sm = ctx.session.sagemaker_client
    deleted: dict[str, Any] = {"endpoint": None, "endpoint_config": None, "models": []}
    models = [model_name] if model_name else []
    if endpoint:
        described = lookup(sm.describe_endpoint, f"endpoint {endpoint}", EndpointName=endpoint)
        config_name = described["EndpointConfigName"] if described else endpoint
        config = lookup(sm.describe_endpoint_config, f"endpoint config {config_name}", EndpointConfigName=config_name)
        variants = (config or {}).get("ProductionVariants", []) + (config or {}).get("ShadowProductionVariants", [])
        models = list(dict.fromkeys([v["ModelName"] for v in variants] or [endpoint]))
        with aws_errors(f"deleting {endpoint}"):
            if described:
                sm.delete_endpoint(EndpointName=endpoint)
                deleted["endpoint"] = endpoint
                info(f"Deleted endpoint {endpoint}")
            if config:
                sm.delete_endpoint_config(EndpointConfigName=config_name)
                deleted["endpoint_config"] = config_name
                info(f"Deleted endpoint config {config_name}")
    for name in models:
        if lookup(sm.describe_model, f"model {name}", ModelName=name):
            with aws_errors(f"deleting model {name}"):
                sm.delete_model(ModelName=name)
            deleted["models"].append(name)
            info(f"Deleted model {name}")
    if not any(deleted.values()):
        what = f"endpoint, endpoint config or model named {endpoint!r}" if endpoint else f"model {model_name!r}"
        raise NotFound(
            f"No {what} exists in {ctx.region}; nothing to delete. List them with `aws sagemaker list-endpoints` "
            "or `aws sagemaker list-models`, or pass aws.region=<region>."
        )
    return deleted


def run_deploy(cfg: DictConfig) -> dict[str, Any]:
    check_settings(cfg)
    d, dry, wait, smoke = cfg.deploy, bool(cfg.get("dry_run")), bool(cfg.get("wait", True)), cfg.get("smoke_test") or {}
    source = str(opt(cfg, "model_data") or cfg.training_job)
    kind = "training_job" if opt(cfg, "training_job") else "s3" if source.startswith("s3://") else "local"
    ctx = AwsContext(cfg.aws)  # no AWS call
    instance_type = None if d.mode == "serverless" else str(d.instance_type)
    image = images.choose(ctx.region, instance_type, **{k: opt(d, k) for k in images.PINS}, setting="deploy.")
    name = str(opt(cfg, "endpoint_name") or import_sagemaker().utils.name_from_base(
        str(opt(d, "base_name") or "cola-bert"), max_length=63))  # fmt: skip
    env = images.serving_env(d, setting="deploy.env")
    art = model_artifact.inspect_local(source) if kind == "local" else None
    if kind == "s3" and not dry:
        art = model_artifact.inspect_s3(ctx, source)
    rows: dict[str, Any] = {"endpoint": name, "endpoint config, model": f"{name} (same name)",
                            "image": f"{image.uri} ({image.reason})", "model source": f"{kind}: {source}"}  # fmt: skip
    if art:
        rows["archive"] = {k: art.manifest.get(k) for k in ("format", "torch_version", "max_length", "label_names")}
    if art and art.local:
        rows["model data"] = f"{model_artifact.upload_uri(ctx, art, planned=True)} (uploaded once per sha256)"
    if instance_type:
        rows["instances"] = f"{d.initial_instance_count} x {instance_type}"
    else:
        rows["serverless"] = {"MemorySizeInMB": d.memory_size_in_mb, "MaxConcurrency": d.max_concurrency}
    rows |= {"environment": env, **ctx.describe(), "wait": wait,
             "smoke test": list(smoke.get("sentences") or []) if smoke.get("enabled", True) else "off"}  # fmt: skip
    if kind == "s3" and not art:
        rows["notes"] = "The s3:// archive's manifest.json is read at run time (an AWS call)."
    elif art and (note := images.compatibility_note(art.manifest, image.framework_version)):
        rows["notes"] = note
    plan = Plan(name, image, env, instance_type, art)
    console.plan(f"Deploy {name}", rows, dry_run=dry)
    result: dict[str, Any] = {"plan": plan, "dry_run": dry, "rows": rows}
    if dry:
        return result
    _ = ctx.role  # resolved (or refused) before anything is uploaded or created
    refuse_taken_name(ctx, name)
    with tempfile.TemporaryDirectory(prefix="cola-deploy-") as tmp:
        if kind == "training_job":
            plan.artifact = model_artifact.export_training_job(ctx, source, Path(tmp))
        model_data = model_artifact.upload_once(ctx, plan.artifact)
        deploy_model(ctx, d, plan, model_data, wait=wait)
    result.update(endpoint_name=name, image_uri=image.uri, model_data=model_data)
    console.out.print(f"[bold green]Endpoint {name}[/] {'is InService' if wait else 'is being created'}.")
    if wait and smoke.get("enabled", True) and smoke.get("sentences"):
        sentences = [str(s) for s in smoke.sentences]
        result["predictions"] = smoke_test(ctx, name, sentences, str(smoke.get("request_key")))
    elif not wait:
        info(f"Status: aws sagemaker describe-endpoint --endpoint-name {name} --region {ctx.region}")
    billed = f"per hour for {d.initial_instance_count} x {instance_type} until deleted" if instance_type else \
        "per request (nothing while idle)"  # fmt: skip
    info(f"The endpoint is billed {billed}. Delete it with: {delete_command(ctx, name)}")
    return result


def run_delete(cfg: DictConfig) -> dict[str, Any]:
    endpoint, model = opt(cfg, "endpoint_name"), opt(cfg, "model_name")
    if not endpoint and not model:
        raise LaunchError("action=delete needs endpoint_name=<name> or model_name=<name> (aws sagemaker list-*).")
    if endpoint:
        validate.resource_name(str(endpoint), "endpoint_name", "CreateEndpoint", "EndpointName")
    if model:
        validate.resource_name(str(model), "model_name", "CreateModel", "ModelName")
    ctx = AwsContext(cfg.aws)
    if cfg.get("dry_run"):
        rows = {"endpoint": endpoint or "-", "model": model or "-", "deletes": "the endpoint, its endpoint config and "
                "its models (or the config and model of that name left by a failed deploy)", **ctx.describe()}
        console.plan("Delete", rows, dry_run=True)
        return {"dry_run": True, "rows": rows}
    deleted = delete(ctx, endpoint and str(endpoint), model and str(model))
    info("Uploaded archives (s3://<bucket>/<prefix>/models/<sha256>/model.tar.gz) are kept; `aws s3 rm` them.")
    return {"dry_run": False, "deleted": deleted}


def execute(cfg: DictConfig) -> dict[str, Any]:
    action = str(cfg.get("action") or "deploy")
    if action not in ("deploy", "delete"):
        raise LaunchError(f"action={action} is not one of deploy, delete.")
    return run_deploy(cfg) if action == "deploy" else run_delete(cfg)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="deploy")
def main(cfg: DictConfig) -> None:
    config_composed()
    exit_on_error(execute)(cfg)


if __name__ == "__main__":
    run_hydra(main)
