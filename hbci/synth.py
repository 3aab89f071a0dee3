"""Synthetic text-video benchmark: coloured shapes that move, grow, shrink, appear and vanish, with template captions.

Hard negatives differ only in motion direction, temporal order or attribute binding, so mean pooling of frame
features cannot separate them: "moves left" renders exactly the frames of "moves right" in reverse order. Clips are
written as real mp4v files and read back through `hbci.runtime.video`, like real data. numpy + OpenCV only.

Layout written by `generate` / `hbci-synth`:
    DIR/videos/<split>/<id>.mp4   one clip per file (mp4v, RGB content on black)
    DIR/<split>.csv               header `video,caption`, paths relative to DIR, one row per (video, caption)
    DIR/meta.json                 generator settings, and per clip its group, variant, captions and structured spec
Files are overwritten in place; videos of an earlier, larger run in the same DIR are left alone (the CSVs and
meta.json list only the current run's clips).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from hbci.runtime.errors import ExitCode, HbciError, VideoError, exit_code, exit_codes_epilog

__all__ = [
    "COLOURS",
    "SHAPES",
    "KINDS",
    "REVERSE",
    "SceneObject",
    "Event",
    "ClipSpec",
    "StreamEvent",
    "StreamSegment",
    "random_spec",
    "variants",
    "labelled_variants",
    "describe",
    "event_frames",
    "clip_states",
    "render_clip",
    "caption",
    "parse_caption",
    "spec_to_dict",
    "spec_from_dict",
    "write_video",
    "generate",
    "make_stream",
    "main",
]

# RGB; saturated and far apart so they survive mp4v's 4:2:0 chroma at 64 px and a 32 px downscale.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 210, 50),
    "blue": (40, 80, 255),
    "yellow": (240, 230, 30),
    "white": (245, 245, 245),
    "magenta": (230, 40, 230),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
KINDS: tuple[str, ...] = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink", "appear", "disappear")
REVERSE: dict[str, str] = {
    "move_left": "move_right", "move_right": "move_left", "move_up": "move_down", "move_down": "move_up",
    "grow": "shrink", "shrink": "grow", "appear": "disappear", "disappear": "appear",
}
# Paths are computed for these kinds; their reverses play the same states backwards (the reversal property).
_FORWARD = frozenset({"move_right", "move_down", "grow", "appear"})
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_FORMAT = "hbci-synth/1"

_SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
}
# (present tense, gerund) pairs; the gerund serves the "followed by" template.
_VERBS: dict[str, tuple[tuple[str, str], ...]] = {
    "move_left": (("moves left", "moving left"), ("moves to the left", "moving to the left"),
                  ("slides to the left", "sliding to the left"), ("goes left", "going left")),
    "move_right": (("moves right", "moving right"), ("moves to the right", "moving to the right"),
                   ("slides to the right", "sliding to the right"), ("goes right", "going right")),
    "move_up": (("moves up", "moving up"), ("goes up", "going up"), ("rises", "rising"),
                ("slides upward", "sliding upward")),
    "move_down": (("moves down", "moving down"), ("goes down", "going down"), ("drops", "dropping"),
                  ("slides downward", "sliding downward")),
    "grow": (("grows", "growing"), ("gets bigger", "getting bigger"), ("expands", "expanding"),
             ("grows larger", "growing larger")),
    "shrink": (("shrinks", "shrinking"), ("gets smaller", "getting smaller"), ("contracts", "contracting")),
    "appear": (("appears", "appearing"), ("shows up", "showing up"), ("fades in", "fading in")),
    "disappear": (("disappears", "disappearing"), ("vanishes", "vanishing"), ("fades out", "fading out")),
}
# Two-event templates: A happens first, B second. "after" states B first in the text, so word order alone
# does not give the temporal order.
_TEMPLATES: tuple[str, ...] = (
    "{a} {va}, then {b} {vb}",
    "{a} {va}, and then {b} {vb}",
    "{a} {va}, after that {b} {vb}",
    "first {a} {va}, then {b} {vb}",
    "{a} {ga}, followed by {b} {gb}",
    "{a} {va} before {b} {vb}",
    "{b} {vb} after {a} {va}",
)

_SCALE_RANGE = (0.30, 0.38)  # bounding-box side / frame side: about 19-24 px at 64 px, 10-12 px at 32 px
_MOVE_RANGE = (0.25, 0.40)  # path length / frame side
_RATIO_RANGE = (0.45, 0.60)  # small / full size for grow and shrink
_MARGIN = 0.02
_CORE = 0.8  # two objects may touch but the central 80% of their boxes never overlap in any frame
_LAYOUT_TRIES = 500  # layouts per choice of kinds: enough that crowded pairs (left + up) are not under-represented


@dataclass(frozen=True)
class SceneObject:
    """A shape. (x, y) is its centre in frame fractions at the start of a forward path (left/top end of a move)."""

    colour: str
    shape: str
    x: float
    y: float
    scale: float  # side of the bounding box at full size, as a fraction of the frame side


@dataclass(frozen=True)
class Event:
    """What one object does during its phase."""

    kind: str
    obj: int  # index into ClipSpec.objects
    amount: float = 0.0  # moves: path length (frame fraction); grow/shrink: small/full size ratio; else unused


@dataclass(frozen=True)
class ClipSpec:
    """A clip: objects, and events in temporal order; event i fills the i-th of len(events) equal phases.

    Each object has at most one event. Outside its phase an object rests at its event's start state (before) or
    end state (after): invisible before "appear" and after "disappear". An object without an event is static.
    """

    objects: tuple[SceneObject, ...]
    events: tuple[Event, ...]


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


def _check(spec: ClipSpec) -> None:
    owners = [e.obj for e in spec.events]
    if len(set(owners)) != len(owners):
        raise ValueError("each object may have at most one event")
    for e in spec.events:
        if e.kind not in REVERSE:
            raise ValueError(f"unknown event kind {e.kind!r}; expected one of {', '.join(KINDS)}")
        if not 0 <= e.obj < len(spec.objects):
            raise ValueError(f"event {e.kind} refers to object {e.obj}, but the clip has {len(spec.objects)}")
    for o in spec.objects:
        if o.colour not in COLOURS or o.shape not in SHAPES:
            raise ValueError(f"unknown colour or shape: {o.colour} {o.shape}")


def event_frames(spec: ClipSpec, frames: int) -> list[tuple[int, int]]:
    """[start, end) frame range of each event: the clip is cut into len(events) near-equal phases."""
    n = len(spec.events)
    return [(i * frames // n, (i + 1) * frames // n) for i in range(n)]


def _forward_path(obj: SceneObject, kind: str, amount: float, n: int) -> np.ndarray:
    """States [n, 4] = (x, y, scale, alpha) of a forward kind, from its start state to its end state."""
    p = np.linspace(0.0, 1.0, n) if n > 1 else np.ones(1)
    state = np.tile(np.array([obj.x, obj.y, obj.scale, 1.0]), (n, 1))
    if kind == "move_right":
        state[:, 0] = obj.x + amount * p
    elif kind == "move_down":
        state[:, 1] = obj.y + amount * p
    elif kind == "grow":
        state[:, 2] = obj.scale * (amount + (1.0 - amount) * p)
    elif kind == "appear":
        state[:, 3] = np.clip((p - 0.25) / 0.5, 0.0, 1.0)  # fades in over the middle half of the phase
    return state


def _event_path(obj: SceneObject, event: Event, n: int) -> np.ndarray:
    if event.kind in _FORWARD:
        return _forward_path(obj, event.kind, event.amount, n)
    # The reverse kind plays the forward states backwards: same set of frames, opposite order.
    return _forward_path(obj, REVERSE[event.kind], event.amount, n)[::-1]


def clip_states(spec: ClipSpec, frames: int) -> np.ndarray:
    """Per-frame state [frames, objects, 4] = (x, y, scale, alpha)."""
    states = np.empty((frames, len(spec.objects), 4))
    for j, o in enumerate(spec.objects):
        states[:, j] = (o.x, o.y, o.scale, 1.0)
    for (start, end), event in zip(event_frames(spec, frames), spec.events):
        path = _event_path(spec.objects[event.obj], event, end - start)
        states[:start, event.obj] = path[0]
        states[start:end, event.obj] = path
        states[end:, event.obj] = path[-1]
    return states


_SHIFT = 4  # sub-pixel bits for cv2 drawing, so slow motion is smooth rather than stepping whole pixels


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, side: float, colour) -> None:
    """Draw one filled, anti-aliased shape in place; (cx, cy, side) in pixels, pixel centres at integers."""
    f = 1 << _SHIFT
    h = side / 2.0
    if shape == "circle":
        cv2.circle(img, (round(cx * f), round(cy * f)), round(h * f), colour, -1, cv2.LINE_AA, _SHIFT)
        return
    if shape == "square":
        pts = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    else:  # triangle pointing up, filling the bounding box
        pts = [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    cv2.fillConvexPoly(img, np.round(np.array(pts) * f).astype(np.int32), colour, cv2.LINE_AA, _SHIFT)


def render_clip(spec: ClipSpec, frames: int, size: int) -> np.ndarray:
    """Render a clip: uint8 [frames, size, size, 3] RGB on black. Pure function of its arguments."""
    _check(spec)
    if frames < max(1, 2 * len(spec.events)):
        raise ValueError(f"{frames} frames is too few for {len(spec.events)} event(s) (need 2 per event)")
    states = clip_states(spec, frames)
    out = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        canvas = out[t]  # a contiguous view: cv2 draws into `out` directly
        for j, o in enumerate(spec.objects):
            x, y, scale, alpha = states[t, j]
            if alpha <= 0.0:
                continue
            geometry = (o.shape, x * size - 0.5, y * size - 0.5, scale * size)
            if alpha >= 1.0:  # opaque: cv2's own anti-aliased blend, much cheaper than compositing in numpy
                _draw(canvas, *geometry, COLOURS[o.colour])
                continue
            mask = np.zeros((size, size), dtype=np.uint8)
            _draw(mask, *geometry, 255)
            cover = (alpha / 255.0) * mask[..., None].astype(np.float32)
            canvas[:] = np.rint(canvas * (1.0 - cover) + np.array(COLOURS[o.colour], np.float32) * cover)
    return out


def describe(spec: ClipSpec) -> tuple[tuple[str, str, str], ...]:
    """Canonical content of a clip: (colour, shape, kind) per event, in temporal order."""
    return tuple((spec.objects[e.obj].colour, spec.objects[e.obj].shape, e.kind) for e in spec.events)


def _noun(o: SceneObject, rng: np.random.Generator) -> str:
    words = _SHAPE_WORDS[o.shape]
    return f"a {o.colour} {words[rng.integers(len(words))]}"


def caption(spec: ClipSpec, rng: np.random.Generator) -> str:
    """A caption from templates with synonyms; `parse_caption` inverts it to `describe(spec)`."""
    _check(spec)
    if not spec.events:
        nouns = [_noun(o, rng) for o in spec.objects]
        return " and ".join(nouns) + (" stay still" if len(nouns) > 1 else " stays still")
    parts = []
    for e in spec.events:
        present, gerund = _VERBS[e.kind][rng.integers(len(_VERBS[e.kind]))]
        parts.append((_noun(spec.objects[e.obj], rng), present, gerund))
    if len(parts) == 1:
        return f"{parts[0][0]} {parts[0][1]}"
    if len(parts) != 2:
        raise ValueError("captions are defined for clips of at most two events")
    (a, va, ga), (b, vb, gb) = parts
    return _TEMPLATES[rng.integers(len(_TEMPLATES))].format(a=a, va=va, ga=ga, b=b, vb=vb, gb=gb)


_NP = re.compile(
    r"\ba (" + "|".join(COLOURS) + r") (" + "|".join(w for ws in _SHAPE_WORDS.values() for w in ws) + r")\b"
)
_WORD_TO_SHAPE = {w: s for s, ws in _SHAPE_WORDS.items() for w in ws}
# Longest phrase first, so "grows larger" is not read as "grows".
_PHRASES = sorted(((p, k) for k, vs in _VERBS.items() for pair in vs for p in pair), key=lambda pk: -len(pk[0]))


def parse_caption(text: str) -> tuple[tuple[str, str, str], ...]:
    """Invert `caption`: (colour, shape, kind) per event in temporal order. Raises ValueError if it cannot."""
    nps = list(_NP.finditer(text))
    result = []
    for i, m in enumerate(nps):
        rest = text[m.end() : nps[i + 1].start() if i + 1 < len(nps) else len(text)].strip()
        kind = next((k for p, k in _PHRASES if rest == p or rest.startswith(p + " ") or rest.startswith(p + ",")),
                    None)
        if kind is None:
            raise ValueError(f"no event phrase after {m.group(0)!r} in {text!r}")
        result.append((m.group(1), _WORD_TO_SHAPE[m.group(2)], kind))
    if not result:
        raise ValueError(f"no object in {text!r}")
    if re.search(r"\bafter a\b", text):
        result.reverse()
    return tuple(result)


def _box(state: np.ndarray) -> tuple[float, float, float, float]:
    x, y, scale, _ = state
    h = scale * _CORE / 2.0
    return x - h, y - h, x + h, y + h


def _collides(spec: ClipSpec, frames: int = 16) -> bool:
    """True when the cores of two visible objects overlap in some frame."""
    states = clip_states(spec, frames)
    for t in range(frames):
        visible = [states[t, j] for j in range(len(spec.objects)) if states[t, j, 3] > 0]
        for i in range(len(visible)):
            for j in range(i + 1, len(visible)):
                a, b = _box(visible[i]), _box(visible[j])
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    return True
    return False


def _place(rng: np.random.Generator, kind: str, colour: str, shape: str, index: int) -> tuple[SceneObject, Event]:
    scale = float(rng.uniform(*_SCALE_RANGE))
    amount = 0.0
    if kind.startswith("move"):
        amount = float(rng.uniform(*_MOVE_RANGE))
    elif kind in ("grow", "shrink"):
        amount = float(rng.uniform(*_RATIO_RANGE))
    lo, hi = scale / 2 + _MARGIN, 1 - scale / 2 - _MARGIN
    horizontal, vertical = kind in ("move_left", "move_right"), kind in ("move_up", "move_down")
    x = float(rng.uniform(lo, hi - amount if horizontal else hi))
    y = float(rng.uniform(lo, hi - amount if vertical else hi))
    return SceneObject(colour, shape, x, y, scale), Event(kind, index, amount)


def random_spec(rng: np.random.Generator, p_single: float = 0.25, max_tries: int = 1000) -> ClipSpec:
    """A random clip: one event on one object (probability p_single) or two events on two objects.

    Two objects always differ in both colour and shape, so every caption names each object unambiguously. Layouts
    are resampled until neither the spec nor any of its `variants` has overlapping objects.
    """
    n = 1 if rng.random() < p_single else 2
    for _ in range(max_tries):
        colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), n, replace=False)]
        shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n, replace=False)]
        kinds = [KINDS[i] for i in rng.integers(len(KINDS), size=n)]
        for _ in range(_LAYOUT_TRIES):
            placed = [_place(rng, kinds[i], colours[i], shapes[i], i) for i in range(n)]
            spec = ClipSpec(tuple(p[0] for p in placed), tuple(p[1] for p in placed))
            if not any(_collides(s) for s in [spec, *variants(spec)]):
                return spec
    raise RuntimeError(f"no collision-free layout found in {max_tries} tries")


def labelled_variants(spec: ClipSpec) -> list[tuple[str, ClipSpec]]:
    """Hard negatives of a spec, each with a label saying how it differs.

    reverse_<i>: event i played backwards (left/right, up/down, grow/shrink, appear/disappear);
    swap_order: the two events in the opposite order; swap_colours: the two objects exchange colours.
    """
    out = []
    for i, e in enumerate(spec.events):
        events = list(spec.events)
        events[i] = replace(e, kind=REVERSE[e.kind])
        out.append((f"reverse_{i}", replace(spec, events=tuple(events))))
    if len(spec.events) == 2:
        out.append(("swap_order", replace(spec, events=spec.events[::-1])))
    if len(spec.objects) == 2:
        a, b = spec.objects
        out.append(("swap_colours", replace(spec, objects=(replace(a, colour=b.colour), replace(b, colour=a.colour)))))
    return out


def variants(spec: ClipSpec) -> list[ClipSpec]:
    """Hard negatives: same objects other motion direction, other event order, swapped colours."""
    return [s for _, s in labelled_variants(spec)]


def spec_to_dict(spec: ClipSpec, frames: int | None = None) -> dict:
    """JSON-ready spec; with `frames`, each event also gets its name, object and [start_frame, end_frame)."""
    events = []
    ranges = event_frames(spec, frames) if frames else [None] * len(spec.events)
    for e, r in zip(spec.events, ranges):
        d = asdict(e)
        d.update(colour=spec.objects[e.obj].colour, shape=spec.objects[e.obj].shape)
        if r is not None:
            d.update(start_frame=r[0], end_frame=r[1])
        events.append(d)
    return {"objects": [asdict(o) for o in spec.objects], "events": events}


def spec_from_dict(d: dict) -> ClipSpec:
    """Inverse of `spec_to_dict` (derived fields are ignored)."""
    objects = tuple(SceneObject(**o) for o in d["objects"])
    events = tuple(Event(kind=e["kind"], obj=e["obj"], amount=e["amount"]) for e in d["events"])
    spec = ClipSpec(objects, events)
    _check(spec)
    return spec


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


def _split_clips(seed: int, split: str, n: int, p_single: float, unique: bool) -> list[tuple[int, str, ClipSpec]]:
    """(group, variant label, spec) for n clips, made in groups of a base spec and its variants.

    With `unique`, no two clips of the split share a `describe` (evaluation splits: a caption then matches only
    its own clip, not a look-alike with other positions).
    """
    rng = np.random.default_rng([seed, _SPLIT_CODES[split]])
    clips: list[tuple[int, str, ClipSpec]] = []
    seen: set = set()
    group, rejected = 0, 0
    while len(clips) < n:
        base = random_spec(rng, p_single)
        members = [("base", base), *labelled_variants(base)]
        descriptions = [describe(s) for _, s in members]
        if unique and any(d in seen for d in descriptions):
            rejected += 1
            if rejected > 100 * n + 1000:
                raise ValueError(f"cannot make {n} distinct {split} clips; ask for fewer")
            continue
        seen.update(descriptions)
        clips += [(group, label, spec) for label, spec in members[: n - len(clips)]]
        group += 1
    return clips


def _captions_for(spec: ClipSpec, rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct captions where the templates allow (a one-event clip has few phrasings)."""
    out: list[str] = []
    for _ in range(20 * count):
        c = caption(spec, rng)
        if c not in out:
            out.append(c)
            if len(out) == count:
                break
    return out


def _render_and_write(job: tuple[str, dict, int, int, float]) -> None:
    path, spec_dict, frames, size, fps = job
    write_video(path, render_clip(spec_from_dict(spec_dict), frames, size), fps)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # tiny frames: OpenCV's own threads only contend with the other workers


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "caption"])
        w.writerows(rows)
    os.replace(tmp, path)


def generate(
    out: str | Path,
    seed: int,
    n_train: int = 8000,
    n_val: int = 200,
    n_test: int = 500,
    frames: int = 24,
    size: int = 64,
    fps: float = 8.0,
    workers: int = 1,
    train_captions: int = 1,
    p_single: float = 0.25,
) -> dict:
    """Write the benchmark under `out` and return a summary (counts, groups, seconds).

    Deterministic: specs and captions come from generators seeded by (seed, split[, clip index]) in this process,
    and rendering is a pure function, so any number of workers gives identical files' content.
    """
    if frames < 4:
        raise ValueError(f"frames must be >= 4 (two per event), got {frames}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16 (mp4v needs even sides), got {size}")
    if fps <= 0 or train_captions < 1 or min(n_train, n_val, n_test) < 0 or not 0 <= p_single <= 1:
        raise ValueError("fps and train_captions must be positive, counts >= 0, p_single in [0, 1]")
    t0 = time.perf_counter()
    out = Path(out)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    meta_splits: dict[str, list[dict]] = {}
    csv_rows: dict[str, list[tuple[str, str]]] = {}
    jobs = []
    for split, n in counts.items():
        clips = _split_clips(seed, split, n, p_single, unique=split != "train")
        entries, rows = [], []
        for i, (group, label, spec) in enumerate(clips):
            clip_id = f"{split}-{i:05d}"
            video = f"videos/{split}/{clip_id}.mp4"
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], i, 1])
            texts = _captions_for(spec, rng, train_captions if split == "train" else 1)
            spec_dict = spec_to_dict(spec, frames)
            entries.append({"id": clip_id, "video": video, "group": f"{split}-g{group:05d}", "variant": label,
                            "captions": texts, **spec_dict})
            rows += [(video, t) for t in texts]
            jobs.append((str(out / video), spec_dict, frames, size, fps))
        meta_splits[split], csv_rows[split] = entries, rows

    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process whose thread pools (OpenMP, torch) are running can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            list(pool.map(_render_and_write, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    else:
        for job in jobs:
            _render_and_write(job)

    # Captions and meta last: a crash before this point leaves no CSV naming videos that were never written.
    for split, rows in csv_rows.items():
        (out / "videos" / split).mkdir(parents=True, exist_ok=True)
        _write_csv(out / f"{split}.csv", rows)
    settings = {"format": _FORMAT, "seed": seed, "counts": counts, "frames": frames, "size": size, "fps": fps,
                "train_captions": train_captions, "p_single": p_single, "fourcc": "mp4v",
                "colours": {k: list(v) for k, v in COLOURS.items()}, "shapes": list(SHAPES), "kinds": list(KINDS)}
    tmp = out / "meta.json.partial"
    tmp.write_text(json.dumps({"settings": settings, "splits": meta_splits}, indent=1), encoding="utf-8")
    os.replace(tmp, out / "meta.json")
    return {
        "out": str(out),
        "seed": seed,
        "clips": {s: len(v) for s, v in meta_splits.items()},
        "groups": {s: len({e["group"] for e in v}) for s, v in meta_splits.items()},
        "rows": {s: len(v) for s, v in csv_rows.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _idle_spec(rng: np.random.Generator) -> ClipSpec:
    """One or two static shapes that do nothing (filler between events in a stream)."""
    n = int(rng.integers(1, 3))
    colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), n, replace=False)]
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n, replace=False)]
    for _ in range(1000):
        objects = tuple(_place(rng, "grow", colours[i], shapes[i], i)[0] for i in range(n))
        spec = ClipSpec(objects, ())
        if not _collides(spec, frames=1):
            return spec
    return ClipSpec(objects[:1], ())


def make_stream(
    path: str | Path,
    segments: Sequence[ClipSpec | float],
    fps: float,
    size: int,
    rng: np.random.Generator,
    clip_frames: int = 24,
) -> list[StreamSegment]:
    """Write one long video of event clips and idle filler; return when each clip and event happens.

    segments: a ClipSpec is rendered over `clip_frames` frames; a number is that many seconds of idle filler
    (random static shapes, no event). Frames are rendered and written one segment at a time (bounded memory).
    Times are frame_index / fps from the stream's first frame.
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
                clip = render_clip(_idle_spec(rng), n, size) if n > 0 else np.zeros((0, size, size, 3), np.uint8)
            yield from clip
            t += len(clip)

    write_video(path, frames_iter(), fps)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """`hbci-synth`: write the synthetic benchmark and print a JSON summary on stdout."""
    ap = argparse.ArgumentParser(prog="hbci-synth", description=__doc__.split("\n\n")[0],
                                epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE)),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=8000, help="clips in the train split")
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--frames", type=int, default=24, help="frames per clip")
    ap.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=1, help="processes rendering and writing videos")
    ap.add_argument("--train-captions", type=int, default=1, help="distinct captions per training clip")
    ap.add_argument("--p-single", type=float, default=0.25, help="share of one-event clips")
    args = ap.parse_args(argv)
    try:
        summary = generate(args.out, args.seed, args.train, args.val, args.test, args.frames, args.size, args.fps,
                           args.workers, args.train_captions, args.p_single)
    except ValueError as e:
        ap.error(str(e))
    except HbciError as exc:
        print(f"hbci-synth: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
