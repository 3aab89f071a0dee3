"""Encoder throughput: torch eager vs ONNX Runtime FP32 (and FP16), side by side in one run.

    python benchmarks/bench_export.py [--configs small,vitb32] [--repeats 5]

Random-weight models: the shipped small config ("hbci-tiny", 32 px) and a ViT-B/32-sized one (open_clip
"ViT-B-32", 224 px, T=12, L=32). Repetitions of the two back ends are interleaved so that machine noise hits both;
what counts is the ratio, printed per encoder.
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
import torch  # noqa: E402

from hbci.config import ModelConfig  # noqa: E402
from hbci.export.graphs import export_graph  # noqa: E402
from hbci.export.precision import convert_to_fp16  # noqa: E402
from hbci.model import HBCI  # noqa: E402
from hbci.runtime.backends import OrtBackend  # noqa: E402

CONFIGS = {
    "small": (ModelConfig(), 16, 64),
    "vitb32": (ModelConfig(backbone="ViT-B-32"), 4, 64),
}


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench(name: str, repeats: int, workdir: Path) -> None:
    config, video_batch, text_batch = CONFIGS[name]
    torch.manual_seed(0)
    model = HBCI(config).eval()
    size, t, words = model.image_size, config.num_frames, config.max_words
    frames = torch.randn(video_batch, t, 3, size, size)
    frame_mask = torch.ones(video_batch, t)
    ids = torch.randint(1, 49000, (text_batch, words), dtype=torch.int32)
    token_mask = torch.ones(text_batch, words)
    feeds = {"video_encoder": {"frames": frames.numpy(), "frame_mask": frame_mask.numpy()},
             "text_encoder": {"token_ids": ids.numpy(), "token_mask": token_mask.numpy()}}
    eager = {"video_encoder": lambda: model.encode_video(frames, frame_mask),
             "text_encoder": lambda: model.encode_text(ids, token_mask)}
    units = {"video_encoder": (video_batch, "clips"), "text_encoder": (text_batch, "texts")}
    print(f"\n== {name}: {config.backbone}, {size} px, T={t}, L={words}, torch threads {torch.get_num_threads()}")
    for graph in ("video_encoder", "text_encoder"):
        fp32 = export_graph(model, graph, workdir / f"{name}_{graph}.onnx")
        fp16 = convert_to_fp16(fp32, workdir / f"{name}_{graph}.fp16.onnx")
        ort32 = OrtBackend(fp32, ["CPUExecutionProvider"])
        ort16 = OrtBackend(fp16, ["CPUExecutionProvider"], optimization="basic")
        times = {"torch": [], "ort_fp32": [], "ort_fp16": []}
        with torch.no_grad():
            for _ in range(repeats):  # interleaved
                times["torch"] += timed(eager[graph], 1)
                times["ort_fp32"] += timed(lambda: ort32.run(feeds[graph]), 1)
                times["ort_fp16"] += timed(lambda: ort16.run(feeds[graph]), 1)
        n, unit = units[graph]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{graph:14s} torch eager {n / med['torch']:8.1f} {unit}/s | onnxruntime fp32 "
              f"{n / med['ort_fp32']:8.1f} {unit}/s (x{med['torch'] / med['ort_fp32']:.2f} vs torch) | "
              f"onnxruntime fp16 {n / med['ort_fp16']:8.1f} {unit}/s (x{med['torch'] / med['ort_fp16']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,vitb32")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            bench(name, args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
