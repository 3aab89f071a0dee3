"""Live monitoring throughput and latency of a bundle on this machine (default: the shipped demo bundle).

    python benchmarks/bench_live.py [--bundle B] [--fps 30] [--size 480] [--json out.json]

Three measurements, on the demo stream re-rendered at camera-like settings (--fps, --size x --size pixels):
  1. encoder: windows/s of encode_video + score alone, at batch 1 (live) and batch 8 (files);
  2. offline file: the whole pipeline (decode, crop, encode, score, events) as fast as it goes: frames/s and
     windows/s;
  3. live: the file paced like a camera (realtime) through the live path (newest window only, drop-oldest
     buffer): windows/s, frames dropped and windows skipped (0 when the machine keeps up), the latency from the
     arrival of the frame that completes a window to its scores and to its event, and the detection delay
     (stream time from the end of a known event to its alert).
No torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hbci.runtime.alerts import Interval, alerts_from_events, overlap
from hbci.runtime.demo import BUNDLE_DIR, DEMO_QUERIES, demo_segments, known_clip, occurrences
from hbci.runtime.monitor import DEFAULT_STRIDE, Monitor
from hbci.runtime.retriever import Retriever
from hbci.runtime.sources import open_source
from hbci.synth import make_stream


def encoder_rate(retriever: Retriever, batch: int, seconds: float = 3.0) -> float:
    t, s = retriever.bundle.num_frames, retriever.bundle.image_size
    frames = np.random.default_rng(0).integers(0, 255, (batch, t, s, s, 3), dtype=np.uint8)
    text = retriever.encode_text(list(DEMO_QUERIES))
    retriever.score(text, retriever.encode_video(frames))  # warm up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        retriever.score(text, retriever.encode_video(frames))
        count += batch
    return count / (time.perf_counter() - start)


def monitor_pass(retriever: Retriever, path: Path, realtime: bool, known: list[dict], stride: float) -> dict:
    monitor = Monitor(retriever, list(DEMO_QUERIES), stride=stride)
    start = time.monotonic()
    with open_source("file", path, realtime=realtime) as source:
        events = list(monitor.run(source))
    wall = time.monotonic() - start
    summary = monitor.stats.summary()
    delays = []
    truths, _ = occurrences(DEMO_QUERIES[0], known)
    starts = [e for e in events if e["event"] == "start" and e["query"] == DEMO_QUERIES[0]]
    for truth in truths:
        hits = [e for e in starts if overlap(Interval(e["window_start"], e["window_end"]), truth) > 0]
        if hits:
            delays.append(hits[0]["time"] - truth.end)
    return {"wall_s": wall, "frames": summary["frames"], "frames_per_s": summary["frames"] / wall,
            "windows": summary["windows"], "windows_per_s": summary["windows"] / wall,
            "windows_skipped": summary["windows_skipped"], "frames_dropped": source.stats.frames_dropped,
            "encode_ms_per_window": summary["encode_ms_per_window"],
            "window_latency_s": summary["window_latency_s"], "event_latency_s": summary["event_latency_s"],
            "alerts": {q: len(v) for q, v in alerts_from_events(events).items()},
            "detection_delay_s": delays}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(BUNDLE_DIR))
    ap.add_argument("--precision", default=None, help="default: fp32 if the bundle has it, else its first")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", type=int, default=480)
    ap.add_argument("--stride", type=float, default=DEFAULT_STRIDE)
    ap.add_argument("--skip-live", action="store_true", help="leave out the real-time pass (it takes the "
                                                             "stream's length in wall time)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    from hbci.runtime.bundle import load_bundle

    precisions = load_bundle(args.bundle, verify_hashes=False).precisions
    precision = args.precision or ("fp32" if "fp32" in precisions else precisions[0])
    retriever = Retriever.load(args.bundle, precision=precision)
    result = {"bundle_id": retriever.bundle_id, "precision": precision, "backend": retriever.backend_name,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "stream": {"fps": args.fps, "size": args.size}, "stride": args.stride}
    result["encoder_windows_per_s"] = {"batch1": encoder_rate(retriever, 1), "batch8": encoder_rate(retriever, 8)}
    with tempfile.TemporaryDirectory(prefix="hbci-bench-live-") as tmp:
        path = Path(tmp) / "live.mp4"
        clip_frames = int(round(3.0 * args.fps))
        found = make_stream(path, demo_segments(), args.fps, args.size, np.random.default_rng(2028),
                            clip_frames=clip_frames)
        known = [known_clip(s) for s in found]
        result["offline"] = monitor_pass(retriever, path, False, known, args.stride)
        if not args.skip_live:
            result["live"] = monitor_pass(retriever, path, True, known, args.stride)

    e = result["encoder_windows_per_s"]
    print(f"bundle {result['bundle_id']} ({precision}) on {result['backend']}, {result['machine']}; stream "
          f"{args.size}x{args.size} at {args.fps:g} fps, window 3 s, stride {args.stride} s, "
          f"{len(DEMO_QUERIES)} queries")
    print(f"encoder + scorer alone: {e['batch1']:.1f} windows/s at batch 1, {e['batch8']:.1f} windows/s at batch 8")
    for name in ("offline", "live"):
        if name not in result:
            continue
        r = result[name]
        wl, el = r["window_latency_s"], r["event_latency_s"]
        line = (f"{name:8s}: {r['frames_per_s']:.1f} frames/s, {r['windows_per_s']:.2f} windows/s "
                f"({r['windows']} windows, {r['windows_skipped']} skipped, {r['frames_dropped']} frames dropped), "
                f"{r['encode_ms_per_window']:.1f} ms encode+score per window")
        if wl:
            line += f"; window latency p50 {1000 * wl['p50']:.0f} ms p95 {1000 * wl['p95']:.0f} ms"
        if el:
            line += f"; event latency p50 {1000 * el['p50']:.0f} ms max {1000 * el['max']:.0f} ms"
        if r["detection_delay_s"]:
            line += (f"; detection delay after the event's end {', '.join(f'{d:+.2f}' for d in r['detection_delay_s'])}"
                     f" s (stream time)")
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
