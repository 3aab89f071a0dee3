"""Explicit (Q/DQ) INT8 quantization of an FP32 ONNX graph in the form TensorRT's strongly typed networks take.

`quantize_graph` runs ONNX Runtime's `quantize_static` with:
  * QuantFormat.QDQ (QuantizeLinear/DequantizeLinear pairs, no QLinear* operators);
  * QInt8 activations and weights, both symmetric (zero point 0): ActivationSymmetric, WeightSymmetric;
  * per-channel weights (output-channel axis: Conv 0, MatMul 1, Gemm by transB), per-tensor activations;
  * op_types_to_quantize = MatMul, Gemm, Conv only; biases stay float (QuantizeBias off: TensorRT folds an
    FP32 bias into the quantized layer, and int32 bias DQs are not part of its Q/DQ form).
The graph is first run through onnxruntime's quantization pre-processing (graph optimisation and ONNX shape
inference; its symbolic shape inference cannot follow the exporter's Expand/Reshape chains and is skipped).

ONNX Runtime shares one Q/DQ pair among every consumer of a quantized tensor, so without a fix-up the residual
Add and the LayerNormalization that read the same tensor as a MatMul would get its INT8-rounded copy.
`confine_qdq` rewires every consumer that is not MatMul/Gemm/Conv back to the original float tensor, so Q/DQ
sits only in front of the quantized operators; LayerNormalization, Softmax and residual Adds run in FP32.
`inspect_qdq` checks exactly that (and zero points 0, per-channel weights) and the accuracy gate refuses a graph
that breaks it.

`quantize_with_modelopt` is the optional NVIDIA ModelOpt back end (`pip install nvidia-modelopt`), held to the
same structure check and accuracy gate.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from hbci.runtime.errors import HbciError

__all__ = ["QUANTIZED_OP_TYPES", "METHODS", "CalibrationError", "prepare_graph", "quantize_graph", "confine_qdq",
           "inspect_qdq", "quantize_with_modelopt", "modelopt_available"]

log = logging.getLogger("hbci")

QUANTIZED_OP_TYPES = ("MatMul", "Gemm", "Conv")
METHODS = ("minmax", "entropy", "percentile")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


class CalibrationError(HbciError):
    """Quantization could not be done (unsupported method, missing optional back end, tool failure)."""


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise CalibrationError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    return table[method]


def prepare_graph(src: str | Path, dst: str | Path) -> Path:
    """onnxruntime's quantization pre-processing of `src` into `dst` (falls back to plain ONNX shape inference)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    except Exception as exc:  # the optimiser can refuse exotic graphs; shapes are all quantize_static needs
        log.warning("quantization pre-processing failed (%s: %s); using ONNX shape inference only",
                    type(exc).__name__, exc)
        onnx.save(onnx.shape_inference.infer_shapes(onnx.load(str(src))), str(dst))
    return dst


def quantize_graph(src: str | Path, dst: str | Path, reader, *, method: str = "minmax",
                   op_types: tuple[str, ...] = QUANTIZED_OP_TYPES, histogram_round: int = 8,
                   tensor_overrides: dict | None = None) -> Path:
    """Calibrate `src` (FP32 ONNX) on `reader`'s feeds and write the Q/DQ INT8 graph to `dst`.

    `reader` follows onnxruntime's CalibrationDataReader protocol; for the histogram methods it must also offer
    `__len__` and `set_range` (calibration then runs in rounds of at most `histogram_round` feeds).
    `tensor_overrides` is onnxruntime's TensorQuantOverrides (per-tensor ranges or scales), for experts.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calibrate_method = _ort_method(method)
    extra: dict[str, Any] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        # No CalibMaxIntermediateOutputs: in onnxruntime 1.32 MinMaxCalibrater drops the collected feeds when
        # that limit is reached without merging their ranges (with 64 clips and a limit of 16 nothing is left:
        # "No data is collected"; with 20, the first 16 would be lost silently). MinMax needs no limit anyway:
        # its augmented graph returns one min and one max per tensor and feed.
    }
    if method != "minmax":
        n = len(reader)
        # quantize_static needs a round size that divides the sample count.
        extra["CalibStridedMinMax"] = max(d for d in range(1, min(histogram_round, n) + 1) if n % d == 0)
        extra["CalibTensorRangeSymmetric"] = True
    if tensor_overrides:
        extra["TensorQuantOverrides"] = tensor_overrides
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hbci-quant-") as tmp:
        prepared = prepare_graph(src, Path(tmp) / "prepared.onnx")
        raw = Path(tmp) / "qdq.onnx"
        try:
            quantize_static(str(prepared), str(raw), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(op_types), per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate_method, extra_options=extra)
        except (ValueError, RuntimeError) as exc:
            raise CalibrationError(f"onnxruntime quantization of {src} failed: {exc}") from None
        model = confine_qdq(onnx.load(str(raw)), op_types)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def _index(graph):
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return producers, consumers


def confine_qdq(model, op_types: tuple[str, ...] = QUANTIZED_OP_TYPES):
    """Let only `op_types` read dequantized activations: other consumers get the float tensor back.

    A Q/DQ pair on activation X reads X and yields X_dq; onnxruntime points every reader of X at X_dq. Here each
    reader outside `op_types` is pointed back at X. When X_dq carries a graph output's name, the names are swapped
    so the graph output stays the float tensor. Q/DQ pairs left without readers are removed.
    """
    graph = model.graph
    producers, consumers = _index(graph)
    outputs = {o.name for o in graph.output}
    initializers = {t.name for t in graph.initializer}
    rename: dict[str, str] = {}
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in initializers:
            continue  # a weight's DQ (int8 initializer) or a weight Q/DQ pair
        float_name, dq_name = q.input[0], dq.output[0]
        if dq_name in outputs:
            # The graph output must stay float: give the DQ a new name, give the output name back to X.
            new_dq = f"{dq_name}_dq_int8"
            for node in consumers[dq_name]:
                node.input[:] = [new_dq if i == dq_name else i for i in node.input]
            dq.output[0] = new_dq
            consumers[new_dq] = consumers.pop(dq_name)
            rename[float_name] = dq_name
            dq_name = new_dq
        for node in consumers[dq_name]:
            if node.op_type not in op_types:
                node.input[:] = [float_name if i == dq_name else i for i in node.input]
    if rename:
        for node in graph.node:
            node.input[:] = [rename.get(i, i) for i in node.input]
            node.output[:] = [rename.get(o, o) for o in node.output]
    # Drop Q/DQ nodes nobody reads any more (repeat: a removed DQ frees its Q).
    while True:
        _, consumers = _index(graph)
        dead = [n for n in graph.node if n.op_type in _QDQ and not consumers[n.output[0]]
                and n.output[0] not in outputs]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | outputs | {i.name for i in graph.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model


def inspect_qdq(model, op_types: tuple[str, ...] = QUANTIZED_OP_TYPES) -> dict:
    """Describe the Q/DQ structure of a graph (a ModelProto or a path) and list what breaks the TensorRT form.

    Returns {"quantized_nodes": {op: n}, "activation_qdq": n, "weight_dq": n, "per_channel_weights": n,
    "per_tensor_weights": n, "problems": [str]}. Problems: a dequantized tensor read by an operator outside
    `op_types` (LayerNormalization, Softmax, Add, ...), a non-zero zero point, a non-int8 quantized type, a
    per-channel activation, a per-tensor weight, a quantized graph output, a graph without any Q/DQ.
    """
    import onnx
    from onnx import numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    producers, consumers = _index(graph)
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    outputs = {o.name for o in graph.output}

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in constants:
            return numpy_helper.to_array(constants[name].attribute[0].t)
        return None

    problems: list[str] = []
    quantized = Counter()
    report = {"activation_qdq": 0, "weight_dq": 0, "per_channel_weights": 0, "per_tensor_weights": 0}
    for node in graph.node:
        if node.op_type not in _QDQ:
            continue
        zero = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is not None:
            if zero.dtype != np.int8:
                problems.append(f"{node.name or node.output[0]}: quantized type {zero.dtype}, not int8")
            if np.any(zero != 0):
                problems.append(f"{node.name or node.output[0]}: non-zero zero point")
        if node.op_type != "DequantizeLinear":
            continue
        scale = value(node.input[1])
        source = node.input[0]
        is_weight = source in inits or (source in producers and producers[source].op_type == "QuantizeLinear"
                                        and producers[source].input[0] in inits)
        per_channel = scale is not None and scale.size > 1
        if is_weight:
            report["weight_dq"] += 1
            report["per_channel_weights" if per_channel else "per_tensor_weights"] += 1
            if not per_channel:
                problems.append(f"weight {source}: per-tensor scale (expected per-channel)")
        else:
            report["activation_qdq"] += 1
            if per_channel:
                problems.append(f"activation {source}: per-channel scale (expected per-tensor)")
        if node.output[0] in outputs:
            problems.append(f"graph output {node.output[0]} is dequantized INT8")
        for reader in consumers[node.output[0]]:
            if reader.op_type in op_types:
                quantized[(reader.name or reader.output[0], reader.op_type)] += 1
            else:
                problems.append(f"{reader.op_type} {reader.name or reader.output[0]} reads the quantized tensor "
                                f"{node.output[0]}")
    report["quantized_nodes"] = dict(Counter(op for _, op in quantized))
    if not quantized:
        problems.append("no MatMul/Gemm/Conv reads a dequantized tensor: nothing is quantized")
    report["problems"] = problems
    return report


def modelopt_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("modelopt") is not None


def quantize_with_modelopt(src: str | Path, dst: str | Path, clips, *, method: str = "minmax",
                           op_types: tuple[str, ...] = QUANTIZED_OP_TYPES) -> Path:
    """Quantize with NVIDIA ModelOpt's ONNX PTQ (Q/DQ for TensorRT), where `modelopt` is installed.

    `clips` is a ClipSet; its preprocessed frames become ModelOpt's calibration arrays. Kept out of the main
    environment: install it with `pip install nvidia-modelopt` (ModelOpt pulls in its own, larger dependencies).
    """
    if not modelopt_available():
        raise CalibrationError("the ModelOpt back end needs NVIDIA ModelOpt: pip install nvidia-modelopt "
                               "(or use the default onnxruntime back end)")
    from modelopt.onnx.quantization import quantize as modelopt_quantize

    if method not in ("minmax", "entropy"):
        raise CalibrationError(f"ModelOpt calibrates INT8 with 'minmax' (its 'max') or 'entropy', not {method!r}")
    feeds = list(clips.feeds(batch=len(clips)))[0]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    modelopt_quantize(str(src), quantize_mode="int8", calibration_data=feeds,
                      calibration_method="max" if method == "minmax" else "entropy",
                      calibration_eps=["cpu"], op_types_to_quantize=list(op_types), high_precision_dtype="fp32",
                      use_zero_point=False, output_path=str(dst))
    return dst
