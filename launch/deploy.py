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

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cola_bert.config import conf_dir
from launch import console, images, model_artifact, validate
from launch.console import info
from launch.errors import LaunchError, NotFound, aws_errors, exit_on_error
from launch.model_artifact import Artifact
from launch.session import AwsContext, connect, import_sagemaker, opt, parse_s3_uri

SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")

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


def check_name(value: str, key: str) -> str:
    """SageMaker resource names: up to 63 letters, digits and hyphens, starting and ending alphanumeric."""
    if not NAME_RE.match(value):
        raise LaunchError(
            f"{key}={value!r} is not a valid SageMaker name: up to 63 characters, letters, digits and hyphens, "
            "starting and ending with a letter or digit."
        )
    return value


def serving_env(node: DictConfig) -> dict[str, str]:
    """`<node>.env` plus what makes the container run the archive's own code/inference.py."""
    raw = OmegaConf.to_container(node.env, resolve=True) if isinstance(node.get("env"), DictConfig) else {}
    return {str(k): str(v) for k, v in (raw or {}).items()} | SERVING_ENV


def refuse_elastic_inference(node: DictConfig) -> None:
    if opt(node, "mode") == "elastic_inference" or opt(node, "accelerator_type"):
        raise LaunchError(EI_REFUSAL)


@dataclass
class Plan:
    """Everything about a deployment decided before any AWS call."""

    endpoint_name: str
    mode: str  # realtime | serverless
    image: images.Image
    env: dict[str, str]
    source_kind: str  # local | s3 | training_job
    source: str
    instance_type: str | None = None
    instance_count: int | None = None
    serverless: dict[str, int] | None = None
    workers: int | None = None
    artifact: Artifact | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self, cfg: DictConfig, ctx: AwsContext) -> dict[str, Any]:
        rows: dict[str, Any] = {
            "endpoint": self.endpoint_name,
            "endpoint config, model": f"{self.endpoint_name} (same name)",
            "image": f"{self.image.uri} (pytorch {self.image.framework_version}, {self.image.reason})",
            "model source": f"{self.source_kind}: {self.source}",
        }
        if self.artifact:
            rows["archive"] = self.artifact.summary()
            if self.artifact.local:
                rows["model data"] = model_artifact.upload_uri(ctx, self.artifact) + " (uploaded once per sha256)"
        if self.serverless:
            rows["serverless"] = self.serverless
        else:
            rows["instances"] = f"{self.instance_count} x {self.instance_type}"
        rows["environment"] = self.env
        rows.update(ctx.describe())
        smoke = cfg.get("smoke_test") or {}
        rows["wait"] = bool(cfg.get("wait", True))
        rows["smoke test"] = list(smoke.get("sentences") or []) if smoke.get("enabled", True) else "off"
        if self.notes:
            rows["notes"] = " ".join(self.notes)
        return rows


def check_settings(cfg: DictConfig) -> str:
    """The deploy node, names and role, checked locally (the bucket name is checked by AwsContext)."""
    d = cfg.deploy
    refuse_elastic_inference(d)
    mode = opt(d, "mode")
    if mode not in ("realtime", "serverless"):
        raise LaunchError(f"deploy.mode={mode!r} is not realtime or serverless; choose deploy=cpu|gpu|serverless.")
    if mode == "serverless":
        if opt(d, "memory_size_in_mb") not in SERVERLESS_MEMORY_MB:
            raise LaunchError(
                f"deploy.memory_size_in_mb={opt(d, 'memory_size_in_mb')} is not a serverless memory size; use one "
                f"of {', '.join(map(str, SERVERLESS_MEMORY_MB))}."
            )
        conc = opt(d, "max_concurrency")
        if not isinstance(conc, int) or not 1 <= conc <= 200:
            raise LaunchError(f"deploy.max_concurrency={conc} must be an integer from 1 to 200.")
    else:
        validate.instance_type(str(opt(d, "instance_type")), "CreateEndpointConfig", setting="deploy.instance_type")
        count = opt(d, "initial_instance_count")
        if not isinstance(count, int) or count < 1:
            raise LaunchError(f"deploy.initial_instance_count={count} must be a positive integer.")
    role = str(opt(cfg.aws, "role") or "")
    if role.startswith("arn:"):
        validate.role_arn(role)
    for key in ("endpoint_name", "training_job"):
        if opt(cfg, key):
            check_name(str(opt(cfg, key)), key)
    check_name(str(opt(d, "base_name") or "cola-bert"), "deploy.base_name")
    return mode


def source_of(cfg: DictConfig) -> tuple[str, str]:
    model_data, job = opt(cfg, "model_data"), opt(cfg, "training_job")
    if bool(model_data) == bool(job):
        raise LaunchError(
            "Say what to deploy with exactly one of model_data=<model.tar.gz or s3://.../model.tar.gz> (written by "
            "`python -m cola_bert.export`) or training_job=<SageMaker training job name>."
        )
    if job:
        return "training_job", str(job)
    model_data = str(model_data)
    return ("s3", model_data) if model_data.startswith("s3://") else ("local", model_data)


def make_plan(cfg: DictConfig, ctx: AwsContext, mode: str, kind: str, source: str, artifact: Artifact | None) -> Plan:
    d = cfg.deploy
    instance_type = None if mode == "serverless" else str(opt(d, "instance_type"))
    image = images.choose(
        ctx.region,
        instance_type,
        framework_version=opt(d, "framework_version"),
        py_version=opt(d, "py_version"),
        image_uri=opt(d, "image_uri"),
    )
    name = opt(cfg, "endpoint_name")
    if not name:
        import_sagemaker()
        from sagemaker.utils import name_from_base

        name = name_from_base(str(opt(d, "base_name") or "cola-bert"), max_length=63)
    workers = opt(d, "model_server_workers")
    plan = Plan(
        endpoint_name=str(name),
        mode=mode,
        image=image,
        env=serving_env(d),
        source_kind=kind,
        source=source,
        instance_type=instance_type,
        instance_count=None if instance_type is None else int(opt(d, "initial_instance_count")),
        serverless=None
        if instance_type
        else {"MemorySizeInMB": opt(d, "memory_size_in_mb"), "MaxConcurrency": opt(d, "max_concurrency")},
        workers=int(workers) if workers else None,
    )
    set_artifact(plan, artifact)
    return plan


def set_artifact(plan: Plan, artifact: Artifact | None) -> None:
    plan.artifact = artifact
    note = images.compatibility_note(artifact.manifest, plan.image.framework_version) if artifact else None
    plan.notes += [note] if note else []


def deploy_model(ctx: AwsContext, plan: Plan, model_data: str, *, wait: bool) -> None:
    """PyTorchModel(...).deploy(...): CreateModel, CreateEndpointConfig, CreateEndpoint (and wait for InService)."""
    import_sagemaker()
    from sagemaker.pytorch import PyTorchModel
    from sagemaker.serverless import ServerlessInferenceConfig

    model = PyTorchModel(
        model_data=model_data,
        role=ctx.role,
        entry_point=None,  # the archive's own code/inference.py (SAGEMAKER_PROGRAM): no repack
        image_uri=plan.image.uri,
        framework_version=plan.image.framework_version,
        py_version=plan.image.py_version,
        env=plan.env,
        name=plan.endpoint_name,
        model_server_workers=plan.workers,
        sagemaker_session=ctx.session,
    )
    kwargs: dict[str, Any] = {"endpoint_name": plan.endpoint_name, "wait": wait}
    if plan.serverless:
        kwargs["serverless_inference_config"] = ServerlessInferenceConfig(
            memory_size_in_mb=plan.serverless["MemorySizeInMB"], max_concurrency=plan.serverless["MaxConcurrency"]
        )
    else:
        kwargs.update(instance_type=plan.instance_type, initial_instance_count=plan.instance_count)
    info(f"Creating model, endpoint config and endpoint {plan.endpoint_name}" + (" (waiting)" if wait else ""))
    try:
        with aws_errors(f"deploying endpoint {plan.endpoint_name}"):
            model.deploy(**kwargs)
    except LaunchError as err:
        raise type(err)(
            f"{err} Container logs: CloudWatch log group /aws/sagemaker/Endpoints/{plan.endpoint_name}. Remove what "
            f"was created with: python -m launch.deploy action=delete endpoint_name={plan.endpoint_name} "
            f"aws.region={ctx.region}"
        ) from None
    finally:
        if wait:  # the SDK's waiter prints progress marks without a trailing newline
            console.out.print()


def smoke_test(ctx: AwsContext, endpoint_name: str, sentences: list[str], request_key: str) -> list[dict]:
    """One JSON request through a sagemaker Predictor; prints and returns the handler's answer per sentence."""
    import_sagemaker()
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    predictor = Predictor(
        endpoint_name, sagemaker_session=ctx.session, serializer=JSONSerializer(), deserializer=JSONDeserializer()
    )

    def failed(detail: str) -> LaunchError:
        return LaunchError(
            f"The endpoint {endpoint_name} is InService but the test request failed: {detail} Container logs: "
            f"CloudWatch log group /aws/sagemaker/Endpoints/{endpoint_name}. It keeps running (and billing) until "
            f"you delete it: python -m launch.deploy action=delete endpoint_name={endpoint_name}"
        )

    try:
        with aws_errors(f"invoking endpoint {endpoint_name}"):
            answer = predictor.predict({request_key: sentences})
    except LaunchError as err:
        raise failed(str(err)) from None
    except ValueError as err:  # the JSON deserializer
        raise failed(f"the answer is not JSON ({err}).") from None
    if not isinstance(answer, list) or len(answer) != len(sentences) or not all(isinstance(a, dict) for a in answer):
        raise failed(f"expected one JSON object per sentence, got {str(answer)[:300]}.")
    console.out.print("[bold]Test request[/]")
    for sentence, row in zip(sentences, answer):
        info(f"  {sentence!r}: label={row.get('label')} ({row.get('label_name')}) score={row.get('score', 0):.3f}")
    return answer


def _exists(call, what: str, **kwargs) -> dict | None:
    """A Describe* answer, or None when the resource does not exist."""
    try:
        with aws_errors(f"looking up {what}"):
            return call(**kwargs)
    except NotFound:
        return None


def delete(ctx: AwsContext, endpoint_name: str | None, model_name: str | None) -> dict[str, Any]:
    """Delete an endpoint, its endpoint config and its models — or, after a deploy that failed half-way, the config
    and model this launcher created under the endpoint's name. `model_name` alone deletes one model (batch)."""
    sm = ctx.session.sagemaker_client
    deleted: dict[str, Any] = {"endpoint": None, "endpoint_config": None, "models": []}
    models = [model_name] if model_name else []
    if endpoint_name:
        endpoint = _exists(sm.describe_endpoint, f"endpoint {endpoint_name}", EndpointName=endpoint_name)
        config_name = endpoint["EndpointConfigName"] if endpoint else endpoint_name
        config = _exists(sm.describe_endpoint_config, f"endpoint config {config_name}", EndpointConfigName=config_name)
        variants = (config or {}).get("ProductionVariants", []) + (config or {}).get("ShadowProductionVariants", [])
        models = list(dict.fromkeys([v["ModelName"] for v in variants] or [endpoint_name]))
        with aws_errors(f"deleting {endpoint_name}"):
            if endpoint:
                sm.delete_endpoint(EndpointName=endpoint_name)
                deleted["endpoint"] = endpoint_name
                info(f"Deleted endpoint {endpoint_name}")
            if config:
                sm.delete_endpoint_config(EndpointConfigName=config_name)
                deleted["endpoint_config"] = config_name
                info(f"Deleted endpoint config {config_name}")
    for name in models:
        if _exists(sm.describe_model, f"model {name}", ModelName=name):
            with aws_errors(f"deleting model {name}"):
                sm.delete_model(ModelName=name)
            deleted["models"].append(name)
            info(f"Deleted model {name}")
    if not any(deleted.values()):
        what = f"endpoint, endpoint config or model named {endpoint_name!r}" if endpoint_name else f"model {model_name!r}"
        raise NotFound(
            f"No {what} exists in {ctx.region}; nothing to delete. List them with `aws sagemaker list-endpoints` "
            "or `aws sagemaker list-models`, or pass aws.region=<region>."
        )
    return deleted


def run_deploy(cfg: DictConfig) -> dict[str, Any]:
    mode = check_settings(cfg)  # EI is refused here, before anything else
    kind, source = source_of(cfg)
    dry, wait = bool(cfg.get("dry_run")), bool(cfg.get("wait", True))
    artifact = model_artifact.inspect_local(source) if kind == "local" else None
    if kind == "s3":
        parse_s3_uri(source)
    ctx = connect(cfg.aws)  # no AWS call; checks aws.bucket's name
    plan = make_plan(cfg, ctx, mode, kind, source, artifact)
    result: dict[str, Any] = {"plan": plan, "dry_run": dry}
    if dry:
        if kind == "s3":
            plan.notes.append("The s3:// archive's manifest.json is read at run time (an AWS call).")
        result["rows"] = plan.rows(cfg, ctx)
        console.plan(f"Deploy {plan.endpoint_name}", result["rows"], dry_run=True)
        return result
    if kind == "s3":
        set_artifact(plan, model_artifact.inspect_s3(ctx, source))
    console.plan(f"Deploy {plan.endpoint_name}", plan.rows(cfg, ctx))
    _ = ctx.role  # resolved (or refused) before anything is uploaded or created
    with tempfile.TemporaryDirectory(prefix="cola-deploy-") as tmp:
        if kind == "training_job":
            set_artifact(plan, model_artifact.export_training_job(ctx, source, Path(tmp)))
        art = plan.artifact
        model_data = model_artifact.upload_once(ctx, art) if art and art.local else source
        deploy_model(ctx, plan, model_data, wait=wait)
    result.update(endpoint_name=plan.endpoint_name, image_uri=plan.image.uri, model_data=model_data)
    console.out.print(f"[bold green]Endpoint {plan.endpoint_name}[/] {'is InService' if wait else 'is being created'}.")
    smoke = cfg.get("smoke_test") or {}
    if wait and smoke.get("enabled", True) and smoke.get("sentences"):
        sentences = [str(s) for s in smoke.sentences]
        result["predictions"] = smoke_test(ctx, plan.endpoint_name, sentences, str(smoke.get("request_key")))
    elif not wait:
        info(f"Status: aws sagemaker describe-endpoint --endpoint-name {plan.endpoint_name} --region {ctx.region}")
    billed = "per request (nothing while idle)" if plan.serverless else (
        f"per hour for {plan.instance_count} x {plan.instance_type} until deleted"
    )
    info(
        f"The endpoint is billed {billed}. Delete it with: python -m launch.deploy action=delete "
        f"endpoint_name={plan.endpoint_name} aws.region={ctx.region}"
    )
    return result


def run_delete(cfg: DictConfig) -> dict[str, Any]:
    endpoint, model = opt(cfg, "endpoint_name"), opt(cfg, "model_name")
    if not endpoint and not model:
        raise LaunchError("action=delete needs endpoint_name=<name> or model_name=<name> (aws sagemaker list-*).")
    for key, value in (("endpoint_name", endpoint), ("model_name", model)):
        if value:
            check_name(str(value), key)
    ctx = connect(cfg.aws)
    if cfg.get("dry_run"):
        rows = {
            "endpoint": endpoint or "-",
            "model": model or "-",
            "deletes": "the endpoint, its endpoint config and its models (or the config and model of that name "
            "left by a failed deploy)",
            **ctx.describe(),
        }
        console.plan("Delete", rows, dry_run=True)
        return {"dry_run": True, "rows": rows}
    deleted = delete(ctx, endpoint and str(endpoint), model and str(model))
    info("Uploaded archives (s3://<bucket>/<prefix>/models/<sha256>/model.tar.gz) are kept; `aws s3 rm` them.")
    return {"dry_run": False, "deleted": deleted}


def execute(cfg: DictConfig) -> dict[str, Any]:
    """Run the configured action; problems raise LaunchError (one paragraph)."""
    action = str(cfg.get("action") or "deploy")
    if action == "deploy":
        return run_deploy(cfg)
    if action == "delete":
        return run_delete(cfg)
    raise LaunchError(f"action={action} is not one of deploy, delete.")


cli = exit_on_error(execute)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="deploy")
def main(cfg: DictConfig) -> None:
    cli(cfg)


if __name__ == "__main__":
    main()
