"""The on-disk frame cache: every video decoded once at a fixed frame rate, its short side resized, one file per video.

Written by `hbci-prepare`, read by `hbci.data.load_clipset` when `data.cache_dir` is set. Independent of T and of
any [start, end] span: a clip's T frames are sampled uniformly from the cached frames that fall in its span, then
resized and centre-cropped by `hbci.runtime.video.resize_center_crop`, the runtime's own function.

Layout of a cache folder::

    cache.json                 {"format", "fps", "short_side", "codec"}: a folder holds one setting only
    videos/<key>.npz           one video: times [N] (seconds), frames (raw [N, H, W, 3] uint8, or the JPEG
                               bytes of the N frames concatenated, with offsets [N + 1]), meta (JSON text)
    failed.json                {key: {"path", "reason"}} of the videos the last run could not decode
    clips/                     clip sets materialised from the entries (see hbci.data)

`<key>` is the video's path relative to the dataset root (so the folder can move with the dataset), or, for a
video outside the root, a hash of its absolute path followed by its name. Each entry is written to a temporary
file, flushed to disk and renamed into place, so an interrupted run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from hbci.runtime.errors import ConfigError, VideoError
# The runtime's reader: the same opening (auto-orientation, errors that name the file), colour conversion and
# frame timing as `load_clip`, so cached frames are the frames the runtime would decode.
from hbci.runtime.video import frame_times, read_indices, sample_indices

__all__ = ["FORMAT", "MIN_FRAMES", "JPEG_QUALITY", "CacheSpec", "FrameCache", "default_short_side",
           "rate_indices", "span_indices", "timestamps", "decode_video", "read_span", "Entry"]

FORMAT = "hbci-frames/1"
MIN_FRAMES = 64          # a video keeps at least this many frames (or all it has), so T <= 64 samples distinct ones
JPEG_QUALITY = 95
ASSUMED_FPS = 25.0       # only when neither the timestamps nor the container's rate can be trusted


def default_short_side(image_size: int) -> int:
    """8/7 of the image size (256 for 224): room for the centre crop, and a fraction of the full-size frame."""
    return int(round(image_size * 8 / 7))


@dataclass(frozen=True)
class CacheSpec:
    fps: float
    short_side: int
    codec: str = "jpg"

    @classmethod
    def from_config(cls, data_cfg, image_size: int) -> "CacheSpec":
        side = data_cfg.cache_short_side or default_short_side(image_size)
        if side < image_size:
            raise ConfigError(f"data.cache_short_side {side} is below the model image size {image_size}: "
                              f"every frame would be upscaled")
        return cls(float(data_cfg.cache_fps), int(side), data_cfg.cache_codec)


def rate_indices(times: np.ndarray, fps: float, min_frames: int = MIN_FRAMES) -> np.ndarray:
    """Indices of the frames to keep: the first frame at or after each tick of a clock at `fps` (raised so that
    the video yields at least `min_frames` ticks), starting at the first frame. Distinct and increasing."""
    n = len(times)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    duration = float(times[-1] - times[0])
    if duration <= 0:
        return np.arange(n, dtype=np.int64)[:1]
    rate = max(fps, min_frames / duration)
    ticks = times[0] + np.arange(int(math.floor(duration * rate + 1e-9)) + 1) / rate
    # 1 microsecond of slack: a frame stamped 0.333333 s is the frame of the tick at 1/3 s.
    return np.unique(np.minimum(np.searchsorted(times, ticks - 1e-6, side="left"), n - 1)).astype(np.int64)


def span_indices(times: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    """Indices of the frames inside [start, end] (seconds; None is open; 1 microsecond of slack, as frame times
    carry float noise: 0.6000000000000001). A span between two frames gives the frame nearest its middle, so
    every clip has at least one frame."""
    lo = -np.inf if start is None else start
    hi = np.inf if end is None else end
    inside = np.flatnonzero((times >= lo - 1e-6) & (times <= hi + 1e-6))
    if len(inside) or len(times) == 0:
        return inside
    middle = (max(lo, times[0]) + min(hi, times[-1])) / 2
    return np.asarray([int(np.argmin(np.abs(times - middle)))])


def timestamps(path: str | Path) -> tuple[np.ndarray, str]:
    """Every decodable frame's time in seconds, and where the times came from."""
    times = frame_times(path)
    if len(times) == 0:
        raise VideoError(path, "no decodable frames")
    if not np.all(np.isfinite(times)):
        return np.arange(len(times)) / ASSUMED_FPS, f"unknown, {ASSUMED_FPS:g} fps assumed"
    return times, "container"


class _ShortSide:
    """Resize to a short side of `side` (never up; INTER_AREA, which averages instead of aliasing when shrinking a
    large frame). Every frame takes the first frame's output size, so a mid-stream resolution change still stacks."""

    def __init__(self, side: int):
        self.side, self.size = side, None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.size is None:
            h, w = frame.shape[:2]
            scale = min(1.0, self.side / min(h, w))
            self.size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        if (frame.shape[1], frame.shape[0]) == self.size:
            return np.ascontiguousarray(frame)
        return cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)


def decode_video(path: str | Path, spec: CacheSpec) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """Decode one video for the cache: (frames at the cache's rate and short side, their times, meta)."""
    times, timing = timestamps(path)
    frames, got = read_indices(path, rate_indices(times, spec.fps), _ShortSide(spec.short_side))
    if not frames:
        raise VideoError(path, f"{len(times)} frames counted on the first pass but none could be retrieved")
    meta = {"source_frames": int(len(times)), "timing": timing, "duration": float(times[-1] - times[0])}
    return frames, times[got], meta


def read_span(path: str | Path, num_frames: int, image_size: int, start: float | None, end: float | None):
    """Like `hbci.runtime.video.load_clip` for the [start, end] span of a video: T frames sampled uniformly from
    the frames inside the span, resized and centre-cropped by the runtime's function. (uint8 [T, S, S, 3], mask)"""
    from hbci.runtime.video import resize_center_crop

    times, _ = timestamps(path)
    inside = span_indices(times, start, end)
    frames, _ = read_indices(path, inside[sample_indices(len(inside), num_frames)])
    if not frames:
        raise VideoError(path, f"no frame of the span [{start}, {end}] s could be retrieved")
    return _pad(resize_center_crop(np.stack(frames), image_size), num_frames)


def _pad(frames: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((num_frames, *frames.shape[1:]), dtype=np.uint8)
    out[: len(frames)] = frames
    mask = np.zeros(num_frames, dtype=bool)
    mask[: len(frames)] = True
    return out, mask


class Entry:
    """One cached video: its frame times, and its frames decoded on demand."""

    def __init__(self, path: Path):
        with np.load(path) as z:
            self.times = z["times"]
            self.meta = json.loads(str(z["meta"]))
            self._frames = z["frames"]
            self._offsets = z["offsets"] if "offsets" in z.files else None

    def __len__(self) -> int:
        return len(self.times)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [k, H, W, 3] RGB."""
        if self._offsets is None:
            return self._frames[indices]
        out = []
        for i in indices:
            data = self._frames[self._offsets[i]:self._offsets[i + 1]]
            out.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)

    def clip(self, num_frames: int, image_size: int, start: float | None = None, end: float | None = None):
        """T frames sampled uniformly from the cached frames inside [start, end], resized and centre-cropped by the
        runtime's `resize_center_crop`: (uint8 [T, S, S, 3], bool mask [T])."""
        from hbci.runtime.video import resize_center_crop

        inside = span_indices(self.times, start, end)
        frames = self.frames(inside[sample_indices(len(inside), num_frames)])
        return _pad(resize_center_crop(frames, image_size), num_frames)


def _atomic_write(path: Path, write: Callable) -> None:
    """Write through a temporary file in the same folder, flushed to disk, then renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class FrameCache:
    """A cache folder of one `CacheSpec`. Opening one written with another spec is refused, naming the difference."""

    def __init__(self, root: str | Path, spec: CacheSpec, data_root: str | Path, create: bool = False):
        self.root, self.spec = Path(root), spec
        self.data_root = os.path.abspath(data_root)
        manifest = self.root / "cache.json"
        wanted = {"format": FORMAT, **asdict(spec)}
        if manifest.is_file():
            found = json.loads(manifest.read_text())
            diffs = [f"{k}: cache {found.get(k)!r} vs config {v!r}" for k, v in wanted.items() if found.get(k) != v]
            if diffs:
                raise ConfigError(f"{self.root} holds a frame cache of another setting ({'; '.join(diffs)}); "
                                  f"use another data.cache_dir or the cache's setting")
        elif create:
            _atomic_write(manifest, lambda fh: fh.write(json.dumps(wanted, indent=1).encode()))
        else:
            raise ConfigError(f"{self.root}: no frame cache here (no cache.json); run hbci-prepare first")

    def key(self, video: str | Path) -> str:
        path = os.path.abspath(video)
        if path.startswith(self.data_root + os.sep):
            return Path(os.path.relpath(path, self.data_root)).as_posix()
        digest = hashlib.sha1(path.encode()).hexdigest()[:16]
        return f"_outside/{digest}_{Path(path).name}"

    def entry_path(self, video: str | Path) -> Path:
        return self.root / "videos" / (self.key(video) + ".npz")

    def has(self, video: str | Path) -> bool:
        return self.entry_path(video).is_file()

    def entry(self, video: str | Path) -> Entry:
        return Entry(self.entry_path(video))

    def write(self, video: str | Path, frames: list[np.ndarray], times: np.ndarray, meta: dict) -> Path:
        arrays = {"times": np.asarray(times, dtype=np.float64)}
        meta = {**meta, "source": str(video), "source_bytes": os.path.getsize(video), **asdict(self.spec)}
        arrays["meta"] = np.asarray(json.dumps(meta))
        if self.spec.codec == "raw":
            arrays["frames"] = np.stack(frames)
        else:
            params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            blobs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), params)[1].reshape(-1) for f in frames]
            arrays["offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
            arrays["frames"] = np.concatenate(blobs)
        path = self.entry_path(video)
        _atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    def failures(self) -> dict[str, dict]:
        path = self.root / "failed.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_failures(self, failures: dict[str, dict]) -> None:
        _atomic_write(self.root / "failed.json", lambda fh: fh.write(json.dumps(failures, indent=1).encode()))

    def remove_partial_files(self) -> int:
        """Delete temporary files an interrupted run left behind; returns how many."""
        stale = [p for p in self.root.rglob("*.tmp") if p.is_file()]
        for p in stale:
            p.unlink()
        return len(stale)
