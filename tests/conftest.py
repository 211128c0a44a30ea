"""Shared fixtures: the real CoLA archive (provisioned by .ci/run) and a tiny random BERT saved like a run's model/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ARCHIVE_CANDIDATES = [
    REPO_ROOT / "data" / "cola_public_1.1.zip",
    REPO_ROOT.parent / "shared" / "data" / "cola_public_1.1.zip",
]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cola_archive() -> Path:
    """The official CoLA zip; tests that need it fail loudly (not skip) when it was not provisioned."""
    for candidate in ARCHIVE_CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.fail(
        "CoLA archive not found. Copy cola_public_1.1.zip into data/ (see docs/training.md, 'The CoLA archive and offline use'); "
        f"looked in: {', '.join(map(str, ARCHIVE_CANDIDATES))}"
    )


TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT classifier + the MiniLM tokenizer, saved with save_pretrained."""
    import torch

    from cola_bert.backbone import load_model, load_tokenizer, minilm_path

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_model")
    tokenizer = load_tokenizer(minilm_path())
    model = load_model(None, tiny=TINY_BERT, vocab_size=tokenizer.vocab_size)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# Verification shapes for test exports: small, but both ends of 1..max_length (the defaults are exercised once).
QUICK_VERIFY = {"batch_sizes": [1, 8], "lengths": [1, 16, 128]}


@pytest.fixture(scope="session")
def exported_artifact(tiny_model_dir, tmp_path_factory):
    """``exported_artifact(format="torchscript", quantize="none", **export_kwargs) -> OUT``: the tiny model exported
    with ``cola_bert.export.export_model`` (OUT/model.tar.gz + OUT/model/), once per distinct settings per session.

    Read-only: copy OUT/model before modifying anything in it.
    """
    cache: dict = {}

    def get(format: str = "torchscript", quantize: str = "none", **kwargs) -> Path:  # noqa: A002
        key = (format, quantize, tuple(sorted(kwargs.items())))
        if key not in cache:
            from cola_bert.export import export_model

            out = tmp_path_factory.mktemp(f"export_{format}_{quantize}")
            export_model(tiny_model_dir, out, format=format, quantize=quantize, **{**QUICK_VERIFY, **kwargs})
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def eager(tiny_model_dir):
    """The tiny model in eager mode: ``eager(sentences) -> logits``, plus ``.wrapper`` ((ids, mask) -> logits) and
    ``.tokenizer`` (transformers), the reference every exported format is compared with."""
    import types

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cola_bert.export_formats import LogitsWrapper

    wrapper = LogitsWrapper(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    class Eager(types.SimpleNamespace):
        def __call__(self, sentences, max_length: int = 128):
            enc = tokenizer(list(sentences), truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
            with torch.inference_mode():
                return wrapper(enc["input_ids"], enc["attention_mask"])

    return Eager(wrapper=wrapper, tokenizer=tokenizer)


@pytest.fixture
def compose_train(tmp_path, cola_archive):
    """Compose conf/train.yaml like the CLI would, with outputs under tmp_path and the archive provisioned."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from cola_bert.config import conf_dir

    def _compose(*overrides: str, output_dir: Path | None = None):
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="test"):
            cfg = compose(
                config_name="train",
                overrides=[f"data.archive={cola_archive}", f"paths.data_dir={tmp_path.parent / 'data'}", *overrides],
            )
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir or tmp_path / "run")
        return cfg

    return _compose


@pytest.fixture(scope="session")
def tiny_export(exported_artifact) -> Path:
    """One real `cola_bert.export` of the tiny model per session (TorchScript, seconds): the directory holding
    model.tar.gz and model/ (the same files unpacked). Shared by the serving, deploy and batch tests; the same
    export as ``exported_artifact()``."""
    return exported_artifact()


# moto server + botocore call spy, shared by the AWS tests.
from moto_support import (  # noqa: E402,F401
    api_calls, clean_env, handler_container, moto_env, moto_url, sdk_waits_without_sleeping,
)  # fmt: skip
