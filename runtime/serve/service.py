"""The service's core, without HTTP or MQTT: one `Pipeline` per configured source, each kept running by a
supervisor thread that restarts it with backoff when its source ends or is lost, and an `EventHub` that gives
every event a stable id, a thumbnail and a clip, keeps the recent ones and hands them to subscribers (the SSE
stream, the MQTT bridge). The service never exits because a source died: health says so and it is retried."""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from hbci.runtime.errors import ConfigError, HbciError
from hbci.runtime.pipeline import ClipSink, MonitorSettings, Pipeline, Sink, SourceSpec
from hbci.runtime.video import jpeg_thumbnail

__all__ = ["EventHub", "Service", "SourceRunner"]

log = logging.getLogger("hbci")

THUMBNAIL_SIDE = 320
STALL_S = 60.0  # a running source without a frame for this long is stalled: the systemd watchdog is not fed
UPDATE_INTERVAL_S = 1.0  # at most one "update" per open event and second, when its peak score rose


class EventHub:
    """Recent events and subscribers. `publish` may be called from any thread; a subscriber callback must not
    block (it queues work of its own)."""

    def __init__(self, maxlen: int):
        self._recent: collections.deque = collections.deque(maxlen=maxlen)
        self._media: collections.OrderedDict = collections.OrderedDict()  # event_id -> {"thumbnail", "clip"}
        self._maxlen = maxlen
        self._subscribers: list[Callable[[dict], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Callable[[dict], None]) -> Callable[[], None]:
        """Call `callback(event)` for every new event; returns the function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: dict, media: dict | None = None) -> None:
        with self._lock:
            self._recent.append(event)
            if media:
                self._media.setdefault(event["event_id"], {}).update(media)
                self._media.move_to_end(event["event_id"])
                while len(self._media) > self._maxlen:
                    self._media.popitem(last=False)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception as exc:  # one failing subscriber must not stop a pipeline
                log.warning("event subscriber failed: %s", exc)

    def recent(self, source: str | None = None, limit: int = 100) -> list[dict]:
        with self._lock:
            events = [e for e in self._recent if source is None or e["source"] == source]
        return events[-limit:] if limit else []

    def media(self, event_id: str, kind: str) -> Path | None:
        """The file of an event's thumbnail or clip, if one was kept."""
        with self._lock:
            path = self._media.get(event_id, {}).get(kind)
        return Path(path) if path else None


class _ServiceSink(Sink):
    """Gives a pipeline's events their stable id, source name, thumbnail and URLs, then publishes them."""

    def __init__(self, runner: "SourceRunner", hub: EventHub, media: Path | None, on_frame: Callable[[], None]):
        self.runner, self.hub, self.media, self.on_frame = runner, hub, media, on_frame
        self._image = None
        self._ids: dict[int, str] = {}
        self._peaks: dict[int, tuple[float, float]] = {}  # monitor id -> (peak score published, when)

    def frame(self, frame) -> None:
        self._image = frame.image
        self.on_frame()

    def window(self, window) -> None:
        """An "update" for each open event whose peak score rose (at most one a second per event)."""
        monitor, now = self.runner.pipeline.monitor, time.monotonic()
        for state in monitor.open_events():
            published, when = self._peaks.get(state["id"], (-float("inf"), 0.0))
            if state["id"] in self._ids and state["peak_score"] > published and now - when >= UPDATE_INTERVAL_S:
                self._peaks[state["id"]] = (state["peak_score"], now)
                self.event({"event": "update", **state, "score": state["peak_score"],
                            "raw_score": state["peak_raw_score"], "time": window.end,
                            "source": self.runner.config.target, "bundle_id": monitor.bundle_id})

    def event(self, event: dict) -> None:
        name = self.runner.name
        event["target"], event["source"] = event.get("source"), name
        if event["event"] == "start":
            self._peaks[event["id"]] = (event["score"], time.monotonic())
        if event["event"] == "start" or event["id"] not in self._ids:
            # Stable across the event's messages and unique across runs and restarts (Frigate's style).
            self._ids[event["id"]] = f"{time.time():.3f}-{name}-{event['id']}"
        event_id = self._ids[event["id"]]
        if event["event"] == "end":
            self._ids.pop(event["id"], None)
            self._peaks.pop(event["id"], None)
        event["event_id"] = event_id
        media = {}
        if event["event"] == "start" and self.media is not None and self._image is not None:
            media["thumbnail"] = self._write_thumbnail(event_id)
        if event.get("clip"):
            media["clip"] = event["clip"]
            event["clip_url"] = f"/events/{event_id}/clip.mp4"
        if media.get("thumbnail") or self.hub.media(event_id, "thumbnail"):
            event["thumbnail_url"] = f"/events/{event_id}/thumbnail.jpg"
        self.hub.publish(event, media)

    def _write_thumbnail(self, event_id: str) -> str | None:
        path = self.media / "thumbnails" / self.runner.name / f"{event_id}.jpg"
        jpeg = jpeg_thumbnail(self._image, THUMBNAIL_SIDE, quality=95)
        try:
            if not jpeg:
                raise OSError("the JPEG encoder failed")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg)
        except OSError as exc:
            log.warning("%s: could not write the thumbnail %s: %s", self.runner.name, path, exc)
            return None
        return str(path)


class SourceRunner:
    """One source: its pipeline and the supervisor thread that restarts it with backoff."""

    def __init__(self, config, retriever, hub: EventHub, media: Path | None, clips: bool,
                 on_frame: Callable[[], None]):
        self.config, self.name = config, config.name
        defaults = MonitorSettings()
        settings = MonitorSettings(
            window=config.window or defaults.window, stride=config.stride or defaults.stride,
            smoothing=defaults.smoothing if config.smoothing is None else config.smoothing,
            threshold_on=config.threshold_on, threshold_off=config.threshold_off, batch=config.batch,
            contrast=config.contrast)
        sinks: list[Sink] = [ClipSink(media / "clips" / config.name)] if clips and media is not None else []
        sinks.append(_ServiceSink(self, hub, media, on_frame))
        spec = SourceSpec(config.kind, config.target, realtime=config.realtime, max_fps=config.max_fps)
        self.pipeline = Pipeline(spec, retriever, config.queries, settings=settings, sinks=sinks,
                                 require_queries=False, name=config.name)
        self.restarts = 0
        self.next_retry_at: float | None = None
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, tick: Callable[[], None]) -> None:
        self._thread = threading.Thread(target=self._supervise, args=(tick,), name=f"hbci-supervisor-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _supervise(self, tick: Callable[[], None]) -> None:
        delay = self.config.retry.initial_s
        while not self._stopping.is_set():
            began = time.monotonic()
            self.next_retry_at = None
            self.pipeline.start()
            self.pipeline.join()  # while it runs, its frames feed the watchdog (a hung frame loop starves it)
            if self._stopping.is_set():
                break
            error = self.pipeline.error
            self.last_error = str(error) if error is not None else "the source ended"
            # A run that delivered frames (a file that ended, a camera that ran for a while) starts the backoff
            # from the beginning; failures in a row double it up to retry.max_s.
            ran = time.monotonic() - began
            if self.pipeline.monitor.stats.frames and (error is None or ran > self.config.retry.max_s):
                delay = self.config.retry.initial_s
            log.warning("source %s is down (%s); retrying in %.1f s", self.name, self.last_error, delay)
            self.next_retry_at = time.monotonic() + delay
            while not self._stopping.wait(min(0.5, max(0.0, self.next_retry_at - time.monotonic()))):
                tick()
                if time.monotonic() >= self.next_retry_at:
                    break
            delay = min(2 * delay, self.config.retry.max_s)
            self.restarts += 1

    def stalled(self, now: float) -> bool:
        """Running, but no frame for STALL_S (or none since a start that long ago)."""
        if self.next_retry_at is not None or not self.pipeline.running:
            return False  # waiting for a retry is a known state, not a hang
        last = self.pipeline.last_frame_at or self.pipeline.started_at
        return last is not None and now - last > STALL_S

    def stop(self) -> None:
        self._stopping.set()
        self.pipeline.stop()

    def join(self, timeout: float | None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.pipeline.join(timeout)

    def health(self) -> dict:
        status = self.pipeline.status()
        up = status["running"] and status["last_frame_age_s"] is not None and not self._stopping.is_set()
        retry = None if self.next_retry_at is None else max(0.0, self.next_retry_at - time.monotonic())
        return {"up": bool(up), "running": status["running"], "last_frame_age_s": status["last_frame_age_s"],
                "fps": status["frames_per_s"], "frames": status["frames"], "windows": status["windows"],
                "events": status["events"], "restarts": self.restarts, "retry_in_s": retry,
                "error": status["error"] or (self.last_error if not up else None), "kind": self.config.kind,
                "queries": len(self.pipeline.queries())}

    # ---------------------------------------------------------------------------------------- queries
    def queries(self) -> list[dict]:
        return [{"index": i, "text": t} for i, t in self.pipeline.queries()]

    def set_queries(self, texts: list[str]) -> None:
        """Make the standing queries exactly `texts`: kept ones keep their index (and open events)."""
        current = self.pipeline.queries()
        wanted = list(dict.fromkeys(texts))
        for index, text in current:
            if text not in wanted:
                self.pipeline.remove_query(index)
        have = {t for _, t in current}
        for text in wanted:
            if text not in have:
                self.pipeline.add_query(text)


class Service:
    """Everything but the transports: `start`, `drain`, `reload_queries`, `health`, `stats`, the archive."""

    def __init__(self, config, retriever, archive=None, *, config_path: str | None = None):
        self.config, self.retriever, self.archive, self.config_path = config, retriever, archive, config_path
        self.hub = EventHub(config.recent_events)
        media = Path(config.paths.media) if config.paths.media else None
        self.started_at = time.time()
        self.watchdog: Callable[[], None] = lambda: None
        self.runners = {s.name: SourceRunner(s, retriever, self.hub, media, config.paths.clips, self._alive)
                        for s in config.sources}

    def _alive(self) -> None:
        """Called for every frame and while a source waits for its retry: feed the watchdog unless a source is
        stalled (a frame loop that hangs must get the service restarted)."""
        now = time.monotonic()
        if not any(runner.stalled(now) for runner in self.runners.values()):
            self.watchdog()

    def start(self) -> None:
        for runner in self.runners.values():
            runner.start(self._alive)

    def drain(self, timeout: float = 30.0) -> bool:
        """Stop every source: open events end with reason "stopped" (published), sinks close."""
        for runner in self.runners.values():
            runner.stop()
        deadline = time.monotonic() + timeout
        return all(r.join(max(0.0, deadline - time.monotonic())) for r in self.runners.values())

    def runner(self, name: str) -> SourceRunner:
        try:
            return self.runners[name]
        except KeyError:
            raise KeyError(f"no source {name!r} (sources: {', '.join(self.runners)})") from None

    def reload_queries(self, path: str | None = None) -> dict[str, int]:
        """Read the config file again and make every source's standing queries what it says (SIGHUP). Other
        settings need a restart. ConfigError if the file is invalid now (nothing is changed then)."""
        from hbci.runtime.serve.config import load_config

        fresh = load_config(path or self.config_path)
        wanted = {s.name: s.queries for s in fresh.sources}
        unknown = sorted(set(wanted) - set(self.runners))
        if unknown:
            raise ConfigError(f"reload: new sources need a restart: {', '.join(unknown)}")
        for name, runner in self.runners.items():
            runner.set_queries(wanted.get(name, []))
        return {name: len(r.pipeline.queries()) for name, r in self.runners.items()}

    # ---------------------------------------------------------------------------------------- reports
    def identity(self) -> dict:
        from hbci import __version__

        r = self.retriever
        return {"version": __version__, "bundle_id": r.bundle_id, "backend": r.backend_name,
                "precision": r.precision}

    def health(self) -> dict:
        sources = {name: runner.health() for name, runner in self.runners.items()}
        status = "ok" if all(s["up"] for s in sources.values()) else "degraded"
        return {"status": status, **self.identity(), "uptime_s": time.time() - self.started_at, "sources": sources}

    def stats(self) -> dict:
        sources = {}
        for name, runner in self.runners.items():
            summary = runner.pipeline.monitor.stats.summary()
            sources[name] = {**runner.pipeline.status(), "monitor": summary, "restarts": runner.restarts}
        archive = None
        if self.archive is not None:
            try:
                archive = dataclasses.asdict(self.archive.stats())
            except HbciError as exc:
                archive = {"error": str(exc)}
        return {**self.identity(), "uptime_s": time.time() - self.started_at, "sources": sources,
                "archive": archive, "event_subscribers": self.hub.subscribers}
