"""Back ends that run one graph: ONNX Runtime (providers TensorRT -> CUDA -> CPU) and native TensorRT.

Both answer `run(feeds: dict[str, ndarray]) -> dict[str, ndarray]` and expose `input_names`, `output_names`
and `name`, so the retriever never knows which one ran. Heavy imports happen inside the constructors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hbci.runtime.errors import BundleError

__all__ = ["Backend", "OrtBackend", "TensorRTBackend", "ort_providers", "create_backend", "BACKENDS"]

log = logging.getLogger("hbci")

BACKENDS = ("auto", "onnxruntime", "onnxruntime-cpu", "tensorrt")
_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Backend:
    name = "backend"
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def ort_providers(cpu_only: bool = False) -> list[str]:
    """The providers this onnxruntime build offers, in our order of preference."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = ("CPUExecutionProvider",) if cpu_only else _PROVIDER_ORDER
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


class OrtBackend(Backend):
    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0,
                 optimization: str = "all"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[optimization]
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        requested = providers or ort_providers()
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=requested)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise BundleError(f"{path}: onnxruntime could not load the graph ({type(exc).__name__}: {exc})") from None
        # A provider that fails to initialise is dropped silently by onnxruntime: report what really loaded.
        self.providers = self.session.get_providers()
        self.name = f"onnxruntime[{self.providers[0]}]"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._int_inputs = {i.name for i in self.session.get_inputs() if "int" in i.type}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {n: np.ascontiguousarray(feeds[n], dtype=np.int32 if n in self._int_inputs else np.float32)
                  for n in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, inputs)))


class TensorRTBackend(Backend):
    """Native TensorRT: deserialise an engine, bind cuda-python device buffers, `execute_async_v3`.

    Buffers are (re)allocated when a batch outgrows them; shapes come from the engine's optimisation profile.
    """

    def __init__(self, engine_path: str | Path):
        try:
            import tensorrt as trt
            from cuda.bindings import runtime as cudart
        except ImportError as exc:
            raise BundleError(f"the tensorrt back end needs `pip install hbci[tensorrt]` ({exc})") from None
        self._trt, self._cudart = trt, cudart
        logger = trt.Logger(trt.Logger.WARNING)
        with open(engine_path, "rb") as fh:
            engine = trt.Runtime(logger).deserialize_cuda_engine(fh.read())
        if engine is None:
            raise BundleError(f"{engine_path}: TensorRT could not deserialise the engine (built for another "
                              f"TensorRT version or GPU?)")
        self.engine, self.context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.name = f"tensorrt[{trt.__version__}]"
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        err, self._stream = cudart.cudaStreamCreate()
        self._check(err, "cudaStreamCreate")

    def _check(self, err, what: str) -> None:
        if int(err) != 0:
            raise BundleError(f"CUDA error {int(err)} in {what}")

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self._cudart.cudaFree(pointer)
            err, pointer = self._cudart.cudaMalloc(nbytes)
            self._check(err, "cudaMalloc")
            self._buffers[name] = (pointer, nbytes)
        return pointer

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt, cudart = self._trt, self._cudart
        kind = cudart.cudaMemcpyKind
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_input_shape(name, array.shape)
            pointer = self._buffer(name, max(array.nbytes, 1))
            self._check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                               kind.cudaMemcpyHostToDevice, self._stream)[0], "copy in")
            self.context.set_tensor_address(name, pointer)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._buffer(name, max(outputs[name].nbytes, 1)))
        if not self.context.execute_async_v3(self._stream):
            raise BundleError("TensorRT execution failed")
        for name, array in outputs.items():
            self._check(cudart.cudaMemcpyAsync(array.ctypes.data, self._buffers[name][0], array.nbytes,
                                               kind.cudaMemcpyDeviceToHost, self._stream)[0], "copy out")
        self._check(cudart.cudaStreamSynchronize(self._stream)[0], "synchronize")
        return {n: a.astype(np.float32, copy=False) if a.dtype == np.float16 else a for n, a in outputs.items()}


def create_backend(kind: str, graph_path: Path, engine_path: Path | None = None, threads: int = 0,
                   optimization: str = "all") -> Backend:
    if kind not in BACKENDS:
        raise BundleError(f"unknown back end {kind!r}; choose from {', '.join(BACKENDS)}")
    if kind == "tensorrt":
        if engine_path is None or not engine_path.is_file():
            raise BundleError(f"no TensorRT engine for {graph_path.name} in this bundle "
                              f"(build one with python export/build_engines.py --engines)")
        return TensorRTBackend(engine_path)
    if kind == "auto" and engine_path is not None and engine_path.is_file():
        try:
            return TensorRTBackend(engine_path)
        except BundleError as exc:
            log.warning("TensorRT engine unusable (%s); using onnxruntime", exc)
    return OrtBackend(graph_path, ort_providers(cpu_only=kind == "onnxruntime-cpu"), threads, optimization)
