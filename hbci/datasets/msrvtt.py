"""MSR-VTT: the 9k/7k training splits with all their captions, and the 1k-A test (JSFUSION) as CLIP4Clip uses it.

Layout under the dataset root (every file name is an option, relative to the root or absolute)::

    MSRVTT_train.9k.csv        column video_id (9000 rows)
    MSRVTT_train.7k.csv        column video_id (7010 rows)
    MSRVTT_JSFUSION_test.csv   columns key,vid_key,video_id,sentence (1000 rows)
    MSRVTT_data.json           {"videos": [...], "sentences": [{"video_id", "caption", "sen_id"}, ...]}
    videos/<video_id>.mp4      (.webm accepted when the .mp4 is absent)

Splits: "train-9k" and "train-7k" give one item per csv row carrying ALL of that video's captions from
MSRVTT_data.json, ordered by sen_id (CLIP4Clip trains on every caption); "test-1k" gives one item per video of the
JSFUSION csv with its sentence (1000 videos, one sentence each). The test split needs no json. A train id without
captions in the json, or repeated in the csv, is skipped with one warning that counts and names them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from hbci.datasets._common import (Warn, check_split, find_video, option_path, read_json, report_skipped,
                                   require_items, stderr_warn)
from hbci.datasets.base import VideoItem, register
from hbci.runtime.errors import DatasetError

__all__ = ["SPLITS", "VIDEO_EXTENSIONS", "load_msrvtt"]

SPLITS = ("train-9k", "train-7k", "test-1k")
VIDEO_EXTENSIONS = (".mp4", ".webm")


def _read_csv(path: Path, columns: tuple[str, ...], what: str) -> list[tuple[int, dict[str, str]]]:
    """Rows as (line number, row); every listed column must be present and non-empty in every row."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    # utf-8-sig: a byte-order mark (spreadsheet exports) would otherwise glue itself to the first column name.
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(columns)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            empty = [c for c in columns if not (row.get(c) or "").strip()]
            if empty:
                raise DatasetError(f"{path}:{line}: empty {', '.join(empty)}")
            rows.append((line, row))
    if not rows:
        raise DatasetError(f"{path}: {what} has no rows")
    return rows


def _captions_by_video(path: Path, wanted: set[str]) -> dict[str, list[tuple[int, str]]]:
    """(sen_id, caption) pairs of each wanted video from MSRVTT_data.json."""
    data = read_json(path, "MSR-VTT annotation json")
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise DatasetError(f"{path}: expected an object with a 'sentences' list (the standard MSRVTT_data.json)")
    found: dict[str, list[tuple[int, str]]] = {}
    for index, entry in enumerate(sentences):
        ok = (isinstance(entry, dict) and isinstance(entry.get("video_id"), str)
              and isinstance(entry.get("caption"), str) and isinstance(entry.get("sen_id"), int))
        if not ok:
            raise DatasetError(f"{path}: sentences[{index}] is malformed: expected video_id (string), "
                               f"caption (string) and sen_id (integer), got {str(entry)[:120]}")
        if entry["video_id"] in wanted:
            found.setdefault(entry["video_id"], []).append((entry["sen_id"], entry["caption"]))
    return found


def _video_path(video_dir: Path, video_id: str) -> Path:
    return find_video(video_dir, [video_id + ext for ext in VIDEO_EXTENSIONS])


def _train(csv_path: Path, json_path: Path, video_dir: Path, warn: Warn) -> list[VideoItem]:
    ids: list[str] = []
    seen: set[str] = set()
    duplicates = []
    for _, row in _read_csv(csv_path, ("video_id",), "MSR-VTT train csv"):
        video_id = row["video_id"].strip()
        if video_id in seen:
            duplicates.append(video_id)
            continue
        seen.add(video_id)
        ids.append(video_id)
    report_skipped(warn, duplicates, len(ids) + len(duplicates), f"are repeated in {csv_path} (first kept)")
    captions = _captions_by_video(json_path, seen)
    report_skipped(warn, [v for v in ids if v not in captions], len(ids), f"have no captions in {json_path}")
    items = []
    for video_id in ids:
        if video_id not in captions:
            continue
        # Stable sort: equal sen_ids (not expected) keep json order.
        pairs = sorted(captions[video_id], key=lambda pair: pair[0])
        items.append(VideoItem(video_id, _video_path(video_dir, video_id), tuple(c for _, c in pairs),
                               extra={"sen_ids": [s for s, _ in pairs]}))
    return require_items(items, f"{csv_path}: none of its videos has captions in {json_path}")


def _test(csv_path: Path, video_dir: Path) -> list[VideoItem]:
    # Rows of the same video_id (none in the real 1k-A file) become one multi-caption item, so a gallery never
    # holds the same video twice.
    grouped: dict[str, dict[str, list[str]]] = {}
    for _, row in _read_csv(csv_path, ("key", "vid_key", "video_id", "sentence"), "MSR-VTT test csv"):
        entry = grouped.setdefault(row["video_id"].strip(), {"sentences": [], "keys": [], "vid_keys": []})
        entry["sentences"].append(row["sentence"])
        entry["keys"].append(row["key"])
        entry["vid_keys"].append(row["vid_key"])
    return [VideoItem(video_id, _video_path(video_dir, video_id), tuple(entry["sentences"]),
                      extra={"keys": entry["keys"], "vid_keys": entry["vid_keys"]})
            for video_id, entry in grouped.items()]


@register("msrvtt")
def load_msrvtt(root: Path, split: str, *, train_9k_csv: str | Path = "MSRVTT_train.9k.csv",
                train_7k_csv: str | Path = "MSRVTT_train.7k.csv",
                test_csv: str | Path = "MSRVTT_JSFUSION_test.csv", data_json: str | Path = "MSRVTT_data.json",
                video_dir: str | Path = "videos", warn: Warn = stderr_warn) -> list[VideoItem]:
    """Load one MSR-VTT split ("train-9k", "train-7k" or "test-1k"); paths are relative to `root` or absolute."""
    check_split("msrvtt", split, SPLITS)
    root = Path(root)
    videos = option_path(root, video_dir)
    if split == "test-1k":
        return _test(option_path(root, test_csv), videos)
    train_csv = train_9k_csv if split == "train-9k" else train_7k_csv
    return _train(option_path(root, train_csv), option_path(root, data_json), videos, warn)
