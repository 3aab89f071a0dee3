"""Long synthetic videos: event clips between idle filler, with the time of every clip and event."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hbci.synth.captions import caption
from hbci.synth.render import render_clip, write_video
from hbci.synth.world import ClipSpec, event_frames, idle_spec

__all__ = ["StreamEvent", "StreamSegment", "make_stream"]


@dataclass(frozen=True)
class StreamEvent:
    kind: str
    colour: str
    shape: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class StreamSegment:
    """A clip inside a stream written by `make_stream`, with its times in seconds from the stream's start."""

    spec: ClipSpec
    caption: str
    start_s: float
    end_s: float
    events: tuple[StreamEvent, ...]


def make_stream(
    path: str | Path,
    segments: Sequence[ClipSpec | float],
    fps: float,
    size: int,
    rng: np.random.Generator,
    clip_frames: int = 24,
) -> list[StreamSegment]:
    """Write one long video of event clips and idle filler; return when each clip and event happens.

    segments: a ClipSpec is rendered over `clip_frames` frames in its own look; a number is that many seconds of
    idle filler (random static shapes in the classic look, no event). Frames are rendered and written one segment
    at a time (bounded memory). Times are frame_index / fps from the stream's first frame; captions are classic.
    """
    found: list[StreamSegment] = []

    def frames_iter():
        t = 0
        for seg in segments:
            if isinstance(seg, ClipSpec):
                clip = render_clip(seg, clip_frames, size)
                events = tuple(
                    StreamEvent(e.kind, seg.objects[e.obj].colour, seg.objects[e.obj].shape,
                                (t + a) / fps, (t + b) / fps)
                    for e, (a, b) in zip(seg.events, event_frames(seg, clip_frames))
                )
                found.append(StreamSegment(seg, caption(seg, rng), t / fps, (t + clip_frames) / fps, events))
            else:
                n = int(round(float(seg) * fps))
                clip = render_clip(idle_spec(rng), n, size) if n > 0 else np.zeros((0, size, size, 3), np.uint8)
            yield from clip
            t += len(clip)

    write_video(path, frames_iter(), fps)
    return found
