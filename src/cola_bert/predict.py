"""Classify sentences with an exported artifact or a trained run's `model/` directory.

    python -m cola_bert.predict --model-dir OUT/model.tar.gz --input sentences.txt --output predictions.jsonl
    python -m cola_bert.predict --model-dir RUN/model "The cat sat on the mat." "Cat the mat sat on."
    cat sentences.txt | python -m cola_bert.predict --model-dir RUN/model [--json]

``--model-dir`` is an export's ``model.tar.gz``, its unpacked ``model/`` (or the export's output directory), or a
training run's ``model/`` (Hugging Face format). Artifacts run through the SageMaker handler's own code
(``cola_bert.inference`` = the artifact's ``code/inference.py``), so ``--output`` holds exactly what a Batch Transform
job writes for the same file: one JSON object per input line, in order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 256  # sentences per handler call (each call pads per batch of --batch-size)
PROGRESS_MIN = 1000  # show a progress bar from this many sentences on


class PredictError(RuntimeError):
    """Bad input for `cola_bert.predict`; the message says what was wrong and what to do."""


# --------------------------------------------------------------------------------------------------------- input
def read_sentences(path: Path) -> list[str]:
    """One sentence per line. A blank line inside the file is refused (output line i must belong to input line i)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PredictError(f"--input {path} does not exist. Pass a text file with one sentence per line.") from None
    except OSError as err:
        raise PredictError(f"--input {path} cannot be read ({err.strerror or err}).") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PredictError(
            f"--input {path} is not UTF-8 text (line {line}, byte {err.start}: {err.reason}). Re-save it as UTF-8, "
            "one sentence per line."
        ) from None
    # Lines end at \n (and \r\n), as Batch Transform's SplitType=Line splits them; U+2028 and friends stay inside.
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()  # trailing empty lines (a final newline) are fine
    if not lines:
        raise PredictError(f"--input {path} holds no sentences. Write one sentence per line.")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise PredictError(
                f"--input {path}: line {number} is blank. Remove blank lines so that line i of the output belongs "
                "to line i of the input (Batch Transform would skip it too and shift every later answer)."
            )
    return [line.strip() for line in lines]


# --------------------------------------------------------------------------------------------------------- model
def _hf_model(model_dir: Path, max_length: int) -> Any:
    """A run's Hugging Face model/ directory behind the handler's ColaModel (same tokenization and output rows)."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    from cola_bert import inference

    tokenizer_path = model_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise PredictError(f"{model_dir} has no tokenizer.json; save the tokenizer beside the model "
                           "(tokenizer.save_pretrained) or pass an exported artifact.")
    config = AutoConfig.from_pretrained(str(model_dir))
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_length > int(limit):
        raise PredictError(f"--max-length {max_length} exceeds the model's max_position_embeddings={limit}.")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    manifest = {
        "label_names": [config.id2label.get(i, str(i)) for i in range(config.num_labels)],
        "max_length": max_length,
        "tokenizer": {"file": "tokenizer.json", "pad_token_id": config.pad_token_id or 0},
    }
    runner = inference.load_hf_runner(model_dir)
    return inference.ColaModel(runner, tokenizer, manifest, model_dir)


@contextlib.contextmanager
def open_model(model_dir: str | os.PathLike[str], max_length: int = 128) -> Iterator[Any]:
    """The model behind ``--model-dir`` as a handler ``ColaModel``; a tarball is unpacked into a temporary directory.

    An exported artifact is verified as strictly as ``cola_bert.serve`` verifies it (every file, ``code/`` included,
    matches its sha256; no file the manifest does not list): a modified artifact is refused, not scored."""
    from cola_bert import inference
    from cola_bert.tarball import safe_extract

    path = Path(model_dir).expanduser()
    if not path.exists():
        raise PredictError(
            f"--model-dir {model_dir} does not exist. Pass an export's model.tar.gz or model/ directory, or a "
            "training run's model/ directory."
        )

    def load_verified(root: Path) -> Any:
        inference.verify_artifact(root, strict=True)
        return inference.load_artifact(root, verify=False)

    with contextlib.ExitStack() as stack:
        model = None
        try:
            if path.is_file():
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cola-predict-")))
                model = load_verified(safe_extract(path, tmp / "model"))
            elif manifests := [c for c in (path, path / "model") if (c / inference.MANIFEST_NAME).is_file()]:
                model = load_verified(manifests[0])
            elif (path / "config.json").is_file():
                model = _hf_model(path, max_length)
        except inference.ArtifactError as err:
            raise PredictError(f"--model-dir {model_dir}: {err}") from None
        except (OSError, ValueError) as err:  # transformers / tokenizers on a broken model directory
            raise PredictError(
                f"--model-dir {model_dir} cannot be loaded ({type(err).__name__}: {' '.join(str(err).split())[:300]}). "
                "Check that it is a complete model directory written by save_pretrained (config.json, weights, "
                "tokenizer files), or pass an export's model.tar.gz."
            ) from None
        if model is None:
            raise PredictError(
                f"--model-dir {model_dir} is neither an exported artifact (no manifest.json) nor a model directory "
                "(no config.json). Pass OUT/model.tar.gz from `python -m cola_bert.export`, or a run's model/ "
                "directory, e.g. outputs/train/runs/<time>/model."
            )
        yield model


def predict_rows(model: Any, sentences: list[str], batch_size: int = 32) -> list[dict]:
    """The handler's answer objects (what ``Accept: application/jsonlines`` returns), one per sentence, in order."""
    import torch

    from cola_bert import inference

    logits = model.logits(sentences, batch_size=batch_size)
    return inference.prediction_rows({
        "logits": logits, "probabilities": torch.softmax(logits, dim=-1), "label_names": model.label_names,
    })


def _progress(total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=total < PROGRESS_MIN or not console.is_terminal)


# -------------------------------------------------------------------------------------------------------- output
def predict_file(model: Any, sentences: list[str], output: Path, batch_size: int) -> None:
    """Write one JSON line per sentence to ``output`` through a temporary file renamed at the end."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle, _progress(len(sentences)) as progress:
            task = progress.add_task("Classifying", total=len(sentences))
            for start in range(0, len(sentences), CHUNK):
                chunk = sentences[start:start + CHUNK]
                for row in predict_rows(model, chunk, batch_size):
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                progress.advance(task, len(chunk))
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _print_table(sentences: list[str], rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("label", "label_name", "probability", "sentence"):
        table.add_column(column, overflow="fold")
    for sentence, row in zip(sentences, rows):
        table.add_row(str(row["label"]), row["label_name"], f"{row['score']:.3f}", sentence)
    Console().print(table)


def _check_output(output: Path) -> Path:
    output = output.expanduser()
    if output.is_dir():
        raise PredictError(f"--output {output} is a directory; pass a file name, e.g. {output / 'predictions.jsonl'}.")
    if not output.parent.is_dir():
        raise PredictError(f"--output {output}: the directory {output.parent} does not exist; create it first.")
    if not os.access(output.parent, os.W_OK):
        raise PredictError(f"--output {output}: the directory {output.parent} is not writable.")
    return output


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise PredictError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.max_length < 2:
        raise PredictError(f"--max-length must be at least 2 ([CLS] and [SEP]), got {args.max_length}; the default "
                           "is 128.")
    blank = [number for number, sentence in enumerate(args.sentences, start=1) if not sentence.strip()]
    if blank:
        raise PredictError(
            f"sentence argument {blank[0]} of {len(args.sentences)} is empty or only whitespace: there is nothing "
            "to classify. Quote each sentence as one argument, e.g. \"The cat sat on the mat.\"."
        )
    if args.input is not None and args.sentences:
        raise PredictError("Pass sentences either as arguments or with --input FILE, not both.")
    if args.output is not None and args.input is None:
        raise PredictError("--output needs --input FILE (one sentence per line).")
    if args.input is not None:
        if args.output is None:
            raise PredictError("--input needs --output FILE for the predictions (one JSON object per line).")
        output = _check_output(Path(args.output))
        source = Path(args.input).expanduser()
        if output.exists() and source.exists() and os.path.samefile(output, source):
            raise PredictError(f"--output {args.output} is the --input file: writing the predictions would destroy "
                               "the sentences. Pass another file name, e.g. predictions.jsonl.")  # fmt: skip
        sentences = read_sentences(source)
        with open_model(args.model_dir, args.max_length) as model:
            predict_file(model, sentences, output, args.batch_size)
        print(f"Wrote {len(sentences)} predictions to {output}", file=sys.stderr)
        return 0
    sentences = args.sentences or [line.strip() for line in sys.stdin if line.strip()]
    if not sentences:
        raise PredictError("No sentences: pass them as arguments, one per line on stdin, or --input FILE.")
    with open_model(args.model_dir, args.max_length) as model:
        rows = predict_rows(model, sentences, args.batch_size)
    if args.json:
        for sentence, row in zip(sentences, rows):
            print(json.dumps({"sentence": sentence, **row}, ensure_ascii=False))
    else:
        _print_table(sentences, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cola_bert.predict", description=__doc__.splitlines()[0])
    parser.add_argument("sentences", nargs="*", help="sentences to classify (default: one per line on stdin)")
    parser.add_argument("--model-dir", required=True,
                        help="an export's model.tar.gz or model/ directory, or a training run's model/ directory")
    parser.add_argument("--input", help="a text file, one sentence per line (UTF-8)")
    parser.add_argument("--output", help="with --input: where to write one JSON object per line (JSON Lines)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass (default 32)")
    parser.add_argument("--max-length", type=int, default=128,
                        help="truncation for a run's model/ directory (artifacts use their manifest's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run(args)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
