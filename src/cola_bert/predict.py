"""Classify sentences with a trained run's `model/` directory.

    python -m cola_bert.predict --model-dir RUN/model "The cat sat on the mat." "Cat the mat sat on."
    cat sentences.txt | python -m cola_bert.predict --model-dir RUN/model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def load(model_dir: str | Path):
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(
            f"error: {model_dir} is not a model directory (no config.json). Pass a run's model/ directory, "
            "e.g. --model-dir outputs/train/runs/<time>/model."
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    return tokenizer, model


@torch.inference_mode()
def predict(sentences: list[str], tokenizer, model, max_length: int = 128, batch_size: int = 64) -> list[dict]:
    id2label = model.config.id2label
    results = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        enc = tokenizer(chunk, truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                        return_token_type_ids=False)
        probs = model(**enc).logits.float().softmax(dim=-1)
        for sentence, p in zip(chunk, probs):
            label = int(p.argmax())
            results.append({"sentence": sentence, "label": label, "label_name": id2label.get(label, str(label)),
                            "score": float(p[label]), "probabilities": [float(x) for x in p]})
    return results


def _read_stdin(stream: Iterable[str]) -> list[str]:
    return [line.strip() for line in stream if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cola_bert.predict", description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", help="sentences to classify (default: one per line on stdin)")
    parser.add_argument("--model-dir", required=True, help="a run's model/ directory (Hugging Face format)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    args = parser.parse_args(argv)

    sentences = args.sentences or _read_stdin(sys.stdin)
    if not sentences:
        parser.error("no sentences: pass them as arguments or one per line on stdin")
    tokenizer, model = load(args.model_dir)
    results = predict(sentences, tokenizer, model, max_length=args.max_length)
    if args.json:
        for row in results:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("label", "label_name", "probability", "sentence"):
        table.add_column(column, overflow="fold")
    for row in results:
        table.add_row(str(row["label"]), row["label_name"], f"{row['score']:.3f}", row["sentence"])
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
