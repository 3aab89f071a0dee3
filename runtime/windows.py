"""Sliding windows over a stream of frames: the one definition used by the live monitor, the alert benchmark and
the archive. Pure functions of frame times; no pixels, no model.

Window k spans [t0 + k * stride, t0 + k * stride + window) seconds of stream time (t0: the first frame's time).
  * Completion: window k is complete when a frame at or past its end arrives.
  * End of stream: no later frame will come, so a window is also complete when the last frame's display
    interval (the median spacing of the stream's last five frames) reaches its end.
  * Short streams: a stream shorter than one window still gets one window, of all its frames.
  * Sampling: a window's T frames are chosen among the frames inside its span by `sample_indices`, the training
    loader's uniform sampling, so a window laid over a 24-frame, 8 fps, 3 s clip holds exactly the frames
    training saw for that clip. A span with fewer than T frames gives all of them and a mask, as training pads
    short clips.
Times are compared with a tolerance of 1 microsecond (frame times such as k / 30 are not exact in binary).

`cut_windows(times, window, stride, T)` gives every window of a finished stream at once (the archive);
`WindowCutter` gives the same windows as frames arrive one by one (the monitor), and `cut_windows` is built on it.
`window_halves` splits a window's T sampled frames into its first and second half, each stretched back to T (the
monitor's order check).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hbci.runtime.errors import ConfigError
from hbci.runtime.video import sample_indices

__all__ = ["WindowSpan", "WindowCutter", "cut_windows", "sample_span", "window_frames", "window_halves", "EPS"]

EPS = 1e-6  # seconds
_PERIOD_FRAMES = 5  # the end-of-stream rule measures the frame spacing over this many last frames


@dataclass(frozen=True)
class WindowSpan:
    """One window: which frames it holds. Frame numbers count every frame of the stream from 0, in order."""

    index: int  # k
    start: float  # time of the first frame inside the span (the span's beginning when it holds none)
    end: float  # time of the last frame inside the span
    frames: np.ndarray  # int64 [n], n <= T: the chosen frame numbers, increasing
    mask: np.ndarray  # bool [T]: True for the first n slots
    count: int  # frames inside the span (the T chosen are sampled from these); 0 where a gap in the
    # timestamps is longer than the window: an all-masked window, which the monitor scores like any other (its
    # score means little) and an archive had better skip


def sample_span(times: Sequence[float], begin: float, window: float,
                num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frames of the span [begin, begin + window) among frames at `times` (non-decreasing): (positions of every
    frame inside it, the positions of the T chosen among them by `sample_indices`, the bool [T] mask)."""
    t = np.asarray(times, dtype=np.float64)
    inside = np.flatnonzero((t >= begin - EPS) & (t < begin + window - EPS))
    chosen = inside[sample_indices(len(inside), num_frames)]
    mask = np.zeros(num_frames, bool)
    mask[: len(chosen)] = True
    return inside, chosen, mask


def _check_settings(window: float, stride: float, num_frames: int) -> None:
    for name, value in (("window", window), ("stride", stride)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    if not (isinstance(num_frames, int) and num_frames >= 1):
        raise ConfigError(f"the number of frames per window must be >= 1, got {num_frames!r}")


class WindowCutter:
    """The incremental form: `add` each frame's time as it arrives and get the windows it completed, `finish` at
    the end of the stream, `span` to cut a completed window, `release` once windows are no longer needed.

    The cutter keeps the times of the frames that windows not yet released may hold; `first_kept` is the number
    of the oldest, so a caller that keeps pixels alongside can drop everything before it.

        cutter = WindowCutter(3.0, 0.25, 12)
        for frame in source:
            for k in cutter.add(frame.time):
                use(cutter.span(k))
            cutter.release()
        for k in cutter.finish():
            use(cutter.span(k))
    """

    def __init__(self, window: float, stride: float, num_frames: int):
        _check_settings(window, stride, num_frames)
        self.window, self.stride, self.num_frames = float(window), float(stride), num_frames
        self.t0: float | None = None
        self.next_index = 0  # the first window not yet complete
        self._wanted = 0  # the first window not yet released
        self._kept: collections.deque = collections.deque()  # (frame number, time), oldest first
        self._recent: collections.deque = collections.deque(maxlen=_PERIOD_FRAMES)  # times of the last frames
        self._count = 0
        self._finished = False

    @property
    def frames_seen(self) -> int:
        return self._count

    @property
    def first_kept(self) -> int:
        """The number of the oldest frame still kept (frames_seen when none is)."""
        return self._kept[0][0] if self._kept else self._count

    def _begin(self, k: int) -> float:
        return self.t0 + k * self.stride

    def _complete_until(self, time: float) -> list[int]:
        done = []
        while time >= self._begin(self.next_index) + self.window - EPS:
            done.append(self.next_index)
            self.next_index += 1
        return done

    def _forget(self) -> None:
        if self.t0 is None:
            return
        oldest = self._begin(min(self._wanted, self.next_index))
        while self._kept and self._kept[0][1] < oldest - EPS:
            self._kept.popleft()

    def add(self, time: float) -> list[int]:
        """Take the next frame's time; return the indices of the windows it completed (oldest first)."""
        if self._finished:
            raise RuntimeError("the stream was finished")
        time = float(time)
        if not math.isfinite(time) or (self._recent and time < self._recent[-1]):
            raise ValueError(f"frame times must be finite and non-decreasing, got {time!r} after "
                             f"{self._recent[-1] if self._recent else None!r}")
        self._forget()
        if self.t0 is None:
            self.t0 = time
        self._kept.append((self._count, time))
        self._recent.append(time)
        self._count += 1
        return self._complete_until(time)

    def finish(self) -> list[int]:
        """The stream ended: the windows that the end completes (see the module docstring), or window 0 of all
        frames for a stream shorter than one window. Nothing for an empty stream."""
        self._finished = True
        if self.t0 is None:
            return []
        self._forget()
        times = list(self._recent)
        period = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        done = []
        if self._kept:
            done = self._complete_until(self._kept[-1][1] + period)
        if not done and self.next_index == 0 and self._kept:
            self.next_index = 1  # the short-stream rule: window 0 holds everything there was
            done = [0]
        return done

    def span(self, k: int) -> WindowSpan:
        """Window k (complete, and not released)."""
        if not self._wanted <= k < self.next_index:
            raise ValueError(f"window {k} is not available (complete and kept: {self._wanted}.."
                             f"{self.next_index - 1})")
        begin = self._begin(k)
        kept = list(self._kept)
        times = [t for _, t in kept]
        inside, chosen, mask = sample_span(times, begin, self.window, self.num_frames)
        numbers = np.asarray([kept[i][0] for i in chosen], dtype=np.int64)
        start, end = (times[inside[0]], times[inside[-1]]) if len(inside) else (begin, begin)
        return WindowSpan(k, start, end, numbers, mask, len(inside))

    def release(self, k: int | None = None) -> None:
        """Windows before k (default: every complete window) will not be cut again; their frames may go."""
        self._wanted = max(self._wanted, min(self.next_index if k is None else k, self.next_index))
        self._forget()


def cut_windows(times: Sequence[float], window: float, stride: float, num_frames: int) -> list[WindowSpan]:
    """Every window of a finished stream whose frames have these times (seconds, non-decreasing)."""
    cutter = WindowCutter(window, stride, num_frames)
    spans = []
    for time in times:
        spans += [cutter.span(k) for k in cutter.add(time)]
        cutter.release()
    spans += [cutter.span(k) for k in cutter.finish()]
    return spans


def window_frames(span: WindowSpan, frame: Callable[[int], np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """uint8 [T, *shape]: the span's chosen frames (`frame(number)` gives one, of `shape`), zero where masked."""
    out = np.zeros((len(span.mask), *shape), np.uint8)
    for slot, number in enumerate(span.frames):
        out[slot] = frame(int(number))
    return out


def window_halves(frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and second half of a window as two windows of T slots: ([2, T, ...] frames, [2, T] mask). Each
    half's T // 2 frames are each repeated to fill the T slots, so a half keeps the window's frame spacing and the
    model sees T slots as always (for odd T the middle frame is in neither half)."""
    count = len(mask)
    half = count // 2
    if half == 0:
        raise ConfigError(f"a window of {count} frame(s) has no halves")
    pick = (np.arange(count) * half) // count  # 0, 0, 1, 1, ... half - 1
    chosen = np.stack([pick, count - half + pick])
    return frames[chosen], np.asarray(mask, bool)[chosen]
