"""The generic captions CSV: header `video,caption[,start,end]`, one row per (video, caption).

Video paths are relative to the CSV's folder (or absolute). Rows of the same video (and span) are grouped into
one item in first-seen order, so several captions per video are the multi-caption case.

Optional columns for training windows (`hbci.data.draw_window`; seconds from the video's start, empty for none):
`event_start,event_end` (what the captions describe, inside [start, end]; default the span), `order_cut` (where
the described events' order could be swapped), `time_sensitive` (1: the span played backwards contradicts the
captions), `order_negative` (another video of the split showing the same scene with the described events in the
other order at the same times from its span's start; relative to the CSV's folder). The first row of an item gives
them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from hbci.datasets.base import VideoItem, register
from hbci.runtime.errors import DatasetError

__all__ = ["read_captions_csv", "load_csv"]


def _seconds(value: str | None, where: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise DatasetError(f"{where}: {value!r} is not a time in seconds") from None


def _timing(row: dict, where: str, start: float | None, end: float | None) -> dict:
    """The optional timing columns of a row, checked to lie inside the item's span."""
    timing = {k: _seconds(row.get(k), where) for k in ("event_start", "event_end", "order_cut")}
    lo, hi = -float("inf") if start is None else start, float("inf") if end is None else end
    for name, value in timing.items():
        if value is not None and not lo - 1e-6 <= value <= hi + 1e-6:
            raise DatasetError(f"{where}: {name} {value} lies outside the span [{start}, {end}]")
    if None not in (timing["event_start"], timing["event_end"]) and timing["event_end"] < timing["event_start"]:
        raise DatasetError(f"{where}: event_end {timing['event_end']} is before event_start {timing['event_start']}")
    flag = (row.get("time_sensitive") or "").strip()
    if flag not in ("", "0", "1"):
        raise DatasetError(f"{where}: time_sensitive must be 0, 1 or empty, got {flag!r}")
    return {**timing, "time_sensitive": flag == "1"}


def _resolve(csv_path: Path, video: str) -> Path:
    return Path(video) if Path(video).is_absolute() else csv_path.parent / video


def read_captions_csv(path: str | Path) -> list[VideoItem]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: captions file not found")
    items: dict[tuple, dict] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"video", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                               f"expected header video,caption[,start,end]")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            video, caption = (row.get("video") or "").strip(), row.get("caption")
            if not video or caption is None:
                raise DatasetError(f"{where}: empty video path or caption")
            start, end = _seconds(row.get("start"), where), _seconds(row.get("end"), where)
            if start is not None and end is not None and end <= start:
                raise DatasetError(f"{where}: end {end} is not after start {start}")
            key = (video, start, end)
            if key not in items:
                negative = (row.get("order_negative") or "").strip()
                items[key] = {"captions": [], **_timing(row, where, start, end),
                              "order_negative": _resolve(path, negative) if negative else None}
            items[key]["captions"].append(caption)
    if not items:
        raise DatasetError(f"{path}: no rows")
    result = []
    for (video, start, end), entry in items.items():
        video_path = _resolve(path, video)
        video_id = Path(video).stem if start is None else f"{Path(video).stem}@{start:g}-{end if end is None else f'{end:g}'}"
        timing = {k: v for k, v in entry.items() if k != "captions"}
        result.append(VideoItem(video_id, video_path, tuple(entry["captions"]), start, end, **timing))
    return result


@register("csv")
def load_csv(root: Path, split: str, **_) -> list[VideoItem]:
    """`root/<split>.csv`, or `split` itself when it names a CSV file."""
    candidate = Path(split)
    return read_captions_csv(candidate if candidate.suffix == ".csv" else root / f"{split}.csv")
