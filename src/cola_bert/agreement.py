"""Checks of an export against the eager model it came from: logits on random batches, labels on real sentences.

Split out of ``cola_bert.export`` so that the verification — which sentences, which reference, what counts as
agreeing — reads on its own, apart from how graphs are written (``cola_bert.export_formats``) and packaged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from cola_bert.export_formats import ExportError, ExportVerificationError, LogitsWrapper

log = logging.getLogger("cola_bert.export")  # the export's logger, as before the split: same CLI output

DEFAULT_TOLERANCE = 1e-4
DEFAULT_MIN_AGREEMENT = 0.97
SAMPLE_SENTENCES = Path(__file__).resolve().parent / "samples" / "agreement_sentences.txt"
COLA_ARCHIVE_NAME = "cola_public_1.1.zip"
GLUE_DEV_MEMBERS = ("cola_public/raw/in_domain_dev.tsv", "cola_public/raw/out_of_domain_dev.tsv")


# ------------------------------------------------------------------------------------------- agreement sentences
def find_cola_archive(archive: str | os.PathLike[str] | None, data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The CoLA zip: ``archive`` when given (must exist), else ``data_dir/cola_public_1.1.zip`` when present."""
    if archive:
        path = Path(archive).expanduser()
        if not path.is_file():
            raise ExportError(f"data.archive={archive} does not exist. Pass the path of {COLA_ARCHIVE_NAME}, or "
                              "leave data.archive unset to check agreement on the shipped sample sentences.")
        return path
    if data_dir:
        path = Path(data_dir).expanduser() / COLA_ARCHIVE_NAME
        if path.is_file():
            return path
    return None


def agreement_sentences(archive: Path | None = None, sentences_file: str | os.PathLike[str] | None = None,
                        ) -> tuple[list[str], str]:
    """Real sentences for the agreement check and where they came from.

    ``sentences_file`` (one sentence per line) wins; else GLUE dev (CoLA in_domain_dev + out_of_domain_dev, 1043
    sentences) from the archive; else the sample shipped with the package.
    """
    if sentences_file:
        path = Path(sentences_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ExportError(f"agreement_sentences={sentences_file} cannot be read as UTF-8 text ({err}).") from err
        sentences = [line.strip() for line in lines if line.strip()]
        if not sentences:
            raise ExportError(f"agreement_sentences={sentences_file} holds no sentences (one per line expected).")
        return sentences, f"{path} ({len(sentences)} sentences)"
    if archive is not None:
        import csv
        import io
        import zipfile

        sentences = []
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in GLUE_DEV_MEMBERS:
                    text = zf.read(member).decode("utf-8")
                    rows = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
                    sentences += [row[3] for row in rows if len(row) >= 4]
        except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
            raise ExportError(f"{archive} is not a readable CoLA archive ({type(err).__name__}: {err}); pass "
                              f"data.archive= the official {COLA_ARCHIVE_NAME}.") from err
        return sentences, f"GLUE dev: CoLA in_domain_dev + out_of_domain_dev from {archive.name} ({len(sentences)})"
    sentences = [line.strip() for line in SAMPLE_SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sentences, f"shipped sample {SAMPLE_SENTENCES.name} ({len(sentences)} sentences; CoLA archive not found)"


def eager_probabilities(wrapper: LogitsWrapper, tokenizer: Any, sentences: Sequence[str], max_length: int,
                        batch_size: int = 64) -> torch.Tensor:
    """Softmax of the fp32 eager model over ``sentences`` (batches of similar length), in input order."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out = torch.empty((len(sentences), wrapper.model.config.num_labels), dtype=torch.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        enc = tokenizer([sentences[i] for i in chunk], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        with torch.inference_mode():
            logits = wrapper(enc["input_ids"], enc["attention_mask"].long()).float()
        out[torch.tensor(chunk)] = torch.softmax(logits, dim=-1)
    return out


def label_agreement(expected: torch.Tensor, got: torch.Tensor) -> dict[str, Any]:
    """Share of equal argmax labels and the largest |Δprobability| between two ``[n, labels]`` probability tensors."""
    same = int((expected.argmax(-1) == got.argmax(-1)).sum())
    return {"count": int(expected.shape[0]), "agreeing": same, "label_agreement": same / max(1, expected.shape[0]),
            "max_abs_prob_diff": float((expected - got).abs().max()) if expected.numel() else 0.0}


# ------------------------------------------------------------------------------------------------- verification
def _random_batch(generator: torch.Generator, batch: int, length: int, vocab: int, pad_id: int):
    input_ids = torch.randint(0, vocab, (batch, length), generator=generator, dtype=torch.long)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length  # at least one unpadded row; batch 1 is never padded
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, pad_id)
    return input_ids, attention_mask


def max_abs_logit_diff(
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_sizes: Iterable[int],
    lengths: Iterable[int],
    vocab_size: int,
    pad_id: int = 0,
    seed: int = 0,
) -> tuple[float, tuple[int, int]]:
    """Largest |reference - candidate| over fresh random batches of every (batch size, length); and where."""
    generator = torch.Generator().manual_seed(seed)
    worst, where = -1.0, (0, 0)
    for batch in batch_sizes:
        for length in lengths:
            input_ids, attention_mask = _random_batch(generator, batch, length, vocab_size, pad_id)
            with torch.inference_mode():
                expected = reference(input_ids, attention_mask).float()
            got = candidate(input_ids, attention_mask).float()
            if tuple(got.shape) != tuple(expected.shape):
                raise ExportVerificationError(
                    f"the exported model returned shape {tuple(got.shape)} instead of {tuple(expected.shape)} "
                    f"for batch {batch} × length {length}", float("inf"),
                )
            diff = float((expected - got).abs().max())
            if diff != diff:  # NaN
                diff = float("inf")
            if diff > worst:
                worst, where = diff, (batch, length)
    return max(worst, 0.0), where


def check_agreement(loaded: Any, wrapper: LogitsWrapper, tokenizer: Any, sentences: list[str], source: str,
                    max_length: int, min_agreement: float, fmt: str, quantize: str) -> dict[str, Any]:
    """Label agreement of the packaged artifact (through the handler) with the fp32 eager model; refuse below the bar."""
    expected = eager_probabilities(wrapper, tokenizer, sentences, max_length)
    got = torch.softmax(loaded.logits(sentences), dim=-1)
    result = label_agreement(expected, got)
    result.update({"sentences": source, "reference": "fp32 eager transformers model", "min_agreement": min_agreement})
    log.info("label agreement %.4f, max |Δprob| %.3g on %s", result["label_agreement"], result["max_abs_prob_diff"],
             source)
    if result["label_agreement"] < min_agreement:
        what = f"{fmt} {quantize}" if quantize != "none" else fmt
        raise ExportVerificationError(
            f"Verification failed: the {what} artifact agrees with the fp32 eager model on only "
            f"{result['agreeing']}/{result['count']} labels ({100 * result['label_agreement']:.1f}%, max |Δprob| "
            f"{result['max_abs_prob_diff']:.3g}) on {source}, below min_agreement={min_agreement:g}. Nothing was "
            "written. Export without quantization, or accept the loss explicitly with a lower bar, e.g. "
            "min_agreement=0.9.", result["max_abs_prob_diff"],
        )
    return result
