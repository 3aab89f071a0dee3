"""Video decoding and CLIP preprocessing shared by training and the runtime (numpy + OpenCV, no torch).

One code path for both sides keeps preprocessing identical: the dataset loader and the runtime both call
`load_clip` (or `read_frames` + `resize_center_crop` + `normalize`).

Decoding never trusts the container's frame count (CAP_PROP_FRAME_COUNT is wrong or negative for some files,
and corrupt streams stop early): a first pass counts the frames that actually decode with `grab()`, then
`sample_indices` picks the frames and a second pass retrieves only those, so memory stays bounded by T frames.

Rotation: OpenCV (4.5+, and 5.0 here) applies the container's rotation metadata itself when
CAP_PROP_ORIENTATION_AUTO is on, which we set explicitly. A phone video stored 568x320 with a 90 degree tag comes
out 320 wide and 568 high, rotated clockwise, so frames are upright (checked on the decord rotation samples).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from hbci.runtime.errors import VideoError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "sample_indices",
    "open_video",
    "to_rgb",
    "jpeg_thumbnail",
    "frame_times",
    "iter_frames_at",
    "read_indices",
    "FirstFrameSize",
    "count_frames",
    "read_frames",
    "read_frames_with_times",
    "resize_center_crop",
    "normalize",
    "preprocess",
    "load_clip",
]

# OpenAI CLIP's normalisation constants (open_clip's OPENAI_DATASET_MEAN / OPENAI_DATASET_STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def sample_indices(num_available: int, num_frames: int) -> np.ndarray:
    """Uniformly sample frame indices.

    With n = num_available >= T = num_frames, the video is cut into T equal segments and the frame at the centre of
    each is taken: ``index_i = floor((2 i + 1) n / (2 T))`` for i = 0..T-1 (integer arithmetic, no float
    rounding). Consecutive centres are n / T >= 1 apart, so the indices are distinct and increasing. With n < T all
    n indices are returned (the caller pads and masks); n == 0 gives an empty array.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_available < 0:
        raise ValueError(f"num_available must be >= 0, got {num_available}")
    if num_available < num_frames:
        return np.arange(num_available, dtype=np.int64)
    i = np.arange(num_frames, dtype=np.int64)
    return ((2 * i + 1) * num_available) // (2 * num_frames)


def open_video(path: str | Path) -> cv2.VideoCapture:
    """Open a capture with auto-orientation on, or raise VideoError naming the cause."""
    p = Path(path)
    if not p.exists():
        raise VideoError(p, "file not found")
    if not p.is_file():
        raise VideoError(p, "not a regular file")
    try:
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            raise VideoError(p, "cannot be opened as a video (unknown container or codec, or not a video)")
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    except cv2.error as e:  # OpenCV raises for some malformed inputs instead of returning a closed capture
        raise VideoError(p, f"OpenCV could not open it: {str(e).strip().splitlines()[-1]}") from None
    return cap


def _count_and_times(path: str | Path) -> tuple[int, np.ndarray, float]:
    """First pass: count decodable frames, recording each frame's position in ms (cheap: one float per frame)."""
    cap = open_video(path)
    times: list[float] = []
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        while cap.grab():
            times.append(float(cap.get(cv2.CAP_PROP_POS_MSEC)))
    except cv2.error as e:
        # A decoder error mid-stream ends the count; the frames before it are still usable.
        if not times:
            raise VideoError(path, f"decoding failed: {str(e).strip().splitlines()[-1]}") from None
    finally:
        cap.release()
    return len(times), np.asarray(times, dtype=np.float64), fps


def count_frames(path: str | Path) -> int:
    """Number of frames that actually decode (one full decoding pass; the container's count is not used)."""
    return _count_and_times(path)[0]


def _frame_times(pos_ms: np.ndarray, fps: float) -> np.ndarray:
    """Per-frame timestamps in seconds.

    CAP_PROP_POS_MSEC is exact for variable frame rates but unreliable in some containers (AVI reports the end
    of the frame and 0 for the last ones), so it is used only when strictly increasing; otherwise index / fps,
    and NaN when the fps is unknown too.
    """
    n = len(pos_ms)
    if n and np.all(np.diff(pos_ms) > 0) and pos_ms[0] >= 0:
        return pos_ms / 1000.0
    if math.isfinite(fps) and 0 < fps < 1000:
        return np.arange(n, dtype=np.float64) / fps
    return np.full(n, np.nan)


def frame_times(path: str | Path) -> np.ndarray:
    """The time in seconds of every frame that decodes (one full pass; NaN where neither the container's
    timestamps nor its frame rate can be trusted). Its length is the real frame count."""
    _, pos_ms, fps = _count_and_times(path)
    return _frame_times(pos_ms, fps)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or grey) as RGB."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def jpeg_thumbnail(frame: np.ndarray, side: int, quality: int = 80) -> bytes:
    """An RGB frame as JPEG bytes, shrunk (never enlarged) so that its long side is at most `side`; b"" if the
    encoder fails."""
    h, w = frame.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg.tobytes() if ok else b""


def iter_frames_at(path: str | Path, indices: Sequence[int],
                   transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode sequentially (seeking by frame number is not exact in OpenCV) and yield (index, frame) for the
    increasing `indices`, each frame converted to RGB and passed through `transform`, so memory holds only what
    the caller keeps. A stream that breaks off ends early, after the frames before the damage."""
    wanted = list(indices)
    cap = open_video(path)
    try:
        pos, k = 0, 0
        while k < len(wanted) and cap.grab():
            if pos == wanted[k]:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    frame = to_rgb(frame)
                    yield pos, (transform(frame) if transform is not None else frame)
                k += 1
            pos += 1
    except cv2.error:
        pass  # keep the frames decoded before the error, as the counting pass does
    finally:
        cap.release()


def read_indices(path: str | Path, indices: Sequence[int],
                 transform: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The frames at the increasing `indices` (see `iter_frames_at`), and the indices actually read."""
    pairs = list(iter_frames_at(path, indices, transform))
    return [f for _, f in pairs], np.asarray([i for i, _ in pairs], dtype=np.int64)


class FirstFrameSize:
    """Resize every frame to the first frame's size, so that a mid-stream resolution change still stacks (files
    and live sources alike)."""

    def __init__(self):
        self.shape = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.shape is None:
            self.shape = frame.shape
        if frame.shape == self.shape:
            return frame
        return cv2.resize(frame, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_AREA)


def read_frames_with_times(path: str | Path, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like `read_frames`, plus the timestamp in seconds of each returned frame (NaN for padding)."""
    all_times = frame_times(path)
    if len(all_times) == 0:
        raise VideoError(path, "no decodable frames")
    frames_read, got = read_indices(path, sample_indices(len(all_times), num_frames), FirstFrameSize())
    if not frames_read:
        raise VideoError(path, f"{len(all_times)} frames counted on the first pass but none could be retrieved")
    h, w, _ = frames_read[0].shape
    frames = np.zeros((num_frames, h, w, 3), dtype=np.uint8)
    frames[: len(got)] = np.stack(frames_read)
    mask = np.zeros(num_frames, dtype=bool)
    mask[: len(got)] = True
    times = np.full(num_frames, np.nan)
    times[: len(got)] = all_times[got]
    return frames, mask, times


def read_frames(path: str | Path, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode `num_frames` uniformly sampled frames of a video file.

    Returns (frames uint8 [T, H, W, 3] RGB, mask bool [T]). A video with n < T decodable frames gives its n frames
    first, then zero frames with mask False. Raises VideoError when the file is missing, cannot be opened or
    yields no frame; a corrupt stream that decodes partly gives the frames before the damage.
    """
    frames, mask, _ = read_frames_with_times(path, num_frames)
    return frames, mask


def _resized_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side == size; the long side truncated as torchvision's Resize does."""
    if h <= w:
        return size, max(size, int(size * w / h))
    return max(size, int(size * h / w)), size


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize each frame's short side to `size` (bicubic, as open_clip) and centre-crop to size x size.

    frames: uint8 [N, H, W, 3] -> uint8 [N, size, size, 3]. Crop offsets are round((H - size) / 2), like
    torchvision's CenterCrop.
    """
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    n, h, w, _ = frames.shape
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    if n == 0:
        return out
    new_h, new_w = _resized_size(h, w, size)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    for i in range(n):
        frame = np.ascontiguousarray(frames[i])  # cv2 rejects some strided views (e.g. reversed arrays)
        resized = frame if (new_h, new_w) == (h, w) else cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
        out[i] = resized[top : top + size, left : left + size]
    return out


def normalize(
    frames: np.ndarray, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> np.ndarray:
    """uint8 [N, S, S, 3] RGB -> float32 [N, 3, S, S]: scale to [0, 1], subtract mean, divide by std."""
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"expected [N, S, S, 3] frames, got {frames.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(1, 1, 1, 3)
    s = np.asarray(std, dtype=np.float32).reshape(1, 1, 1, 3)
    x = (frames.astype(np.float32) / np.float32(255.0) - m) / s
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(frames: np.ndarray, size: int, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """uint8 RGB frames [N, H, W, 3] -> the model's float32 input [N, 3, size, size]: `resize_center_crop` (skipped
    for frames that are already size x size, such as the monitor's crops: cropping twice would only copy), then
    `normalize`."""
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H, W, 3] frames, got {frames.dtype} {frames.shape}")
    if frames.shape[1:3] != (size, size):
        frames = resize_center_crop(frames, size)
    return normalize(frames, mean, std)


def load_clip(path: str | Path, num_frames: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """read_frames + resize_center_crop: (uint8 [T, S, S, 3], bool [T]); padded frames stay zero."""
    frames, mask = read_frames(path, num_frames)
    out = np.zeros((num_frames, image_size, image_size, 3), dtype=np.uint8)
    out[mask] = resize_center_crop(frames[mask], image_size)
    return out, mask
