"""Slow: a real fine-tuning run of the packaged MiniLM on the full CoLA training set (`pytest -m slow`)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_minilm_learns_cola_in_two_epochs(compose_train, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from cola_bert.train import train

    cfg = compose_train("trainer=cpu_bf16", "trainer.max_epochs=2", "trainer.enable_progress_bar=false")
    record = train(cfg)
    # Chance level is MCC 0; the default recipe reaches ~0.3 after two epochs (docs/benchmarks.md).
    assert record["val/mcc"] > 0.15
    assert record["val/mcc"] == pytest.approx(max(row["val/mcc"] for row in record["history"]))
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model")
    assert model.config.num_hidden_layers == 6
