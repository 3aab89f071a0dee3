"""Rendering clips to RGB frames and writing them as mp4v videos (numpy + OpenCV)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from hbci.runtime.errors import VideoError
from hbci.synth.look import background, camera_offsets
from hbci.synth.world import COLOURS, ClipSpec, check_spec, clip_states

__all__ = ["render_clip", "object_colour", "write_video"]

_SHIFT = 4  # sub-pixel bits for cv2 drawing, so slow motion is smooth rather than stepping whole pixels
_MARGIN_PX = 2  # room around the frame for camera shake (look.camera_offsets never exceeds it)


def object_colour(colour: str, tint: tuple[int, int, int]) -> tuple[int, int, int]:
    """A colour name's RGB with an object's jitter added, clipped to [0, 255]."""
    return tuple(min(255, max(0, int(c) + int(t))) for c, t in zip(COLOURS[colour], tint))


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, side: float, colour, angle: float = 0.0) -> None:
    """Draw one filled, anti-aliased shape in place; (cx, cy, side) in pixels, pixel centres at integers."""
    f = 1 << _SHIFT
    h = side / 2.0
    if shape == "circle":
        cv2.circle(img, (round(cx * f), round(cy * f)), round(h * f), colour, -1, cv2.LINE_AA, _SHIFT)
        return
    if shape == "square":
        pts = np.array([(-h, -h), (h, -h), (h, h), (-h, h)])
    else:  # triangle pointing up, filling the bounding box
        pts = np.array([(0.0, -h), (h, h), (-h, h)])
    if angle:
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        pts = pts @ np.array([[c, s], [-s, c]])
    pts = pts + (cx, cy)
    cv2.fillConvexPoly(img, np.round(pts * f).astype(np.int32), colour, cv2.LINE_AA, _SHIFT)


def render_clip(spec: ClipSpec, frames: int, size: int) -> np.ndarray:
    """Render a clip: uint8 [frames, size, size, 3] RGB in the spec's look. Pure function of its arguments."""
    check_spec(spec)
    if frames < max(1, 2 * len(spec.events)):
        raise ValueError(f"{frames} frames is too few for {len(spec.events)} event(s) (need 2 per event)")
    states = clip_states(spec, frames)
    shakes = camera_offsets(spec.look, frames)
    margin = _MARGIN_PX if shakes.any() else 0
    side = size + 2 * margin
    backdrop = background(spec.look, side)
    canvas = np.empty((side, side, 3), np.uint8)
    colours = [object_colour(o.colour, o.tint) for o in spec.objects]
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        canvas[:] = backdrop  # cv2 draws into the canvas in place
        for j, o in enumerate(spec.objects):
            x, y, scale, alpha = states[t, j]
            if alpha <= 0.0:
                continue
            geometry = (o.shape, x * size - 0.5 + margin, y * size - 0.5 + margin, scale * size)
            colour = colours[j]
            if alpha >= 1.0:  # opaque: cv2's own anti-aliased blend, much cheaper than compositing in numpy
                _draw(canvas, *geometry, colour, o.angle)
                continue
            mask = np.zeros((side, side), dtype=np.uint8)
            _draw(mask, *geometry, 255, o.angle)
            cover = (alpha / 255.0) * mask[..., None].astype(np.float32)
            canvas[:] = np.rint(canvas * (1.0 - cover) + np.array(colour, np.float32) * cover)
        dx, dy = shakes[t]
        out[t] = canvas[margin + dy:margin + dy + size, margin + dx:margin + dx + size]
    return out


def write_video(path: str | Path, frames_rgb: np.ndarray | Iterable[np.ndarray], fps: float) -> Path:
    """Write RGB uint8 frames (an array [F, H, W, 3] or any iterable of [H, W, 3]) as an mp4v file.

    Written to a temporary name and renamed, so an interrupted run never leaves a truncated file under `path`.
    Frames are consumed one at a time, so a generator keeps memory bounded for long streams.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.partial{path.suffix}")  # keep the suffix: FFmpeg picks the container by it
    writer, count = None, 0
    try:
        for frame in frames_rgb:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                if not writer.isOpened():
                    raise VideoError(path, "cannot open an mp4v video writer (OpenCV built without FFmpeg?)")
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frames to write")
    os.replace(tmp, path)
    return path
