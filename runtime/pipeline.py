"""A run pipeline: one video source, a retriever, a monitor with its standing queries, and sinks that receive the
frames, windows and events. `hbci-run` drives one in the calling thread (`run`); a service drives several, one
per source, each in a thread of its own (`start`, `stop`, `drain`), and may share one retriever between them.

    pipeline = Pipeline(SourceSpec("file", "clip.mp4"), retriever, ["a red circle moves left"],
                        sinks=[JsonLinesSink(sys.stdout)])
    pipeline.run()                       # or pipeline.start() ... pipeline.add_query("...") ... pipeline.drain()

Sinks get, in the pipeline's thread and in order: every frame, every scored window, and every event dict the
monitor yields (the same dict object passes through the sinks in their list order, so a clip recorder placed
before the JSON writer adds its "clip" key to the line written). Queries can be added and removed from any thread
while the pipeline runs; removing a query with an open event ends it with reason "removed". Stopping drains: open
events end with reason "stopped", every sink is closed, the source is released.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import IO, Sequence

from hbci.runtime.errors import ConfigError
from hbci.runtime.gallery import DEFAULT_FALSE_ALARM_RATE
from hbci.runtime.monitor import DEFAULT_SMOOTHING, DEFAULT_STRIDE, DEFAULT_WINDOW, Monitor, Window

__all__ = ["SourceSpec", "MonitorSettings", "Sink", "JsonLinesSink", "ClipSink", "OverlaySink", "RecentEvents",
           "Pipeline", "summary_line"]

log = logging.getLogger("hbci")


@dataclass(frozen=True)
class SourceSpec:
    """What to open: `hbci.runtime.sources.open_source(kind, target, realtime=..., max_fps=...)`."""

    kind: str  # "camera", "file", "url" or "pipeline"
    target: str
    realtime: bool = False
    max_fps: float = 0.0

    def open(self):
        from hbci.runtime.sources import open_source

        return open_source(self.kind, self.target, realtime=self.realtime, max_fps=self.max_fps)


@dataclass(frozen=True)
class MonitorSettings:
    """The monitor's settings (see `hbci.runtime.monitor.Monitor`)."""

    window: float = DEFAULT_WINDOW
    stride: float = DEFAULT_STRIDE
    smoothing: float = DEFAULT_SMOOTHING
    threshold_on: float | None = None  # None: the bundle's calibrated thresholds
    threshold_off: float | None = None
    batch: int = 8
    # per-query thresholds from the bundle's gallery at this false-alarm rate (None: the global thresholds)
    false_alarm_rate: float | None = DEFAULT_FALSE_ALARM_RATE
    contrast: bool = False  # the contrast gate: a query starts an event only where it outscores its opposites


class Sink:
    """Receives what a pipeline produces. Every method is called from the pipeline's thread; override what you
    need. `start` comes once the source is open and the monitor exists, `close` always comes last. A sink must
    not block (queue network work to a thread of its own); an exception in a sink ends the run, and a pipeline
    started with `start` keeps it in `error`."""

    def start(self, pipeline: "Pipeline") -> None:
        pass

    def frame(self, frame) -> None:
        pass

    def window(self, window: Window) -> None:
        pass

    def event(self, event: dict) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLinesSink(Sink):
    """One JSON object per event and line, flushed at once."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def event(self, event: dict) -> None:
        self.stream.write(json.dumps(event) + "\n")
        self.stream.flush()


class RecentEvents(Sink):
    """Keeps the last `maxlen` events (all with None), for reports and for a service's recent-events list."""

    def __init__(self, maxlen: int | None = None):
        self._events: collections.deque = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def event(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)

    def events(self) -> list[dict]:
        with self._lock:
            return list(self._events)


class ClipSink(Sink):
    """Saves each event's frames as an mp4v file (`hbci.runtime.clips.ClipRecorder`) and adds its path to the
    event as "clip". Place it before the sinks that should see that key."""

    def __init__(self, folder, max_seconds: float = 60.0, max_side: int = 640):
        self.folder, self.max_seconds, self.max_side = folder, max_seconds, max_side
        self.recorder = None

    def start(self, pipeline: "Pipeline") -> None:
        from hbci.runtime.clips import ClipRecorder

        settings, source = pipeline.settings, pipeline.source
        # Frames are kept for a window plus the windows a batch reads ahead of the newest scored one.
        ahead = 1 if source.realtime else settings.batch
        self.recorder = ClipRecorder(self.folder, keep_seconds=settings.window + ahead * settings.stride + 1.0,
                                     fps=source.fps, max_seconds=self.max_seconds, max_side=self.max_side)

    def frame(self, frame) -> None:
        self.recorder.add_frame(frame)

    def window(self, window: Window) -> None:
        self.recorder.advance(window.end)

    def event(self, event: dict) -> None:
        self.recorder.handle(event)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


class OverlaySink(Sink):
    """The `--show` window (`hbci.runtime.overlay.Display`); q or Esc stops the pipeline. Opening the window
    happens here, at construction, so a missing display is reported before anything else starts."""

    def __init__(self, title: str = "hbci-run"):
        from hbci.runtime.overlay import Display

        self.display = Display(title)
        self.pipeline: Pipeline | None = None

    def start(self, pipeline: "Pipeline") -> None:
        self.pipeline = pipeline

    def frame(self, frame) -> None:
        if not self.display.show(frame, self.pipeline.monitor):
            self.pipeline.stop()

    def close(self) -> None:
        if self.display is not None:
            self.display.close()
            self.display = None


class Pipeline:
    """source + retriever + monitor + sinks. See the module docstring.

    `source` is a `SourceSpec` (opened by `open`/`run`; after a run ends, another run opens it again, keeping the
    standing queries) or an already opened `hbci.runtime.sources.Source` (one run). `stop` is an optional event
    shared with the caller (a signal handler may set it; `stop()` also interrupts the source).
    """

    def __init__(self, source, retriever, queries: Sequence[str] = (), *, settings: MonitorSettings = MonitorSettings(),
                 sinks: Sequence[Sink] = (), require_queries: bool = True, name: str | None = None,
                 stop: threading.Event | None = None):
        self.spec = source if isinstance(source, SourceSpec) else None
        self.source = None if self.spec is not None else source
        self.retriever, self.settings, self.sinks = retriever, settings, list(sinks)
        self.name = name or (self.spec.target if self.spec is not None else getattr(source, "name", "source"))
        self.monitor = Monitor(retriever, list(queries), window=settings.window, stride=settings.stride,
                               smoothing=settings.smoothing, threshold_on=settings.threshold_on,
                               threshold_off=settings.threshold_off, batch=settings.batch,
                               require_queries=require_queries, false_alarm_rate=settings.false_alarm_rate,
                               contrast=settings.contrast)
        self._stop = stop or threading.Event()
        self._thread: threading.Thread | None = None
        self._used = False  # the current source has been run (a SourceSpec is opened again for the next run)
        self.error: BaseException | None = None  # what ended the last run in a thread, if it failed
        self.started_at: float | None = None  # time.monotonic() when the last run began to read frames
        self.last_frame_at: float | None = None  # time.monotonic() of the newest frame

    # ------------------------------------------------------------------------------------------- queries
    def add_query(self, text: str) -> int:
        """Add a standing query (encoded once, now); returns its index. Any thread, running or not."""
        return self.monitor.add_query(text)

    def remove_query(self, index: int) -> None:
        """Remove a standing query; its open event ends with reason "removed". KeyError for an unknown index."""
        self.monitor.remove_query(index)

    def queries(self) -> list[tuple[int, str]]:
        """(index, text) of every standing query."""
        return self.monitor.query_list()

    # ------------------------------------------------------------------------------------------- running
    def open(self):
        """Open the source now (a SourceSpec), so that a source that cannot be opened fails before anything
        else; returns it. SourceError / VideoError / ConfigError as `open_source` raises them."""
        if self.source is None or (self._used and self.spec is not None):
            self.source, self._used = self.spec.open(), False
        return self.source

    def run(self) -> dict:
        """Run in the calling thread until the source ends or `stop` is called; return the monitor's summary.
        Errors (a live source lost for good, an output that fails) are raised after the sinks and the source are
        closed."""
        if self._used and self.spec is None:
            raise ConfigError(f"pipeline {self.name}: its source was opened by the caller and has been used; "
                              f"give a SourceSpec to run it again")
        source = self.open()
        self._used = True
        started = []
        try:
            if self._stop.is_set():
                source.interrupt()
            for sink in self.sinks:
                sink.start(self)
                started.append(sink)
            self.started_at = time.monotonic()
            for event in self.monitor.run(source, stop=self._stop, on_frame=self._frame, on_window=self._window):
                for sink in self.sinks:
                    sink.event(event)
        finally:
            try:
                for sink in started:
                    sink.close()
            finally:
                source.close()
        return self.monitor.stats.summary()

    def _frame(self, frame) -> None:
        self.last_frame_at = time.monotonic()
        for sink in self.sinks:
            sink.frame(frame)

    def _window(self, window: Window) -> None:
        for sink in self.sinks:
            sink.window(window)

    def start(self) -> None:
        """Run in a thread of its own (named after the pipeline); `error` holds what ended it, if anything."""
        if self.running:
            raise ConfigError(f"pipeline {self.name} is already running")
        self._stop.clear()
        self.error = None

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # kept for the owner (a service reports it and may start again)
                self.error = exc
                log.warning("pipeline %s ended: %s", self.name, exc)

        self._thread = threading.Thread(target=target, name=f"hbci-pipeline-{self.name}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the run to end: open events end with reason "stopped". Never blocks (a signal handler may call
        it); `drain` waits."""
        self._stop.set()
        if self.source is not None:
            self.source.interrupt()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a started pipeline; True once it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def drain(self, timeout: float | None = None) -> bool:
        """`stop`, then wait until open events are ended, sinks closed and the source released."""
        self.stop()
        return self.join(timeout)

    def status(self) -> dict:
        """What a health check reports: running, frames, the age of the newest frame, frames per second since the
        run began, windows, events, the error that ended the last run; the source (kind, target, live, nominal
        fps, frames dropped, reconnects) and the model (bundle id, back end, precision)."""
        s, now = self.monitor.stats, time.monotonic()
        age = None if self.last_frame_at is None else now - self.last_frame_at
        fps = None if self.started_at is None else s.frames / max(now - self.started_at, 1e-9)
        source = self.source
        stats = getattr(source, "stats", None)
        return {"name": self.name, "running": self.running, "frames": s.frames, "frames_per_s": fps,
                "last_frame_age_s": age, "windows": s.windows, "events": s.events,
                "source": {"kind": self.spec.kind if self.spec else getattr(source, "kind", None),
                           "target": self.spec.target if self.spec else getattr(source, "name", None),
                           "live": getattr(source, "live", None), "fps": getattr(source, "fps", None),
                           "frames_dropped": getattr(stats, "frames_dropped", 0),
                           "reconnects": getattr(stats, "reconnects", 0)},
                "bundle_id": self.retriever.bundle_id, "backend": getattr(self.retriever, "backend_name", None),
                "precision": getattr(self.retriever, "precision", None),
                "error": None if self.error is None else str(self.error)}


def summary_line(pipeline: Pipeline) -> str:
    """The closing one-line summary hbci-run prints: counts, throughput, latency quantiles, drops."""
    s = pipeline.monitor.stats.summary()
    seconds = time.monotonic() - pipeline.started_at if pipeline.started_at is not None else 0.0
    wl, el = s["window_latency_s"], s["event_latency_s"]
    parts = [f"{s['frames']} frames, {s['windows']} windows ({s['windows_skipped']} skipped), {s['events']} events "
             f"in {seconds:.1f} s",
             f"{s['frames_per_s']:.1f} frames/s, {s['windows_per_s']:.1f} windows/s, "
             f"{s['encode_ms_per_window']:.1f} ms encode+score per window"]
    if wl:
        parts.append(f"window latency p50 {1000 * wl['p50']:.0f} ms, p95 {1000 * wl['p95']:.0f} ms")
    if el:
        parts.append(f"event latency p50 {1000 * el['p50']:.0f} ms, p95 {1000 * el['p95']:.0f} ms")
    source = pipeline.source
    if source is not None and (source.stats.frames_dropped or source.stats.reconnects):
        parts.append(f"{source.stats.frames_dropped} frames dropped, {source.stats.reconnects} reconnects")
    return "summary: " + "; ".join(parts)
