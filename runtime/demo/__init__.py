"""The embedded demo: a small trained bundle shipped in `bundle/` and a synthetic stream with known events.

The bundle comes from the project's own pipeline (`scripts/build_demo_bundle.sh`: hbci-synth -> hbci-train with
the small config -> export/build_engines.py -> FP16 copy). The stream is rendered once by
`hbci.synth.make_stream` into the cache folder ($HBCI_CACHE, else $XDG_CACHE_HOME/hbci, else ~/.cache/hbci, then
demo/) with the times of every clip, so `hbci-run --demo` can say where the known events were.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from hbci.runtime.alerts import Interval, alerts_from_events, match_alerts
from hbci.runtime.bundle import atomic_write_bytes

__all__ = ["BUNDLE_DIR", "DEMO_QUERIES", "KnownClip", "cache_dir", "demo_segments", "demo_stream", "occurrences",
           "report_lines"]

BUNDLE_DIR = Path(__file__).resolve().parent / "bundle"
# The first query happens twice in the demo stream; the second, a near miss of the green triangle's clip (another
# shape), never does. The shipped demo model tells motion directions apart but shapes less well: over the
# triangle's clip it ranks the near miss below the true caption yet above its threshold, so the demo shows that
# one false alert (README, "the demo"). The seed gives idle filler without the queries' objects.
DEMO_QUERIES = ("a red circle moves left", "a green square moves up")
_FPS, _SIZE, _SEED = 8.0, 64, 2028
_VERSION = 1


def cache_dir() -> Path:
    if os.environ.get("HBCI_CACHE"):
        return Path(os.environ["HBCI_CACHE"]) / "demo"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hbci" / "demo"


def demo_segments() -> list:
    """The demo stream: idle filler (seconds) and hand-placed clips (24 frames, 3 s at 8 fps)."""
    from hbci.synth import ClipSpec, Event, SceneObject

    def one(colour, shape, kind, x, y, scale=0.34, amount=0.35):
        return ClipSpec((SceneObject(colour, shape, x, y, scale),), (Event(kind, 0, amount),))

    return [
        4.0,
        one("red", "circle", "move_left", 0.25, 0.45),  # the query
        4.0,
        one("blue", "square", "grow", 0.5, 0.5, amount=0.5),  # unrelated
        4.0,
        one("green", "triangle", "move_up", 0.4, 0.25),  # a near miss of the second query (a triangle)
        4.0,
        one("red", "circle", "move_left", 0.3, 0.6),  # the query again, elsewhere in the frame
        4.0,
    ]


def _key(segments) -> str:
    from hbci.synth import ClipSpec, spec_to_dict

    body = [spec_to_dict(s) if isinstance(s, ClipSpec) else s for s in segments]
    text = json.dumps({"v": _VERSION, "fps": _FPS, "size": _SIZE, "seed": _SEED, "segments": body}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def demo_stream(folder: str | os.PathLike | None = None) -> tuple[Path, list[dict]]:
    """(video path, known clips) for the demo stream, rendering it on first use.

    Each known clip: {"caption", "start_s", "end_s", "events": [[colour, shape, kind], ...]}.
    """
    from hbci.synth import make_stream

    segments = demo_segments()
    folder = Path(folder) if folder is not None else cache_dir()
    key = _key(segments)
    video, meta = folder / f"demo-{key}.mp4", folder / f"demo-{key}.json"
    if video.is_file() and meta.is_file():
        return video, json.loads(meta.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    found = make_stream(video, segments, _FPS, _SIZE, np.random.default_rng(_SEED))
    known = [known_clip(s) for s in found]
    atomic_write_bytes(meta, json.dumps(known, indent=1).encode())
    return video, known


def known_clip(segment) -> dict:
    """A `hbci.synth.StreamSegment` as JSON-ready facts."""
    from hbci.synth import describe

    return {"caption": segment.caption, "start_s": segment.start_s, "end_s": segment.end_s,
            "events": [list(e) for e in describe(segment.spec)]}


KnownClip = dict


def occurrences(query: str, known: Sequence[dict]) -> tuple[list[Interval], list[Interval]]:
    """(true occurrences, ambiguous ones) of a synthetic-vocabulary query among known clips.

    True: clips whose whole content is the query's (same events, same order). Ambiguous: clips that contain the
    query's events, in the query's order, and more besides (a one-event query inside a two-event clip): an alert
    there is neither right nor wrong. The same events in another order are a hard negative, not ambiguous. A
    query the caption parser cannot read has neither.
    """
    from hbci.synth import parse_caption

    try:
        wanted = [list(e) for e in parse_caption(query.lower())]
    except ValueError:
        return [], []
    exact, partial = [], []
    for clip in known:
        span = Interval(clip["start_s"], clip["end_s"])
        if clip["events"] == wanted:
            exact.append(span)
        elif len(wanted) < len(clip["events"]) and _in_order(wanted, clip["events"]):
            partial.append(span)
    return exact, partial


def _in_order(wanted: list, events: list) -> bool:
    """Whether `wanted` is a subsequence of `events`."""
    remaining = iter(events)
    return all(any(e == w for e in remaining) for w in wanted)


def report_lines(events: Sequence[dict], known: Sequence[dict], queries: Sequence[str],
                 min_overlap: float) -> list[str]:
    """A short human summary: where the known clips were, and what each query's alerts matched."""
    lines = ["known clips in the stream:"]
    lines += [f"  {c['start_s']:6.2f}-{c['end_s']:6.2f} s  {c['caption']}" for c in known]
    alerts = alerts_from_events(events)
    for query in queries:
        truths, ambiguous = occurrences(query, known)
        got = alerts.get(query, [])
        result = match_alerts(got, truths, min_overlap, ambiguous)
        spans = ", ".join(f"{a.start:.2f}-{a.end:.2f} s" for a in got) or "none"
        lines.append(f"query {query!r}: {len(truths)} occurrence(s), {len(got)} alert(s) [{spans}]: "
                     f"{result['found']}/{result['occurrences']} found, {result['fp']} false alert(s)")
    return lines
