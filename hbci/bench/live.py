"""Live: windows/s and event latency of the monitor on the demo stream (no torch).

The demo stream's clips re-rendered at camera-like settings (30 fps, 480 x 480 by default) and run through the
monitor with the standing demo queries, three ways: the encoder and scorer alone (windows/s at batch 1, as live,
and batch 8, as files), the whole pipeline on the file as fast as it goes (decode, crop, encode, score, events),
and the file paced like a camera (newest window only, drop-oldest buffer) where the latencies are measured: from
the arrival of the frame that completes a window to its scores and to its event. Each runs with the runtime's
sessions (spinning off) and with spinning on (the setting before), one after the other.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["TITLE", "NEEDS_TORCH", "run", "markdown", "measure"]

TITLE = "Live monitoring"
NEEDS_TORCH = False


def _encoder_rate(retriever, queries, batch: int, seconds: float) -> float:
    t, s = retriever.bundle.num_frames, retriever.bundle.image_size
    frames = np.random.default_rng(0).integers(0, 255, (batch, t, s, s, 3), dtype=np.uint8)
    text = retriever.encode_text(list(queries))
    retriever.score(text, retriever.encode_video(frames))  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        retriever.score(text, retriever.encode_video(frames))
        count += batch
    return count / (time.perf_counter() - start)


def _monitor_pass(retriever, queries, path: Path, realtime: bool, known: list[dict], stride: float) -> dict:
    from hbci.runtime.alerts import Interval, alerts_from_events, overlap
    from hbci.runtime.demo import occurrences
    from hbci.runtime.monitor import Monitor
    from hbci.runtime.sources import open_source

    monitor = Monitor(retriever, list(queries), stride=stride)
    start = time.monotonic()
    with open_source("file", path, realtime=realtime) as source:
        events = list(monitor.run(source))
    wall = time.monotonic() - start
    summary = monitor.stats.summary()
    truths, _ = occurrences(queries[0], known)
    starts = [e for e in events if e["event"] == "start" and e["query"] == queries[0]]
    delays = []
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


def measure(bundle: str | Path | None = None, precision: str | None = None, fps: float = 30.0, size: int = 480,
            stride: float | None = None, realtime: bool = True, seconds: float = 3.0) -> dict:
    """Every live figure for one bundle (default: the shipped demo bundle), both thread settings."""
    from hbci.runtime.bundle import load_bundle
    from hbci.runtime.demo import BUNDLE_DIR, DEMO_QUERIES, demo_segments, known_clip
    from hbci.runtime.monitor import DEFAULT_STRIDE
    from hbci.runtime.retriever import Retriever
    from hbci.synth import make_stream

    bundle = Path(bundle) if bundle else BUNDLE_DIR
    stride = DEFAULT_STRIDE if stride is None else stride
    precisions = load_bundle(bundle, verify_hashes=False).precisions
    precision = precision or ("fp32" if "fp32" in precisions else precisions[0])
    now = Retriever.load(bundle, backend="onnxruntime-cpu", precision=precision)
    runtimes = {"now": now,
                "before": Retriever(now.bundle, {g: b.reopened(spinning=True) for g, b in now.backends.items()},
                                    precision)}
    result = {"bundle_id": now.bundle_id, "precision": precision, "backend": now.backend_name,
              "queries": list(DEMO_QUERIES), "stream": {"fps": fps, "size": size}, "stride": stride,
              "settings": {"before": {}, "now": {}}}
    with tempfile.TemporaryDirectory(prefix="hbci-bench-live-") as tmp:
        path = Path(tmp) / "live.mp4"
        found = make_stream(path, demo_segments(), fps, size, np.random.default_rng(2028),
                            clip_frames=int(round(3.0 * fps)))
        known = [known_clip(s) for s in found]
        result["stream"]["seconds"] = max(k["end_s"] for k in known) + 4.0
        # The two settings take turns measurement by measurement, so slow drift of the machine hits both.
        for key, batch in (("encoder_batch1", 1), ("encoder_batch8", 8)):
            for setting, retriever in runtimes.items():
                result["settings"][setting][key] = _encoder_rate(retriever, DEMO_QUERIES, batch, seconds)
        passes = ("offline", "live") if realtime else ("offline",)
        for name in passes:
            for setting, retriever in runtimes.items():
                result["settings"][setting][name] = _monitor_pass(retriever, DEMO_QUERIES, path, name == "live",
                                                                  known, stride)
    return result


def run(ctx) -> dict:
    if ctx.quick:
        return measure(fps=8.0, size=128, realtime=False, seconds=0.5)
    return measure()


def _ms(latency: dict | None, key: str) -> str:
    return f"{1000 * latency[key]:.0f}" if latency else "n/a"


def markdown(result: dict, machine: dict) -> list[str]:
    s = result["stream"]
    lines = [f"Bundle {result['bundle_id']} ({result['precision']}, {result['backend']}), the demo stream "
             f"({s.get('seconds', 0):.0f} s) at {s['size']}x{s['size']}, {s['fps']:g} fps, window stride "
             f"{result['stride']} s, {len(result['queries'])} standing queries.", "",
             "| figure | spinning off (now) | spinning on (before) | now / before |", "|---|---:|---:|---:|"]
    now, before = result["settings"]["now"], result["settings"]["before"]

    def row(label: str, a: float, b: float, higher_is_better: bool = True, digits: int = 1) -> None:
        ratio = (a / b if higher_is_better else b / a) if a and b else float("nan")
        lines.append(f"| {label} | {a:,.{digits}f} | {b:,.{digits}f} | {ratio:.2f} |")

    row("encoder + scorer alone, windows/s at batch 1", now["encoder_batch1"], before["encoder_batch1"])
    row("encoder + scorer alone, windows/s at batch 8", now["encoder_batch8"], before["encoder_batch8"])
    for name in ("offline", "live"):
        if name not in now:
            continue
        a, b = now[name], before[name]
        label = "file as fast as it goes" if name == "offline" else "camera-paced stream"
        row(f"{label}: windows/s", a["windows_per_s"], b["windows_per_s"], digits=2)
        row(f"{label}: encode + score ms per window", a["encode_ms_per_window"], b["encode_ms_per_window"],
            higher_is_better=False)
        if name == "live":
            for key, title in (("window_latency_s", "window latency"), ("event_latency_s", "event latency")):
                for q in ("p50", "p95", "max"):
                    if a[key] and b[key]:
                        row(f"{label}: {title} {q} (ms)", 1000 * a[key][q], 1000 * b[key][q], higher_is_better=False,
                            digits=0)
            lines.append(f"| {label}: frames dropped / windows skipped | {a['frames_dropped']} / "
                         f"{a['windows_skipped']} | {b['frames_dropped']} / {b['windows_skipped']} | |")
            lines.append(f"| {label}: alerts per query | {a['alerts']} | {b['alerts']} | |")
            delays = [", ".join(f"{d:+.2f}" for d in r["detection_delay_s"]) or "none" for r in (a, b)]
            lines.append(f"| {label}: alert time after each known event's end (s, stream time) | {delays[0]} | "
                         f"{delays[1]} | |")
    lines.append("")
    lines.append("now / before > 1 means the runtime's setting (spinning off) is faster.")
    lines.append("")
    return lines
