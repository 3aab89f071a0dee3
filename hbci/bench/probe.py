"""Measurements that need a fresh process: import time, peak RSS of one encoder or of the whole runtime, and the
retriever's speed under one thread setting (a process-wide choice).

    python -m hbci.bench.probe '{"task": "import"}'

Prints one JSON line. `measure(spec)` runs it in a subprocess and returns the parsed result. Torch is imported
only by the "torch" task.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

__all__ = ["measure", "rss_mb", "peak_rss_mb", "THREAD_SETTINGS"]

# How the runtime's sessions share the cores: "spin-off" is the runtime's default (a pool per session, idle
# threads sleep); "spin-on" is ONNX Runtime's own default, the runtime's setting before; "shared" is one global
# pool for every session of the process.
THREAD_SETTINGS = ("spin-off", "spin-on", "shared")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_mb() -> float:
    """Resident set size of this process now."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far. VmHWM, not getrusage's ru_maxrss: that one survives fork and
    exec, so a child would report its parent's peak."""
    return _status_mb("VmHWM")


def measure(spec: dict, timeout: float = 1800) -> dict:
    """Run one probe in a fresh interpreter; raise RuntimeError with its stderr if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "hbci.bench.probe", json.dumps(spec)], capture_output=True,
                            text=True, timeout=timeout, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"probe {spec.get('task')} failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- the tasks
def _import(spec: dict) -> dict:
    t0 = time.perf_counter()
    import hbci.runtime  # noqa: F401

    package = time.perf_counter() - t0
    t0 = time.perf_counter()
    import hbci.runtime.monitor  # noqa: F401
    import hbci.runtime.retriever  # noqa: F401

    api = time.perf_counter() - t0
    heavy = sorted(m for m in ("torch", "tensorrt", "open_clip") if m in sys.modules)
    return {"import_hbci_runtime_s": package, "import_retriever_and_monitor_s": api,
            "rss_mb": rss_mb(), "heavy_modules_loaded": heavy}


def _retriever(spec: dict) -> dict:
    import numpy as np

    from hbci.runtime.backends import use_shared_thread_pool
    from hbci.runtime.retriever import Retriever

    setting = spec.get("setting", "spin-off")
    if setting not in THREAD_SETTINGS:
        raise SystemExit(f"unknown thread setting {setting!r}")
    if setting == "shared":
        use_shared_thread_pool(spec.get("threads", 0))
    baseline = rss_mb()
    t0 = time.perf_counter()
    retriever = Retriever.load(spec["bundle"], backend="onnxruntime-cpu", precision=spec["precision"],
                               threads=spec.get("threads", 0))
    if setting == "spin-on":
        retriever = Retriever(retriever.bundle, {g: b.reopened(spinning=True) for g, b in retriever.backends.items()},
                              retriever.precision)
    load_s = time.perf_counter() - t0
    queries = spec.get("queries", ["a red circle moves left", "a green square moves up", "a person cooks",
                                   "a man cleans a swimming pool"])
    t, s = retriever.bundle.num_frames, retriever.bundle.image_size
    window = np.random.default_rng(0).integers(0, 255, (1, t, s, s, 3), dtype=np.uint8)
    text = retriever.encode_text(queries)
    times = []
    for i in range(spec.get("windows", 5) + 1):  # one window at a time, as the live monitor does
        t1 = time.perf_counter()
        retriever.score(text, retriever.encode_video(window))
        if i:  # the first call warms up
            times.append(time.perf_counter() - t1)
    return {"setting": setting, "precision": spec["precision"], "load_s": load_s, "baseline_rss_mb": baseline,
            "peak_rss_mb": peak_rss_mb(), "ms_per_window": 1000 * statistics.median(times),
            "ms_per_window_all": [1000 * x for x in times], "bundle_id": retriever.bundle_id}


def _feeds(path: str) -> dict:
    import numpy as np

    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _graph(spec: dict) -> dict:
    from hbci.runtime.backends import OrtBackend

    feeds = _feeds(spec["inputs"])
    import onnxruntime  # noqa: F401  (in the baseline, as torch is in the torch task's)

    baseline = rss_mb()
    backend = OrtBackend(spec["graph"], ["CPUExecutionProvider"], optimization=spec.get("optimization", "all"))
    for _ in range(2):
        backend.run(feeds)
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb()}


def _torch(spec: dict) -> dict:
    import torch

    from hbci.checkpoint import load_model

    feeds = {k: torch.from_numpy(v) for k, v in _feeds(spec["inputs"]).items()}
    baseline = rss_mb()
    model = load_model(spec["checkpoint"])[0].eval()
    encode = {"video_encoder": model.encode_video, "text_encoder": model.encode_text}[spec["graph"]]
    with torch.no_grad():
        for _ in range(2):
            encode(*feeds.values())
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb()}


def _score(spec: dict) -> dict:
    """Score a saved text pack against a saved video gallery: the runtime in chunks, or torch all at once."""
    packs = _feeds(spec["packs"])
    text = {k.split("/", 1)[1]: v for k, v in packs.items() if k.startswith("text/")}
    video = {k.split("/", 1)[1]: v for k, v in packs.items() if k.startswith("video/")}
    if spec["engine"] == "torch":
        import torch

        from hbci.checkpoint import load_model

        model = load_model(spec["checkpoint"])[0].eval()
        baseline = rss_mb()
        with torch.no_grad():
            model.score({k: torch.from_numpy(v) for k, v in text.items()},
                        {k: torch.from_numpy(v) for k, v in video.items()})
    else:
        from hbci.runtime.retriever import Retriever

        retriever = Retriever.load(spec["bundle"], backend="onnxruntime-cpu", precision="fp32")
        baseline = rss_mb()
        retriever.score(text, video)
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb()}


TASKS = {"import": _import, "retriever": _retriever, "graph": _graph, "torch": _torch, "score": _score}


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    print(json.dumps(TASKS[spec["task"]](spec)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
