"""The training job's data channels: prepared locally with the datamodule's own code, uploaded to S3 once.

By default the launcher builds the same splits the local run would use — `ensure_cola` + `cola_splits` with
`data.split` / `data.val_fraction` / `data.split_seed` (GLUE: train + validation; seed: train + validation + test), or
the user's `data.train_file` / `data.val_file` (/ `data.test_file`) — and writes each as the channel format
(`sentence<TAB>label<TAB>domain` with a header) into `<channel>/<channel>.tsv`.

They go to `s3://<bucket>/<prefix>/data/<digest>/<channel>/<channel>.tsv`, where `<digest>` is a content hash of all
channel files: the same data always lands on the same keys, and an upload is skipped when the object is already there
with the same size and sha256 (object metadata). `sagemaker.inputs.train=s3://... sagemaker.inputs.validation=s3://...`
uses existing data instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cola_bert.archive import sha256_of
from launch.errors import LaunchError
from launch.session import AwsContext, opt, s3_uri

CHANNELS = ("train", "validation", "test")


@dataclass
class PreparedData:
    files: dict[str, Path]  # channel → local file
    rows: dict[str, int]
    digest: str  # content hash of all channel files (names + bytes)
    sha256: dict[str, str]  # channel → sha256 of its file (kept as S3 object metadata)


def prepare(cfg: DictConfig, workdir: Path) -> PreparedData:
    """Write the channel files of `cfg.data` under `workdir/<channel>/<channel>.tsv`."""
    from cola_bert.archive import ArchiveError, ensure_cola
    from cola_bert.data import DataFormatError, cola_splits, read_labelled_file
    from cola_bert.data import write_labelled_tsv as write

    data = cfg.data
    num_labels = len(data.label_names)
    given = dict(zip(CHANNELS, (opt(data, k) for k in ("train_file", "val_file", "test_file"))))
    files: dict[str, Path] = {}
    rows: dict[str, int] = {}
    try:
        if given["train"] or given["validation"]:
            if not (given["train"] and given["validation"]):
                raise LaunchError("Give both data.train_file and data.val_file (TSV/CSV with `sentence` and `label` "
                                  "columns), or neither to train on the official CoLA splits.")  # fmt: skip
            splits = {c: read_labelled_file(Path(f).expanduser(), num_labels) for c, f in given.items() if f}
        else:
            if given["test"]:
                raise LaunchError("data.test_file needs data.train_file and data.val_file as well.")
            cola_dir = ensure_cola(Path(data.data_dir).expanduser(), data.url, data.sha256, opt(data, "archive"))
            parts = cola_splits(cola_dir, data.split, data.val_fraction, data.split_seed, num_labels)
            splits = {"train": parts["train"], "validation": parts["val"], "test": parts["test"]}
        for channel in CHANNELS:
            if splits.get(channel):
                files[channel], rows[channel] = Path(workdir) / channel / f"{channel}.tsv", len(splits[channel])
                write(splits[channel], files[channel])
    except (ArchiveError, DataFormatError, ValueError) as err:
        raise LaunchError(f"Cannot prepare the training data: {err}") from err

    sha = {channel: sha256_of(path) for channel, path in files.items()}
    digest = hashlib.sha256("".join(f"{c}:{sha[c]}\n" for c in sorted(sha)).encode()).hexdigest()[:16]
    return PreparedData(files=files, rows=rows, digest=digest, sha256=sha)


def channel_uris(bucket: str, prefix: str, prepared: PreparedData) -> dict[str, str]:
    """channel → `s3://bucket/<prefix>/data/<digest>/<channel>/` (the S3 prefix SageMaker copies from)."""
    return {channel: s3_uri(bucket, prefix, "data", prepared.digest, channel) + "/" for channel in prepared.files}


def upload(ctx: AwsContext, prepared: PreparedData) -> dict[str, str]:
    """Upload the channel files to `channel_uris` unless already there. Returns channel → what happened."""
    uris, actions = channel_uris(ctx.bucket, ctx.prefix, prepared), {}
    for channel, path in prepared.files.items():
        sent = ctx.upload(path, uris[channel] + path.name, f"the {channel} data", sha256=prepared.sha256[channel])
        size_kib = path.stat().st_size / 1024
        actions[channel] = f"uploaded ({size_kib:.0f} KiB)" if sent else "already in S3, not uploaded again"
    return actions


def given_inputs(inputs: Any) -> dict[str, str] | None:
    """`sagemaker.inputs` (existing S3 data) → channel → URI; None when not given."""
    given = {c: str(v).strip() for c in CHANNELS if (v := opt(inputs, c))}
    if not given:
        return None
    missing = [c for c in ("train", "validation") if c not in given]
    if missing:
        raise LaunchError(
            f"sagemaker.inputs needs both train and validation (missing: {', '.join(missing)}), e.g. "
            "sagemaker.inputs.train=s3://bucket/cola/train/ sagemaker.inputs.validation=s3://bucket/cola/dev/."
        )
    for channel, uri in given.items():
        if not uri.startswith("s3://"):
            raise LaunchError(
                f"sagemaker.inputs.{channel}={uri} is not an S3 URI; give an s3:// prefix holding one TSV/CSV file "
                "(or leave sagemaker.inputs empty to upload the CoLA splits prepared from data.*)."
            )
    return given
