"""Video sources for live monitoring: a camera index, a video file, a network stream URL, a GStreamer pipeline.

Each source decodes in its own reader thread (OpenCV releases the GIL while decoding) and hands frames over
through a bounded buffer:

* live sources (camera, URL, pipeline) and files with `realtime=True` keep only the newest frames: when the
  consumer falls behind, the oldest buffered frame is dropped (and counted), so latency never builds up;
* a file without `realtime` is read completely: the reader blocks while the buffer is full, no frame is ever
  dropped, and a run is deterministic.

Timestamps are seconds since the stream's start: a file frame's own position in the file (CAP_PROP_POS_MSEC when
it increases, else index / fps), a live frame's arrival time since the first frame. Live sources reconnect after
a loss (bounded retries with exponential backoff), then raise SourceError. Opening happens in a helper thread
with a timeout, because some capture back ends block for a long time on a device that does not answer.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import cv2
import numpy as np

from hbci.runtime.errors import ConfigError, HbciError, SourceError, VideoError
# The file reader opens and converts frames exactly as the training loader does (same orientation handling,
# same colour conversion), so monitored frames equal training frames.
from hbci.runtime.video import FirstFrameSize, open_video, to_rgb

__all__ = ["Frame", "FrameBuffer", "Source", "SourceStats", "open_source", "gstreamer_available", "SOURCE_KINDS",
           "URL_SCHEMES"]

log = logging.getLogger("hbci")

SOURCE_KINDS = ("camera", "file", "url", "pipeline")
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
_BLOCKING_BUFFER = 8  # frames a file reader may run ahead of the consumer (bounded memory at any resolution)
_LIVE_BUFFER = 8  # newest frames kept for a slow consumer: at 30 fps about 0.27 s of latency at most
_END = object()
_GRABBED = object()


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    index: int  # frames delivered since the stream started, 0-based (dropped frames still count)
    time: float  # seconds since the stream's start (file: the frame's position; live: since the first frame)
    image: np.ndarray  # uint8 RGB [H, W, 3]
    arrival: float  # time.monotonic() when the reader had it: the start of every latency measurement


@dataclass
class SourceStats:
    frames_read: int = 0  # frames decoded by the reader
    frames_skipped: int = 0  # frames left out on purpose by max_fps
    frames_dropped: int = 0  # frames dropped because the consumer was behind (live and realtime only)
    reconnects: int = 0


class FrameBuffer:
    """A bounded hand-over between the reader thread and the consumer.

    drop_oldest=True: `put` never blocks; a full buffer loses its oldest frame. False: `put` waits for room.
    An exception put by the reader is raised in the consumer; `close` wakes both sides.
    """

    def __init__(self, capacity: int, drop_oldest: bool):
        self.capacity, self.drop_oldest = max(1, capacity), drop_oldest
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.closed = False
        self.dropped = 0

    def put(self, item) -> bool:
        """False once the buffer is closed (the reader should stop)."""
        with self._cond:
            while not self.drop_oldest and len(self._items) >= self.capacity and not self.closed:
                self._cond.wait(0.1)
            if self.closed:
                return False
            if self.drop_oldest and len(self._items) >= self.capacity and isinstance(item, Frame):
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float):
        """The next item, or None after `timeout` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def pending(self) -> int:
        with self._cond:
            return sum(isinstance(i, Frame) for i in self._items)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def gstreamer_available() -> bool:
    """Whether this OpenCV build has the GStreamer video I/O back end."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


def _call_with_timeout(fn: Callable, timeout: float, what: str):
    """Run `fn` in a daemon thread; SourceError if it has not returned after `timeout` seconds.

    A capture that hangs is abandoned (its thread is a daemon): there is no portable way to interrupt it.
    """
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            result["error"] = exc

    thread = threading.Thread(target=target, name="hbci-open", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise SourceError(f"{what}: no answer within {timeout:g} s")
    if "error" in result:
        error = result["error"]
        if isinstance(error, HbciError):
            raise error
        if isinstance(error, cv2.error):
            raise SourceError(f"{what}: OpenCV failed: {str(error).strip().splitlines()[-1]}") from None
        raise error
    return result["value"]


class Source:
    """An opened video source; iterate it for `Frame`s, then `close()` it (or use it as a context manager).

    Build one with `open_source`. Attributes: `kind`, `name` (what the user gave), `live`, `fps` (0 if unknown),
    `stats`.
    """

    def __init__(self, kind: str, target: str, *, realtime: bool = False, max_fps: float = 0.0,
                 buffer: int = 0, open_timeout: float = 5.0, reconnect_attempts: int = 5,
                 reconnect_backoff: float = 0.5):
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
        if max_fps < 0 or not math.isfinite(max_fps):
            raise ConfigError(f"max_fps must be >= 0 (0: no limit), got {max_fps}")
        self.kind, self.name = kind, str(target)
        self.live = kind != "file"
        self.realtime = realtime or self.live
        self.max_fps = float(max_fps)
        self.open_timeout = float(open_timeout)
        self.reconnect_attempts, self.reconnect_backoff = int(reconnect_attempts), float(reconnect_backoff)
        drop = self.realtime
        self._buffer = FrameBuffer(buffer or (_LIVE_BUFFER if drop else _BLOCKING_BUFFER), drop_oldest=drop)
        self.stats = SourceStats()
        self.fps = 0.0
        self._cap: cv2.VideoCapture | None = None
        self._first: tuple[np.ndarray, float] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------------------------------- opening
    def _describe(self) -> str:
        return {"camera": f"camera {self.name}", "file": self.name, "url": self.name,
                "pipeline": "GStreamer pipeline"}[self.kind]

    def _capture(self) -> cv2.VideoCapture:
        """Create the capture (called in the helper thread); raises on failure."""
        if self.kind == "file":
            return open_video(self.name)  # VideoError naming the cause: missing, not a file, not a video
        if self.kind == "camera":
            cap = cv2.VideoCapture(int(self.name))
        elif self.kind == "url":
            ms = int(self.open_timeout * 1000)
            cap = cv2.VideoCapture(self.name, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(self.name, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self._describe()}: could not be opened")
        return cap

    def _open_and_read_first(self) -> tuple[cv2.VideoCapture, np.ndarray | None, float]:
        cap = self._capture()
        try:
            ok, image = cap.read()
        except cv2.error:
            ok, image = False, None
        position = cap.get(cv2.CAP_PROP_POS_MSEC) if ok else -1.0
        return cap, (image if ok and image is not None else None), position

    def open(self) -> "Source":
        """Open the capture and read a first frame (both under `open_timeout`); raise SourceError/VideoError."""
        if self.kind == "pipeline" and not gstreamer_available():
            raise SourceError("this OpenCV build has no GStreamer support (cv2.getBuildInformation() says "
                              "GStreamer: NO); use --url or --camera, or install an OpenCV built with GStreamer")
        if self.kind == "camera":
            _check_camera_device(self.name)
        cap, image, position = _call_with_timeout(self._open_and_read_first, self.open_timeout, self._describe())
        if image is None:
            cap.release()
            if self.kind == "file":
                raise VideoError(self.name, "no decodable frames")
            raise SourceError(f"{self._describe()}: opened, but no frame arrived")
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        self._first = (image, position)
        return self

    # ------------------------------------------------------------------------------------------- reading
    def __iter__(self) -> Iterator[Frame]:
        if self._cap is None:
            raise SourceError(f"{self._describe()}: not opened (call open() first)")
        if self._thread is None:
            self._thread = threading.Thread(target=self._read_loop, name=f"hbci-reader-{self.kind}", daemon=True)
            self._thread.start()
        while True:
            item = self._buffer.get(0.1)
            if item is None:
                if self._stop.is_set():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def pending(self) -> int:
        """Frames decoded and waiting: a live consumer with frames pending is behind."""
        return self._buffer.pending()

    def _read_loop(self) -> None:
        try:
            self._read_frames()
        except HbciError as exc:
            self._buffer.put(exc)
        except cv2.error as exc:
            self._buffer.put(SourceError(f"{self._describe()}: OpenCV failed while reading: "
                                         f"{str(exc).strip().splitlines()[-1]}"))
        except Exception as exc:  # an unexpected failure still reaches the consumer instead of dying silently
            self._buffer.put(exc)
        finally:
            self._buffer.put(_END)

    def _read_frames(self) -> None:
        image, position = self._first
        self._first = None
        index, t0_wall, last_time = 0, None, -math.inf
        same_size = FirstFrameSize()
        next_keep = -math.inf
        while not self._stop.is_set():
            if image is None:
                image, position = self._grab()
                if image is None:
                    return
            arrival = time.monotonic()
            if t0_wall is None:
                t0_wall = arrival
            if self.live:
                stamp = arrival - t0_wall
            else:
                stamp = self._file_time(position, index, last_time)
            last_time = stamp
            self.stats.frames_read += 1
            keep = not self.max_fps or stamp >= next_keep - 1e-6
            if keep:
                if self.max_fps:
                    # A grid of 1/max_fps steps, not "last kept + period": with jittery timestamps the latter
                    # keeps noticeably fewer than max_fps frames per second.
                    period = 1.0 / self.max_fps
                    next_keep = next_keep + period if next_keep + period > stamp else stamp + period
                if image is _GRABBED:  # decoded by grab(); converted only now that it is kept
                    try:
                        ok, image = self._cap.retrieve()
                    except cv2.error:
                        ok = False
                    if not ok or image is None:  # skipped, as the training loader skips it
                        index, image = index + 1, None
                        continue
                # A mid-stream resolution change would break the window stack; keep the first frame's size, as
                # the training loader does.
                rgb = same_size(to_rgb(image))
                if self.kind == "file" and self.realtime:  # pace a file like a camera at its own clock
                    delay = t0_wall + stamp - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    arrival = time.monotonic()
                before = self._buffer.dropped
                if not self._buffer.put(Frame(index, stamp, rgb, arrival)):
                    return
                self.stats.frames_dropped += self._buffer.dropped - before
            else:
                self.stats.frames_skipped += 1
            index += 1
            image = None

    def _file_time(self, position_ms: float, index: int, last_time: float) -> float:
        """A file frame's position in seconds: CAP_PROP_POS_MSEC while it increases (exact for variable frame
        rates), else the previous time plus one frame period (containers that report 0 or the frame's end)."""
        stamp = position_ms / 1000.0
        if math.isfinite(stamp) and stamp >= 0 and stamp > last_time:
            return stamp
        if last_time == -math.inf:
            return 0.0
        return last_time + (1.0 / self.fps if self.fps else 1.0 / 30.0)

    def _grab(self) -> tuple[object, float]:
        """Grab the next frame: (_GRABBED or a BGR image after a reconnect, its position), reconnecting a live
        source; (None, _) at the end. Frames that max_fps leaves out are never converted."""
        try:
            ok = self._cap.grab()
        except cv2.error:
            ok = False  # a decoder error mid-stream ends a file, as in the training loader
        if ok:
            return _GRABBED, self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if not self.live or self._stop.is_set():
            return None, 0.0
        return self._reconnect()

    def _reconnect(self) -> tuple[np.ndarray | None, float]:
        self._cap.release()
        delay = self.reconnect_backoff
        for attempt in range(1, self.reconnect_attempts + 1):
            log.warning("%s: stream lost; reconnecting (attempt %d of %d in %.1f s)", self._describe(), attempt,
                        self.reconnect_attempts, delay)
            if self._stop.wait(delay):
                return None, 0.0
            delay = min(delay * 2, 8.0)
            try:
                cap, image, position = _call_with_timeout(self._open_and_read_first, self.open_timeout,
                                                          self._describe())
            except SourceError as exc:
                log.debug("reconnect failed: %s", exc)
                continue
            if image is None:
                cap.release()
                continue
            self._cap = cap
            self.stats.reconnects += 1
            log.warning("%s: reconnected", self._describe())
            return image, position
        raise SourceError(f"{self._describe()}: lost, and {self.reconnect_attempts} reconnection attempts failed")

    # ------------------------------------------------------------------------------------------- closing
    def interrupt(self) -> None:
        """Make iteration end soon; never blocks, so a signal handler may call it. Call `close` afterwards."""
        self._stop.set()
        self._buffer.close()

    def close(self) -> None:
        """Stop the reader and release the capture (idempotent)."""
        self._stop.set()
        self._buffer.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        # A reader still blocked in a network read after 2 s keeps its capture: releasing it under the read
        # could crash the process.
        if self._cap is not None and (self._thread is None or not self._thread.is_alive()):
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_camera_device(index: str) -> None:
    """On Linux a missing /dev/videoN is certain: refuse at once instead of asking every capture back end."""
    if sys.platform.startswith("linux") and Path("/dev").is_dir() and not Path(f"/dev/video{index}").exists():
        raise SourceError(f"camera {index}: no such device (/dev/video{index} does not exist)")


def open_source(kind: str, target: str | int | os.PathLike, **options) -> Source:
    """Open a source: kind "camera" (an index), "file" (a path), "url" (rtsp/http/... stream), "pipeline"
    (a GStreamer pipeline string, only where OpenCV has GStreamer). Options: see `Source`.

    Raises ConfigError for a malformed target, SourceError when a live source cannot be opened, VideoError when
    a file cannot be read."""
    target = str(target)
    if kind == "camera" and not (target.isdigit() and len(target) < 4):
        raise ConfigError(f"a camera is a device index such as 0, got {target!r}")
    if kind == "url":
        scheme = urlparse(target).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise ConfigError(f"{target!r} is not a stream URL (expected one of: "
                              f"{', '.join(s + '://' for s in URL_SCHEMES)})")
    if kind == "pipeline" and not target.strip():
        raise ConfigError("the GStreamer pipeline is empty")
    return Source(kind, target, **options).open()
