"""`cola_bert.export`: exported vs eager equivalence per format, int8 with its agreement check, the lean artifact,
device-free graphs, fail-closed verification, packaging, bad inputs."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from cola_bert import agreement as agreement_mod
from cola_bert import export as export_mod
from cola_bert import export_formats, inference, tarball
from cola_bert.export import ExportError, ExportVerificationError, export_model

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("torchscript", "torch_export", "onnx")
# The lean default: the weights travel once, inside the exported graph.
EXPECTED_FILES = {"tokenizer.json", "tokenizer_config.json", "code/inference.py", "code/requirements.txt",
                  "manifest.json"}
FALLBACK_FILES = {"config.json", "model.safetensors"}
# Verification shapes kept small for the perturbation tests (the full default is exercised by the CLI export below).
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


@pytest.fixture(scope="module")
def cli_int8(tiny_model_dir, cola_archive, tmp_path_factory):
    """The issue's command, run once: int8 ONNX through the CLI with the default verification shapes and GLUE dev."""
    out = tmp_path_factory.mktemp("cli_int8")
    proc = _run_cli(f"model_dir={tiny_model_dir}", f"output_dir={out}", "format=onnx", "quantize=int8",
                    f"data.archive={cola_archive}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


class LabelShift(inference.Runner):
    """A loaded runner whose logit for label 1 is raised: flips the labels of every sentence with a smaller margin."""

    def __init__(self, runner: inference.Runner, shift: float):
        super().__init__(runner.device)
        self.runner, self.shift, self.backend = runner, shift, runner.backend

    def __call__(self, input_ids, attention_mask):
        return self.runner(input_ids, attention_mask) + torch.tensor([0.0, self.shift])


def _shift_quantized(monkeypatch, shift: float) -> None:
    """Only the packaged model.onnx (the int8 graph) is shifted; the fp32 graph verified before it is untouched."""
    real = inference.load_runner

    def load(path, fmt, device=None):
        runner = real(path, fmt, device)
        return LabelShift(runner, shift) if Path(path).name == "model.onnx" else runner

    monkeypatch.setattr(inference, "load_runner", load)


# ------------------------------------------------------------------------------------------------ equivalence
@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_matches_eager_on_fresh_batches(fmt, exported_artifact, eager):
    out = exported_artifact(fmt)
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["format"] == fmt and manifest["model_file"] == export_mod.FORMATS[fmt]
    verification = manifest["verification"]
    assert verification["batch_sizes"] == [1, 8]
    assert verification["lengths"][0] == 1 and verification["lengths"][-1] == manifest["max_length"] == 128
    assert 0.0 <= manifest["max_abs_logit_diff"] <= 1e-4
    assert manifest["agreement"]["label_agreement"] == 1.0 and manifest["agreement"]["max_abs_prob_diff"] < 1e-5

    # Independent check with other random batches than the export used (seed 99), through the serving loader.
    wrapper = eager.wrapper
    runner = inference.load_runner(out / "model" / manifest["model_file"], fmt, torch.device("cpu"))
    worst, _ = agreement_mod.max_abs_logit_diff(wrapper, runner, [1, 8, 64], [1, 2, 17, 64, 127, 128],
                                                vocab_size=wrapper.model.config.vocab_size, seed=99)
    assert worst <= 1e-4
    # And the runner really produces logits (not e.g. zeros): eager logits differ across inputs.
    ids = torch.tensor([[101, 2023, 102], [101, 4937, 102]])
    logits = runner(ids, torch.ones_like(ids))
    assert logits.shape == (2, 2) and not torch.equal(logits[0], logits[1])


@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
@pytest.mark.parametrize("fmt", FORMATS)
def test_handler_loads_each_format_and_matches_eager(fmt, exported_artifact, eager):
    model = inference.load_artifact(exported_artifact(fmt) / "model", device=torch.device("cpu"))
    assert model.backend == fmt
    sentences = ["The cat sat on the mat.", "Cat the on mat sat the.", "word " * 200, "Ünïcödé 東京 😀"]
    assert torch.allclose(model.logits(sentences, batch_size=3), eager(sentences), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------- int8
@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_cli_int8_export_is_quantized_verified_and_reported(cli_int8, eager):
    out, stdout = cli_int8
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["format"] == "onnx" and manifest["model_file"] == "model.onnx"
    quantization = manifest["quantization"]
    assert quantization["matmul"] == "per_token" and quantization["block_size"] is None
    assert quantization["weight_type"] == "QInt8" and quantization["per_channel"] is True
    assert quantization["reduce_range"] is False
    # ONNX Runtime's optimizer fused the tiny model's two layers (the TorchScript-exporter graph), then every
    # weight MatMul of the encoder became a MatMulIntegerToFloat on int8 weights and per-token uint8 activations,
    # LayerNorm primitive ops and the embeddings int8; the attention core stays fp32
    assert quantization["fused"]["MultiHeadAttention"] == 2 and quantization["fused"]["EmbedLayerNormalization"] == 1
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(out / "model" / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMulIntegerToFloat") == 12  # Q, K, V, attention output, FFN in, FFN out × 2 layers
    assert ops.count("MultiHeadAttention") == 2 and ops.count("QEmbedLayerNormalization") == 1
    assert "MatMulNBits" not in ops and "DynamicQuantizeLinear" not in ops  # no per-call (per-batch) scales
    assert "SkipLayerNormalization" not in ops and "LayerNormalization" not in ops and ops.count("Reciprocal") >= 4
    int8 = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.INT8}
    assert all(n.input[1] in int8 for n in graph.node if n.op_type == "MatMulIntegerToFloat")
    # one per-token quantization per distinct input (Q, K and V share theirs), each scale per row (axis 0)
    assert ops.count("ReduceMax") == ops.count("QuantizeLinear") == 8
    assert all({a.name: a.i for a in n.attribute}["axis"] == 0 for n in graph.node if n.op_type == "QuantizeLinear")
    floats = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    fp32_weights = [n.name for n in graph.node if n.op_type in ("MatMul", "Attention") and floats & set(n.input)]
    assert fp32_weights == ["/model/bert/pooler/dense/Gemm_MatMul", "/model/classifier/Gemm_MatMul"]  # one row each
    assert quantization["int8_ops"]["MatMulIntegerToFloat"] == 12 and quantization["fp32_matmuls"] == 2
    # the fp32 graph passed the tolerance with the default shapes before it was quantized
    assert manifest["verification"]["batch_sizes"] == [1, 8, 64] and len(manifest["verification"]["lengths"]) >= 10
    assert 0 <= quantization["fp32_max_abs_logit_diff"] <= 1e-4 < quantization["max_abs_logit_diff"] < 0.1
    assert "int8:      per_token MatMuls, per_channel=True" in stdout

    agreement = manifest["agreement"]
    assert agreement["count"] == 1043 and agreement["sentences"].startswith("GLUE dev")
    assert agreement["min_agreement"] == 0.97 and agreement["label_agreement"] >= 0.97
    assert agreement["agreeing"] == round(agreement["label_agreement"] * 1043)
    assert 0 < agreement["max_abs_prob_diff"] < 0.05
    assert "Exported onnx int8 model" in stdout
    assert (f"agreement: {100 * agreement['label_agreement']:.2f}% labels ({agreement['agreeing']}/1043) vs the "
            f"fp32 eager model, max |Δprob| = {agreement['max_abs_prob_diff']:.3g}") in stdout
    assert f"max |Δlogit| vs eager = {quantization['fp32_max_abs_logit_diff']:.3g}" in stdout

    # served unchanged by the handler, onnxruntime pinned, close to the eager model
    model = inference.load_artifact(out / "model")
    assert model.backend == "onnx"
    sentences = ["The cat sat on the mat.", "Cat the on mat sat the.", "word " * 200]
    assert torch.allclose(torch.softmax(model.logits(sentences), -1), torch.softmax(eager(sentences), -1), atol=0.02)
    requirements = (out / "model" / "code" / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "transformers" not in requirements



def test_per_token_int8_answer_does_not_depend_on_the_rest_of_the_request(cli_int8):
    """Activations are quantized per token, not per batch: a sentence gets the same answer alone or batched."""
    model = inference.load_artifact(cli_int8[0] / "model")
    target = "The cat sat on the mat."
    others = ["Cat the on mat sat the.", "word " * 120, "A much longer sentence that sets a different scale."]
    alone = model.logits([target])[0]
    batched = model.logits([target] + others, batch_size=8)[0]  # padded beside longer sentences
    assert torch.allclose(alone, batched, atol=1e-5), (alone, batched)


@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_per_token_reduce_range_keeps_weights_within_7_bits(exported_artifact):
    """For CPUs without VNNI: u8 activations times weights within ±63 cannot saturate a 16-bit pair sum."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    out = exported_artifact("onnx", quantize="int8", reduce_range=True, min_agreement=0.0)
    graph = onnx.load(str(out / "model" / "model.onnx")).graph
    inits = {init.name: init for init in graph.initializer}
    weights = [numpy_helper.to_array(inits[n.input[1]]) for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert len(weights) == 12 and max(int(abs(w.astype(int)).max()) for w in weights) == 63


def test_int8_graph_rewrites_keep_the_maths():
    """primitive_layer_norms computes what SkipLayerNormalization computes; per_token_matmuls stays within int8
    rounding of the fp32 MatMul, whatever the scale of each token; a graph without encoder MatMuls is left alone."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from cola_bert.int8_graph import per_token_matmuls, primitive_layer_norms

    rng = np.random.default_rng(0)
    hidden, width = 16, 8
    inits = [numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), n) for n in ("g", "b", "bias")]
    inits.append(numpy_helper.from_array(rng.normal(size=(hidden, width)).astype(np.float32), "w"))
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["n"], domain="com.microsoft",
                              epsilon=1e-12),
             helper.make_node("MatMul", ["n", "w"], ["y"], name="/model/bert/encoder/layer.0/output/dense/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "S", hidden])
                                           for n in ("x", "s")],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("n", "y")], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    x = (rng.normal(size=(3, 5, hidden)) * np.array([1, 10, 100])[:, None, None]).astype(np.float32)  # 3 scales
    feed = {"x": x, "s": rng.normal(size=x.shape).astype(np.float32)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)

    fused_norm, fp32 = run(model)
    assert primitive_layer_norms(model) == 1 and per_token_matmuls(model) == 1
    ops = [node.op_type for node in model.graph.node]
    assert "SkipLayerNormalization" not in ops and "MatMul" not in ops and "MatMulIntegerToFloat" in ops
    norm, int8 = run(model)
    assert np.allclose(norm, fused_norm, atol=1e-5)
    # per token, the int8 error is a small fraction of that token's own output scale
    error = np.abs(int8 - fp32).max(-1) / np.abs(fp32).max(-1)
    assert error.max() < 0.03, error.max()
    empty = {name: value[:, :0] for name, value in feed.items()}  # no tokens: shapes still follow the input
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [out.shape for out in sess.run(None, empty)] == [(3, 0, hidden), (3, 0, width)]

    # ONNX Runtime's defaults (epsilon 1e-12, no beta) are kept; a norm over another axis is left alone
    bare = helper.make_model(helper.make_graph(
        [helper.make_node("SkipLayerNormalization", ["x", "s", "g"], ["n"], domain="com.microsoft"),
         helper.make_node("LayerNormalization", ["x", "g2"], ["m"], axis=1)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 5, hidden]) for n in ("x", "s")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("n", "m")],
        [inits[0], numpy_helper.from_array(np.ones((5, hidden), np.float32), "g2")]), opset_imports=opsets)
    noise = (rng.normal(size=(3, 5, hidden)) * 1e-4).astype(np.float32)  # variance 1e-8: epsilon 1e-5 would show
    feed = {"x": np.full((3, 5, hidden), 1.0, np.float32), "s": noise}
    before = run(bare)
    assert primitive_layer_norms(bare) == 1 and [n.op_type for n in bare.graph.node].count("LayerNormalization") == 1
    after = run(bare)
    assert np.allclose(after[0], before[0], rtol=1e-2, atol=1e-2) and np.allclose(after[1], before[1])

    other = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/distilbert/transformer/layer.0/ffn/lin1/MatMul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [inits[-1]]), opset_imports=opsets[:1])
    assert per_token_matmuls(other) == 0 and [n.op_type for n in other.graph.node] == ["MatMul"]


@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_blockwise_int8_runs_the_matmuls_as_8bit_matmulnbits(exported_artifact):
    onnx = pytest.importorskip("onnx")
    out = exported_artifact("onnx", quantize="int8", int8_matmul="blockwise", min_agreement=0.0)
    quantization = json.loads((out / "model" / "manifest.json").read_text())["quantization"]
    assert quantization["matmul"] == "blockwise" and quantization["block_size"] == 128
    graph = onnx.load(str(out / "model" / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMulNBits") == 12 and "MatMulInteger" not in ops and "SkipLayerNormalization" not in ops
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert all({a.name: a.i for a in n.attribute}["bits"] == 8 for n in nbits)
    assert all({a.name: a.i for a in n.attribute}["block_size"] == 128 for n in nbits)
    assert all({a.name: a.i for a in n.attribute}["accuracy_level"] == 4 for n in nbits)


@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_per_tensor_int8_quantizes_fused_attention_and_matmuls(exported_artifact):
    onnx = pytest.importorskip("onnx")
    out = exported_artifact("onnx", quantize="int8", int8_matmul="per_tensor", min_agreement=0.0)
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["quantization"]["matmul"] == "per_tensor" and manifest["quantization"]["block_size"] is None
    ops = [node.op_type for node in onnx.load(str(out / "model" / "model.onnx")).graph.node]
    assert ops.count("QAttention") == 2 and "MatMulNBits" not in ops
    assert ops.count("MatMulInteger") >= 6 and "DynamicQuantizeLinear" in ops  # attention output, FFN in/out × 2

@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_int8_below_min_agreement_is_refused_and_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    _shift_quantized(monkeypatch, shift=1e6)  # every label becomes 1: agreement = share of eager label-1 predictions
    out = tmp_path / "out"
    with pytest.raises(ExportVerificationError, match=r"below min_agreement=0\.97\. Nothing was written") as info:
        export_model(tiny_model_dir, out, format="onnx", quantize="int8", **QUICK)
    assert "shipped sample agreement_sentences.txt (100 sentences" in str(info.value)
    assert "min_agreement=0.9" in str(info.value)  # says how to lower the bar
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_int8_cli_refusal_exits_2(tiny_model_dir, tmp_path):
    """The CLI itself (cola_bert.export.main) with the int8 graph's label-1 logit shifted: exit 2, one error line."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from cola_bert import inference\n"
        "real = inference.load_runner\n"
        "def load(path, fmt, device=None):\n"
        "    runner = real(path, fmt, device)\n"
        "    if Path(path).name == 'model.onnx':\n"
        "        runner.session.run = shifted(runner.session.run)\n"
        "    return runner\n"
        "def shifted(run):\n"
        "    return lambda names, feeds: [run(names, feeds)[0] + [0.0, 1e6]]\n"
        "inference.load_runner = load\n"
        "from cola_bert.export import main\n"
        "sys.argv = ['cola-export'] + sys.argv[1:]\n"
        "main()\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", code, f"model_dir={tiny_model_dir}", f"output_dir={out}",
                           "format=onnx", "quantize=int8", "batch_sizes=[1]", "lengths=[1,128]"],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: Verification failed: the onnx int8 artifact agrees with the fp32 eager")
    assert "below min_agreement=0.97" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
    # A bar above 1 is impossible to meet; the CLI refuses the value itself.
    proc = _run_cli(f"model_dir={tiny_model_dir}", f"output_dir={out}", "format=onnx", "quantize=int8",
                    "min_agreement=1.5", timeout=120)
    assert proc.returncode == 2 and "min_agreement must lie in 0..1" in proc.stderr
    assert not out.exists()


@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_lowering_the_bar_explicitly_accepts_and_records_it(tiny_model_dir, tmp_path, monkeypatch, eager):
    _shift_quantized(monkeypatch, shift=1e6)
    sentences = [line for line in agreement_mod.SAMPLE_SENTENCES.read_text().splitlines() if line.strip()]
    label_one = int((eager(sentences).argmax(-1) == 1).sum())
    assert label_one < 97  # the perturbation really costs agreement on this model (refused at the default bar)
    export_model(tiny_model_dir, tmp_path / "out", format="onnx", quantize="int8", min_agreement=0.0, **QUICK)
    agreement = json.loads((tmp_path / "out" / "model" / "manifest.json").read_text())["agreement"]
    assert agreement["agreeing"] == label_one and agreement["count"] == 100
    assert agreement["min_agreement"] == 0.0 and agreement["label_agreement"] == label_one / 100


def test_int8_is_onnx_only(tiny_model_dir, tmp_path):
    with pytest.raises(ExportError, match="quantize=int8 is offered for format=onnx only"):
        export_model(tiny_model_dir, tmp_path / "out", format="torchscript", quantize="int8")
    assert not (tmp_path / "out").exists()


def test_agreement_sentences_come_from_glue_dev_or_the_sample(cola_archive, tmp_path):
    sentences, source = agreement_mod.agreement_sentences(cola_archive)
    assert len(sentences) == 1043 and "in_domain_dev + out_of_domain_dev" in source
    assert agreement_mod.find_cola_archive(None, cola_archive.parent) == cola_archive
    assert agreement_mod.find_cola_archive(None, tmp_path) is None
    with pytest.raises(ExportError, match="does not exist"):
        agreement_mod.find_cola_archive(tmp_path / "nope.zip", None)
    sample, source = agreement_mod.agreement_sentences(None)
    assert len(sample) == 100 == len(set(sample)) and "shipped sample" in source
    assert not set(sample) & set(sentences)  # written for this project, not copied from CoLA


# ----------------------------------------------------------------------------------------- lean, device-free
@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
@pytest.mark.parametrize("fmt", FORMATS)
def test_lean_artifact_carries_the_weights_once(fmt, exported_artifact):
    out = exported_artifact(fmt)
    model_file = export_mod.FORMATS[fmt]
    with tarfile.open(out / "model.tar.gz") as archive:
        names = {m.name for m in archive.getmembers() if m.isfile()}
    assert names == EXPECTED_FILES | {model_file}
    graph = (out / "model" / model_file).stat().st_size
    assert (out / "model.tar.gz").stat().st_size <= 1.15 * graph
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert manifest["hf_fallback"] is False
    requirements = (out / "model" / "code" / "requirements.txt").read_text()
    assert "transformers" not in requirements and "tokenizers==" in requirements


@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_hf_fallback_is_opt_in(exported_artifact):
    out = exported_artifact(hf_fallback=True)
    with tarfile.open(out / "model.tar.gz") as archive:
        names = {m.name for m in archive.getmembers() if m.isfile()}
    assert names == EXPECTED_FILES | FALLBACK_FILES | {"model.pt"}
    assert "transformers==" in (out / "model" / "code" / "requirements.txt").read_text()
    assert json.loads((out / "model" / "manifest.json").read_text())["hf_fallback"] is True


def test_torchscript_graph_is_device_free(exported_artifact, tiny_model_dir):
    """No baked-in device: a GPU endpoint's torch.jit.load(map_location="cuda") runs the whole graph there."""
    path = exported_artifact() / "model" / "model.pt"
    module = torch.jit.load(str(path), map_location="cpu")
    assert export_formats.device_constants(module) == []
    assert "prim::device" in str(module.graph)  # tensors are created on the inputs' device
    # The check can fail: a plain trace of the same model records the tracing device as a constant.
    from transformers import AutoModelForSequenceClassification

    wrapper = export_formats.LogitsWrapper(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval())
    with torch.no_grad():
        example = export_formats.example_inputs(16, 0)
        traced = torch.jit.freeze(torch.jit.trace(wrapper, example, check_trace=False).eval())
    assert any('value="cpu"' in constant for constant in export_formats.device_constants(traced))
    # The export's rewrite removes them, and the rewritten graph computes the same logits.
    ids, mask = export_formats.example_inputs(9, 0)
    with torch.no_grad():
        before = traced(ids, mask)
        assert export_formats.device_free(traced) >= 1 and export_formats.device_constants(traced) == []
        assert torch.equal(traced(ids, mask), before)


def test_onnx_graph_is_device_free(exported_artifact):
    import onnx

    model = onnx.load(str(exported_artifact("onnx") / "model" / "model.onnx"))
    # What ONNX Runtime executes — op types, attributes, model metadata — names no device (the weights' raw bytes and
    # the exporter's per-node provenance notes aside).
    texts = [str(node.op_type) + str(node.domain) for node in model.graph.node]
    texts += [onnx.helper.printable_attribute(attr) for node in model.graph.node for attr in node.attribute
              if attr.type != onnx.AttributeProto.TENSOR]
    texts += [prop.key + prop.value for prop in model.metadata_props]
    assert texts and not [text for text in texts if "cpu" in text.lower() or "cuda" in text.lower()]


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
def test_tarball_layout_and_manifest_hashes(exported_artifact, tmp_path):
    out = exported_artifact()
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


def test_onnx_requirements_pin_onnxruntime(exported_artifact):
    text = (exported_artifact("onnx") / "model" / "code" / "requirements.txt").read_text()
    assert "onnxruntime==" in text and "\ntorch" not in text
    gpu = export_mod.requirements_txt("onnx", onnxruntime_package="onnxruntime-gpu")
    version = text.split("onnxruntime==")[1].split()[0]
    assert f"onnxruntime-gpu=={version}" in gpu and "\nonnxruntime==" not in gpu


def test_default_lengths_span_both_ends():
    for max_length in (1, 2, 7, 64, 128, 512):
        lengths = export_mod.default_lengths(max_length)
        assert lengths[0] == 1 and lengths[-1] == max_length and lengths == sorted(set(lengths))
    assert len(export_mod.default_lengths(128)) >= 10


# -------------------------------------------------------------------------------------- tampered / truncated
@pytest.fixture
def artifact_copy(exported_artifact, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(exported_artifact() / "model", target)
    return target


def test_tampered_model_file_is_refused(artifact_copy):
    data = bytearray((artifact_copy / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact_copy / "model.pt").write_bytes(bytes(data))
    with pytest.raises(inference.ArtifactError, match=r"model\.pt is corrupt or was modified"):
        inference.load_artifact(artifact_copy)


def test_truncated_weights_are_refused(artifact_copy):
    path = artifact_copy / "model.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(inference.ArtifactError, match=r"model\.pt .*1000 bytes"):
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


def test_truncated_tarball_is_refused(exported_artifact, tmp_path):
    data = (exported_artifact() / "model.tar.gz").read_bytes()
    broken = tmp_path / "model.tar.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(inference.ArtifactError, match="truncated or corrupt"):
        tarball.safe_extract(broken, tmp_path / "x")


def test_tarball_with_escaping_member_is_refused(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(inference.ArtifactError, match="escape.txt"):
        tarball.safe_extract(path, tmp_path / "x")
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
        ("int8_for_gpu", r"quantize=int8 targets CPU endpoints .* For a GPU endpoint export fp32"),
        ("bad_block_size", r"block_size must be a power of two >= 16 .* got 100"),
        ("unknown_int8_matmul", r"Unknown int8_matmul='per_row'. Choose one of: per_token, blockwise, per_tensor"),
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
    elif case == "int8_for_gpu":
        kwargs.update(format="onnx", quantize="int8", onnxruntime_package="onnxruntime-gpu")
    elif case == "bad_block_size":
        kwargs.update(format="onnx", quantize="int8", block_size=100)
    elif case == "unknown_int8_matmul":
        kwargs.update(format="onnx", quantize="int8", int8_matmul="per_row")
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=match):
        export_model(source, out, **kwargs)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_an_output_dir_that_would_overwrite_the_input_is_refused(tiny_model_dir, tmp_path):
    """`output_dir=RUN` for `model_dir=RUN/model` (or RUN/model.tar.gz) would replace the model being exported."""
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    _training_artifact(tiny_model_dir, run / "model.tar.gz")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for source in (run / "model", run / "model.tar.gz", run / "model" / "."):
        with pytest.raises(ExportError, match=r"would overwrite the model being exported.*output_dir=.*export"):
            export_model(source, run)
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in run.iterdir()) == ["model", "model.tar.gz"]  # no work directory left


def test_cli_bad_input_is_one_clear_line(tmp_path):
    proc = _run_cli(f"model_dir={tmp_path / 'missing'}", f"output_dir={tmp_path / 'out'}", timeout=120)
    assert proc.returncode == 2
    assert "error: model_dir=" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = _run_cli(f"output_dir={tmp_path / 'out'}", timeout=120)
    assert proc.returncode == 2 and "model_dir= is required" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_length=abc", "error: max_length=abc is not an integer. Give an integer, e.g. max_length=128."),
        ("tolerance=tight", "error: tolerance=tight is not a number"),
        ("batch_sizes=abc", "error: batch_sizes=abc is not a list of integers"),
        ("lengths=[1,x]", "error: lengths=[1, 'x'] is not a list of integers"),
        ("min_agreement=high", "error: min_agreement=high is not a number"),
        ("seed=1.5", "error: seed=1.5 is not an integer"),
        ("output_dir={tmp}/a_file/out", "error: output_dir={tmp}/a_file/out cannot be written"),
    ],
)
def test_cli_wrong_values_are_one_clear_line_and_write_nothing(tiny_model_dir, tmp_path, override, message):
    (tmp_path / "a_file").write_text("not a directory")
    override = override.format(tmp=tmp_path)
    output = [] if override.startswith("output_dir=") else [f"output_dir={tmp_path / 'out'}"]
    proc = _run_cli(f"model_dir={tiny_model_dir}", *output, override, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert message.format(tmp=tmp_path) in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


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
    assert torch.allclose(model.logits(["A sentence."]), eager(["A sentence."]), atol=1e-5)


def test_s3_model_dir_is_left_to_the_launchers(tmp_path):
    """src/ never talks to AWS: an s3:// model_dir is refused before anything is written, naming the commands that
    download a training job's model."""
    with pytest.raises(ExportError) as info:
        export_model("s3://cola-artifacts/jobs/cola-1/output/model.tar.gz", tmp_path / "out", **QUICK)
    assert "python -m launch.train attach=<job name>" in str(info.value) and "launch.deploy" in str(info.value)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------- MiniLM once
@pytest.mark.timeout(1200)  # exports: minutes on a loaded 2-vCPU machine
def test_minilm_int8_export_is_lean_and_agrees(tmp_path):
    """The default model (all-MiniLM-L6-v2) with a head that has real margins, exported as int8 ONNX once."""
    from cola_bert.backbone import load_model, load_tokenizer, minilm_path

    model = load_model(minilm_path()).eval()
    tokenizer = load_tokenizer(minilm_path())
    # A head with a trained model's geometry: a random head reads directions where the pooled features barely vary,
    # so int8 noise flips its labels (91/100 measured); a fine-tuned head reads the directions that separate the
    # sentences. Here: the sample's first principal component, threshold at the median, margins like a trained head.
    sample = files("cola_bert").joinpath("samples/agreement_sentences.txt").read_text().splitlines()
    with torch.no_grad():
        pooled = model.bert(**tokenizer(sample, padding=True, return_tensors="pt")).pooler_output
        centred = pooled - pooled.mean(0)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        scores = centred @ direction
        scale = 4.0 / scores.abs().median()
        model.classifier.weight.copy_(torch.stack([-direction, direction]) * scale / 2)
        model.classifier.bias.copy_(torch.stack([scores.median(), -scores.median()]) * scale / 2
                                    + torch.stack([direction, -direction]) @ pooled.mean(0) * scale / 2)
    source = tmp_path / "minilm"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    weights = (source / "model.safetensors").stat().st_size

    tarball = export_model(source, tmp_path / "out", format="onnx", quantize="int8", batch_sizes=[1, 4],
                           lengths=[1, 33, 128])
    graph = tarball.parent / "model" / "model.onnx"
    assert graph.stat().st_size < 0.3 * weights  # every weight int8 (the attention core has none): ~0.26
    assert tarball.stat().st_size <= 1.15 * graph.stat().st_size
    manifest = json.loads((tarball.parent / "model" / "manifest.json").read_text())
    agreement = manifest["agreement"]
    assert agreement["count"] == 100 and agreement["label_agreement"] >= 0.97
    assert manifest["quantization"]["fp32_max_abs_logit_diff"] <= 1e-4
