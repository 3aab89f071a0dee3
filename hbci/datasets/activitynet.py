"""ActivityNet Captions in the paragraph -> video setting: a video's sentences, joined, retrieve it (CLIP4Clip).

Layout under the dataset root (every file is an option, relative to the root or absolute)::

    train.json, val_1.json, val_2.json   {video_id: {"duration", "timestamps", "sentences"}}
    train_ids.json, val_ids.json         [video_id, ...]
    videos/<video_id>.mp4                (.mkv and .webm accepted too, the containers YouTube downloads come in)

Splits: "train" (train.json + train_ids.json), "val" (val_1.json + val_ids.json, CLIP4Clip's test set) and
"val_2" (val_2.json + val_ids.json). The ids file fixes the split and its order; the caption json supplies the text.

Ids carry a ``v_`` prefix in the release (``v_uqiMw7tQ1Cc``), but copies of the files and of the videos often drop
it (CLIP4Clip strips it to find the videos). Both forms are accepted everywhere: an id matches its caption entry
with or without the prefix (the exact form first), and the video may be named either way. Items are named by the
caption json's key.

Sentences often start with a space (``" The coach helps ..."``): each is stripped and they are joined with single
spaces. CLIP4Clip joins them raw with " ", which tokenizes identically because CLIP's tokenizer collapses
whitespace. Ids of the ids file without captions (9 in the real val_ids.json) are skipped with one warning that
counts them, and a repeated id is kept once, with a warning. The item spans the whole video.
"""

from __future__ import annotations

from pathlib import Path

from hbci.datasets._common import (Warn, check_split, find_video, option_path, read_json, report_skipped,
                                   require_items, stderr_warn)
from hbci.datasets.base import VideoItem, register
from hbci.runtime.errors import DatasetError

__all__ = ["SPLITS", "VIDEO_EXTENSIONS", "load_activitynet"]

# split -> (caption json, ids json)
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train.json", "train_ids.json"),
    "val": ("val_1.json", "val_ids.json"),
    "val_2": ("val_2.json", "val_ids.json"),
}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")
PREFIX = "v_"


def _other_form(video_id: str) -> str:
    """The id with the ``v_`` prefix toggled."""
    return video_id[len(PREFIX):] if video_id.startswith(PREFIX) else PREFIX + video_id


def _read_ids(path: Path) -> list[str]:
    ids = read_json(path, "ActivityNet ids file")
    if not isinstance(ids, list):
        raise DatasetError(f"{path}: expected a list of video ids, got {type(ids).__name__}")
    for index, value in enumerate(ids):
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{path}: entry {index} is not a video id: {value!r}")
    return [value.strip() for value in ids]


def _paragraph(path: Path, key: str, entry: object) -> tuple[str, dict]:
    """The joined sentences of one caption entry ("" when it has none) and its extra fields."""
    sentences = entry.get("sentences") if isinstance(entry, dict) else None
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise DatasetError(f"{path}: entry {key!r} is malformed: expected an object with a 'sentences' list of "
                           f"strings")
    extra = {"duration": entry.get("duration"), "timestamps": entry.get("timestamps")}
    return " ".join(s.strip() for s in sentences if s.strip()), extra


@register("activitynet")
def load_activitynet(root: Path, split: str, *, captions_json: str | Path | None = None,
                     ids_json: str | Path | None = None, video_dir: str | Path = "videos",
                     warn: Warn = stderr_warn) -> list[VideoItem]:
    """Load one ActivityNet Captions split as paragraphs; the json options override the split's default files."""
    check_split("activitynet", split, tuple(SPLITS))
    root = Path(root)
    default_captions, default_ids = SPLITS[split]
    captions_path = option_path(root, captions_json if captions_json is not None else default_captions)
    ids_path = option_path(root, ids_json if ids_json is not None else default_ids)
    videos_dir = option_path(root, video_dir)

    ids = _read_ids(ids_path)
    captions = read_json(captions_path, "ActivityNet captions json")
    if not isinstance(captions, dict):
        raise DatasetError(f"{captions_path}: expected an object {{video_id: {{duration, timestamps, sentences}}}}")

    items: list[VideoItem] = []
    seen: set[str] = set()
    duplicates, uncaptioned = [], []
    for listed in ids:
        key = listed if listed in captions else _other_form(listed)
        if key in seen:
            duplicates.append(listed)
            continue
        seen.add(key)
        if key not in captions:
            uncaptioned.append(listed)
            continue
        paragraph, extra = _paragraph(captions_path, key, captions[key])
        if not paragraph:
            uncaptioned.append(listed)
            continue
        names = [form + ext for ext in VIDEO_EXTENSIONS for form in (key, _other_form(key))]
        items.append(VideoItem(key, find_video(videos_dir, names), (paragraph,), extra=extra))
    report_skipped(warn, duplicates, len(ids), f"are repeated in {ids_path} (first kept)")
    report_skipped(warn, uncaptioned, len(ids), f"of {ids_path} have no captions in {captions_path}")
    return require_items(items, f"{ids_path}: none of its ids has captions in {captions_path}")
