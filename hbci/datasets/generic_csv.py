"""The generic captions CSV: header `video,caption[,start,end]`, one row per (video, caption).

Video paths are relative to the CSV's folder (or absolute). Rows of the same video (and span) are grouped into
one item in first-seen order, so several captions per video are the multi-caption case.
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
            items.setdefault(key, {"captions": []})["captions"].append(caption)
    if not items:
        raise DatasetError(f"{path}: no rows")
    result = []
    for (video, start, end), entry in items.items():
        video_path = Path(video) if Path(video).is_absolute() else path.parent / video
        video_id = Path(video).stem if start is None else f"{Path(video).stem}@{start:g}-{end if end is None else f'{end:g}'}"
        result.append(VideoItem(video_id, video_path, tuple(entry["captions"]), start, end))
    return result


@register("csv")
def load_csv(root: Path, split: str, **_) -> list[VideoItem]:
    """`root/<split>.csv`, or `split` itself when it names a CSV file."""
    candidate = Path(split)
    return read_captions_csv(candidate if candidate.suffix == ".csv" else root / f"{split}.csv")
