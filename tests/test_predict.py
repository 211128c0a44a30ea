"""`cola_bert.predict`: files through an artifact (tarball or directory) give exactly the handler's JSON Lines answer
(what Batch Transform writes), a run's model/ works too, bad input exits 2 and nothing is half-written."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cola_bert import inference, predict

REPO_ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The sailors rode the breeze clear of the rocks.",
    "Cat the mat on sat the.",
    "Ünïcödé 東京 😀 naïve, with a comma",
    " ".join(["This long sentence keeps going"] * 40),
    "a",
]


@pytest.fixture(scope="module")
def artifact(exported_artifact) -> Path:
    return exported_artifact()


@pytest.fixture(scope="module")
def model(artifact):
    return inference.load_artifact(artifact / "model")


def _batch_transform_answer(model, sentences: list[str]) -> list[dict]:
    """What the handler answers a Batch Transform MultiRecord text/plain batch with (Accept: application/jsonlines)."""
    body, media = inference.transform(model, "\n".join(sentences) + "\n", "text/plain", "application/jsonlines")
    assert media == "application/jsonlines"
    return [json.loads(line) for line in body.split("\n")]


def _write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text(end.join(lines) + end, encoding="utf-8")
    return path


def test_file_through_the_tarball_cli_equals_the_handler(artifact, model, tmp_path):
    sentences = SENTENCES * 30  # 150 lines: several batches of --batch-size 16
    source = _write(tmp_path / "sentences.txt", sentences, end="\r\n")
    out = tmp_path / "predictions.jsonl"
    proc = subprocess.run([sys.executable, "-m", "cola_bert.predict", "--model-dir", str(artifact / "model.tar.gz"),
                           "--input", str(source), "--output", str(out), "--batch-size", "16"],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Wrote {len(sentences)} predictions to {out}" in proc.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(sentences)
    rows = [json.loads(line) for line in lines]
    expected = _batch_transform_answer(model, sentences)
    assert [row["label"] for row in rows] == [row["label"] for row in expected]
    for row, want in zip(rows, expected):
        assert set(row) == {"label", "label_name", "score", "probabilities"}
        assert row["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl", "sentences.txt"]


@pytest.mark.parametrize("where", ["export_dir", "model_dir"])
def test_file_through_the_artifact_directory(where, artifact, model, tmp_path, capsys):
    source = _write(tmp_path / "in.txt", SENTENCES)
    out = tmp_path / "out.jsonl"
    model_dir = artifact if where == "export_dir" else artifact / "model"
    assert predict.main(["--model-dir", str(model_dir), "--input", str(source), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows == _batch_transform_answer(model, SENTENCES)  # same code path: identical numbers


def test_a_runs_model_directory_matches_the_eager_model(tiny_model_dir, eager, tmp_path):
    source = _write(tmp_path / "in.txt", SENTENCES)
    out = tmp_path / "out.jsonl"
    assert predict.main(["--model-dir", str(tiny_model_dir), "--input", str(source), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = torch.softmax(eager(SENTENCES), -1)
    assert len(rows) == len(SENTENCES)
    for row, probs in zip(rows, expected):
        assert row["probabilities"] == pytest.approx(probs.tolist(), abs=1e-5)
        assert row["label"] == int(probs.argmax()) and row["label_name"] in ("unacceptable", "acceptable")


def test_stdin_and_arguments_still_work(artifact, model, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(SENTENCES[:2]) + "\n\n"))
    assert predict.main(["--model-dir", str(artifact / "model"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["sentence"] for row in rows] == SENTENCES[:2]
    expected = _batch_transform_answer(model, SENTENCES[:2])
    assert [{k: v for k, v in row.items() if k != "sentence"} for row in rows] == expected
    assert predict.main(["--model-dir", str(artifact / "model"), "One sentence here."]) == 0
    table = capsys.readouterr().out
    assert "One sentence here." in table and "label_name" in table


def test_long_files_are_batched_with_a_progress_bar(artifact, tmp_path, monkeypatch):
    calls, bars = [], []
    real_rows, real_progress = predict.predict_rows, predict._progress

    def rows(model, sentences, batch_size):
        calls.append((len(sentences), batch_size))
        return real_rows(model, sentences, batch_size)

    def progress(total):
        bar = real_progress(total)
        bars.append((total, bar.disable))
        return bar

    monkeypatch.setattr(predict, "predict_rows", rows)
    monkeypatch.setattr(predict, "_progress", progress)
    sentences = [f"Sentence {i} is here." for i in range(600)]
    out = tmp_path / "out.jsonl"
    assert predict.main(["--model-dir", str(artifact / "model.tar.gz"), "--input",
                         str(_write(tmp_path / "in.txt", sentences)), "--output", str(out), "--batch-size", "8"]) == 0
    assert calls == [(256, 8), (256, 8), (88, 8)]
    assert bars == [(600, True)]  # below PROGRESS_MIN (and not a terminal): no bar
    assert len(out.read_text().splitlines()) == 600
    with predict._progress(predict.PROGRESS_MIN) as bar:  # long input on a terminal gets one
        assert bar.disable is not bar.console.is_terminal


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "holds no sentences"),
        (b"\n\n", "holds no sentences"),
        (b"first\n\nthird\n", "line 2 is blank"),
        (b"fine\n\xff\xfe broken\n", "not UTF-8 text (line 2"),
    ],
)
def test_bad_input_files_exit_2_and_write_nothing(content, match, artifact, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_bytes(content)
    out = tmp_path / "out.jsonl"
    assert predict.main(["--model-dir", str(artifact / "model"), "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --input") and match in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_input", "does not exist"),
        ("missing_model", "--model-dir"),
        ("not_a_model", "neither an exported artifact"),
        ("output_dir_missing", "does not exist; create it first"),
        ("no_output", "--input needs --output"),
        ("batch_size_0", "--batch-size must be at least 1, got 0"),
        ("max_length_0", "--max-length must be at least 2 ([CLS] and [SEP]), got 0"),
        ("blank_sentence", "sentence argument 2 of 2 is empty or only whitespace"),
        ("empty_sentence", "sentence argument 1 of 1 is empty or only whitespace"),
    ],
)
def test_bad_arguments_exit_2(case, match, artifact, tmp_path, capsys):
    source = _write(tmp_path / "in.txt", SENTENCES[:1])
    args = ["--model-dir", str(artifact / "model"), "--input", str(source), "--output", str(tmp_path / "o.jsonl")]
    if case == "missing_input":
        args[3] = str(tmp_path / "nope.txt")
    elif case == "missing_model":
        args[1] = str(tmp_path / "no_model")
    elif case == "not_a_model":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    elif case == "output_dir_missing":
        args[5] = str(tmp_path / "no" / "o.jsonl")
    elif case == "no_output":
        args = args[:4]
    elif case == "batch_size_0":
        args += ["--batch-size", "0"]
    elif case == "max_length_0":  # a run's model/ directory is truncated at --max-length
        args = ["--model-dir", str(artifact / "model"), "--max-length", "0", "A sentence."]
    elif case == "blank_sentence":  # sentences as arguments: each one must hold text, as each line of a file must
        args = ["--model-dir", str(artifact / "model"), "The cat sat on the mat.", "   "]
    elif case == "empty_sentence":
        args = ["--model-dir", str(artifact / "model"), ""]
    assert predict.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
    assert not (tmp_path / "o.jsonl").exists()


def test_tampered_artifact_is_refused(artifact, tmp_path, capsys):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(artifact / "model", copy)
    data = bytearray((copy / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.pt").write_bytes(bytes(data))
    source = _write(tmp_path / "in.txt", SENTENCES[:1])
    assert predict.main(["--model-dir", str(copy), "--input", str(source), "--output", str(tmp_path / "o")]) == 2
    assert "model.pt is corrupt or was modified" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change", ["code", "unlisted"])
def test_a_modified_handler_or_an_added_file_is_refused_like_serve_refuses_it(change, artifact, tmp_path, capsys):
    """predict runs the installed handler, not the artifact's code/, yet refuses what `serve` refuses: an artifact
    that is not what the export wrote is not scored."""
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(artifact / "model", copy)
    if change == "code":
        with open(copy / "code" / "inference.py", "a") as handle:
            handle.write("\n# changed\n")
    else:
        (copy / "code" / "helper.py").write_text("print('hi')\n")
    source = _write(tmp_path / "in.txt", SENTENCES[:1])
    assert predict.main(["--model-dir", str(copy), "--input", str(source), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert ("code/inference.py is corrupt or was modified" if change == "code" else "code/helper.py is not listed") in err
    assert not (tmp_path / "o").exists()


def test_output_that_is_the_input_is_refused_and_the_input_kept(artifact, tmp_path, capsys):
    source = _write(tmp_path / "in.txt", SENTENCES[:2])
    before = source.read_bytes()
    (tmp_path / "link.txt").symlink_to(source)
    for output in (source, tmp_path / "link.txt"):
        args = ["--model-dir", str(artifact / "model"), "--input", str(source), "--output", str(output)]
        assert predict.main(args) == 2
        assert "is the --input file" in capsys.readouterr().err and source.read_bytes() == before


def test_a_broken_model_directory_is_one_error_paragraph(tiny_model_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").write_text("{ not json")
    assert predict.main(["--model-dir", str(broken), "A sentence."]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model-dir {broken} cannot be loaded") and "Traceback" not in err


def test_a_failure_midway_keeps_the_previous_output(artifact, tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    real_rows, seen = predict.predict_rows, []

    def rows(model, sentences, batch_size):
        seen.append(len(sentences))
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real_rows(model, sentences, batch_size)

    monkeypatch.setattr(predict, "predict_rows", rows)
    source = _write(tmp_path / "in.txt", [f"Sentence {i}." for i in range(300)])
    with pytest.raises(KeyboardInterrupt):
        predict.main(["--model-dir", str(artifact / "model"), "--input", str(source), "--output", str(out)])
    assert seen == [256, 44] and out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.jsonl"]
