"""Parsing, archive handling and batching of the CoLA data."""

from __future__ import annotations

import io
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch

from cola_bert import archive as archive_mod
from cola_bert.archive import ArchiveError, ensure_cola, sha256_of
from cola_bert.data import CoLADataModule, DataFormatError, read_cola_tsv, read_labelled_file, write_labelled_tsv

SHA = "2cf856f46df11c143d38e0cf2f9f34ff2fdb088c521cd859f5c4b9581683278b"
URL = "https://nyu-mll.github.io/CoLA/cola_public_1.1.zip"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- parsing -----------------------------------------------------------------------------------------------------


def test_cola_tsv_keeps_unbalanced_quotes_and_marks(tmp_path):
    path = write(tmp_path / "x.tsv", 'gj04\t1\t\tThe "sailors rode.\nbc01\t0\t*\tHe said " that.\n')
    examples = read_cola_tsv(path)
    assert [e.sentence for e in examples] == ['The "sailors rode.', 'He said " that.']
    assert [e.label for e in examples] == [1, 0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("gj04\t1\tThe only three columns.\n", "x.tsv:1: expected 4 tab-separated columns"),
        ("gj04\t1\t\tfine\ngj04\t2\t\tbad label\n", "x.tsv:2: label 2 is outside 0..1"),
        ("gj04\tyes\t\tbad\n", "x.tsv:1: label 'yes' is not an integer"),
        ("gj04\t1\t\t   \n", "x.tsv:1: the sentence is empty"),
        ("gj04\t-1\t\tneg\n", "x.tsv:1: label -1 is outside 0..1"),
    ],
)
def test_cola_tsv_malformed_rows_fail_with_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "x.tsv", content)
    with pytest.raises(DataFormatError) as err:
        read_cola_tsv(path)
    assert str(err.value).startswith(str(tmp_path / message.split(":")[0]) + ":")
    assert message.split(": ", 1)[1] in str(err.value)


def test_user_csv_with_quoted_commas_and_domain(tmp_path):
    path = write(tmp_path / "own.csv", 'sentence,label,domain\n"Yes, it works.",1,out_of_domain\nNo it work.,0,\n')
    examples = read_labelled_file(path)
    assert [(e.sentence, e.label, e.domain) for e in examples] == [
        ("Yes, it works.", 1, "out_of_domain"),
        ("No it work.", 0, "in_domain"),
    ]


def test_user_tsv_with_header_any_column_order(tmp_path):
    path = write(tmp_path / "own.tsv", 'label\tsentence\n1\tShe said "hi.\n0\tHi said.\n')
    assert [(e.sentence, e.label) for e in read_labelled_file(path)] == [('She said "hi.', 1), ("Hi said.", 0)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "text,label\nhello,1\n", "a.csv:1: header ['text', 'label'] lacks ['sentence']"),
        ("b.tsv", "sentence\tlabel\nok\t1\nextra\t1\tcol\n", "b.tsv:3: expected 2 columns, found 3"),
        ("c.csv", "sentence,label\nok,3\n", "c.csv:2: label 3 is outside 0..1"),
        ("d.csv", "sentence,label,domain\nok,1,mars\n", "d.csv:2: domain 'mars' is not one of"),
        ("e.csv", "sentence,label\n", "e.csv: the file has no examples"),
        ("f.csv", "", "f.csv: the file is empty. It needs a header row"),
        ("g.tsv", "\n  \n", "g.tsv: the file is empty"),
    ],
)
def test_user_file_errors(tmp_path, name, content, message):
    with pytest.raises(DataFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_labelled_file(write(tmp_path / name, content))


def test_a_directory_given_as_data_file_is_named_as_such(tmp_path):
    with pytest.raises(DataFormatError, match="is a directory; give the data file itself"):
        read_labelled_file(tmp_path)


@pytest.mark.parametrize("name", ["bom.csv", "bom.tsv"])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, name):
    sep = "," if name.endswith(".csv") else "\t"
    path = tmp_path / name
    path.write_bytes(f"\ufeffsentence{sep}label\nIt works.{sep}1\n".encode("utf-8"))
    assert [(e.sentence, e.label) for e in read_labelled_file(path)] == [("It works.", 1)]


def test_a_byte_order_mark_in_raw_cola_is_accepted(tmp_path):
    path = tmp_path / "raw.tsv"
    path.write_bytes("\ufeffgj04\t1\t\tOne.\n".encode("utf-8"))
    assert [e.sentence for e in read_cola_tsv(path)] == ["One."]


@pytest.mark.parametrize("name", ["latin.csv", "latin.tsv", "raw.tsv"])
def test_non_utf8_bytes_are_refused_with_file_and_line(tmp_path, name):
    rows = ["gj04\t1\t\tFine.", "gj04\t1\t\tAlso fine.", "gj04\t0\t*\tCaf\xe9 au lait."] if name == "raw.tsv" else [
        "sentence,label", "Fine.,1", "Also fine.,1", "Caf\xe9 au lait.,0"]
    if name == "latin.tsv":
        rows = [r.replace(",", "\t") for r in rows]
    path = tmp_path / name
    path.write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    reader = read_cola_tsv if name == "raw.tsv" else read_labelled_file
    line, column = len(rows), rows[-1].index("\xe9") + 1
    with pytest.raises(DataFormatError, match=rf"^{path}:{line}: byte 0xe9 \(column {column}\) is not UTF-8.*iconv"):
        reader(path)


def _rows(n: int) -> list[str]:
    return [f"Sentence number {i}.,{i % 2}" for i in range(n)]


def test_an_unterminated_quote_is_refused_not_merged_into_the_next_row(tmp_path):
    """21 rows, one with an opening quote that is never closed: an error at its line, not 20 examples."""
    rows = _rows(21)
    rows[7] = '"He said, hello.,1'  # file line 9 (after the header)
    path = write(tmp_path / "q.csv", "sentence,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=rf"^{path}:9: a quoted field is not closed"):
        read_labelled_file(path)


def test_a_quote_closed_on_a_later_line_is_refused(tmp_path):
    rows = _rows(21)
    rows[3] = '"Two lines merged,1'
    rows[4] = 'into one sentence.",0'  # closes the quote: the csv module alone would return one merged row
    path = write(tmp_path / "q.csv", "sentence,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=rf"^{path}:5: a quoted field .*lines 5-6"):
        read_labelled_file(path)


def test_well_quoted_csv_still_reads_every_row(tmp_path):
    rows = _rows(21)
    rows[7] = '"He said ""hello"", then left.",1'
    path = write(tmp_path / "q.csv", "sentence,label\n" + "\n".join(rows) + "\n")
    examples = read_labelled_file(path)
    assert len(examples) == 21 and examples[7].sentence == 'He said "hello", then left.'


def test_written_channel_file_reads_back(tmp_path):
    examples = read_cola_tsv(write(tmp_path / "x.tsv", 'a\t1\t\tA "quoted, one.\nb\t0\t*\tTwo.\n'))
    out = tmp_path / "channel" / "train.tsv"
    write_labelled_tsv(examples, out)
    assert read_labelled_file(out) == examples
    assert not list(out.parent.glob("*.tmp"))


# --- archive -----------------------------------------------------------------------------------------------------


def test_real_archive_sizes_and_domains(cola_archive, tmp_path):
    from cola_bert.data import cola_splits

    cola_dir = ensure_cola(tmp_path / "data", URL, SHA, archive=cola_archive)
    glue = cola_splits(cola_dir, "glue", 0.25, 42)
    assert len(glue["train"]) == 8551
    assert len(glue["val"]) == 1043
    assert sum(e.domain == "out_of_domain" for e in glue["val"]) == 516
    seed = cola_splits(cola_dir, "seed", 0.25, 42)
    assert (len(seed["train"]), len(seed["val"]), len(seed["test"])) == (6413, 2138, 1043)
    assert seed["val"] == cola_splits(cola_dir, "seed", 0.25, 42)["val"]
    assert seed["val"] != cola_splits(cola_dir, "seed", 0.25, 7)["val"]


def test_corrupt_archive_is_refused_and_nothing_extracted(cola_archive, tmp_path):
    bad = tmp_path / "cola_public_1.1.zip"
    bad.write_bytes(cola_archive.read_bytes()[:-100])
    data_dir = tmp_path / "data"
    with pytest.raises(ArchiveError, match="expected " + SHA):
        ensure_cola(data_dir, URL, SHA, archive=bad)
    assert not (data_dir / "cola_public").exists()
    assert [p.name for p in data_dir.iterdir()] == []


def test_archive_found_in_data_dir_then_cached(cola_archive, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cola_public_1.1.zip").write_bytes(cola_archive.read_bytes())
    first = ensure_cola(data_dir, URL, SHA)
    assert (first / "raw" / "in_domain_train.tsv").is_file()
    monkeypatch.setattr(archive_mod, "extract", lambda *a: pytest.fail("re-extracted a verified dataset"))
    assert ensure_cola(data_dir, URL, SHA) == first


def test_an_explicit_archive_is_verified_even_when_already_extracted(cola_archive, tmp_path):
    data_dir = tmp_path / "data"
    ensure_cola(data_dir, URL, SHA, archive=cola_archive)
    bad = tmp_path / "other.zip"
    bad.write_bytes(cola_archive.read_bytes()[:-10])
    with pytest.raises(ArchiveError, match=f"{bad} has sha256 .*expected {SHA}"):
        ensure_cola(data_dir, URL, SHA, archive=bad)
    with pytest.raises(ArchiveError, match="does not exist"):
        ensure_cola(data_dir, URL, SHA, archive=tmp_path / "missing.zip")


def test_offline_without_archive_explains_where_to_put_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(archive_mod.urllib.request, "urlopen", offline)
    with pytest.raises(ArchiveError) as err:
        ensure_cola(tmp_path / "data", URL, SHA)
    text = str(err.value)
    assert str(tmp_path / "data" / "cola_public_1.1.zip") in text and "data.archive=" in text and URL in text
    assert list((tmp_path / "data").iterdir()) == []


def test_download_writes_through_temp_file_and_verifies(cola_archive, tmp_path, monkeypatch):
    payload = cola_archive.read_bytes()

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    monkeypatch.setattr(archive_mod.urllib.request, "urlopen", lambda url, timeout: Response(payload))
    cola_dir = ensure_cola(tmp_path / "data", URL, SHA)
    assert sha256_of(tmp_path / "data" / "cola_public_1.1.zip") == SHA
    assert (cola_dir / "raw" / "out_of_domain_dev.tsv").is_file()
    assert not list((tmp_path / "data").glob("*.part"))


def test_a_corrupt_download_is_refused_and_removed(cola_archive, tmp_path, monkeypatch):
    payload = cola_archive.read_bytes()[:5000]

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    monkeypatch.setattr(archive_mod.urllib.request, "urlopen", lambda url, timeout: Response(payload))
    with pytest.raises(ArchiveError, match="expected " + SHA):
        ensure_cola(tmp_path / "data", URL, SHA)
    assert list((tmp_path / "data").iterdir()) == []


def test_zip_without_cola_layout_is_refused(tmp_path):
    fake = tmp_path / "fake.zip"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("something/else.txt", "x")
    with pytest.raises(ArchiveError, match="not the CoLA archive"):
        ensure_cola(tmp_path / "data", URL, sha256_of(fake), archive=fake)
    assert not (tmp_path / "data" / "cola_public").exists()


# --- datamodule --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datamodule(cola_archive, tmp_path_factory):
    from cola_bert.backbone import minilm_path

    dm = CoLADataModule(
        tokenizer=minilm_path(), data_dir=str(tmp_path_factory.mktemp("data")), archive=str(cola_archive),
        batch_size=32, eval_batch_size=64, max_length=128,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_batches_are_padded_to_their_longest_sentence(datamodule):
    batch = next(iter(datamodule.val_dataloader()))
    lengths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) < 128
    assert batch["input_ids"].dtype == torch.long and set(batch) == {"input_ids", "attention_mask", "labels", "domain"}
    assert batch["labels"].shape == (64,)


def test_length_grouping_cuts_padding(datamodule):
    def padding_ratio(loader, n=40):
        padded = real = 0
        for i, batch in enumerate(loader):
            if i == n:
                break
            padded += batch["attention_mask"].numel()
            real += int(batch["attention_mask"].sum())
        return padded / real

    grouped = padding_ratio(datamodule.train_dataloader())
    datamodule.hparams.group_by_length = False
    try:
        shuffled = padding_ratio(datamodule.train_dataloader())
    finally:
        datamodule.hparams.group_by_length = True
    assert grouped < 1.25 < 1.6 < shuffled


def test_long_sentences_are_truncated_not_fatal(tmp_path):
    from cola_bert.backbone import minilm_path

    long = " ".join(["word"] * 400)
    train = write(tmp_path / "t.tsv", f"sentence\tlabel\n{long}\t1\nshort one\t0\n")
    dm = CoLADataModule(tokenizer=minilm_path(), train_file=str(train), val_file=str(train), max_length=16,
                        eval_batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"][1].sum() < 16


def test_train_and_val_files_must_come_together():
    with pytest.raises(ValueError, match="both data.train_file and data.val_file"):
        CoLADataModule(tokenizer="x", train_file="a.tsv")
