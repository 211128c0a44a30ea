"""Two rewrites of a fused BERT ONNX graph that ONNX Runtime's own tools do not offer, used by the int8 export.

- ``per_token_matmuls``: every weight MatMul of the encoder (the pooler and classifier, one row per sentence, stay
  fp32) runs on int8 weights (one scale per output column) and uint8 activations with **one scale per token**
  (``max |x| / 127`` over the token's features, zero point 128): ``QuantizeLinear`` per row, then
  ``MatMulIntegerToFloat`` (the u8 x s8 kernel, column scales applied inside) and one ``Mul`` for the token scales.
  ``quantize_dynamic`` only offers one activation scale per call, shared by every sentence of a request (97.8% label
  agreement on GLUE dev, and a sentence's answer depends on its neighbours); ``MatMulNBits`` scales per token block
  but its int8 kernel gains little from batching (1.9x eager at batch 32). Per token: 99.4% agreement, batches of 32
  at 3.1x eager, one thread (docs/benchmarks.md). An activation read by several MatMuls (Q, K, V) is quantized once.
- ``primitive_layer_norms``: ``SkipLayerNormalization`` / ``LayerNormalization`` as ReduceMean/Sub/Mul/Sqrt/
  Reciprocal/Add. Same maths; ONNX Runtime's fused CPU kernel costs about 2 us per token row with one thread, the
  primitive ops about a fifth of that (measured, docs/serving.md), and the reciprocal form is not re-fused when the
  session loads.

ONNX operators plus ONNX Runtime's ``com.microsoft`` contrib ops (as the fused graph already uses), written for
opset 14 to 17 graphs (reduction axes as attributes; the export writes opset 17).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _check_opset(model: Any) -> None:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not 14 <= opset <= 17:
        raise ValueError(f"int8 graph rewrites need an opset 14-17 graph (reduction axes as attributes), got {opset}.")


def _const(graph: Any, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    if not any(init.name == name for init in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def per_token_matmuls(model: Any, reduce_range: bool = False) -> int:
    """Rewrite ``model`` (an onnx ModelProto) in place; returns how many MatMuls became int8. ``reduce_range``:
    7-bit weights, for CPUs without VNNI, where u8 x s8 pair sums could saturate."""
    from onnx import helper, numpy_helper

    _check_opset(model)
    graph = model.graph
    weights = {init.name: init for init in graph.initializer if len(init.dims) == 2}
    limit = 63.0 if reduce_range else 127.0
    inv127 = _const(graph, "pt_inv127", np.array(1 / 127, np.float32))
    eps = _const(graph, "pt_eps", np.array(1e-8, np.float32))
    one = _const(graph, "pt_1", np.array(1, np.float32))
    zero_point = _const(graph, "pt_zp", np.array(128, np.uint8))
    zero_point_1d = _const(graph, "pt_zp1", np.array([128], np.uint8))
    axis1, start0 = _const(graph, "pt_axis1", np.array([1], np.int64)), _const(graph, "pt_0", np.array([0], np.int64))
    end_last = _const(graph, "pt_last", np.array([-1], np.int64))
    nodes, quantized, count = [], {}, 0
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights or "/encoder/" not in node.name:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / limit).astype(np.float32)
        w = f"pt_w{count}"
        _const(graph, w, np.clip(np.round(weight / scale), -limit, limit).astype(np.int8))
        _const(graph, w + "_scale", scale)
        x, (k, n) = node.input[0], weight.shape
        if x not in quantized:  # tokens as rows; one scale per row: max |x| / 127; uint8 around 128
            a = f"pt_a{len(quantized)}"
            _const(graph, a + "_rows", np.array([-1, k], np.int64))
            nodes += [helper.make_node("Reshape", [x, a + "_rows"], [a + "_x"]),
                      helper.make_node("Abs", [a + "_x"], [a + "_abs"]),
                      helper.make_node("ReduceMax", [a + "_abs"], [a + "_max"], axes=[1], keepdims=0),
                      helper.make_node("Mul", [a + "_max", inv127], [a + "_s0"]),
                      helper.make_node("Max", [a + "_s0", eps], [a + "_scale"]),
                      helper.make_node("Shape", [a + "_scale"], [a + "_m"]),
                      helper.make_node("Expand", [zero_point_1d, a + "_m"], [a + "_zp"]),
                      helper.make_node("QuantizeLinear", [a + "_x", a + "_scale", a + "_zp"], [a + "_q"], axis=0),
                      helper.make_node("Unsqueeze", [a + "_scale", axis1], [a + "_col"]),
                      helper.make_node("Shape", [x], [a + "_shape"]),
                      helper.make_node("Slice", [a + "_shape", start0, end_last], [a + "_lead"])]
            quantized[x] = (a + "_q", a + "_col", a + "_lead")
        q, token_scale, lead = quantized[x]
        _const(graph, w + "_n", np.array([n], np.int64))
        # (q - 128) @ w * column scale, in one ONNX Runtime kernel; then the token's scale, then the input's shape
        nodes += [helper.make_node("MatMulIntegerToFloat", [q, w, one, w + "_scale", zero_point], [w + "_f"],
                                   name=node.name, domain="com.microsoft"),
                  helper.make_node("Mul", [w + "_f", token_scale], [w + "_y"]),
                  helper.make_node("Concat", [lead, w + "_n"], [w + "_shape"], axis=0),
                  helper.make_node("Reshape", [w + "_y", w + "_shape"], [node.output[0]], allowzero=1)]  # 0 tokens
        count += 1
    _replace_nodes(graph, nodes)
    return count


def primitive_layer_norms(model: Any) -> int:
    """Rewrite ``model`` in place; returns how many LayerNorm nodes became primitive ops. Only the forms the fused
    BERT graph holds (normalised over the last axis, one output) are rewritten; others are left to ONNX Runtime."""
    from onnx import helper

    _check_opset(model)
    graph, nodes, count = model.graph, [], 0
    for node in graph.node:
        attributes = {a.name: a for a in node.attribute}
        last_axis = "axis" not in attributes or attributes["axis"].i == -1
        skip = node.op_type == "SkipLayerNormalization"
        if not (skip or node.op_type == "LayerNormalization") or not last_axis or any(node.output[1:3]):
            nodes.append(node)
            continue
        p = f"ln{count}"
        count += 1
        epsilon = attributes["epsilon"].f if "epsilon" in attributes else (1e-12 if skip else 1e-5)  # the defaults
        eps = _const(graph, p + "_eps", np.array(epsilon, np.float32))
        inputs = list(node.input) + [""] * 5
        if skip:  # input, skip, gamma[, beta[, bias]] -> output[, mean, inv_std, sum]
            x, gamma, beta = p + "_sum", inputs[2], inputs[3]
            bias = inputs[4] or None
            nodes.append(helper.make_node("Add", [node.input[0], node.input[1]], [x + ("0" if bias else "")]))
            if bias:
                nodes.append(helper.make_node("Add", [x + "0", bias], [x]))
            if len(node.output) > 3 and node.output[3]:
                nodes.append(helper.make_node("Identity", [x], [node.output[3]]))
        else:  # input, scale[, bias]
            x, gamma, beta = inputs[0], inputs[1], inputs[2]
        nodes += [helper.make_node("ReduceMean", [x], [p + "_mean"], axes=[-1]),
                  helper.make_node("Sub", [x, p + "_mean"], [p + "_d"]),
                  helper.make_node("Mul", [p + "_d", p + "_d"], [p + "_d2"]),
                  helper.make_node("ReduceMean", [p + "_d2"], [p + "_var"], axes=[-1]),
                  helper.make_node("Add", [p + "_var", eps], [p + "_ve"]),
                  helper.make_node("Sqrt", [p + "_ve"], [p + "_sd"]),
                  helper.make_node("Reciprocal", [p + "_sd"], [p + "_inv"]),
                  helper.make_node("Mul", [p + "_d", p + "_inv"], [p + "_n"]),
                  helper.make_node("Mul", [p + "_n", gamma], [p + "_g" if beta else node.output[0]])]
        if beta:
            nodes.append(helper.make_node("Add", [p + "_g", beta], [node.output[0]]))
    _replace_nodes(graph, nodes)
    return count


def _replace_nodes(graph: Any, nodes: list) -> None:
    """The graph's nodes become ``nodes``; initializers nothing reads any more (the fp32 weights) are dropped."""
    used = {name for node in nodes for name in node.input} | {out.name for out in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
