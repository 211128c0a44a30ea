"""`cola_bert.export`: exported vs eager equivalence per format, fail-closed verification, packaging, bad inputs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime
from pathlib import Path

import pytest
import torch

from cola_bert import export as export_mod
from cola_bert import inference
from cola_bert.export import ExportError, ExportVerificationError, export_model

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("torchscript", "torch_export", "onnx")
EXPECTED_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "code/inference.py", "code/requirements.txt", "manifest.json"}
# Verification shapes kept small for the perturbation tests (the full default is exercised by the exports below).
QUICK = {"batch_sizes": [1, 8], "lengths": [1, 5, 128]}


class Perturbed(inference.Runner):
    """A loaded runner whose logits are shifted (or scaled) — stands in for a subtly broken export."""

    def __init__(self, runner: inference.Runner, shift: float = 0.0, scale: float = 1.0):
        super().__init__(runner.device)
        self.runner, self.shift, self.scale, self.backend = runner, shift, scale, runner.backend

    def __call__(self, input_ids, attention_mask):
        return self.runner(input_ids, attention_mask) * self.scale + self.shift


def _perturb(monkeypatch, calls: list | None = None, **change) -> None:
    real = inference.load_runner

    def load(path, fmt, device=None):
        if calls is not None:
            calls.append(Path(path))
        return Perturbed(real(path, fmt, device), **change)

    monkeypatch.setattr(inference, "load_runner", load)


def _run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cola_bert.export", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


@pytest.fixture(scope="session")
def exports(tiny_model_dir, tmp_path_factory):
    """One export per format per session: torchscript through the CLI (its stdout is checked), others via the API."""
    cache: dict[str, Path] = {}
    outputs: dict[str, str] = {}

    def get(fmt: str) -> Path:
        if fmt not in cache:
            out = tmp_path_factory.mktemp(f"export_{fmt}")
            if fmt == "torchscript":
                proc = _run_cli(f"model_dir={tiny_model_dir}", f"output_dir={out}")
                assert proc.returncode == 0, proc.stderr[-3000:]
                outputs[fmt] = proc.stdout
            else:
                assert export_model(tiny_model_dir, out, format=fmt) == out / "model.tar.gz"
            cache[fmt] = out
        return cache[fmt]

    get.stdout = outputs  # type: ignore[attr-defined]
    return get


@pytest.fixture(scope="session")
def eager(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    return export_mod.LogitsWrapper(model).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


# ------------------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_matches_eager_on_fresh_batches(fmt, exports, eager):
    out = exports(fmt)
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["format"] == fmt and manifest["model_file"] == export_mod.FORMATS[fmt]
    verification = manifest["verification"]
    assert verification["batch_sizes"] == [1, 8, 64]
    assert verification["lengths"][0] == 1 and verification["lengths"][-1] == manifest["max_length"] == 128
    assert 0.0 <= manifest["max_abs_logit_diff"] <= 1e-4

    # Independent check with other random batches than the export used (seed 99), through the serving loader.
    wrapper, _ = eager
    runner = inference.load_runner(out / "model" / manifest["model_file"], fmt, torch.device("cpu"))
    worst, _ = export_mod.max_abs_logit_diff(wrapper, runner, [1, 8, 64], [1, 2, 17, 64, 127, 128],
                                             vocab_size=wrapper.model.config.vocab_size, seed=99)
    assert worst <= 1e-4
    # And the runner really produces logits (not e.g. zeros): eager logits differ across inputs.
    ids = torch.tensor([[101, 2023, 102], [101, 4937, 102]])
    logits = runner(ids, torch.ones_like(ids))
    assert logits.shape == (2, 2) and not torch.equal(logits[0], logits[1])


@pytest.mark.parametrize("fmt", FORMATS)
def test_handler_loads_each_format_and_matches_eager(fmt, exports, eager):
    wrapper, tokenizer = eager
    model = inference.load_artifact(exports(fmt) / "model", device=torch.device("cpu"))
    assert model.backend == fmt
    sentences = ["The cat sat on the mat.", "Cat the on mat sat the.", "word " * 200, "Ünïcödé 東京 😀"]
    enc = tokenizer(sentences, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = wrapper(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(model.logits(sentences, batch_size=3), expected, atol=1e-5)


def test_cli_reports_the_measured_difference(exports):
    out = exports("torchscript")
    stdout = exports.stdout["torchscript"]
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert str(out / "model.tar.gz") in stdout
    assert f"max |Δlogit| vs eager = {manifest['max_abs_logit_diff']:.3g}" in stdout


def test_verification_failure_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    _perturb(monkeypatch, shift=1e-3)
    out = tmp_path / "out"
    with pytest.raises(ExportVerificationError, match=r"max \|Δlogit\| = 0\.001") as info:
        export_model(tiny_model_dir, out, **QUICK)
    assert info.value.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert "Nothing was written" in str(info.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp dir left behind


def test_verification_failure_keeps_a_previous_export(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_model(tiny_model_dir, out, **QUICK)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _perturb(monkeypatch, scale=2.0)
    with pytest.raises(ExportVerificationError):
        export_model(tiny_model_dir, out, **QUICK)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_small_difference_passes_and_is_reported(tiny_model_dir, tmp_path, monkeypatch):
    calls: list[Path] = []
    _perturb(monkeypatch, calls, shift=5e-5)
    export_model(tiny_model_dir, tmp_path / "out", **QUICK)
    manifest = json.loads((tmp_path / "out" / "model" / "manifest.json").read_text())
    assert manifest["max_abs_logit_diff"] == pytest.approx(5e-5, rel=0.05)
    assert calls and calls[0].name == "model.pt"


# -------------------------------------------------------------------------------------------------- packaging
def test_tarball_layout_and_manifest_hashes(exports, tmp_path):
    out = exports("torchscript")
    with tarfile.open(out / "model.tar.gz") as archive:
        members = archive.getmembers()
        assert members[0].name == "manifest.json"  # first, for readers that stream only the archive's start
        names = {m.name for m in members if m.isfile()}
        assert all(not m.name.startswith(("/", "..", "./")) and (m.isfile() or m.isdir())
                   for m in archive.getmembers())
        archive.extractall(tmp_path, filter="data")
    assert names == EXPECTED_FILES | {"model.pt"}
    # The unpacked directory beside the tarball holds the same bytes.
    for name in names:
        assert (tmp_path / name).read_bytes() == (out / "model" / name).read_bytes(), name

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == digest, rel

    assert manifest["torch_version"] == torch.__version__.split("+")[0]
    assert manifest["transformers_version"] and manifest["max_length"] == 128
    assert manifest["label_names"] == ["unacceptable", "acceptable"]
    assert datetime.fromisoformat(manifest["created"].replace("Z", "+00:00")).tzinfo is not None
    assert (tmp_path / "code" / "inference.py").read_bytes() == Path(inference.__file__).read_bytes()

    requirements = [line for line in (tmp_path / "code" / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
    assert requirements and all("==" in line for line in requirements)
    assert not any(line.split("==")[0].strip().lower() in ("torch", "pytorch") for line in requirements)
    assert any(line.startswith("tokenizers==") for line in requirements)
    assert inference.verify_artifact(tmp_path)["format"] == "torchscript"


def test_onnx_requirements_pin_onnxruntime(exports):
    text = (exports("onnx") / "model" / "code" / "requirements.txt").read_text()
    assert "onnxruntime==" in text and "\ntorch" not in text


def test_default_lengths_span_both_ends():
    for max_length in (1, 2, 7, 64, 128, 512):
        lengths = export_mod.default_lengths(max_length)
        assert lengths[0] == 1 and lengths[-1] == max_length and lengths == sorted(set(lengths))
    assert len(export_mod.default_lengths(128)) >= 10


# -------------------------------------------------------------------------------------- tampered / truncated
@pytest.fixture
def artifact_copy(exports, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(exports("torchscript") / "model", target)
    return target


def test_tampered_model_file_is_refused(artifact_copy):
    data = bytearray((artifact_copy / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact_copy / "model.pt").write_bytes(bytes(data))
    with pytest.raises(inference.ArtifactError, match=r"model\.pt is corrupt or was modified"):
        inference.load_artifact(artifact_copy)


def test_truncated_weights_are_refused(artifact_copy):
    path = artifact_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(inference.ArtifactError, match=r"model\.safetensors .*1000 bytes"):
        inference.model_fn(str(artifact_copy))


def test_missing_tokenizer_is_refused(artifact_copy):
    (artifact_copy / "tokenizer.json").unlink()
    with pytest.raises(inference.ArtifactError, match=r"tokenizer\.json is missing"):
        inference.load_artifact(artifact_copy)


def test_edited_manifest_hash_is_refused(artifact_copy):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["files"]["config.json"] = "0" * 64
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(inference.ArtifactError, match=r"config\.json"):
        inference.load_artifact(artifact_copy)


def test_repacked_code_only_warns(artifact_copy, caplog):
    with (artifact_copy / "code" / "inference.py").open("a") as handle:
        handle.write("\n# repacked by SageMaker\n")
    model = inference.load_artifact(artifact_copy)
    assert model.backend == "torchscript"
    assert "code/inference.py differs" in caplog.text


def test_truncated_tarball_is_refused(exports, tmp_path):
    data = (exports("torchscript") / "model.tar.gz").read_bytes()
    broken = tmp_path / "model.tar.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(inference.ArtifactError, match="truncated or corrupt"):
        inference.extract_tarball(broken, tmp_path / "x")


def test_tarball_with_escaping_member_is_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(inference.ArtifactError, match="escape.txt"):
        inference.extract_tarball(path, tmp_path / "x")
    assert not (tmp_path / "escape.txt").exists()


# ------------------------------------------------------------------------------------------------- bad inputs
def _copy_model(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.name not in skip:
            shutil.copy(path, dst / path.name)
    return dst


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", r"does not exist"),
        ("no_config", r"config\.json is missing"),
        ("no_tokenizer", r"no tokenizer files"),
        ("bare_encoder", r"not a sequence classifier"),
        ("corrupt_tar", r"truncated or corrupt"),
        ("unknown_format", r"Unknown format='tensorflow'"),
        ("bad_max_length", r"max_length=1024 exceeds"),
    ],
)
def test_bad_inputs_fail_with_a_clear_error_and_write_nothing(case, match, tiny_model_dir, tmp_path):
    kwargs = {}
    source: Path = tiny_model_dir
    if case == "missing":
        source = tmp_path / "nope"
    elif case == "no_config":
        source = _copy_model(tiny_model_dir, tmp_path / "src", skip=("config.json",))
    elif case == "no_tokenizer":
        source = _copy_model(tiny_model_dir, tmp_path / "src", skip=("tokenizer.json", "tokenizer_config.json"))
    elif case == "bare_encoder":
        source = _copy_model(tiny_model_dir, tmp_path / "src")
        config = json.loads((source / "config.json").read_text())
        config["architectures"] = ["BertModel"]
        (source / "config.json").write_text(json.dumps(config))
    elif case == "corrupt_tar":
        source = tmp_path / "model.tar.gz"
        source.write_bytes(b"\x1f\x8b\x08\x00 this is not a tarball")
    elif case == "unknown_format":
        kwargs["format"] = "tensorflow"
    elif case == "bad_max_length":
        kwargs["max_length"] = 1024
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=match):
        export_model(source, out, **kwargs)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_bad_input_is_one_clear_line(tmp_path):
    proc = _run_cli(f"model_dir={tmp_path / 'missing'}", f"output_dir={tmp_path / 'out'}", timeout=120)
    assert proc.returncode == 2
    assert "error: model_dir=" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = _run_cli(f"output_dir={tmp_path / 'out'}", timeout=120)
    assert proc.returncode == 2 and "model_dir= is required" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------- tarball / S3 sources
def _training_artifact(tiny_model_dir: Path, path: Path, prefix: str = "") -> Path:
    """Like a SageMaker training job's model.tar.gz: the HF model at the root, metrics/config beside it."""
    with tarfile.open(path, "w:gz") as archive:
        for file in tiny_model_dir.iterdir():
            archive.add(file, arcname=prefix + file.name)
        for name, content in (("metrics.json", b'{"val/mcc": 0.5}'), ("config.yaml", b"seed: 42\n")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def test_export_from_a_training_job_tarball(tiny_model_dir, tmp_path, eager):
    source = _training_artifact(tiny_model_dir, tmp_path / "model.tar.gz", prefix="./")
    tarball = export_model(source, tmp_path / "out", format="torch_export", **QUICK)
    model = inference.load_artifact(tarball.parent / "model")
    assert model.backend == "torch_export"
    assert not (tarball.parent / "model" / "metrics.json").exists()
    wrapper, tokenizer = eager
    enc = tokenizer(["A sentence."], return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(model.logits(["A sentence."]), wrapper(enc["input_ids"], enc["attention_mask"]),
                              atol=1e-5)


def test_export_from_s3_through_the_sagemaker_sdk(tiny_model_dir, tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
                       "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    source = _training_artifact(tiny_model_dir, tmp_path / "model.tar.gz")
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="cola-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.upload_file(str(source), "cola-artifacts", "jobs/cola-1/output/model.tar.gz")
        tarball = export_model("s3://cola-artifacts/jobs/cola-1/output/model.tar.gz", tmp_path / "out", **QUICK)
        with pytest.raises(ExportError, match="does not exist"):
            export_model("s3://cola-artifacts/jobs/nope/output/model.tar.gz", tmp_path / "out2", **QUICK)
    manifest = inference.verify_artifact(tarball.parent / "model")
    assert manifest["source"] == "s3://cola-artifacts/jobs/cola-1/output/model.tar.gz"
    assert not (tmp_path / "out2").exists()
