"""CoLA data: strict file parsing and a LightningDataModule that tokenizes once and pads per batch.

GLUE's CoLA validation set is in_domain_dev + out_of_domain_dev; we report both domains separately as well.
"""

from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from cola_bert.archive import ensure_cola
from cola_bert.backbone import LABEL_NAMES, load_tokenizer
from cola_bert.config import ConfigError

DOMAINS = ("in_domain", "out_of_domain")
COLA_FILES = {name: f"raw/{name}.tsv" for name in ("in_domain_train", "in_domain_dev", "out_of_domain_dev")}


class DataFormatError(ValueError):
    """A data file does not have the expected layout; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Example:
    sentence: str
    label: int
    domain: str = "in_domain"


def _check(path: Path, line_no: int, sentence: str, label: str, domain: str, num_labels: int) -> Example:
    where = f"{path}:{line_no}"
    try:
        value = int(label.strip())
    except ValueError:
        raise DataFormatError(f"{where}: label {label!r} is not an integer (expected 0..{num_labels - 1}).") from None
    if not 0 <= value < num_labels:
        raise DataFormatError(f"{where}: label {value} is outside 0..{num_labels - 1}.")
    if not sentence.strip():
        raise DataFormatError(f"{where}: the sentence is empty.")
    domain = domain.strip() or "in_domain"
    if domain not in DOMAINS:
        raise DataFormatError(f"{where}: domain {domain!r} is not one of {', '.join(DOMAINS)}.")
    return Example(sentence.strip(), value, domain)


def read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark. Other encodings are refused with `file:line`."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_no = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataFormatError(
            f"{path}:{line_no}: byte 0x{raw[err.start]:02x} (column {column}) is not UTF-8. Save the file as UTF-8, "
            f"e.g. `iconv -f latin1 -t utf-8 {Path(path).name} > fixed.{Path(path).suffix.lstrip('.') or 'tsv'}`."
        ) from None


def read_cola_tsv(path: Path, domain: str = "in_domain", num_labels: int = 2) -> list[Example]:
    """The raw CoLA layout: source, label, original mark, sentence — tab-separated, no header, no quoting."""
    examples = []
    with io.StringIO(read_text(path), newline="") as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 4:
                raise DataFormatError(
                    f"{path}:{line_no}: expected 4 tab-separated columns (source, label, mark, sentence), "
                    f"found {len(fields)}."
                )
            examples.append(_check(path, line_no, fields[3], fields[1], domain, num_labels))
    return examples


def read_labelled_file(path: str | os.PathLike, num_labels: int = 2) -> list[Example]:
    """A user file: CSV (quoted as usual) or TSV (no quoting) with a header holding `sentence` and `label`
    (and optionally `domain`). A headerless 4-column TSV is read as raw CoLA."""
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path}: is a directory; give the data file itself (a .tsv or .csv).")
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file.")
    text = read_text(path)
    if not text.strip():
        raise DataFormatError(
            f"{path}: the file is empty. It needs a header row naming `sentence` and `label` (optionally `domain`) "
            "and one example per line."
        )
    first = text.split("\n", 1)[0].rstrip("\r")
    if path.suffix.lower() == ".csv":
        reader_kwargs: dict[str, Any] = {"delimiter": ",", "strict": True}
        header = next(csv.reader([first]), [])
    else:
        reader_kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
        header = first.split("\t")
        if not {"sentence", "label"} <= {h.strip() for h in header} and len(header) == 4:
            return read_cola_tsv(path, num_labels=num_labels)
    columns = [h.strip() for h in header]
    missing = {"sentence", "label"} - set(columns)
    if missing:
        raise DataFormatError(
            f"{path}:1: header {columns} lacks {sorted(missing)}; the first row must name the columns "
            "`sentence` and `label` (optionally `domain`)."
        )
    col = {name: columns.index(name) for name in ("sentence", "label", "domain") if name in columns}
    examples = []
    reader = csv.reader(io.StringIO(text, newline=""), **reader_kwargs)
    next(reader)
    while True:
        line_no = reader.line_num + 1  # the row's first line in the file
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataFormatError(_quote_error(path, line_no, reader.line_num, str(err))) from None
        if not row or row == [""]:
            continue
        if any("\n" in field or "\r" in field for field in row):
            raise DataFormatError(_quote_error(path, line_no, reader.line_num, "a field runs over several lines"))
        if len(row) != len(columns):
            raise DataFormatError(f"{path}:{line_no}: expected {len(columns)} columns, found {len(row)}.")
        domain = row[col["domain"]] if "domain" in col else ""
        examples.append(_check(path, line_no, row[col["sentence"]], row[col["label"]], domain, num_labels))
    if not examples:
        raise DataFormatError(f"{path}: the file has no examples.")
    return examples


def _quote_error(path: Path, start: int, end: int, detail: str) -> str:
    where = f"lines {start}-{end}" if end > start else f"line {start}"
    return (
        f"{path}:{start}: a quoted field is not closed properly ({detail}, {where}). In CSV a field that starts "
        'with " must end with " before the next comma or line end, and a " inside it is written "". Fix the '
        "quoting on this line, or quote the whole sentence."
    )


def write_labelled_tsv(examples: Sequence[Example], path: Path) -> None:
    """Write `sentence<TAB>label<TAB>domain` with a header (the format the SageMaker channels carry), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write("sentence\tlabel\tdomain\n")
        for ex in examples:
            if "\t" in ex.sentence or "\n" in ex.sentence:
                raise DataFormatError(f"cannot write a sentence containing a tab or newline to TSV: {ex.sentence!r}")
            fh.write(f"{ex.sentence}\t{ex.label}\t{ex.domain}\n")
    os.replace(tmp, path)


def cola_splits(cola_dir: Path, split: str, val_fraction: float, seed: int, num_labels: int = 2) -> dict:
    """Examples per stage. `glue`: train / GLUE dev. `seed`: the blog's seeded 75/25 split of in_domain_train,
    with GLUE dev kept as the test set so both setups report the same numbers."""
    train = read_cola_tsv(cola_dir / COLA_FILES["in_domain_train"], "in_domain", num_labels)
    dev = read_cola_tsv(cola_dir / COLA_FILES["in_domain_dev"], "in_domain", num_labels) + read_cola_tsv(
        cola_dir / COLA_FILES["out_of_domain_dev"], "out_of_domain", num_labels
    )
    if split == "glue":
        return {"train": train, "val": dev, "test": None}
    if split == "seed":
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction} must be between 0 and 1 (exclusive).")
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_val = round(len(train) * val_fraction)
        return {
            "train": [train[i] for i in sorted(order[n_val:])],
            "val": [train[i] for i in sorted(order[:n_val])],
            "test": dev,
        }
    raise ConfigError(f"data.split={split!r} is not one of: glue, seed.")


class TokenizedDataset(Dataset):
    """Pre-tokenized examples (no per-item tokenization, nothing heavy to fork into workers)."""

    def __init__(self, encodings: dict[str, list], labels: list[int], domains: list[int]):
        self.encodings, self.labels, self.domains = encodings, labels, domains

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {key: values[i] for key, values in self.encodings.items()}
        item["labels"] = self.labels[i]
        item["domain"] = self.domains[i]
        return item

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.encodings["input_ids"]]


class CoLADataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: str,
        data_dir: str = "data",
        url: str = "https://nyu-mll.github.io/CoLA/cola_public_1.1.zip",
        sha256: str = "2cf856f46df11c143d38e0cf2f9f34ff2fdb088c521cd859f5c4b9581683278b",
        archive: str | None = None,
        split: str = "glue",
        val_fraction: float = 0.25,
        split_seed: int = 42,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        label_names: Sequence[str] = LABEL_NAMES,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        group_by_length: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        if (train_file is None) != (val_file is None):
            raise ConfigError(
                "Give both data.train_file and data.val_file (TSV/CSV with `sentence` and `label` columns), "
                "or neither to use the official CoLA archive."
            )
        if max_length < 2:
            raise ConfigError(f"data.max_length={max_length} must be at least 2 ([CLS] and [SEP]).")
        self.num_labels = len(label_names)
        self.datasets: dict[str, TokenizedDataset | None] = {}
        self.tokenizer = None

    @property
    def uses_own_files(self) -> bool:
        return self.hparams.train_file is not None

    def _cola_dir(self) -> Path:
        hp = self.hparams
        return ensure_cola(Path(hp.data_dir), hp.url, hp.sha256, hp.archive)

    def prepare_data(self) -> None:
        if not self.uses_own_files:
            self._cola_dir()

    def examples(self) -> dict[str, list[Example] | None]:
        hp = self.hparams
        if self.uses_own_files:
            return {
                "train": read_labelled_file(hp.train_file, self.num_labels),
                "val": read_labelled_file(hp.val_file, self.num_labels),
                "test": read_labelled_file(hp.test_file, self.num_labels) if hp.test_file else None,
            }
        return cola_splits(self._cola_dir(), hp.split, hp.val_fraction, hp.split_seed, self.num_labels)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.tokenizer = load_tokenizer(self.hparams.tokenizer)
        for name, examples in self.examples().items():
            self.datasets[name] = self._tokenize(examples) if examples else None

    def _tokenize(self, examples: list[Example]) -> TokenizedDataset:
        encodings = self.tokenizer(
            [ex.sentence for ex in examples],
            truncation=True,
            max_length=self.hparams.max_length,
            return_token_type_ids=False,
        )
        return TokenizedDataset(
            dict(encodings), [ex.label for ex in examples], [DOMAINS.index(ex.domain) for ex in examples]
        )

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        domains = torch.tensor([f.pop("domain") for f in features])
        batch = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")(features)
        batch["domain"] = domains
        return dict(batch)

    def _loader(self, name: str, train: bool) -> DataLoader:
        dataset = self.datasets.get(name)
        if dataset is None:
            raise RuntimeError(f"No {name} data: call setup() first (or configure a {name} file).")
        hp = self.hparams
        batch_size = hp.batch_size if train else hp.eval_batch_size
        sampler = None
        if train and hp.group_by_length:
            # Shuffled, then sorted by length inside mega-batches: ~1.1 padded tokens per real token instead of ~2.
            sampler = LengthGroupedSampler(batch_size, lengths=dataset.lengths)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    @property
    def has_test(self) -> bool:
        return self.datasets.get("test") is not None
