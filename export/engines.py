"""TensorRT engines for a bundle, TensorRT 10.3 (JetPack 6) through 11.x, chosen by feature detection.

Networks are strongly typed, so precision comes from the graph (FP16 graph -> FP16 engine; Q/DQ graph -> INT8
engine) and no deprecated builder precision flag is used. Optimisation profiles come from the manifest, the
workspace pool is limited, the timing cache persists next to the engines, engine files are named by graph,
precision, ONNX hash, TensorRT version and GPU SM, and written atomically. After the build each engine is run on
the bundle's golden inputs and compared with ONNX Runtime.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hbci.runtime.bundle import (BCI_SCORER, ENGINE_DIR, GRAPHS, PROFILES, Bundle, atomic_write_bytes, engine_file,
                                 sha256_file, timing_cache_file)
from hbci.runtime.errors import BundleError, EnginesUnavailable

__all__ = ["PROFILES", "EngineSkipped", "tensorrt_status", "engine_name", "input_shapes", "trtexec_commands",
           "build_engines"]

WORKSPACE_BYTES = 2 << 30


class EngineSkipped(EnginesUnavailable):
    """TensorRT or a GPU is not available here: engines are skipped and the reason is reported."""


@dataclass(frozen=True)
class TensorRTInfo:
    version: str
    sm: str


def tensorrt_status() -> TensorRTInfo:
    """TensorRT version and GPU SM, or EngineSkipped saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineSkipped("TensorRT is not installed (pip install hbci[tensorrt] on a machine with an NVIDIA "
                            "GPU; on Jetson it comes with JetPack)") from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise EngineSkipped("cuda-python is not installed (pip install hbci[tensorrt])") from None
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise EngineSkipped("no CUDA GPU is visible")
    err, props = cudart.cudaGetDeviceProperties(0)
    return TensorRTInfo(trt.__version__, f"{props.major}{props.minor}")


def engine_name(graph: str, precision: str, onnx_sha256: str, info: TensorRTInfo) -> str:
    """The engine's file name (inside the bundle's engine folder; see `hbci.runtime.bundle.engine_file`)."""
    return Path(engine_file(graph, precision, onnx_sha256, info.version, info.sm)).name


def input_shapes(bundle: Bundle, graph: str) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of every input of a graph, from the golden inputs and the manifest's profiles."""
    shapes = {name: value.shape for name, value in bundle.golden().inputs[graph].items()}
    text_inputs = set(bundle.manifest.scorer_inputs.text)
    profiles = bundle.manifest.profiles or PROFILES
    result = {}
    for name, shape in shapes.items():
        if graph == BCI_SCORER:
            axis = profiles[graph]["num_texts" if name in text_inputs else "num_videos"]
        else:
            axis = profiles[graph]["batch"]
        result[name] = tuple((n, *shape[1:]) for n in axis)
    return result


def trtexec_commands(bundle: Bundle, precision: str) -> list[str]:
    """Equivalent trtexec command lines, for people who build engines by hand."""
    commands = []
    for graph in GRAPHS:
        shapes = input_shapes(bundle, graph)
        spec = [",".join(f"{n}:{'x'.join(map(str, s[i]))}" for n, s in shapes.items()) for i in range(3)]
        onnx_path = bundle.graph_path(graph, precision)
        commands.append(shlex.join([
            "trtexec", f"--onnx={onnx_path}", "--stronglyTyped", f"--minShapes={spec[0]}",
            f"--optShapes={spec[1]}", f"--maxShapes={spec[2]}", f"--memPoolSize=workspace:{WORKSPACE_BYTES >> 20}M",
            f"--timingCacheFile={bundle.root / ENGINE_DIR / 'timing.cache'}",
            f"--saveEngine={bundle.root / ENGINE_DIR / f'{graph}.{precision}.engine'}"]))
    return commands


def _build_one(onnx_path: Path, shapes: dict, cache_path: Path):
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise EngineSkipped(f"TensorRT {trt.__version__} has no strongly typed networks (need 10.0 or newer)")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"{onnx_path}: TensorRT could not parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):  # the exporter may drop inputs a graph never reads
        name = network.get_input(index).name
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def build_engines(bundle: Bundle, precisions: list[str], log=print) -> dict[str, dict[str, str]]:
    """Build (or reuse) the engines of every graph and precision; compare each with ONNX Runtime.

    Returns {precision: {graph: relative engine path}}. Raises EngineSkipped when TensorRT/GPU is absent.
    """
    from hbci.runtime.backends import OrtBackend, TensorRTBackend

    info = tensorrt_status()
    (bundle.root / ENGINE_DIR).mkdir(exist_ok=True)
    built: dict[str, dict[str, str]] = {}
    golden = bundle.golden()
    for precision in precisions:
        for graph in GRAPHS:
            onnx_path = bundle.graph_path(graph, precision)
            rel = engine_file(graph, precision, sha256_file(onnx_path), info.version, info.sm)
            path = bundle.root / rel
            if not path.is_file():
                log(f"[{precision}] {graph}: building TensorRT {info.version} engine for sm{info.sm}")
                atomic_write_bytes(path, _build_one(onnx_path, input_shapes(bundle, graph),
                                                    bundle.root / timing_cache_file(info.version, info.sm)))
            feeds = golden.inputs[graph]
            trt_out = TensorRTBackend(path).run(feeds)
            ort_out = OrtBackend(onnx_path, ["CPUExecutionProvider"]).run(feeds)
            diff = max(float(np.abs(trt_out[n] - ort_out[n]).max()) for n in ort_out)
            log(f"[{precision}] {graph}: max |TensorRT - onnxruntime| on golden inputs = {diff:.2e}")
            built.setdefault(precision, {})[graph] = rel
    return built
