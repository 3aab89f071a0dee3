"""MSVD (YouTube2Text) with every caption: the multi-caption split where each caption of a clip is a query.

Layout under the dataset root (every file is an option, relative to the root or absolute)::

    captions_msvd.json                    {clip_id: [caption, ...]}
    train_list.txt, val_list.txt, test_list.txt    one clip id per line (1200 / 100 / 670)
    videos/<clip_id>.avi                  (.mp4 accepted when the .avi is absent)

Splits: "train", "val", "test". One item per clip id of the list, in list order, carrying ALL its captions in json
order (the real test split: 670 clips, 27763 captions, 21 to 81 each).

A listed clip with no captions in the json (absent, or an empty list) is skipped with one warning that counts and
names them: it cannot be a retrieval target for any query, and keeping it would only add a distractor the
benchmark does not have. A split in which no clip has captions is an error (the json and the list do not belong
together). A repeated id is kept once, with a warning.
"""

from __future__ import annotations

from pathlib import Path

from hbci.datasets._common import (Warn, check_split, find_video, option_path, read_id_lines, read_json,
                                   report_skipped, require_items, stderr_warn)
from hbci.datasets.base import VideoItem, register
from hbci.runtime.errors import DatasetError

__all__ = ["SPLITS", "VIDEO_EXTENSIONS", "load_msvd"]

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = (".avi", ".mp4")


@register("msvd")
def load_msvd(root: Path, split: str, *, captions_json: str | Path = "captions_msvd.json",
              list_file: str | Path | None = None, video_dir: str | Path = "videos",
              warn: Warn = stderr_warn) -> list[VideoItem]:
    """Load one MSVD split with all captions per clip; `list_file` overrides `<split>_list.txt`."""
    check_split("msvd", split, SPLITS)
    root = Path(root)
    list_path = option_path(root, list_file if list_file is not None else f"{split}_list.txt")
    captions_path = option_path(root, captions_json)
    videos_dir = option_path(root, video_dir)

    listed = read_id_lines(list_path, "MSVD split list")
    captions = read_json(captions_path, "MSVD captions json")
    if not isinstance(captions, dict):
        raise DatasetError(f"{captions_path}: expected an object {{clip_id: [caption, ...]}}")

    items: list[VideoItem] = []
    seen: set[str] = set()
    duplicates, uncaptioned = [], []
    for line_no, clip_id in listed:
        if clip_id in seen:
            duplicates.append(clip_id)
            continue
        seen.add(clip_id)
        texts = captions.get(clip_id)
        if texts is not None and (not isinstance(texts, list) or not all(isinstance(t, str) for t in texts)):
            raise DatasetError(f"{captions_path}: entry {clip_id!r} (listed at {list_path}:{line_no}) is "
                               f"malformed: expected a list of caption strings")
        if not texts:
            uncaptioned.append(clip_id)
            continue
        path = find_video(videos_dir, [clip_id + ext for ext in VIDEO_EXTENSIONS])
        items.append(VideoItem(clip_id, path, tuple(texts)))
    report_skipped(warn, duplicates, len(listed), f"are repeated in {list_path} (first kept)")
    report_skipped(warn, uncaptioned, len(listed), f"of {list_path} have no captions in {captions_path}")
    return require_items(items, f"{list_path}: none of its clips has captions in {captions_path}")
