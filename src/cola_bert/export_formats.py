"""The model wrapper and the writers: one trained classifier as TorchScript, torch.export or ONNX (+ int8).

Split out of ``cola_bert.export`` so that how a graph is produced lives apart from how it is checked
(``cola_bert.agreement``) and packaged (``cola_bert.export``). This is the lowest of the three modules, so the
exceptions they all raise (``ExportError``, ``ExportVerificationError``; re-exported by ``cola_bert.export``) live here.
"""

from __future__ import annotations

import collections
import logging
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

JIT_OPTIMIZE = ("none", "freeze", "optimize_for_inference")


class ExportError(RuntimeError):
    """Bad input or settings for an export; the message says what was wrong and what to do."""


class ExportVerificationError(ExportError):
    """The exported model does not reproduce the eager model's logits within the tolerance."""

    def __init__(self, message: str, max_abs_diff: float):
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


# ------------------------------------------------------------------------------------------------------- helpers
def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@contextmanager
def quiet():
    """Silence tracer/exporter chatter (TracerWarnings, transformers' load reports): the verification is the check."""
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(name) for name in ("transformers", "torch.onnx", "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        hf_logging.disable_progress_bar()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------------------- model
class LogitsWrapper(torch.nn.Module):
    """``(input_ids, attention_mask) -> logits`` as a plain tensor (transformers 5 has no ``torchscript=True``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).logits


def load_eager(root: Path, max_length: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(root), use_fast=True)
            model = AutoModelForSequenceClassification.from_pretrained(str(root))
    except (OSError, ValueError, KeyError) as err:
        raise ExportError(f"Cannot load the model in {root} with transformers ({type(err).__name__}: {err}).") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{root}: only fast tokenizers (tokenizer.json) can be served; re-save it with transformers.")
    model.eval()
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > int(limit):
        raise ExportError(f"max_length={max_length} exceeds the model's max_position_embeddings={limit}.")
    return model, tokenizer


def example_inputs(length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows, the second padded: the attention mask is a real int64 mask with zeros, never all ones."""
    generator = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(1000, 2000, (2, length), generator=generator, dtype=torch.long)
    attention_mask = torch.ones((2, length), dtype=torch.long)
    if length > 1:
        attention_mask[1, max(1, length // 2):] = 0
        input_ids[1, max(1, length // 2):] = pad_id
    return input_ids, attention_mask


def write_torchscript(wrapper: LogitsWrapper, example: tuple, path: Path, jit_optimize: str) -> None:
    with torch.no_grad(), quiet():
        module = torch.jit.trace(wrapper, example, check_trace=False, strict=True)
        module.eval()
        if jit_optimize == "freeze":
            module = torch.jit.freeze(module)
        elif jit_optimize == "optimize_for_inference":
            module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
        device_free(module)
        torch.jit.save(module, str(path))


def device_constants(module: Any) -> list[str]:
    """The ``Device`` constants (e.g. ``"cpu"``) in a TorchScript module's forward graphs, submodules included."""
    found = []
    for graph in _forward_graphs(module):
        for node in graph.findAllNodes("prim::Constant", True):
            if node.output().type().kind() == "DeviceObjType":
                found.append(str(node).strip())
    return found


def _forward_graphs(module: Any) -> list:
    graphs = []
    for sub in module.modules():
        try:
            graphs.append(sub._c._get_method("forward").graph)
        except RuntimeError:  # a submodule without forward (inlined by freeze)
            continue
    return graphs


def device_free(module: Any) -> int:
    """Replace baked-in device constants with the device of the graph's first tensor input; returns how many.

    Tracing records the device of every tensor the model creates (transformers' mask code calls
    ``torch.arange(..., device=input.device)``) as a constant ``"cpu"``; a GPU endpoint loading the file with
    ``map_location="cuda"`` would then mix CPU and GPU tensors. After the rewrite the graph creates those tensors on
    whatever device its inputs are on.
    """
    replaced = 0
    for graph in _forward_graphs(module):
        constants = [node for node in graph.findAllNodes("prim::Constant", True)
                     if node.output().type().kind() == "DeviceObjType"]
        if not constants:
            continue
        tensors = [value for value in graph.inputs() if value.type().kind() == "TensorType"]
        if not tensors:
            raise ExportError("a TorchScript graph creates tensors on a fixed device but has no tensor input to "
                              "take the device from; try format=onnx.")
        device = graph.create("prim::device", [tensors[0]])
        device.output().setType(torch._C.DeviceObjType.get())
        device.insertBefore(next(iter(graph.nodes())))
        for node in constants:
            node.output().replaceAllUsesWith(device.output())
            node.destroy()
            replaced += 1
    return replaced


def write_torch_export(wrapper: LogitsWrapper, example: tuple, path: Path, max_length: int) -> None:
    from torch.export import Dim

    batch, seq = Dim("batch", min=1), Dim("seq", min=1, max=max_length)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with torch.no_grad(), quiet():
        program = torch.export.export(wrapper, example, dynamic_shapes=shapes, strict=False)
        torch.export.save(program, str(path))


def write_onnx(wrapper: LogitsWrapper, example: tuple, path: Path, max_length: int) -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ExportError(
            f"format=onnx needs onnx, onnxscript and onnxruntime: pip install 'cola-bert[onnx]' ({err})"
        ) from err
    from torch.export import Dim

    batch, seq = Dim("batch", min=1), Dim("seq", min=1, max=max_length)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with torch.no_grad(), quiet():
        torch.onnx.export(
            wrapper, example, str(path), input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False,
        )


def write_onnx_fusable(wrapper: LogitsWrapper, example: tuple, path: Path) -> None:
    """The graph the int8 path starts from: eager attention, TorchScript-based ONNX exporter (``dynamo=False``).

    ONNX Runtime's transformer optimizer recognises this graph's attention and embeddings and fuses them
    (``MultiHeadAttention`` or ``Attention``, ``EmbedLayerNormalization``: see ``quantize_onnx``); it fuses neither
    in the dynamo exporter's graph (measured with transformers 5 and torch 2.13; docs/serving.md).
    """
    model = wrapper.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad(), quiet():
            torch.onnx.export(
                wrapper, example, str(path), input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                              "logits": {0: "batch"}},
                dynamo=False, opset_version=17,
            )
    finally:
        model.set_attn_implementation(previous)


def quantize_onnx(source: Path, target: Path, config: Any, matmul: str, block_size: int, per_channel: bool,
                  reduce_range: bool) -> dict[str, Any]:
    """int8 with ONNX Runtime's tools (and two rewrites they lack), in three steps on the verified fp32 ``source``:

    1. ``onnxruntime.transformers.optimizer`` fuses embeddings, attention, LayerNorm and GELU (fp32, same maths);
    2. ``matmul="blockwise"``: every weight MatMul (Q, K, V, attention output, FFN in and out) becomes
       ``MatMulNBits``: 8-bit weights, int8 compute on activations quantized per block of ``block_size`` inputs of
       each token (accuracy level 4). Far closer to fp32 than one scale per tensor, and a sentence's answer does not
       depend on the other sentences in its request. The attention core stays fp32 (``MultiHeadAttention``);
       ``matmul="per_token"`` (default): int8 MatMuls with one activation scale per token (cola_bert.int8_graph:
       ONNX Runtime's quantizer has no such mode), as accurate and faster in batches. Then LayerNorm is written as
       primitive ops (ONNX Runtime's fused CPU kernel is slow: cola_bert.int8_graph);
    3. ``quantize_dynamic``: int8 embedding tables, and with ``matmul="per_tensor"`` the fused ``Attention``
       (``QAttention``) and every MatMul, activations quantized per call with one scale for the whole batch
       (less accurate, and batch-dependent: docs/serving.md).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    from cola_bert.int8_graph import per_token_matmuls, primitive_layer_norms

    blockwise, per_token = matmul == "blockwise", matmul == "per_token"
    options = FusionOptions("bert")
    options.use_multi_head_attention = blockwise or per_token  # Q, K, V stay MatMuls for step 2
    root = logging.getLogger()  # the quantizers log advice and progress on the root logger
    level = root.level
    try:
        root.setLevel(logging.ERROR)
        with quiet():  # each step hands its graph to the next in memory
            fused = optimizer.optimize_model(str(source), model_type="bert", opt_level=1,
                                             num_heads=int(config.num_attention_heads),
                                             hidden_size=int(config.hidden_size), optimization_options=options)
            fused_ops = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
            graph = fused.model
            if blockwise:
                nbits = MatMulNBitsQuantizer(graph, bits=8, block_size=block_size, is_symmetric=True,
                                             accuracy_level=4)
                nbits.process()
                graph = nbits.model.model
            if per_token and not per_token_matmuls(graph, reduce_range):
                raise ExportError(
                    "int8_matmul=per_token found no weight MatMul under /encoder/ in the fused graph (a model whose "
                    "layers are named otherwise, e.g. DistilBERT's transformer/): export with int8_matmul=blockwise."
                )
            layer_norms = primitive_layer_norms(graph)  # ONNX Runtime's fused LayerNorm kernel is slow (int8_graph)
            for op in ("SkipLayerNormalization", "LayerNormalization"):
                fused_ops.pop(op, None)  # written as primitive ops now
            per_call = [] if blockwise or per_token else ["MatMul", "Attention"]
            op_types = ["Gather", "EmbedLayerNormalization"] + per_call
            quantize_dynamic(graph, target, weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=op_types,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)
    ops = collections.Counter(node.op_type for node in onnx.load(str(target), load_external_data=False).graph.node)
    return {
        "method": "onnxruntime: transformers.optimizer fusion, "
                  + ("MatMulNBits 8-bit (block-wise), " if blockwise else "")
                  + ("MatMulIntegerToFloat, per-token activation scales (cola_bert.int8_graph), " if per_token else "")
                  + "LayerNorm as primitive ops, quantize_dynamic",
        "onnxruntime_version": package_version("onnxruntime"),
        "matmul": matmul,
        "block_size": block_size if blockwise else None,
        "weight_type": "QInt8",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "fused": fused_ops,
        "layer_norms_as_primitive_ops": layer_norms,
        "int8_ops": {op: n for op, n in sorted(ops.items())
                     if op in ("MatMulNBits", "QAttention", "QEmbedLayerNormalization", "MatMulInteger",
                               "MatMulIntegerToFloat")},
        "fp32_matmuls": ops["MatMul"],
    }
