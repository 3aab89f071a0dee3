"""The INT8 graph is in TensorRT's explicit form: Q/DQ only in front of MatMul/Gemm/Conv, symmetric, per-channel."""

from collections import defaultdict

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from hbci.calibration.data import CalibrationReader, load_clips, video_paths
from hbci.calibration.gate import cosine_report
from hbci.calibration.quantize import (QUANTIZED_OP_TYPES, CalibrationError, inspect_qdq, modelopt_available,
                                       quantize_graph, quantize_with_modelopt)
from hbci.runtime.bundle import load_bundle

pytestmark = pytest.mark.slow  # the session fixture exports a model


@pytest.fixture(scope="module")
def clips(tiny_fp32_bundle, calib_synth):
    return load_clips(video_paths(calib_synth / "videos" / "train"), load_bundle(tiny_fp32_bundle), max_clips=6)


@pytest.fixture(scope="module")
def int8_graph(tiny_fp32_bundle, clips, tmp_path_factory):
    src = load_bundle(tiny_fp32_bundle).graph_path("video_encoder", "fp32")
    return quantize_graph(src, tmp_path_factory.mktemp("q") / "video_encoder.onnx", CalibrationReader(clips))


def _structure(path):
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return model, graph, inits, consumers


def test_qdq_only_in_front_of_matmul_gemm_conv(int8_graph):
    model, graph, inits, consumers = _structure(int8_graph)
    dq_nodes = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert dq_nodes, "no Q/DQ nodes at all"
    readers = {r.op_type for dq in dq_nodes for r in consumers[dq.output[0]]}
    assert readers <= set(QUANTIZED_OP_TYPES), readers
    # LayerNormalization, Softmax and the residual Adds read float tensors, never a DequantizeLinear output.
    dq_outputs = {dq.output[0] for dq in dq_nodes}
    for node in graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Add"):
            assert not set(node.input) & dq_outputs, node.name
    # Every MatMul/Gemm/Conv is quantized on both its data inputs.
    for node in graph.node:
        if node.op_type in QUANTIZED_OP_TYPES:
            assert node.input[0] in dq_outputs and node.input[1] in dq_outputs, node.name
    # The graph outputs are produced in float, not by a DequantizeLinear.
    assert not {o.name for o in graph.output} & dq_outputs


def test_symmetric_int8_per_channel_weights_per_tensor_activations(int8_graph):
    model, graph, inits, consumers = _structure(int8_graph)
    weights = activations = 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), f"{node.name}: zero point must be int8 0"
        scale = inits[node.input[1]]
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:   # a weight: int8 initializer
            weight = inits[node.input[0]]
            assert weight.dtype == np.int8
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            assert scale.ndim == 1 and scale.size == weight.shape[axis] > 1, f"{node.name}: not per-channel"
            reader = consumers[node.output[0]][0]
            out_axis = {"Conv": 0, "MatMul": weight.ndim - 1}.get(reader.op_type)
            if out_axis is not None:
                assert axis % weight.ndim == out_axis, f"{node.name}: per-channel along the wrong axis"
            weights += 1
        else:
            assert scale.size == 1, f"{node.name}: activation must be per-tensor"
            activations += 1
    assert weights > 0 and activations > 0
    report = inspect_qdq(int8_graph)
    assert report["problems"] == []
    assert report["per_tensor_weights"] == 0 and report["per_channel_weights"] == weights
    assert set(report["quantized_nodes"]) == {"MatMul", "Gemm", "Conv"}


def test_int8_graph_runs_close_to_fp32(tiny_fp32_bundle, int8_graph, clips):
    from hbci.runtime.backends import OrtBackend

    fp32 = OrtBackend(load_bundle(tiny_fp32_bundle).graph_path("video_encoder", "fp32"), ["CPUExecutionProvider"])
    int8 = OrtBackend(int8_graph, ["CPUExecutionProvider"])
    feed = next(clips.feeds(batch=3))
    a, b = fp32.run(feed), int8.run(feed)
    assert set(a) == set(b)
    for name, cos in cosine_report(a, b).items():  # zero-initialised heads are all zeros on both sides: cos 1
        assert cos["min"] > 0.99, (name, cos)


def test_inspect_flags_a_quantized_layernorm(tiny_fp32_bundle, clips, tmp_path):
    src = load_bundle(tiny_fp32_bundle).graph_path("video_encoder", "fp32")
    bad = quantize_graph(src, tmp_path / "ln.onnx", CalibrationReader(clips),
                         op_types=QUANTIZED_OP_TYPES + ("LayerNormalization",))
    problems = inspect_qdq(bad)["problems"]
    assert any(p.startswith("LayerNormalization") for p in problems), problems


def test_histogram_method_runs_in_bounded_rounds(tiny_fp32_bundle, clips, tmp_path):
    src = load_bundle(tiny_fp32_bundle).graph_path("video_encoder", "fp32")
    out = quantize_graph(src, tmp_path / "p.onnx", CalibrationReader(clips), method="percentile", histogram_round=4)
    assert inspect_qdq(out)["problems"] == []


def test_unknown_method_and_missing_modelopt_are_clear_errors(tiny_fp32_bundle, clips, tmp_path):
    src = load_bundle(tiny_fp32_bundle).graph_path("video_encoder", "fp32")
    with pytest.raises(CalibrationError, match="unknown calibration method"):
        quantize_graph(src, tmp_path / "x.onnx", CalibrationReader(clips), method="kl")
    if not modelopt_available():
        with pytest.raises(CalibrationError, match="pip install nvidia-modelopt"):
            quantize_with_modelopt(src, tmp_path / "m.onnx", clips)
