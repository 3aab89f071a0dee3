"""Count the multiply-adds of a graph, for the compute floor of an encoder (needs onnx).

FLOPs = 2 x MACs of every MatMul, Gemm and Conv, from the shapes of their inputs and outputs in one run with those
tensors exposed as outputs. LayerNorm, Softmax, GELU and adds are left out, so the floor is a lower bound.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["count_flops"]


def count_flops(graph_path: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """{"MatMul": flops, "Gemm": flops, "Conv": flops} of one run of the graph on `feeds`."""
    import onnx

    from hbci.runtime.backends import create_session

    model = onnx.load(str(graph_path))
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    wanted = [x for n in nodes for x in list(n.input[:2]) + [n.output[0]] if x not in inits]
    existing = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = create_session(model.SerializeToString(), ["CPUExecutionProvider"], optimization="none")
    types = {i.name: i.type for i in session.get_inputs()}
    inputs = {k: np.asarray(v, np.int32 if "int" in types[k] else np.float32) for k, v in feeds.items()}
    names = [o.name for o in session.get_outputs()]
    shapes = {n: v.shape for n, v in zip(names, session.run(None, inputs))} | inits
    flops = {"MatMul": 0.0, "Gemm": 0.0, "Conv": 0.0}
    for n in nodes:
        a, b, y = shapes[n.input[0]], shapes[n.input[1]], shapes[n.output[0]]
        if n.op_type == "MatMul":
            flops["MatMul"] += 2.0 * float(np.prod(y)) * a[-1]
        elif n.op_type == "Gemm":
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            flops["Gemm"] += 2.0 * float(np.prod(y)) * (a[0] if trans_a else a[1])
        else:  # weight [C_out, C_in / group, kh, kw]: each output element takes C_in / group * kh * kw MACs
            flops["Conv"] += 2.0 * float(np.prod(y)) * b[1] * float(np.prod(b[2:]))
    return flops
