"""Video-encoder throughput, INT8 (Q/DQ) against FP32 on ONNX Runtime CPU, beside the machine's compute floor.

    python benchmarks/bench_int8.py [--configs small,vitb32] [--repeats 8] [--batch 1] [--calib-clips 4]

Random-weight models built through hbci: the shipped small config ("hbci-tiny", 32 px, T=12) and a
ViT-B/32-sized one (open_clip "ViT-B-32" architecture, random init, 224 px, T=12). Each video encoder is exported
with `hbci.export.graphs.export_graph`, calibrated with MinMax on a few synthetic clips (hbci.synth, decoded and
preprocessed by hbci.calibration.data as the runtime does) and quantized by hbci.calibration.quantize. FP32 and
INT8 runs are interleaved repetition by repetition so machine noise (this machine is shared) hits both; the ratio
comes from this one run.

Compute floor. FLOPs are counted from the graph: the shapes of every MatMul/Gemm/Conv input and output, taken from
one FP32 run with those tensors exposed (2 x multiply-accumulates; everything else - LayerNorm, Softmax, GELU,
adds - is left out, so the floor is a lower bound). Peak ops/s = cores x clock x ops per cycle per core, with
the clock the highest "cpu MHz" in /proc/cpuinfo (the VM's reported clock, not a guaranteed all-core boost) and
ops per cycle from the ISA flags:
  INT8: avx512_vnni 256 on Intel (two 512-bit VPDPBUSD per cycle, 64 MACs each), 128 on AMD Zen 4 (512-bit
        VNNI at one per cycle); avx_vnni 128 (two 256-bit); avx512bw without VNNI 128, avx2 64 (the
        VPMADDUBSW/VPMADDWD/VPADDD sequence, about half the VNNI rate); otherwise 16.
  FP32: avx512f 64 (two 16-lane FMAs; AMD Zen 4 the same through its 256-bit pipes), avx2+fma 32, else 8.
Floor time = FLOPs / peak; measured / floor says how far ONNX Runtime is from the hardware. ONNX Runtime's CPU
kernels only fuse DQ->MatMul into integer kernels in some patterns (Q/DQ graphs are laid out for TensorRT), so
INT8 on CPU need not be faster: this benchmark says what it is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

CONFIGS = {"small": {}, "vitb32": {"backbone": "ViT-B-32"}}


# ---------------------------------------------------------------------------------------------- the machine
def cpu_facts() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags, mhz, vendor, model = set(), [], "", ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu MHz":
            mhz.append(float(value))
        elif key == "vendor_id":
            vendor = value
        elif key == "model name":
            model = value
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ghz = max(mhz) / 1000 if mhz else 2.0
    amd = vendor == "AuthenticAMD"
    if "avx512_vnni" in flags:
        int8, isa = (128, "avx512_vnni (AMD: 512-bit VNNI at 1/cycle)") if amd else (256, "avx512_vnni (2/cycle)")
    elif "avx_vnni" in flags:
        int8, isa = 128, "avx_vnni"
    elif "avx512bw" in flags:
        int8, isa = 128, "avx512bw (no VNNI)"
    elif "avx2" in flags:
        int8, isa = 64, "avx2 (no VNNI)"
    else:
        int8, isa = 16, "no SIMD int8 dot product found"
    fp32 = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    return {"model": model or "unknown", "vendor": vendor, "cores": cores, "ghz": ghz, "isa": isa,
            "int8_ops_per_cycle": int8, "fp32_flops_per_cycle": fp32,
            "peak_int8": cores * ghz * 1e9 * int8, "peak_fp32": cores * ghz * 1e9 * fp32,
            "clock_from": "max cpu MHz in /proc/cpuinfo" if mhz else "assumed 2.0 GHz"}


# ---------------------------------------------------------------------------------------------- FLOPs
def count_flops(graph_path: Path, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """2 x MACs of every MatMul/Gemm/Conv, from the tensor shapes of one run with those tensors as outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(graph_path))
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    wanted = []
    for n in nodes:
        wanted += [x for x in list(n.input[:2]) + [n.output[0]] if x not in inits]
    existing = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = {n: v.shape for n, v in zip(names, session.run(None, feeds))} | inits
    flops = {"MatMul": 0.0, "Gemm": 0.0, "Conv": 0.0}
    for n in nodes:
        a, b, y = shapes[n.input[0]], shapes[n.input[1]], shapes[n.output[0]]
        if n.op_type == "MatMul":
            k = a[-1]
            flops["MatMul"] += 2.0 * float(np.prod(y)) * k
        elif n.op_type == "Gemm":
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            flops["Gemm"] += 2.0 * float(np.prod(y)) * k
        else:
            # weight [C_out, C_in / group, kh, kw]: each output element takes C_in / group * kh * kw MACs
            flops["Conv"] += 2.0 * float(np.prod(y)) * b[1] * float(np.prod(b[2:]))
    return flops


# ---------------------------------------------------------------------------------------------- one config
def _clips(bundle_like, n: int, work: Path):
    from hbci.calibration.data import load_clips, video_paths
    from hbci.synth import generate

    root = work / "synth"
    if not (root / "train.csv").exists():
        generate(root, seed=11, n_train=max(n, 4), n_val=0, n_test=0, frames=24, size=64)
    return load_clips(video_paths(root / "train.csv"), bundle_like, max_clips=n)


def bench(name: str, repeats: int, batch: int, calib_clips: int, work: Path, cpu: dict) -> dict:
    import onnxruntime as ort
    import torch

    from hbci.calibration.data import CalibrationReader
    from hbci.calibration.quantize import inspect_qdq, quantize_graph
    from hbci.config import ModelConfig
    from hbci.export.graphs import export_graph
    from hbci.model import HBCI
    from hbci.runtime.bundle import Bundle, Manifest
    from hbci.runtime.video import CLIP_MEAN, CLIP_STD

    torch.manual_seed(0)
    config = ModelConfig(num_frames=12, **CONFIGS[name])
    model = HBCI(config).eval()
    size = model.image_size
    fp32_path, int8_path = work / f"{name}_fp32.onnx", work / f"{name}_int8.onnx"
    t0 = time.perf_counter()
    export_graph(model, "video_encoder", fp32_path)
    export_s = time.perf_counter() - t0
    del model
    bundle_like = Bundle(work, Manifest(num_frames=12, max_words=32, image_size=size, mean=CLIP_MEAN, std=CLIP_STD,
                                        graphs={}))
    clips = _clips(bundle_like, calib_clips, work)
    t0 = time.perf_counter()
    quantize_graph(fp32_path, int8_path, CalibrationReader(clips), method="minmax")
    quant_s = time.perf_counter() - t0
    problems = inspect_qdq(int8_path)["problems"]

    feeds = next(clips.feeds(batch=min(batch, len(clips))))
    if len(feeds["frames"]) < batch:
        reps = -(-batch // len(feeds["frames"]))
        feeds = {k: np.concatenate([v] * reps)[:batch] for k, v in feeds.items()}
    flops = count_flops(fp32_path, feeds)
    total = sum(flops.values())

    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu["cores"]
    options.log_severity_level = 3
    sessions = {p: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for p, path in (("fp32", fp32_path), ("int8", int8_path))}
    outputs = {p: s.run(None, feeds) for p, s in sessions.items()}  # warm-up, and a sanity cosine
    cos = []
    for a, b in zip(outputs["fp32"], outputs["int8"]):
        a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
        if np.linalg.norm(a) > 0 and np.linalg.norm(b) > 0:
            cos.append(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    times = {"fp32": [], "int8": []}
    repeats = repeats * 5 if name == "small" else repeats  # milliseconds per call: more repetitions are cheap
    for _ in range(repeats):
        for p in ("fp32", "int8"):
            t0 = time.perf_counter()
            sessions[p].run(None, feeds)
            times[p].append(time.perf_counter() - t0)
    med = {p: statistics.median(v) for p, v in times.items()}
    ratios = [f / i for f, i in zip(times["fp32"], times["int8"])]
    floor_int8, floor_fp32 = total / cpu["peak_int8"], total / cpu["peak_fp32"]

    print(f"\n== {name}: {config.backbone}, {size} px, T=12, batch {batch} clip(s), ORT {ort.__version__}, "
          f"{cpu['cores']} threads")
    print(f"   export {export_s:.1f} s, MinMax calibration on {len(clips)} clips + quantization {quant_s:.1f} s, "
          f"Q/DQ structure problems: {len(problems)}")
    print(f"   MatMul/Gemm/Conv FLOPs per call: {total / 1e9:.3f} GFLOP "
          f"({', '.join(f'{k} {v / 1e9:.3f}' for k, v in flops.items())})")
    print(f"   output cosine INT8 vs FP32 (this batch): min {min(cos):.5f}")
    for p in ("fp32", "int8"):
        floor = floor_fp32 if p == "fp32" else floor_int8
        print(f"   {p}: median {med[p] * 1e3:9.2f} ms  ({batch / med[p]:8.2f} clips/s, "
              f"{total / med[p] / 1e9:7.1f} GFLOP/s)   floor {floor * 1e3:8.3f} ms -> measured/floor "
              f"{med[p] / floor:6.1f}x")
    print(f"   speed-up INT8 over FP32: {med['fp32'] / med['int8']:.2f}x (median of per-repetition ratios "
          f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}, {repeats} interleaved "
          f"repetitions)")
    return {"name": name, "gflop": total / 1e9, "median_ms": {p: v * 1e3 for p, v in med.items()},
            "speedup": med["fp32"] / med["int8"], "floor_ms": {"int8": floor_int8 * 1e3, "fp32": floor_fp32 * 1e3}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,vitb32", help="comma-separated: small, vitb32")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="clips per call (T=12 frames each)")
    parser.add_argument("--calib-clips", type=int, default=4, help="MinMax calibration clips (synthetic)")
    args = parser.parse_args(argv)
    cpu = cpu_facts()
    print(f"machine: {cpu['model']} ({cpu['vendor']}), {cpu['cores']} usable cores at {cpu['ghz']:.2f} GHz "
          f"({cpu['clock_from']}); int8 path {cpu['isa']}: {cpu['int8_ops_per_cycle']} int8 ops/cycle/core -> "
          f"peak {cpu['peak_int8'] / 1e12:.2f} TOPS; FP32 {cpu['fp32_flops_per_cycle']} FLOP/cycle/core -> "
          f"peak {cpu['peak_fp32'] / 1e12:.2f} TFLOP/s (estimates, see the module docstring)")
    with tempfile.TemporaryDirectory(prefix="hbci-bench-int8-") as tmp:
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            if name not in CONFIGS:
                parser.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
            bench(name, args.repeats, args.batch, args.calib_clips, Path(tmp), cpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
