"""Saving alert clips: the frames of each event, from its first window's start to its end, as mp4v files.

The recorder keeps the last few seconds of frames (downscaled to at most `max_side` pixels) so that a clip can
begin at the start of the window that raised the alert, which lies in the past when the alert is raised. Memory:
keep_seconds x fps frames of at most max_side x max_side * 9 / 16 pixels (about 0.7 MB each at 640 x 360).
"""

from __future__ import annotations

import collections
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hbci.runtime.errors import OutputError

__all__ = ["ClipRecorder"]

def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "query"


class ClipRecorder:
    """Write one mp4v file per event into `folder`: `add_frame` every frame, `handle` every event, and `advance`
    after every scored window (frames are written only up to the newest scored window, so a clip ends where
    its event ends even when windows are scored in batches behind the newest frame).

    `keep_seconds` must cover a window plus the frames read ahead of the newest scored window. A clip is capped
    at `max_seconds`; it is written under a temporary name and renamed when the event ends, so a file with the
    final name is always complete. Events gain a "clip" key with the final path.
    """

    def __init__(self, folder: str | os.PathLike, *, keep_seconds: float, fps: float = 0.0,
                 max_seconds: float = 60.0, max_side: int = 640):
        self.folder = Path(folder)
        self.keep_seconds, self.max_seconds, self.max_side = float(keep_seconds), float(max_seconds), int(max_side)
        self.fps = float(fps)
        self._recent: collections.deque = collections.deque()  # (time, BGR frame)
        self._writers: dict[int, _Clip] = {}
        self._size: tuple[int, int] | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".hbci-write-test-"):
                pass
        except OSError as exc:
            raise OutputError(f"--save-clips {self.folder}: cannot write there ({exc.strerror or exc})") from None
        self.written: list[Path] = []

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if self._size is None:
            h, w = image.shape[:2]
            scale = min(1.0, self.max_side / max(h, w))
            # mp4v needs even sides
            self._size = (max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2))
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def _frame_rate(self) -> float:
        if self.fps > 0:
            return self.fps
        times = [t for t, _ in self._recent]
        if len(times) > 1 and times[-1] > times[0]:
            return (len(times) - 1) / (times[-1] - times[0])
        return 8.0

    def add_frame(self, frame) -> None:
        self._recent.append((frame.time, self._prepare(frame.image)))
        while self._recent and self._recent[0][0] < frame.time - self.keep_seconds:
            self._recent.popleft()

    def _write_until(self, clip: "_Clip", until: float) -> None:
        until = min(until, clip.start + self.max_seconds)
        for t, bgr in self._recent:
            if clip.written < t <= until + 1e-6:
                clip.writer.write(bgr)
                clip.written = t

    def advance(self, until: float) -> None:
        """Write every open clip's frames up to stream time `until` (the newest scored window's end)."""
        for clip in self._writers.values():
            self._write_until(clip, until)

    def handle(self, event: dict) -> dict:
        if event["event"] == "start":
            final = self.folder / f"{event['id']:05d}-{_slug(event['query'])}-{event['window_start']:.1f}s.mp4"
            tmp = final.with_name(f".{final.stem}.partial.mp4")  # FFmpeg picks the container by the suffix
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self._frame_rate(), self._size)
            if not writer.isOpened():
                raise OutputError(f"{tmp}: cannot open an mp4v video writer")
            start = float(event["window_start"])
            clip = _Clip(writer, tmp, final, start, start - 1e-6)
            self._writers[event["id"]] = clip
            self._write_until(clip, float(event["window_end"]))
            event["clip"] = str(final)
        elif event["event"] == "end" and event["id"] in self._writers:
            self._write_until(self._writers[event["id"]], float(event["window_end"]))
            event["clip"] = str(self._finish(event["id"]))
        return event

    def _finish(self, event_id: int) -> Path:
        clip = self._writers.pop(event_id)
        clip.writer.release()
        os.replace(clip.tmp, clip.final)
        self.written.append(clip.final)
        return clip.final

    def close(self) -> None:
        """Finish every open clip (the monitor ends open events itself; this covers an abort)."""
        for event_id in list(self._writers):
            self._finish(event_id)


@dataclass
class _Clip:
    writer: cv2.VideoWriter
    tmp: Path
    final: Path
    start: float
    written: float  # stream time of the last frame written
