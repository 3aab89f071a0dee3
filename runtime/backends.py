"""Back ends that run one graph: ONNX Runtime (providers TensorRT -> CUDA -> CPU) and native TensorRT.

Both answer `run(feeds: dict[str, ndarray]) -> dict[str, ndarray]` and expose `input_names`, `output_names`
and `name`, so the retriever never knows which one ran. Heavy imports happen inside the constructors.
`create_session` is the one place the project creates ONNX Runtime sessions (export, calibration and the
benchmarks go through it too), so thread settings are the same everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hbci.runtime.errors import BundleError, ConfigError

__all__ = ["Backend", "OrtBackend", "TensorRTBackend", "ort_providers", "create_backend", "create_session",
           "session_options", "use_shared_thread_pool", "BACKENDS", "OPTIMIZATION_LEVELS"]

log = logging.getLogger("hbci")

BACKENDS = ("auto", "onnxruntime", "onnxruntime-cpu", "tensorrt")
OPTIMIZATION_LEVELS = ("all", "basic", "none")
_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_shared_pool_threads: int | None = None  # set once per process by use_shared_thread_pool


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


def use_shared_thread_pool(threads: int = 0) -> None:
    """Make every later session of this process share one global intra-op pool of `threads` threads (0: one per
    core) instead of a pool per session. Must be called before the first session is created.

    The default (a pool per session, spinning off) measured at least as fast on 2 cores (BENCHMARKS.md,
    "Threads"); the shared pool is here for processes that hold many sessions.
    """
    from onnxruntime.capi import _pybind_state  # the Python API offers the global pools only here

    global _shared_pool_threads
    if _shared_pool_threads is not None and _shared_pool_threads != threads:
        raise ConfigError(f"the shared ONNX Runtime thread pool already has {_shared_pool_threads} threads")
    _pybind_state.set_global_thread_pool_sizes(threads, 1)
    _shared_pool_threads = threads


def session_options(threads: int = 0, optimization: str = "all", spinning: bool = False):
    """ONNX Runtime session options as the project uses them.

    threads: intra-op threads (0: one per core). spinning: whether idle worker threads busy-wait for the next
    piece of work. ONNX Runtime spins by default; then the idle pool of one session keeps taking cores from the
    next session run in the same process (the retriever runs three), which halved throughput on 2 cores
    (BENCHMARKS.md compares both settings side by side). Off by default here.
    """
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise ConfigError(f"unknown graph optimisation level {optimization!r}; choose from "
                          f"{', '.join(OPTIMIZATION_LEVELS)}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ConfigError(f"threads must be a whole number >= 0 (0: one per core), got {threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    if _shared_pool_threads is not None:
        options.use_per_session_threads = False
    elif threads > 0:
        options.intra_op_num_threads = threads
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    options.log_severity_level = 3
    return options


def create_session(model: str | Path | bytes, providers: list[str] | None = None, threads: int = 0,
                   optimization: str = "all", spinning: bool = False):
    """An ONNX Runtime InferenceSession on a graph file (or serialised graph bytes) with `session_options`.

    Raises BundleError naming the file when onnxruntime cannot load the graph.
    """
    import onnxruntime as ort

    options = session_options(threads, optimization, spinning)
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=providers or ort_providers())
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        where = "graph bytes" if isinstance(model, bytes) else str(model)
        raise BundleError(f"{where}: onnxruntime could not load the graph ({type(exc).__name__}: {exc})") from None


class OrtBackend(Backend):
    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0,
                 optimization: str = "all", spinning: bool = False):
        self.session = create_session(path, providers, threads, optimization, spinning)
        self.settings = {"path": path, "providers": providers, "threads": threads, "optimization": optimization,
                         "spinning": spinning}
        # A provider that fails to initialise is dropped silently by onnxruntime: report what really loaded.
        self.providers = self.session.get_providers()
        self.name = f"onnxruntime[{self.providers[0]}]"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._int_inputs = {i.name for i in self.session.get_inputs() if "int" in i.type}

    def reopened(self, **changes) -> "OrtBackend":
        """The same graph in a new session with some settings changed (threads, optimization, spinning)."""
        unknown = set(changes) - {"threads", "optimization", "spinning"}
        if unknown:
            raise ConfigError(f"cannot change {', '.join(sorted(unknown))} of an onnxruntime back end")
        return OrtBackend(**(self.settings | changes))

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
                   optimization: str = "all", spinning: bool = False) -> Backend:
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
    return OrtBackend(graph_path, ort_providers(cpu_only=kind == "onnxruntime-cpu"), threads, optimization, spinning)
