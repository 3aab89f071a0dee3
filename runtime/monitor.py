"""Live monitoring: sliding windows over a video source, standing text queries, smoothed scores, hysteresis
thresholds, and alert events.

Windows. Window k spans [t0 + k * stride, t0 + k * stride + window) seconds of stream time (t0: the first frame's
time). It is complete when a frame at or past its end arrives (or the stream ends). Its T frames (the bundle's T)
are chosen among the frames inside the span by `sample_indices`, the training loader's uniform sampling, so a
window laid over a 24-frame, 8 fps, 3 s clip holds exactly the frames training saw for that clip (a test checks
it). A span with fewer than T frames gives all of them and a frame mask, as training pads short clips. A file
whose whole length is shorter than one window still gets one window (all its frames).

Live sources never queue work: when newer frames are already waiting, completed windows are skipped and only the
newest one is encoded (counted in `stats.windows_skipped`). A file without realtime pacing encodes every window,
in batches.

Scores. The queries are encoded once. Each window is encoded once and scored against all queries
(`Retriever.score`). Per query the score is smoothed by an exponential moving average,
`s_k = smoothing * s_(k-1) + (1 - smoothing) * raw_k` (smoothing 0: none).

Events. Per query, a hysteresis state machine: an event starts at the first window whose smoothed score is
>= `threshold_on`, and ends at the first later window whose smoothed score is < `threshold_off` (or when the
stream ends or monitoring stops). Two JSON-ready dicts per event, sharing an `id`:

  start: event "start", id, query, query_index, time (stream seconds when the alert is known: the triggering
         window's last frame), score (smoothed), raw_score, window_start, window_end (first and last frame time of
         the triggering window), threshold, source, bundle_id [, wall_time for live sources]
  end:   event "end", same keys, plus reason ("below_threshold" | "stream_end" | "stopped"); here window_start is
         the first frame of the event's first window and window_end the last frame of its last window at or above
         `threshold_off`: the extent of the match. duration = window_end - window_start. peak_score (smoothed),
         peak_raw_score and peak_window_start/peak_window_end (the window with the highest raw score: the best
         localisation). time and score are those of the window that ended it (for a stream end: the last window).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from hbci.runtime.errors import ConfigError, QueryError
from hbci.runtime.video import resize_center_crop, sample_indices

__all__ = ["Window", "Monitor", "MonitorStats", "default_thresholds", "DEFAULT_WINDOW", "DEFAULT_STRIDE",
           "DEFAULT_SMOOTHING"]

DEFAULT_WINDOW = 3.0  # seconds: the synthetic clips the demo model learned from are 24 frames at 8 fps
DEFAULT_STRIDE = 0.25  # chosen on tuning streams (bench_alerts --seed 0): recall 0.40 -> 0.58 against 0.5 s
DEFAULT_SMOOTHING = 0.0
_EPS = 1e-6  # seconds: frame times such as k / 30 are not exact in binary


@dataclass(frozen=True)
class Window:
    """A window's sampled frames, ready for `Retriever.encode_video`."""

    index: int
    start: float  # stream time of the first frame inside the span
    end: float  # stream time of the last frame inside the span
    frames: np.ndarray  # uint8 [T, S, S, 3]: resized and centre-cropped, zero where masked
    mask: np.ndarray  # bool [T]
    count: int  # source frames inside the span (T are sampled from these)
    arrival: float  # time.monotonic() of the frame that completed the window


@dataclass
class MonitorStats:
    frames: int = 0
    windows: int = 0  # windows encoded and scored
    windows_skipped: int = 0  # live only: windows passed over to stay current
    events: int = 0
    encode_seconds: float = 0.0  # encode_video + score, summed
    started: float = field(default_factory=time.monotonic)
    window_latency: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))
    event_latency: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))

    def summary(self) -> dict:
        """Throughput and latency figures (seconds; latencies from the arrival of the frame that completed a
        window to its scores, and to an event's emission)."""
        elapsed = max(time.monotonic() - self.started, 1e-9)

        def quantiles(values) -> dict:
            if not values:
                return {}
            q = np.quantile(np.asarray(values), [0.5, 0.95, 1.0])
            return {"p50": float(q[0]), "p95": float(q[1]), "max": float(q[2])}

        return {"frames": self.frames, "windows": self.windows, "windows_skipped": self.windows_skipped,
                "events": self.events, "seconds": elapsed, "frames_per_s": self.frames / elapsed,
                "windows_per_s": self.windows / elapsed,
                "encode_ms_per_window": 1000 * self.encode_seconds / max(self.windows, 1),
                "window_latency_s": quantiles(self.window_latency), "event_latency_s": quantiles(self.event_latency)}


def default_thresholds(manifest: dict) -> tuple[float, float] | None:
    """(on, off) from a bundle manifest's `score_stats.threshold` (calibrated on held-out data), or None."""
    threshold = (manifest.get("score_stats") or {}).get("threshold") or {}
    if "on" not in threshold:
        return None
    on = float(threshold["on"])
    return on, float(threshold.get("off", on))


@dataclass
class _Active:
    """An open event of one query."""

    id: int
    start: float
    end: float
    peak_score: float
    peak_raw: float
    peak_window: tuple[float, float]


class Monitor:
    """Watch a source for standing text queries. See the module docstring for windows, scores and events.

        monitor = Monitor(Retriever.load(bundle), ["a red circle moves left"])
        for event in monitor.run(open_source("file", "video.mp4")):
            print(event)
    """

    def __init__(self, retriever, queries: Sequence[str], *, window: float = DEFAULT_WINDOW,
                 stride: float = DEFAULT_STRIDE, smoothing: float = DEFAULT_SMOOTHING,
                 threshold_on: float | None = None, threshold_off: float | None = None, batch: int = 8):
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        if not queries:
            raise QueryError("give at least one query")
        for name, value in (("window", window), ("stride", stride)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (math.isfinite(smoothing) and 0 <= smoothing < 1):
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing!r}")
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        if threshold_on is None:
            calibrated = default_thresholds(retriever.bundle.manifest)
            if calibrated is None:
                raise ConfigError(f"bundle {retriever.bundle_id} has no calibrated thresholds (its manifest has no "
                                  f"score_stats: export it with --data); give a threshold (--threshold)")
            threshold_on, default_off = calibrated
            threshold_off = default_off if threshold_off is None else threshold_off
        threshold_off = threshold_on if threshold_off is None else threshold_off
        if not (math.isfinite(threshold_on) and math.isfinite(threshold_off)):
            raise ConfigError("thresholds must be finite numbers")
        if threshold_off > threshold_on:
            raise ConfigError(f"threshold_off ({threshold_off:g}) must not exceed threshold_on ({threshold_on:g})")
        self.retriever, self.queries = retriever, queries
        self.window, self.stride, self.smoothing, self.batch = float(window), float(stride), float(smoothing), batch
        self.threshold_on, self.threshold_off = float(threshold_on), float(threshold_off)
        self.num_frames, self.image_size = retriever.bundle.num_frames, retriever.bundle.image_size
        self.text = retriever.encode_text(queries)  # standing queries: encoded once
        self.stats = MonitorStats()
        self.scores = np.full(len(queries), np.nan)  # latest smoothed score per query (for overlays)
        self.raw_scores = np.full(len(queries), np.nan)
        self.active: list[_Active | None] = [None] * len(queries)
        self._next_id = 0

    @property
    def bundle_id(self) -> str:
        return self.retriever.bundle_id

    # ------------------------------------------------------------------------------------------- windows
    def _window(self, k: int, t0: float, buffer: collections.deque, arrival: float) -> Window:
        begin = t0 + k * self.stride
        span = [(t, crop) for t, crop in buffer if begin - _EPS <= t < begin + self.window - _EPS]
        t_frames = self.num_frames
        frames = np.zeros((t_frames, self.image_size, self.image_size, 3), np.uint8)
        mask = np.zeros(t_frames, bool)
        chosen = sample_indices(len(span), t_frames)
        for j, i in enumerate(chosen):
            frames[j] = span[i][1]
        mask[: len(chosen)] = True
        start, end = (span[0][0], span[-1][0]) if span else (begin, begin)
        return Window(k, start, end, frames, mask, len(span), arrival)

    def windows(self, source, *, stop: threading.Event | None = None,
                on_frame: Callable | None = None) -> Iterator[list[Window]]:
        """Yield lists of completed windows (one list per encoding batch), in stream order."""
        stop = stop or threading.Event()
        live = bool(getattr(source, "live", False) or getattr(source, "realtime", False))
        buffer: collections.deque = collections.deque()  # (time, crop) of frames not yet behind every window
        ready: list[tuple[int, float]] = []  # (window index, arrival of the frame that completed it)
        t0, k, last_arrival = None, 0, 0.0
        for frame in source:
            self.stats.frames += 1
            if on_frame is not None:
                on_frame(frame)
            if t0 is None:
                t0 = frame.time
            buffer.append((frame.time, resize_center_crop(frame.image[None], self.image_size)[0]))
            last_arrival = frame.arrival
            while frame.time >= t0 + k * self.stride + self.window - _EPS:
                ready.append((k, frame.arrival))
                k += 1
            if ready and live:
                if source.pending():
                    pass  # newer frames are waiting: catch up before encoding anything
                else:
                    self.stats.windows_skipped += len(ready) - 1
                    newest, arrival = ready[-1]
                    yield [self._window(newest, t0, buffer, arrival)]
                    ready = []
            elif len(ready) >= self.batch:
                yield [self._window(i, t0, buffer, a) for i, a in ready]
                ready = []
            oldest = t0 + (ready[0][0] if ready else k) * self.stride
            while buffer and buffer[0][0] < oldest - _EPS:
                buffer.popleft()
            if stop.is_set():
                break
        if t0 is None:
            return
        # At the end no frame past the last window's end will come: a window whose last frame is the stream's
        # last frame is complete when that frame's display interval reaches the window's end.
        times = [t for t, _ in list(buffer)[-5:]]
        period = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        while buffer and buffer[-1][0] + period >= t0 + k * self.stride + self.window - _EPS:
            ready.append((k, last_arrival))
            k += 1
        if live and len(ready) > 1:
            self.stats.windows_skipped += len(ready) - 1
            ready = ready[-1:]
        if ready:
            yield [self._window(i, t0, buffer, a) for i, a in ready]
        elif k == 0 and buffer:
            # Shorter than one window: one window of everything there was, so short files are still searched.
            yield [self._window(0, t0, buffer, last_arrival)]

    # ------------------------------------------------------------------------------------------- events
    def run(self, source, *, stop: threading.Event | None = None, on_frame: Callable | None = None,
            on_window: Callable | None = None) -> Iterator[dict]:
        """Monitor `source` until it ends or `stop` is set; yield event dicts (see the module docstring).

        on_frame(frame) is called for every frame as it arrives; on_window(window) after each window is scored
        and its events were yielded (`scores` / `raw_scores` then hold its values).
        """
        last: Window | None = None
        self.stats.started = time.monotonic()
        for batch in self.windows(source, stop=stop, on_frame=on_frame):
            begin = time.perf_counter()
            video = self.retriever.encode_video(np.stack([w.frames for w in batch]), np.stack([w.mask for w in batch]))
            raw = self.retriever.score(self.text, video)  # [queries, windows]
            self.stats.encode_seconds += time.perf_counter() - begin
            done = time.monotonic()
            for j, window in enumerate(batch):
                self.stats.windows += 1
                self.stats.window_latency.append(done - window.arrival)
                last = window
                yield from self._update(window, raw[:, j], source)
                if on_window is not None:
                    on_window(window)
        reason = "stopped" if stop is not None and stop.is_set() else "stream_end"
        for q, active in enumerate(self.active):
            if active is not None and last is not None:
                yield self._end(q, active, last, self.scores[q], reason, source)

    def _update(self, window: Window, raw: np.ndarray, source) -> Iterator[dict]:
        first = np.isnan(self.scores)
        smoothed = np.where(first, raw, self.smoothing * self.scores + (1 - self.smoothing) * raw)
        self.scores, self.raw_scores = smoothed, raw
        for q in range(len(self.queries)):
            score, active = float(smoothed[q]), self.active[q]
            if active is None:
                if score >= self.threshold_on:
                    self.active[q] = _Active(self._next_id, window.start, window.end, score, float(raw[q]),
                                             (window.start, window.end))
                    self._next_id += 1
                    self.stats.events += 1
                    event = self._base("start", q, window, score, float(raw[q]), source)
                    self.stats.event_latency.append(time.monotonic() - window.arrival)
                    yield event
            elif score >= self.threshold_off:
                active.end = window.end
                active.peak_score = max(active.peak_score, score)
                if raw[q] > active.peak_raw:
                    active.peak_raw, active.peak_window = float(raw[q]), (window.start, window.end)
            else:
                yield self._end(q, active, window, score, "below_threshold", source)

    def _base(self, kind: str, q: int, window: Window, score: float, raw: float, source) -> dict:
        active = self.active[q]
        event = {"event": kind, "id": active.id, "query": self.queries[q], "query_index": q,
                 "time": round(window.end, 6), "score": round(score, 6), "raw_score": round(raw, 6),
                 "window_start": round(window.start, 6), "window_end": round(window.end, 6),
                 "threshold": self.threshold_on if kind == "start" else self.threshold_off,
                 "source": getattr(source, "name", str(source)), "bundle_id": self.bundle_id}
        if getattr(source, "live", False):
            event["wall_time"] = round(time.time(), 3)
        return event

    def _end(self, q: int, active: _Active, window: Window, score: float, reason: str, source) -> dict:
        event = self._base("end", q, window, float(score), float(self.raw_scores[q]), source)
        event.update(window_start=round(active.start, 6), window_end=round(active.end, 6),
                     duration=round(active.end - active.start, 6), reason=reason,
                     peak_score=round(active.peak_score, 6), peak_raw_score=round(active.peak_raw, 6),
                     peak_window_start=round(active.peak_window[0], 6),
                     peak_window_end=round(active.peak_window[1], 6))
        self.active[q] = None
        return event
