"""DiDeMo (LocalizingMoments) in CLIP4Clip's paragraph setting: all descriptions of a video, joined, retrieve it.

Layout under the dataset root (the json and the video folder are options, relative to the root or absolute)::

    train_data.json / val_data.json / test_data.json
        [{"description", "times", "video", "dl_link", "num_segments", "annotation_id"}, ...]
    videos/<video>          the "video" field as written in the json

Splits: "train", "val", "test". One item per video, videos in first-seen json order; the caption is the video's
descriptions in json order, each stripped, joined with single spaces (CLIP4Clip joins with " "; CLIP's tokenizer
collapses whitespace, so the tokens are the same). The item spans the whole video (CLIP4Clip uses 0..31 s for every
video, the annotation covering at most the first 30 s).

Video files. The "video" field is the original Flickr file name with its original extension
(``26292851@N04_4253489686_265c3c8051.m4v``, ``....mpg``, ``....avi``, ``.mov``, ...). How copies are named:

1. ``<video>`` exactly: the Flickr download script, and what CLIP4Clip matches;
2. ``<video>.mp4``: the official AWS download script (``download_videos_AWS.py``) saves the YFCC100M mp4 as
   ``'%s/%s.mp4' % (video_directory, video)``, e.g. ``....m4v.mp4``;
3. ``<stem>.<ext>`` for ``.mp4 .mov .avi .m4v .mpg .mkv .webm``: copies re-encoded under a new extension.

They are tried in that order and the first that exists wins. When none exists the item keeps the exact name, so
`check_videos` reports it.
"""

from __future__ import annotations

from pathlib import Path

from hbci.datasets._common import (Warn, check_split, find_video, option_path, read_json, report_skipped,
                                   require_items, stderr_warn)
from hbci.datasets.base import VideoItem, register
from hbci.runtime.errors import DatasetError

__all__ = ["SPLITS", "FALLBACK_EXTENSIONS", "video_candidates", "load_didemo"]

SPLITS = ("train", "val", "test")
FALLBACK_EXTENSIONS = (".mp4", ".mov", ".avi", ".m4v", ".mpg", ".mkv", ".webm")


def video_candidates(video: str) -> list[str]:
    """File names tried for a json "video" value, in order (see the module docstring)."""
    suffix = Path(video).suffix
    stem = video[: -len(suffix)] if suffix else video
    names = [video, video + ".mp4"] + [stem + ext for ext in FALLBACK_EXTENSIONS]
    return list(dict.fromkeys(names))


@register("didemo")
def load_didemo(root: Path, split: str, *, data_json: str | Path | None = None, video_dir: str | Path = "videos",
                warn: Warn = stderr_warn) -> list[VideoItem]:
    """Load one DiDeMo split as paragraphs. `data_json` overrides `<split>_data.json`."""
    check_split("didemo", split, SPLITS)
    root = Path(root)
    path = option_path(root, data_json if data_json is not None else f"{split}_data.json")
    videos_dir = option_path(root, video_dir)
    records = read_json(path, "DiDeMo annotation json")
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a list of annotation records, got {type(records).__name__}")
    grouped: dict[str, dict[str, list]] = {}
    for index, record in enumerate(records):
        where = f"{path}: record {index}"
        if not isinstance(record, dict):
            raise DatasetError(f"{where} is not an object")
        if "annotation_id" in record:
            where += f" (annotation_id {record['annotation_id']})"
        video, description = record.get("video"), record.get("description")
        if not isinstance(video, str) or not video.strip():
            raise DatasetError(f"{where}: missing or empty 'video'")
        if not isinstance(description, str):
            raise DatasetError(f"{where}: missing 'description' (a string)")
        entry = grouped.setdefault(video.strip(), {"parts": [], "annotation_ids": [], "times": []})
        entry["parts"].append(description.strip())
        entry["annotation_ids"].append(record.get("annotation_id"))
        entry["times"].append(record.get("times"))
    items = []
    empty = []
    for video, entry in grouped.items():
        paragraph = " ".join(part for part in entry["parts"] if part)
        if not paragraph:
            empty.append(video)
            continue
        items.append(VideoItem(video, find_video(videos_dir, video_candidates(video)), (paragraph,),
                               extra={"annotation_ids": entry["annotation_ids"], "times": entry["times"]}))
    report_skipped(warn, empty, len(grouped), f"in {path} have only empty descriptions")
    return require_items(items, f"{path}: no annotation records")
