"""Follow a SageMaker training job and bring its model home: `python -m launch.train attach=JOB_NAME`.

Streams the job's CloudWatch log (from the start; `sagemaker.logs=None` only waits), waits for the job to end, then
downloads its artifacts into a directory laid out like a local run (default `outputs/sagemaker/jobs/<job name>/`):

    model/          the Hugging Face model + tokenizer (model.tar.gz)
    metrics.json    scores and history, config.yaml the resolved training config (from the job)
    plots/, csv/    the job's other outputs (output.tar.gz), when it wrote them

so `python -m cola_bert.export model_dir=<dir>/model` and `python -m cola_bert.predict --model-dir <dir>/model` work
on it directly. `attach_dir=DEST` picks the directory; `download_model(ctx, "s3://.../model.tar.gz", dest)` does
the same for any artifact URI.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from launch import console
from launch.errors import NotFound
from launch.estimator import logs_setting
from launch.session import AwsContext, opt
from launch.train import write_record

RUN_FILES = ("metrics.json", "config.yaml")


def download_model(ctx: AwsContext, model_data: str, dest: Path) -> Path:
    """Download `model_data` (a model.tar.gz in S3) and unpack it as `dest/model/` + `dest/metrics.json` +
    `dest/config.yaml`; the job's `output.tar.gz` beside it (plots/, csv/) goes to `dest/` when there is one.
    Archives are unpacked by the one archive-safety check (cola_bert.tarball.safe_extract). Returns `dest/model`."""
    from cola_bert.tarball import safe_extract

    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="cola-bert-attach-") as tmp:
        model = safe_extract(ctx.download(model_data, Path(tmp) / "model"), Path(tmp) / "unpacked")
        if model_data.endswith("/model.tar.gz"):
            with contextlib.suppress(NotFound):  # a job that wrote no plots/ or csv/
                safe_extract(ctx.download(model_data[: -len("model.tar.gz")] + "output.tar.gz", Path(tmp)), dest)
        if (dest / "model").exists():
            shutil.rmtree(dest / "model")
        dest.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (model / name).is_file():
                shutil.move(str(model / name), dest / name)
        shutil.move(str(model), dest / "model")
    return dest / "model"


def attach(cfg: Any, *, run_dir: Path | None = None) -> dict[str, Any]:
    name, logs = str(cfg.attach), logs_setting((cfg.get("sagemaker") or {}).get("logs", "All"))
    ctx = AwsContext(cfg.aws)
    described = ctx.training_job(name, "or pass aws.region=<region>")
    console.info(f"Training job {name}: {described['TrainingJobStatus']}")
    described = ctx.follow_training_job(name, logs=logs == "All")
    dest = Path(opt(cfg, "attach_dir") or Path(cfg.paths.log_dir) / "sagemaker" / "jobs" / name)
    model_data = described["ModelArtifacts"]["S3ModelArtifacts"]
    console.info(f"Downloading {model_data}")
    model_dir = download_model(ctx, model_data, dest)
    record = {"job_name": name, "status": "completed", "model_data": model_data, "run_dir": str(dest),
              "model_dir": str(model_dir), "region": ctx.region}  # fmt: skip
    write_record(record, dest)
    console.info(f"Run directory: {dest} (model/, metrics.json, config.yaml)")
    console.info(f"Next: python -m cola_bert.export model_dir={model_dir}   or   "
                 f"python -m cola_bert.predict --model-dir {model_dir} 'A sentence.'")  # fmt: skip
    return record

