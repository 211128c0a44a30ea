"""The SageMaker handler (`code/inference.py` = `cola_bert.inference`): requests, responses, client errors, loading."""

from __future__ import annotations

import ast
import encodings.aliases
import io
import json
import logging
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch

from cola_bert import inference, tarball

SOURCE = Path(inference.__file__)
SENTENCES = ["The sailors rode the breeze clear of the rocks.", "Cat the mat on sat the.", "Ünïcödé 東京 😀 naïve"]
LONG = " ".join(["This long sentence keeps going"] * 40)  # > 64 tokens (the blog endpoint's MAX_LEN) and > 128


@pytest.fixture(scope="session")
def artifact(exported_artifact) -> Path:
    """The default (lean) TorchScript export of the tiny model, unpacked."""
    return exported_artifact() / "model"


@pytest.fixture(scope="session")
def fallback_artifact(exported_artifact) -> Path:
    """The same with the Hugging Face fallback weights (hf_fallback=True)."""
    return exported_artifact(hf_fallback=True) / "model"


@pytest.fixture(scope="session")
def model(artifact):
    return inference.model_fn(str(artifact))


def _call(model, body, content_type="application/json", accept="application/json"):
    payload, media = inference.output_fn(inference.predict_fn(inference.input_fn(body, content_type), model), accept)
    return json.loads(payload), media


def _client_error(body, content_type="application/json", status=400, match=""):
    with pytest.raises(inference.RequestError) as info:
        inference.input_fn(body, content_type)
    assert info.value.status_code == status
    assert match in info.value.message
    return info.value


# --------------------------------------------------------------------------------------------- content types
def test_json_list_matches_eager_model(model, eager):
    rows, media = _call(model, json.dumps(SENTENCES))
    assert media == "application/json" and len(rows) == len(SENTENCES)
    expected = torch.softmax(eager(SENTENCES), dim=-1)
    for row, probs in zip(rows, expected):
        assert row["probabilities"] == pytest.approx(probs.tolist(), abs=1e-5)
        assert row["label"] == int(probs.argmax())
        assert row["label_name"] == ["unacceptable", "acceptable"][row["label"]]
        assert row["score"] == max(row["probabilities"])
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        assert set(row) == {"label", "label_name", "score", "probabilities"}


@pytest.mark.parametrize(
    "body, content_type",
    [
        (json.dumps(SENTENCES), "application/json"),
        (json.dumps(SENTENCES).encode(), "application/json"),
        (json.dumps({"inputs": SENTENCES}), "application/json"),
        (json.dumps(SENTENCES, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8"),
        ("\r\n".join(SENTENCES) + "\r\n\r\n", "text/plain"),
        (("\n".join(SENTENCES) + "\n").encode("utf-8"), "text/plain; charset=UTF-8"),
        ("\n".join(SENTENCES).encode("utf-16"), "text/plain; charset=utf-16"),
        ("\n".join(SENTENCES), "text/csv"),
        ("\n".join(SENTENCES).encode(), "Text/CSV"),
    ],
)
def test_every_content_type_gives_the_same_predictions(model, body, content_type):
    expected, _ = _call(model, json.dumps(SENTENCES))
    assert _call(model, body, content_type)[0] == expected


def test_old_blog_payloads_a_json_string_and_a_list(model, eager):
    one, _ = _call(model, json.dumps("Somebody just left - guess who."))
    assert len(one) == 1
    assert one[0]["probabilities"] == pytest.approx(
        torch.softmax(eager(["Somebody just left - guess who."]), -1)[0].tolist(), abs=1e-5)
    assert _call(model, json.dumps({"inputs": "Somebody just left - guess who."}))[0] == one
    both, _ = _call(model, json.dumps(["Somebody just left - guess who.",
                                       "They claimed they had settled on something, but it wasn't clear what."]))
    assert len(both) == 2 and both[0] == one[0]


def test_sentence_longer_than_max_length_is_truncated(model, eager):
    assert len(model.encode([LONG])[0]) == 128 < len(LONG.split())
    rows, _ = _call(model, json.dumps([LONG, "Short."]))
    assert rows[0]["probabilities"] == pytest.approx(torch.softmax(eager([LONG]), -1)[0].tolist(), abs=1e-5)


def test_csv_with_quoted_commas(model):
    body = '"Sentences, with commas, are fine when quoted."\nPlain one.\n\n'
    rows, _ = _call(model, body, "text/csv")
    direct, _ = _call(model, json.dumps(["Sentences, with commas, are fine when quoted.", "Plain one."]))
    assert rows == direct


def test_large_batches_are_chunked_with_dynamic_padding(model, monkeypatch):
    sentences = [("word " * n).strip() for n in (3, 40, 1, 12, 200, 5, 7)]
    shapes = []
    runner = model.runner

    class Spy(inference.Runner):
        backend = runner.backend

        def __call__(self, input_ids, attention_mask):
            assert input_ids.dtype == attention_mask.dtype == torch.int64
            shapes.append(tuple(input_ids.shape))
            return runner(input_ids, attention_mask)

    monkeypatch.setattr(model, "runner", Spy(runner.device))
    monkeypatch.setenv(inference.BATCH_SIZE_ENV, "3")
    rows, _ = _call(model, json.dumps(sentences))
    monkeypatch.setattr(model, "runner", runner)
    lengths = sorted(len(ids) for ids in model.encode(sentences))
    assert lengths == [3, 5, 7, 9, 14, 42, 128]  # [CLS] + words + [SEP], the longest truncated at max_length
    # chunks of <= 3 sentences in length order, each padded to its own longest and cut where padding would exceed
    # MAX_PADDING (25%) of the real tokens: 3+5 padded to 2x5 = 1.25x; adding 7 would make 3x7 = 1.4x
    assert shapes == [(2, 5), (2, 9), (1, 14), (1, 42), (1, 128)]
    shapes.clear()
    monkeypatch.setattr(model, "runner", Spy(runner.device))
    _call(model, json.dumps(["Same length here."] * 7))  # no padding at all: only batch_size cuts
    monkeypatch.setattr(model, "runner", runner)
    assert [s[0] for s in shapes] == [3, 3, 1]
    # order is the request's order: each row equals the single-sentence answer
    for sentence, row in zip(sentences, rows):
        assert _call(model, json.dumps(sentence))[0][0]["probabilities"] == pytest.approx(row["probabilities"],
                                                                                       abs=1e-5)


# ------------------------------------------------------------------------------------------------ logits option
def test_logits_accept_returns_raw_logits(model, eager):
    logits, media = _call(model, json.dumps(SENTENCES), accept="application/x-logits+json")
    assert media == "application/x-logits+json"
    assert torch.allclose(torch.tensor(logits), eager(SENTENCES), atol=1e-5)


def test_return_logits_parameter_adds_logits(model, eager):
    rows, _ = _call(model, json.dumps({"inputs": SENTENCES[:2], "parameters": {"return_logits": True}}))
    assert torch.allclose(torch.tensor([row["logits"] for row in rows]), eager(SENTENCES[:2]), atol=1e-5)


@pytest.mark.parametrize(
    "accept, env, expected",
    [
        (None, None, "application/json"),
        ("*/*", None, "application/json"),
        ("*/*", "application/x-logits+json", "application/x-logits+json"),
        ("text/html, application/x-logits+json;q=0.9", None, "application/x-logits+json"),
        ("application/*", None, "application/json"),
        ("application/jsonlines", None, "application/jsonlines"),
        ("*/*", "application/jsonlines", "application/jsonlines"),
        # RFC 9110 q-values: q=0 excludes a type, the highest q wins, ties keep the listed order
        ("application/json;q=0, application/jsonlines", None, "application/jsonlines"),
        ("application/jsonlines;q=0.1, application/json;q=1", None, "application/json"),
        ("application/jsonlines;q=0.5, application/x-logits+json;q=0.5", None, "application/jsonlines"),
        ("*/*;q=0.2, application/x-logits+json", None, "application/x-logits+json"),
        ("application/json;q=0, */*", None, "application/jsonlines"),  # the wildcard means "anything else"
        ("application/jsonlines;q=0.9, */*;q=0.1", None, "application/jsonlines"),
    ],
)
def test_accept_negotiation(model, monkeypatch, accept, env, expected):
    if env:
        monkeypatch.setenv(inference.DEFAULT_ACCEPT_ENV, env)
    else:
        monkeypatch.delenv(inference.DEFAULT_ACCEPT_ENV, raising=False)
    prediction = inference.predict_fn(inference.input_fn(json.dumps(["One."]), "application/json"), model)
    payload, media = inference.output_fn(prediction, accept)
    assert media == expected
    body = [json.loads(line) for line in payload.splitlines()] if media.endswith("jsonlines") else json.loads(payload)
    assert isinstance(body[0], list if expected.endswith("logits+json") else dict)


def test_jsonlines_is_one_line_per_sentence_in_order(model):
    sentences = [f"Sentence number {i} has {'many ' * (i % 7)}words." for i in range(70)]  # > one chunk of 32
    payload, media = inference.transform(model, "\n".join(sentences) + "\n", "text/plain", "application/jsonlines")
    assert media == "application/jsonlines" and not payload.endswith("\n")
    lines = payload.split("\n")
    assert len(lines) == len(sentences)
    expected, _ = _call(model, json.dumps(sentences))
    assert [json.loads(line) for line in lines] == expected  # same objects, same order as application/json
    assert [json.loads(line)["probabilities"] for line in lines[:3]] == [
        _call(model, json.dumps(s))[0][0]["probabilities"] for s in sentences[:3]]


# ---------------------------------------------------------------------------------------------- client mistakes
@pytest.mark.parametrize(
    "body, content_type, status, match",
    [
        ("{not json", "application/json", 400, "Invalid JSON"),
        ("", "application/json", 400, "Empty request body"),
        (b"", "text/plain", 400, "Empty request body"),
        ("\n\n  \n", "text/csv", 400, "Empty request body"),
        ("[]", "application/json", 400, "No sentences"),
        ('{"inputs": []}', "application/json", 400, "No sentences"),
        ('["fine", 3]', "application/json", 400, "Item 1 of the input is int"),
        ('[["nested"]]', "application/json", 400, "Item 0 of the input is list"),
        ('["fine", null]', "application/json", 400, "Item 1 of the input is NoneType"),
        ("42", "application/json", 400, "The JSON input is int"),
        ('{"input": "typo"}', "application/json", 400, '"inputs"'),
        ('{"inputs": "x", "parameters": {"top_k": 2}}', "application/json", 400, "Unknown parameter"),
        ('{"inputs": "x", "parameters": {"return_logits": "yes"}}', "application/json", 400, "true or false"),
        ('["ok", "   "]', "application/json", 400, "Sentence 1 is empty"),
        ('["\\ud800"]', "application/json", 400, "lone surrogate"),
        (b"\xff\xfe\xfa", "text/plain", 400, "not valid utf-8"),
        ('a,b\n"c"\n', "text/csv", 400, "CSV row 1 has 2 columns"),
        ('First.\n"Second, unclosed.\nThird.\n', "text/csv", 400, "row 2 (a quote opened there is never closed"),
        ('"The cat" sat.\n', "text/csv", 400, "row 1 (text after a closing quote"),
        (b'["x"]', "application/json; charset=rot13", 415, "not a text encoding"),
        (b"eA==", "text/plain; charset=base64", 415, "not a text encoding"),
        (b"78", "text/plain; charset=hex", 415, "not a text encoding"),
        (b"x", "text/csv; charset=zlib", 415, "not a text encoding"),
        (b"x", "text/plain; charset=bz2", 415, "not a text encoding"),
        ("x", "application/octet-stream", 415, "Unsupported Content-Type"),
        ("x", None, 415, "Unsupported Content-Type"),
        (b"x", "text/plain; charset=klingon", 415, "Unknown charset"),
        (pickle.dumps(["a"]), "application/python-pickle", 415, "Unsupported Content-Type"),
        (pickle.dumps(["a"]), "application/x-npy", 415, "Unsupported Content-Type"),
    ],
)
def test_client_mistakes_are_4xx_with_a_message(body, content_type, status, match):
    err = _client_error(body, content_type, status, match)
    from sagemaker_inference.errors import BaseInferenceToolkitError

    assert isinstance(err, BaseInferenceToolkitError)  # keeps its status in SageMaker's containers
    assert err.phrase == err.message and "\n" not in err.message


def test_too_many_sentences_is_413_and_configurable(monkeypatch):
    monkeypatch.setenv(inference.MAX_SENTENCES_ENV, "3")
    _client_error(json.dumps(["a", "b", "c", "d"]), status=413, match="limit is 3")
    assert len(inference.input_fn("a\nb\nc", "text/plain")["sentences"]) == 3
    monkeypatch.delenv(inference.MAX_SENTENCES_ENV)
    _client_error(json.dumps(["s"] * (inference.DEFAULT_MAX_SENTENCES + 1)), status=413, match="Too many")


def test_unsupported_accept_is_406(model):
    prediction = inference.predict_fn(inference.input_fn('["x"]', "application/json"), model)
    with pytest.raises(inference.RequestError) as info:
        inference.output_fn(prediction, "text/html")
    assert info.value.status_code == 406 and "application/x-logits+json" in info.value.message
    for excluded in ("application/json;q=0", "application/json;q=0, application/jsonlines;q=0.000, */*;q=0"):
        with pytest.raises(inference.RequestError) as info:
            inference.output_fn(prediction, excluded)
        assert info.value.status_code == 406


def test_every_charset_python_knows_is_decoded_or_a_4xx():
    """No charset in a Content-Type header may turn into a 500 (LookupError, UnicodeError from idna, ...)."""
    names = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values()))
    outcomes = {}
    for name in names:
        for body in (b'["Fine."]', b"\xff\xfe\x80\\x", b"xn--"):
            try:
                inference.input_fn(body, f"application/json; charset={name}")
                outcomes.setdefault(name, "decoded")
            except inference.RequestError as err:
                assert err.status_code in (400, 415), (name, err.message)
                if err.status_code == 415:
                    outcomes[name] = "415"
    assert outcomes["utf_8"] == "decoded" and outcomes["rot_13"] == outcomes["base64_codec"] == "415"


def test_status_codes_survive_the_real_inference_toolkit(artifact, monkeypatch):
    """Drive code/inference.py with sagemaker_inference's own Transformer, as the serving container does."""
    transformer_mod = pytest.importorskip("sagemaker_inference.transformer")
    monkeypatch.syspath_prepend(str(artifact / "code"))
    monkeypatch.delenv("SAGEMAKER_PROGRAM", raising=False)
    monkeypatch.delitem(sys.modules, "inference", raising=False)

    class Context:
        def __init__(self, headers):
            self.system_properties = {"model_dir": str(artifact)}
            self.request_processor = [types.SimpleNamespace(get_request_properties=lambda: headers)]
            self.status, self.content_type = None, None

        def set_response_status(self, code, phrase):
            self.status = (code, phrase)

        def set_response_content_type(self, index, content_type):
            self.content_type = content_type

    try:
        transformer = transformer_mod.Transformer()
        ok = Context({"Content-Type": "application/json", "Accept": "application/json"})
        [body] = transformer.transform([{"body": b'["The cat sat."]'}], ok)
        assert ok.status is None and ok.content_type == "application/json"
        assert json.loads(body)[0]["label_name"] in ("unacceptable", "acceptable")
        assert sys.modules["inference"].__file__ == str(artifact / "code" / "inference.py")

        # A Batch Transform MultiRecord batch: several input lines in one text/plain body, answered with exactly
        # one JSON line per sentence, in order (AssembleWith Line then joins the answers line by line).
        sentences = [f"Line {i}: the {'big ' * i}dog barked." for i in range(40)]
        batch = Context({"Content-Type": "text/plain", "Accept": "application/jsonlines"})
        [body] = transformer.transform([{"body": ("\n".join(sentences) + "\n").encode()}], batch)
        assert batch.status is None and batch.content_type == "application/jsonlines"
        text = body.decode() if isinstance(body, bytes) else body
        rows = [json.loads(line) for line in text.split("\n")]
        assert len(rows) == len(sentences)
        handler = sys.modules["inference"]
        local = handler.model_fn(str(artifact))
        one_by_one = [json.loads(handler.transform(local, s, "text/plain", "application/json")[0])[0]
                      for s in sentences]
        for row, alone in zip(rows, one_by_one):
            assert row["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-6)
        assert [row["label"] for row in rows] == [row["label"] for row in one_by_one]

        for headers, payload, status in [
            ({"Content-Type": "application/json"}, b"[1, 2]", 400),
            ({"Content-Type": "image/png"}, b"\x89PNG", 415),
            ({"Content-Type": "text/plain", "Accept": "text/html"}, b"one", 406),
        ]:
            context = Context(headers)
            [message] = transformer.transform([{"body": payload}], context)
            assert context.status[0] == status, message
            assert context.status[1].split()[0] in ("Item", "Unsupported")
    finally:
        sys.modules.pop("inference", None)


# --------------------------------------------------------------------------------------- loading and fallbacks
def test_hf_fallback_when_torch_jit_load_refuses(fallback_artifact, model, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("version_ number knob: file written by a newer PyTorch")

    monkeypatch.setattr(torch.jit, "load", refuse)
    with caplog.at_level(logging.WARNING):
        fallback = inference.model_fn(str(fallback_artifact))
    assert fallback.backend == "huggingface" and model.backend == "torchscript"
    assert "falling back to the Hugging Face weights" in caplog.text and "newer PyTorch" in caplog.text
    assert torch.allclose(fallback.logits(SENTENCES + [LONG]), model.logits(SENTENCES + [LONG]), atol=1e-5)


class Broken(inference.Runner):
    backend = "torchscript"

    def __call__(self, input_ids, attention_mask):
        raise RuntimeError("aten::scaled_dot_product_attention: no kernel for this device")


def test_hf_fallback_when_the_exported_model_fails_to_run(fallback_artifact, model, monkeypatch):
    monkeypatch.setattr(inference, "load_runner", lambda *a, **k: Broken(torch.device("cpu")))
    fallback = inference.load_artifact(fallback_artifact)
    assert fallback.backend == "huggingface" and fallback.device == torch.device("cpu")
    assert torch.allclose(fallback.logits(SENTENCES), model.logits(SENTENCES), atol=1e-5)


def test_lean_artifact_refuses_instead_of_falling_back(artifact, monkeypatch):
    """Without the HF weights there is nothing to fall back to: the reason is raised, nothing runs elsewhere."""
    monkeypatch.setattr(inference, "load_runner", lambda *a, **k: Broken(torch.device("cpu")))
    with pytest.raises(inference.ArtifactError) as info:
        inference.load_artifact(artifact)
    message = str(info.value)
    assert "model.pt cannot be loaded or run on cpu" in message and "no kernel for this device" in message
    assert "hf_fallback=true" in message


def test_onnx_on_a_gpu_host_without_the_cuda_provider_is_refused(exported_artifact, monkeypatch):
    """No silent CPU fallback: an ONNX artifact on a GPU host needs onnxruntime-gpu (or COLA_DEVICE=cpu)."""
    import onnxruntime

    path = exported_artifact("onnx") / "model" / "model.onnx"
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(inference.ArtifactError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        inference.load_runner(path, "onnx", torch.device("cuda"))
    assert inference.load_runner(path, "onnx", torch.device("cpu")).backend == "onnx"


def test_handler_has_no_elastic_inference_path():
    source = SOURCE.read_text()
    for gone in ("torcheia", "attach_eia", "eia:0", "optimized_execution", "SAGEMAKER_INFERENCE_ACCELERATOR"):
        assert gone not in source, gone


def test_predict_runs_under_inference_mode(model, monkeypatch):
    seen = []
    original = inference.TorchModuleRunner._forward

    def forward(self, input_ids, attention_mask):
        seen.append(torch.is_inference_mode_enabled())
        return original(self, input_ids, attention_mask)

    monkeypatch.setattr(inference.TorchModuleRunner, "_forward", forward)
    inference.predict_fn({"sentences": ["x"]}, model)
    assert seen == [True]


def test_not_an_artifact_is_a_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(inference.ArtifactError, match="not an artifact written by `python -m cola_bert.export`"):
        inference.model_fn(str(tiny_model_dir))
    with pytest.raises(inference.ArtifactError, match="not a directory"):
        inference.model_fn(str(tmp_path / "missing"))


def _copy_with_manifest(artifact: Path, dest: Path, **changes) -> Path:
    shutil.copytree(artifact, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.update(changes)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.mark.parametrize("changes, named", [
    ({"max_length": "abc"}, 'max_length as "abc", not a positive integer'),
    ({"max_length": 0}, "max_length as 0"),
    ({"model_file": ["model.pt"]}, 'model_file as ["model.pt"], not a file name'),
    ({"label_names": "ab"}, 'label_names as "ab", not a list of label names'),
    ({"label_names": [0, 1]}, "label_names as [0, 1]"),
    ({"files": ["model.pt"]}, "files as"),
    ({"tokenizer": "tokenizer.json"}, 'tokenizer as "tokenizer.json", not an object'),
    ({"tokenizer": {"file": "tokenizer.json", "pad_token_id": "0"}}, 'tokenizer.pad_token_id as "0"'),
    ({"tokenizer": {"file": ["tokenizer.json"]}}, "tokenizer.file as"),
])
def test_malformed_manifest_values_are_an_artifact_error(artifact, tmp_path, changes, named):
    model_dir = _copy_with_manifest(artifact, tmp_path / "model", **changes)
    for load in (inference.model_fn, lambda d: inference.verify_artifact(d, strict=True)):
        with pytest.raises(inference.ArtifactError) as info:
            load(str(model_dir))
        assert named in str(info.value) and "re-export the model" in str(info.value)


def test_tokenizer_file_that_is_no_tokenizer_is_an_artifact_error(artifact, tmp_path):
    """A listed, hashed file that the tokenizers library cannot read: ArtifactError naming it, not a bare Exception."""
    model_dir = _copy_with_manifest(artifact, tmp_path / "model", tokenizer={"file": "tokenizer_config.json"})
    inference.verify_artifact(model_dir, strict=True)  # every hash is in order
    with pytest.raises(inference.ArtifactError, match=r"Artifact file tokenizer_config.json \(tokenizer.file\) "
                                                      "cannot be loaded as a fast tokenizer"):
        inference.model_fn(str(model_dir))


def _tarball(path: Path, members, first_from: Path | None = None) -> Path:
    """A .tar.gz of ``first_from``'s members (an export's model.tar.gz) followed by ``members`` ({name: bytes})."""
    with tarfile.open(path, "w:gz") as out:
        if first_from is not None:
            with tarfile.open(first_from) as source:
                for member in source:
                    out.addfile(member, source.extractfile(member) if member.isfile() else None)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def no_extraction(monkeypatch):
    """Fails the test if anything is unpacked: refusals must come before extraction."""
    def refuse(*args, **kwargs):
        raise AssertionError("the archive was being unpacked")

    monkeypatch.setattr(tarfile.TarFile, "extractall", refuse)
    monkeypatch.setattr(tarfile.TarFile, "extract", refuse)


def test_archive_file_its_manifest_does_not_list_is_refused_before_unpacking(exported_artifact, tmp_path,
                                                                              no_extraction):
    """An export's archive plus 16 MiB of zeros (16 KB compressed): a gzip bomb is refused, not written to disk."""
    export = exported_artifact() / "model.tar.gz"
    bomb = _tarball(tmp_path / "bomb.tar.gz", {"zeros.bin": bytes(16 << 20)}, first_from=export)
    assert bomb.stat().st_size < export.stat().st_size + (1 << 20)
    with pytest.raises(inference.ArtifactError) as info:
        tarball.safe_extract(bomb, tmp_path / "out")
    assert "contains 'zeros.bin', which its manifest.json does not list" in str(info.value)
    assert "before unpacking anything" in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []

    # the same file stored before manifest.json (not the export's order) is refused too, still before unpacking
    with tarfile.open(export) as source:
        files = {m.name: source.extractfile(m).read() for m in source if m.isfile()}
    reordered = _tarball(tmp_path / "reordered.tar.gz", {"zeros.bin": b"\0" * 10, **files})
    with pytest.raises(inference.ArtifactError, match="'zeros.bin', which its manifest.json does not list"):
        tarball.safe_extract(reordered, tmp_path / "out")


def test_archive_manifest_that_cannot_be_read_is_refused(tmp_path, no_extraction):
    for name, manifest in [("bad-json", b"{not json"), ("no-files", b'{"format": "onnx"}'),
                           ("huge", b" " * (tarball.MAX_MANIFEST_BYTES + 1))]:
        path = _tarball(tmp_path / f"{name}.tar.gz", {"manifest.json": manifest, "model.pt": b"x"})
        with pytest.raises(inference.ArtifactError, match="contains a manifest.json .*before unpacking anything"):
            tarball.safe_extract(path, tmp_path / "out")
    # a second manifest.json would replace the one whose listing was checked
    manifest = json.dumps({"files": {"model.pt": "0" * 64}}).encode()
    path = _tarball(tmp_path / "two.tar.gz", {"manifest.json": manifest, "model.pt": b"x", "./manifest.json": b"{}"})
    with pytest.raises(inference.ArtifactError, match="contains './manifest.json' twice"):
        tarball.safe_extract(path, tmp_path / "out")


def test_archive_size_and_count_bounds(tmp_path, monkeypatch):
    # A header declaring 5 GiB (its data need not even be there): refused at the header, naming the member.
    path = tmp_path / "declared.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        huge = tarfile.TarInfo("model.safetensors")
        huge.size = 5 << 30
        archive.fileobj.write(huge.tobuf(archive.format, archive.encoding, archive.errors))
    with pytest.raises(inference.ArtifactError, match="'model.safetensors', declared as 5368709120 bytes, more than "
                                                      "the 4294967296-byte limit for one file"):
        tarball.safe_extract(path, tmp_path / "out")

    files = {f"f{i}.bin": b"x" * 600 for i in range(3)}
    path = _tarball(tmp_path / "three.tar.gz", files)
    monkeypatch.setattr(tarball, "MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(inference.ArtifactError, match=r"declares more than 1000 bytes in total .*'f1.bin'"):
        tarball.safe_extract(path, tmp_path / "out")
    monkeypatch.setattr(tarball, "MAX_ARCHIVE_BYTES", 1800)
    monkeypatch.setattr(tarball, "MAX_ARCHIVE_MEMBERS", 2)
    with pytest.raises(inference.ArtifactError, match="has more than 2 members"):
        tarball.safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "out" / "f0.bin").exists()
    monkeypatch.setattr(tarball, "MAX_ARCHIVE_MEMBERS", 3)
    assert sorted(p.name for p in tarball.safe_extract(path, tmp_path / "out").iterdir()) == sorted(files)


@pytest.mark.parametrize("offset", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("content", ["random", "text"])
def test_corrupt_compressed_data_is_an_artifact_error(content, offset, tmp_path):
    """Damage inside the gzip stream surfaces as zlib.error, a CRC mismatch (which gzip checks only at the end of the
    stream, past where tarfile stops reading) or a tar error: always an ArtifactError, also for archives without a
    manifest whose hashes would catch it later."""
    import random

    rng = random.Random(7)
    make = (lambda i: rng.randbytes(20000)) if content == "random" else (lambda i: f"line {i}\n".encode() * 3000)
    path = _tarball(tmp_path / "model.tar.gz", {f"f{i}.bin": make(i) for i in range(4)})
    data = bytearray(path.read_bytes())
    at = int(len(data) * offset)
    data[at:at + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(inference.ArtifactError, match="not a readable .tar.gz archive"):
        tarball.safe_extract(path, tmp_path / "out")


def test_archive_without_a_manifest_is_unpacked_within_the_bounds(tmp_path):
    """A SageMaker training job's Hugging Face model.tar.gz has no manifest.json: only the bounds apply."""
    files = {"config.json": b"{}", "model.safetensors": b"w" * 1000, "tokenizer.json": b"{}", "metrics.json": b"{}",
             "checkpoints/notes.txt": b"n"}
    out = tarball.safe_extract(_tarball(tmp_path / "model.tar.gz", files), tmp_path / "out")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_export_archive_unpacks_and_verifies(exported_artifact, tmp_path):
    manifest = tarball.verify_tarball(exported_artifact() / "model.tar.gz", tmp_path / "out")
    assert manifest["format"] == "torchscript"


def test_tokenizer_matches_transformers(model, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sentences = SENTENCES + [LONG, "  leading and trailing  ", "tab\tseparated", "ÀÉÎÕÜ ß ﬁ", "a"]
    assert model.encode(sentences) == tokenizer(sentences, truncation=True, max_length=128)["input_ids"]


# ------------------------------------------------------------------------------------------------ standalone
def test_import_loads_no_training_code(artifact):
    code = (
        "import importlib.util, sys, json\n"
        f"spec = importlib.util.spec_from_file_location('inference', {str(artifact / 'code' / 'inference.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "banned = ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'cola_bert', 'transformers')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in banned)))\n"
        "print(json.dumps([hasattr(module, f) for f in ('model_fn', 'input_fn', 'predict_fn', 'output_fn')]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded, handlers = proc.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    assert json.loads(handlers) == [True, True, True, True]


def test_local_error_class_without_the_toolkit(artifact):
    code = (
        "import sys, importlib.util\n"
        "sys.modules['sagemaker_inference'] = None; sys.modules['sagemaker_inference.errors'] = None\n"
        f"spec = importlib.util.spec_from_file_location('inference', {str(artifact / 'code' / 'inference.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert not m.TOOLKIT_ERRORS and issubclass(m.RequestError, m.LocalInferenceError)\n"
        "try:\n    m.input_fn('x', 'image/png')\n"
        "except m.LocalInferenceError as e:\n    print(e.status_code, e.message)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("415 Unsupported Content-Type 'image/png'")


def test_handler_never_unpickles():
    source = SOURCE.read_text()
    for forbidden in ("import pickle", "pickle.load", "torch.load(", "allow_pickle", "np.load"):
        assert forbidden not in source, forbidden
    assert not re.search(r"(?<![\w.])(eval|exec)\(", source)


def test_handler_is_python38_syntax():
    ast.parse(SOURCE.read_text(), feature_version=(3, 8))
    interpreter = None
    for candidate in ("/root/.pyenv/versions/3.8.18/bin/python3.8", shutil.which("python3.8")):
        if candidate and Path(candidate).is_file():
            probe = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
            if probe.returncode == 0 and "3.8" in probe.stdout + probe.stderr:
                interpreter = candidate
                break
    if interpreter is None:
        pytest.skip("no Python 3.8 interpreter here; the ast check above still ran")
    proc = subprocess.run([interpreter, "-c", f"import ast; ast.parse(open({str(SOURCE)!r}).read())"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
