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
        "CoLA archive not found. Copy cola_public_1.1.zip into data/ (see README, 'Offline use'); "
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


# moto server + botocore call spy, shared by the AWS tests.
from moto_support import api_calls, clean_env, moto_env, moto_url  # noqa: E402,F401
