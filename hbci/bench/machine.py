"""The machine a benchmark ran on: CPU model, usable cores, clock, ISA flags, GPU, load, package versions; and the
compute peaks the encoder floors are estimated from (no torch).

Peak ops/s = usable cores x clock x ops per cycle per core. The clock is the highest "cpu MHz" in /proc/cpuinfo
(what the VM reports, not a guaranteed all-core boost). Ops per cycle come from the ISA flags:
  INT8: AMX (amx_int8) 2048; avx512_vnni 256 on Intel (two 512-bit VPDPBUSD per cycle, 64 MACs each), 128 on
        AMD Zen 4 (512-bit VNNI at one per cycle); avx_vnni 128 (two 256-bit); avx512bw without VNNI 128, avx2 64
        (the VPMADDUBSW/VPMADDWD/VPADDD sequence, about half the VNNI rate); otherwise 16.
  FP32: avx512f 64 (two 16-lane FMAs; AMD Zen 4 the same through its 256-bit pipes), avx2+fma 32, else 8.
  FP16: avx512_fp16 twice the FP32 rate; otherwise ONNX Runtime's CPU kernels compute FP16 graphs at the FP32
        rate or below, so the FP16 floor is the FP32 floor.
These are upper bounds on what the cores can do; a measured time divided by the floor says how far a back end is
from the hardware.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["describe", "cpu_facts", "peak_ops", "ISA_FLAGS", "PACKAGES"]

# The flags that decide which integer and float kernels a CPU can run.
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_int8", "amx_bf16")
PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "tokenizers", "torch",
            "open_clip_torch", "onnx", "tensorrt")


def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def cpu_facts(cpuinfo: str | None = None, cores: int | None = None) -> dict:
    """CPU model, vendor, usable cores, clock and ISA flags, with the INT8/FP32/FP16 ops per cycle per core."""
    info = _cpuinfo() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    mhz: list[float] = []
    vendor = model = ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "cpu MHz":
            mhz.append(float(value))
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key == "model name" and not model:
            model = value
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    amd = vendor == "AuthenticAMD"
    if "amx_int8" in flags:
        int8, int8_path = 2048, "amx_int8"
    elif "avx512_vnni" in flags:
        int8, int8_path = (128, "avx512_vnni (AMD: 512-bit VNNI at 1/cycle)") if amd else (256, "avx512_vnni")
    elif "avx_vnni" in flags:
        int8, int8_path = 128, "avx_vnni"
    elif "avx512bw" in flags:
        int8, int8_path = 128, "avx512bw (no VNNI)"
    elif "avx2" in flags:
        int8, int8_path = 64, "avx2 (no VNNI)"
    else:
        int8, int8_path = 16, "no SIMD int8 dot product found"
    fp32 = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    fp16 = 2 * fp32 if "avx512_fp16" in flags else fp32
    return {"model": model or platform.processor() or "unknown", "vendor": vendor or "unknown", "cores": cores,
            "logical_cpus": os.cpu_count(), "ghz": max(mhz) / 1000 if mhz else 2.0,
            "clock_from": "max cpu MHz in /proc/cpuinfo" if mhz else "assumed 2.0 GHz (no /proc/cpuinfo clock)",
            "isa": {f: f in flags for f in ISA_FLAGS}, "int8_path": int8_path,
            "ops_per_cycle": {"int8": int8, "fp32": fp32, "fp16": fp16}}


def peak_ops(cpu: dict, precision: str) -> float:
    """Peak multiply-add ops per second (2 per MAC) of all usable cores at `precision` (int8, fp16, fp32)."""
    return cpu["cores"] * cpu["ghz"] * 1e9 * cpu["ops_per_cycle"][precision]


def _gpus() -> list[str]:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            return [line.strip() for line in out.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            return []
    tegra = Path("/proc/device-tree/model")  # Jetson boards have no nvidia-smi
    return [tegra.read_text(errors="replace").strip("\x00 \n")] if tegra.exists() else []


def _versions() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def describe() -> dict:
    """Everything about this machine a reader needs to compare our figures with theirs."""
    cpu = cpu_facts()
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = []
    return {"cpu": cpu, "memory_gib": _memory_gib(), "gpus": _gpus(), "onnxruntime_providers": providers,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "python": sys.version.split()[0], "platform": platform.platform(), "packages": _versions(),
            "peaks": {p: peak_ops(cpu, p) for p in ("fp32", "fp16", "int8")}}
