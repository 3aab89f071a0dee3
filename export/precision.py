"""FP16 graphs: FP16 weights and arithmetic with FP32 inputs/outputs, and the ops that overflow kept in FP32.

TensorRT 10.12+ takes precision from the graph (strongly typed networks), so the FP16 variant is a graph of its
own rather than a builder flag. LayerNormalization stays FP32 (its variance overflows FP16 on real activations,
and ONNX Runtime's CPU FP16 LayerNorm path has crashed at the default optimisation level); ReduceL2 (the L2
norms before every cosine) stays FP32 because a sum of squares over D=512 overflows FP16 above |x| ~ 11.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FP32_OPS", "convert_to_fp16"]

FP32_OPS = ("LayerNormalization", "ReduceL2")


def _sort_topologically(graph) -> None:
    """The converter appends its input casts at the end of the node list; ONNX requires producers first."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise RuntimeError("FP16 graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if all(name not in available for name in n.output)]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_to_fp16(src: str | Path, dst: str | Path, keep_fp32_ops: tuple[str, ...] = FP32_OPS) -> Path:
    """Write an FP16 copy of the FP32 ONNX graph `src` to `dst` (FP32 inputs and outputs)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(keep_fp32_ops),
                                         disable_shape_infer=False)
    _sort_topologically(converted.graph)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(converted)
    onnx.save(converted, str(dst))
    return dst
