"""Two rewrites of a fused BERT ONNX graph that ONNX Runtime's own tools do not offer, used by the int8 export.

- ``per_token_matmuls``: every weight MatMul of the encoder (the pooler and classifier, one row per sentence, stay
  fp32) becomes ``MatMulInteger`` on int8 weights (one scale per output column)
  and uint8 activations with **one scale per token** (``max |x| / 127`` over the token's features, zero point 128),
  then two ``Mul``s for the scales. ``quantize_dynamic`` only offers one activation scale per call, shared by every
  sentence of a request (97.5% label agreement on GLUE dev, and a sentence's answer depends on its neighbours);
  ``MatMulNBits`` scales per token block but its int8 kernel barely gains from batching (1.8x eager at batch 32).
  Per token keeps 99.3% agreement and runs batches of 32 at about 2.6x eager (docs/serving.md). An activation read
  by several MatMuls (Q, K and V) is quantized once.
- ``primitive_layer_norms``: ``SkipLayerNormalization`` / ``LayerNormalization`` as ReduceMean/Sub/Mul/Sqrt/
  Reciprocal/Add. Same maths; ONNX Runtime's fused CPU kernel costs about 2 us per token row with one thread, the
  primitive ops about a fifth of that (measured, docs/serving.md), and the reciprocal form is not re-fused when the
  session loads. Together with the first rewrite: batches of 32 at 3.1x eager.

Standard ONNX operators only, written for opset 13 to 17 graphs (reduction axes as attributes; the export writes
opset 17), so any onnxruntime serves the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _check_opset(model: Any) -> None:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not 13 <= opset <= 17:
        raise ValueError(f"int8 graph rewrites need an opset 13-17 graph (reduction axes as attributes), got {opset}.")


def _const(graph: Any, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    if not any(init.name == name for init in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def per_token_matmuls(model: Any, reduce_range: bool = False) -> int:
    """Rewrite ``model`` (an onnx ModelProto) in place; returns how many MatMuls became int8. ``reduce_range``:
    7-bit weights, for CPUs without VNNI, where u8 x s8 pair sums could saturate."""
    from onnx import TensorProto, helper, numpy_helper

    _check_opset(model)
    graph = model.graph
    weights = {init.name: init for init in graph.initializer if len(init.dims) == 2}
    limit = 63.0 if reduce_range else 127.0
    inv127 = _const(graph, "pt_inv127", np.array(1 / 127, np.float32))
    eps = _const(graph, "pt_eps", np.array(1e-8, np.float32))
    c128, c0 = _const(graph, "pt_128", np.array(128, np.float32)), _const(graph, "pt_0", np.array(0, np.float32))
    c255 = _const(graph, "pt_255", np.array(255, np.float32))
    zero_point = _const(graph, "pt_zp", np.array(128, np.uint8))
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
        x = node.input[0]
        if x not in quantized:  # one scale per token: max |x| over the last axis
            a = f"pt_a{len(quantized)}"
            nodes += [helper.make_node("Abs", [x], [a + "_abs"]),
                      helper.make_node("ReduceMax", [a + "_abs"], [a + "_max"], axes=[-1], keepdims=1),
                      helper.make_node("Mul", [a + "_max", inv127], [a + "_s0"]),
                      helper.make_node("Max", [a + "_s0", eps], [a + "_scale"]),
                      helper.make_node("Reciprocal", [a + "_scale"], [a + "_inv"]),
                      helper.make_node("Mul", [x, a + "_inv"], [a + "_xs"]),
                      helper.make_node("Round", [a + "_xs"], [a + "_xr"]),
                      helper.make_node("Add", [a + "_xr", c128], [a + "_xo"]),
                      helper.make_node("Clip", [a + "_xo", c0, c255], [a + "_xc"]),
                      helper.make_node("Cast", [a + "_xc"], [a + "_q"], to=TensorProto.UINT8)]
            quantized[x] = (a + "_q", a + "_scale")
        q, token_scale = quantized[x]
        nodes += [helper.make_node("MatMulInteger", [q, w, zero_point], [w + "_i32"], name=node.name),
                  helper.make_node("Cast", [w + "_i32"], [w + "_f"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [w + "_f", token_scale], [w + "_t"]),
                  helper.make_node("Mul", [w + "_t", w + "_scale"], [node.output[0]])]
        count += 1
    _replace_nodes(graph, nodes)
    return count


def primitive_layer_norms(model: Any) -> int:
    """Rewrite ``model`` in place; returns how many LayerNorm nodes became primitive ops."""
    from onnx import helper

    _check_opset(model)
    graph, nodes, count = model.graph, [], 0
    for node in graph.node:
        if node.op_type not in ("SkipLayerNormalization", "LayerNormalization"):
            nodes.append(node)
            continue
        p = f"ln{count}"
        count += 1
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        eps = _const(graph, p + "_eps", np.array(epsilon, np.float32))
        if node.op_type == "SkipLayerNormalization":  # input, skip, gamma, beta[, bias] -> output[, , , sum]
            x, gamma, beta = p + "_sum", node.input[2], node.input[3]
            bias = node.input[4] if len(node.input) > 4 and node.input[4] else None
            nodes.append(helper.make_node("Add", [node.input[0], node.input[1]], [x + ("0" if bias else "")]))
            if bias:
                nodes.append(helper.make_node("Add", [x + "0", bias], [x]))
            if len(node.output) > 3 and node.output[3]:
                nodes.append(helper.make_node("Identity", [x], [node.output[3]]))
        else:
            x, gamma, beta = node.input[0], node.input[1], node.input[2]
        nodes += [helper.make_node("ReduceMean", [x], [p + "_mean"], axes=[-1]),
                  helper.make_node("Sub", [x, p + "_mean"], [p + "_d"]),
                  helper.make_node("Mul", [p + "_d", p + "_d"], [p + "_d2"]),
                  helper.make_node("ReduceMean", [p + "_d2"], [p + "_var"], axes=[-1]),
                  helper.make_node("Add", [p + "_var", eps], [p + "_ve"]),
                  helper.make_node("Sqrt", [p + "_ve"], [p + "_sd"]),
                  helper.make_node("Reciprocal", [p + "_sd"], [p + "_inv"]),
                  helper.make_node("Mul", [p + "_d", p + "_inv"], [p + "_n"]),
                  helper.make_node("Mul", [p + "_n", gamma], [p + "_g"]),
                  helper.make_node("Add", [p + "_g", beta], [node.output[0]])]
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
