"""Writing the synthetic benchmark: hard-negative groups per split, videos, captions CSVs and meta.json.

Layout written by `generate` / `hbci-synth`:
    DIR/videos/<split>/<id>.mp4   one clip per file (mp4v)
    DIR/<split>.csv               one row per (video, caption), paths relative to DIR
    DIR/meta.json                 generator settings, and per clip its group, variant, captions and structured spec

Splits: train, val, test in the chosen world (val and test in the train phrasing), and, in the wide world, heldout:
the wide world in the held-out look family (tiles) with held-out caption templates, never used in training.

Training videos of the wide world hold their clip between neighbouring content, as a stream would: before and
after the clip, up to `context` seconds each of (one third each) the clip's own scene at rest, idle filler after
a cut, or part of another random clip after a cut. The train CSV then has the columns
`video,caption,start,end,event_start,event_end,order_cut,time_sensitive,order_negative` (seconds from the video's
start; see `hbci.datasets.generic_csv`): [start, end] is the clip, [event_start, event_end] what its caption
describes, order_cut the first frame of its second event, time_sensitive 1 when the clip played backwards
contradicts its caption (every clip with an event), order_negative the video of the same scene with its two events
in the other order (a two-event clip and its group's `swap_order` variant name each other; their events take the
same times within the clip). Evaluation splits hold bare clips (`video,caption`), cut exactly.

Files are overwritten in place; videos of an earlier, larger run in the same DIR are left alone (the CSVs and
meta.json list only the current run's clips).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from hbci.synth.captions import caption
from hbci.synth.look import HELD_OUT_FAMILIES
from hbci.synth.render import render_clip, write_video
from hbci.synth.world import (CLASSIC, COLOURS, HELD_OUT, KINDS, SHAPES, WIDE, ClipSpec, World, describe,
                              event_frames, idle_spec, labelled_variants, order_swap_partners, random_spec,
                              spec_from_dict, spec_to_dict)

__all__ = ["generate", "SPLITS", "TRAIN_COLUMNS"]

SPLITS: tuple[str, ...] = ("train", "val", "test", "heldout")
TRAIN_COLUMNS: tuple[str, ...] = ("video", "caption", "start", "end", "event_start", "event_end", "order_cut",
                                  "time_sensitive", "order_negative")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "heldout": 3}
_FORMAT = "hbci-synth/3"
_CONTEXT_KINDS = ("rest", "filler", "clip")


def _split_world(world: World, split: str) -> tuple[World, str]:
    """The world and caption phrasing of a split."""
    if world is CLASSIC:
        return CLASSIC, "classic"
    return (HELD_OUT, "held_out") if split == "heldout" else (world, "train")


def _split_clips(seed: int, split: str, n: int, p_single: float, unique: bool,
                 world: World) -> list[tuple[int, str, ClipSpec]]:
    """(group, variant label, spec) for n clips, made in groups of a base spec and its variants.

    With `unique`, no two clips of the split share a `describe` (evaluation splits: a caption then matches only
    its own clip, not a look-alike with other positions).
    """
    rng = np.random.default_rng([seed, _SPLIT_CODES[split]])
    clips: list[tuple[int, str, ClipSpec]] = []
    seen: set = set()
    group, rejected = 0, 0
    while len(clips) < n:
        base = random_spec(rng, p_single, world=world)
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


def _captions_for(spec: ClipSpec, rng: np.random.Generator, count: int, phrasing: str) -> list[str]:
    """`count` distinct captions where the templates allow (a one-event clip has few phrasings)."""
    out: list[str] = []
    for _ in range(20 * count):
        c = caption(spec, rng, phrasing)
        if c not in out:
            out.append(c)
            if len(out) == count:
                break
    return out


def _context(rng: np.random.Generator, most: int, p_single: float) -> dict:
    """What surrounds a training clip: per side, a kind, a length in frames and (for cuts) the neighbour's spec."""
    sides = {}
    for side in ("before", "after"):
        kind = _CONTEXT_KINDS[int(rng.integers(len(_CONTEXT_KINDS)))]
        part = {"kind": kind, "frames": int(rng.integers(min(2, most), most + 1))}
        if kind == "filler":
            part["spec"] = spec_to_dict(idle_spec(rng, WIDE))
        elif kind == "clip":
            part["spec"] = spec_to_dict(random_spec(rng, p_single, world=WIDE))
        sides[side] = part
    return sides


def _neighbour(part: dict, edge: np.ndarray, frames: int, size: int, before: bool) -> np.ndarray:
    n = part["frames"]
    if n == 0:
        return edge[:0]
    if part["kind"] == "rest":  # the clip's own scene, still, before its first or after its last frame
        return np.repeat(edge[None], n, axis=0)
    spec = spec_from_dict(part["spec"])
    if part["kind"] == "filler":
        return render_clip(spec, n, size)
    clip = render_clip(spec, max(frames, n), size)
    return clip[-n:] if before else clip[:n]


def _render_and_write(job: tuple[str, dict, int, int, float, dict | None]) -> None:
    path, spec_dict, frames, size, fps, context = job
    clip = render_clip(spec_from_dict(spec_dict), frames, size)
    if context:
        clip = np.concatenate([_neighbour(context["before"], clip[0], frames, size, True), clip,
                               _neighbour(context["after"], clip[-1], frames, size, False)])
    write_video(path, clip, fps)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # tiny frames: OpenCV's own threads only contend with the other workers


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def _timed_row(spec: ClipSpec, lead: int, frames: int, fps: float) -> tuple:
    """start, end, event_start, event_end, order_cut, time_sensitive of a clip `lead` frames into its video."""
    ranges = event_frames(spec, frames)
    t = lambda frame: round((lead + frame) / fps, 6)  # noqa: E731 - frame index -> seconds
    if not ranges:
        return t(0), t(frames - 1), "", "", "", 0
    cut = t(ranges[1][0]) if len(ranges) > 1 else ""
    return t(0), t(frames - 1), t(ranges[0][0]), t(ranges[-1][1] - 1), cut, 1


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
    world: str = "wide",
    n_heldout: int | None = None,
    context: float | None = None,
) -> dict:
    """Write the benchmark under `out` and return a summary (counts, groups, seconds).

    world: "wide" (default) or "classic" (the first benchmark exactly: one look, bare training clips, no heldout
    split). n_heldout: clips of the held-out-look split (default: as many as the test split; wide world only).
    context: the most seconds of neighbouring content on each side of a training clip (default 1.25 in the wide
    world; 0: bare clips).

    Deterministic: specs and captions come from generators seeded by (seed, split[, clip index]) in this process,
    and rendering is a pure function, so any number of workers gives identical files' content.
    """
    if world not in ("wide", "classic"):
        raise ValueError(f"world must be 'wide' or 'classic', got {world!r}")
    if frames < 4:
        raise ValueError(f"frames must be >= 4 (two per event), got {frames}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16 (mp4v needs even sides), got {size}")
    if fps <= 0 or train_captions < 1 or min(n_train, n_val, n_test) < 0 or not 0 <= p_single <= 1:
        raise ValueError("fps and train_captions must be positive, counts >= 0, p_single in [0, 1]")
    base_world = WIDE if world == "wide" else CLASSIC
    if base_world is CLASSIC and (n_heldout or context):
        raise ValueError("the classic world has no held-out look and no training context (use world='wide')")
    if (context or 0) < 0 or (n_heldout or 0) < 0:
        raise ValueError("context and n_heldout must be >= 0")
    n_heldout = (n_test if n_heldout is None else n_heldout) if base_world is WIDE else 0
    context_frames = int(round((1.25 if context is None else context) * fps)) if base_world is WIDE else 0
    t0 = time.perf_counter()
    out = Path(out)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if base_world is WIDE:
        counts["heldout"] = n_heldout
    meta_splits: dict[str, list[dict]] = {}
    csv_rows: dict[str, list[tuple]] = {}
    headers: dict[str, tuple[str, ...]] = {}
    jobs = []
    for split, n in counts.items():
        split_world, phrasing = _split_world(base_world, split)
        clips = _split_clips(seed, split, n, p_single, unique=split != "train", world=split_world)
        timed = split == "train" and context_frames > 0
        headers[split] = TRAIN_COLUMNS if timed else ("video", "caption")
        entries, rows = [], []
        partners = order_swap_partners([(group, label) for group, label, _ in clips])
        for i, (group, label, spec) in enumerate(clips):
            clip_id = f"{split}-{i:05d}"
            video = f"videos/{split}/{clip_id}.mp4"
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], i, 1])
            texts = _captions_for(spec, rng, train_captions if split == "train" else 1, phrasing)
            spec_dict = spec_to_dict(spec, frames)
            entry = {"id": clip_id, "video": video, "group": f"{split}-g{group:05d}", "variant": label,
                     "captions": texts, **spec_dict}
            surround = None
            if timed:
                surround = _context(np.random.default_rng([seed, _SPLIT_CODES[split], i, 2]), context_frames,
                                    p_single)
                partner = f"videos/{split}/{split}-{partners[i]:05d}.mp4" if i in partners else ""
                timing = (*_timed_row(spec, surround["before"]["frames"], frames, fps), partner)
                entry.update(context=surround, span=[timing[0], timing[1]])
                rows += [(video, t, *timing) for t in texts]
            else:
                rows += [(video, t) for t in texts]
            entries.append(entry)
            jobs.append((str(out / video), spec_dict, frames, size, fps, surround))
        meta_splits[split], csv_rows[split] = entries, rows

    if workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process whose thread pools (OpenMP, torch) are running can deadlock.
        mp_context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=mp_context, initializer=_init_worker) as pool:
            list(pool.map(_render_and_write, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    else:
        for job in jobs:
            _render_and_write(job)

    # Captions and meta last: a crash before this point leaves no CSV naming videos that were never written.
    for split, rows in csv_rows.items():
        (out / "videos" / split).mkdir(parents=True, exist_ok=True)
        _write_csv(out / f"{split}.csv", headers[split], rows)
    settings = {"format": _FORMAT, "seed": seed, "world": world, "counts": counts, "frames": frames, "size": size,
                "fps": fps, "train_captions": train_captions, "p_single": p_single, "context_s": context_frames / fps,
                "fourcc": "mp4v", "colours": {k: list(v) for k, v in COLOURS.items()}, "shapes": list(SHAPES),
                "kinds": list(KINDS), "train_looks": list(base_world.looks) or ["black"],
                "heldout_looks": list(HELD_OUT_FAMILIES) if base_world is WIDE else []}
    tmp = out / "meta.json.partial"
    tmp.write_text(json.dumps({"settings": settings, "splits": meta_splits}, indent=1), encoding="utf-8")
    os.replace(tmp, out / "meta.json")
    return {
        "out": str(out),
        "seed": seed,
        "world": world,
        "clips": {s: len(v) for s, v in meta_splits.items()},
        "groups": {s: len({e["group"] for e in v}) for s, v in meta_splits.items()},
        "rows": {s: len(v) for s, v in csv_rows.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
