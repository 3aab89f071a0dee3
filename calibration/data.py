"""Calibration and held-out clips for INT8: real videos decoded and preprocessed exactly as the runtime does.

Frames come from `hbci.runtime.video.load_clip` and `preprocess` with the bundle's T, image size, mean and std:
the same two calls `Retriever.load_video` and `Retriever.preprocess` make (a test checks the feeds are
bit-identical to the retriever's). No re-implementation, no torch.

Sources (`video_paths`):
  * a folder: every video file below it (recursive, sorted; extensions in VIDEO_EXTENSIONS, any case);
  * a captions CSV (`video,caption`, paths relative to the CSV's folder): its videos, in first-seen order;
  * a dataset root holding `<split>.csv`, with `split=` given: that CSV.

Sample counts. MinMax (the default) keeps only a running min/max per tensor, so its memory does not grow with
the sample count: DEFAULT_CLIPS = 64 clips. ONNX Runtime's entropy and percentile calibrators keep every
intermediate tensor of a collection round in RAM (for a ViT-B/32 at T=12 about 0.2 GB per clip), so those
methods default to DEFAULT_HISTOGRAM_CLIPS = 16 clips, are capped at MAX_HISTOGRAM_CLIPS = 32, and are fed in
rounds of at most HISTOGRAM_ROUND clips (the histograms are merged between rounds).

Decoded clips are held as uint8 [T, S, S, 3] (a quarter of float32) and normalised one batch at a time as the
calibrator asks for them. Unreadable or corrupt videos are skipped with a warning and counted; a source with no
video at all, or none that decodes, is a `CalibrationDataError` naming the folder or file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from hbci.runtime.bundle import TEXT_INPUTS, VIDEO_INPUTS, Bundle
from hbci.runtime.errors import DatasetError, VideoError
from hbci.runtime.video import load_clip
from hbci.runtime.video import preprocess as video_preprocess

__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_CLIPS", "DEFAULT_HISTOGRAM_CLIPS", "MAX_HISTOGRAM_CLIPS",
           "HISTOGRAM_ROUND", "DEFAULT_CAPTIONS", "CalibrationDataError", "ClipSet", "CaptionSet", "CalibrationReader", "find_videos", "video_paths",
           "spread", "load_clips", "calibration_captions", "preprocess", "default_clip_count"]

log = logging.getLogger("hbci")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".3gp")
DEFAULT_CLIPS = 64
DEFAULT_HISTOGRAM_CLIPS = 16
MAX_HISTOGRAM_CLIPS = 32
HISTOGRAM_ROUND = 8
DEFAULT_CAPTIONS = 256  # text-encoder calibration sentences (MinMax: memory does not grow with the count)


class CalibrationDataError(DatasetError):
    """No usable calibration or held-out video (empty folder, nothing decodes, unusable captions file)."""


def default_clip_count(method: str) -> int:
    return DEFAULT_CLIPS if method == "minmax" else DEFAULT_HISTOGRAM_CLIPS


def find_videos(folder: str | Path) -> list[Path]:
    """Video files below `folder` (recursive), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationDataError(f"{folder}: calibration video folder not found")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def video_paths(source: str | Path, split: str | None = None) -> list[Path]:
    """The video files a calibration source names (see the module docstring); an empty source is an error."""
    from hbci.datasets.generic_csv import read_captions_csv

    source = Path(source)
    if source.is_dir() and split is not None:
        source = source / f"{split}.csv"
    if source.suffix.lower() == ".csv":
        items = read_captions_csv(source)  # DatasetError naming the file when missing or malformed
        if any(item.start is not None or item.end is not None for item in items):
            raise CalibrationDataError(f"{source}: rows with start/end spans are not supported for calibration; "
                                       f"give whole clips")
        paths = list(dict.fromkeys(item.path for item in items))
    else:
        paths = find_videos(source)
    if not paths:
        raise CalibrationDataError(f"{source}: no video files (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return paths


def spread(n: int, k: int) -> list[int]:
    """Deterministic order in which to try n candidates when k are wanted: k evenly spaced ones first (so a
    subset covers the whole sorted folder rather than its first k files), then the rest as replacements for
    files that fail to decode."""
    if k >= n:
        return list(range(n))
    first = sorted({int(i) for i in np.linspace(0, n - 1, k).round()})
    chosen = set(first)
    return first + [i for i in range(n) if i not in chosen]


def preprocess(frames: np.ndarray, bundle: Bundle) -> np.ndarray:
    """uint8 [B, T, S, S, 3] -> float32 [B, T, 3, S, S]: the runtime's preprocessing (`Retriever.preprocess`)
    applied per clip."""
    b, t = frames.shape[:2]
    pixels = video_preprocess(frames.reshape(b * t, *frames.shape[2:]), bundle.image_size, bundle.mean, bundle.std)
    return pixels.reshape(b, t, *pixels.shape[1:])


@dataclass
class ClipSet:
    """Decoded clips (uint8 frames and masks) with where they came from and what was skipped."""

    bundle: Bundle
    paths: list[Path]
    frames: np.ndarray                     # uint8 [N, T, S, S, 3]
    masks: np.ndarray                      # bool [N, T]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.paths)

    def feeds(self, batch: int = 1, start: int = 0, end: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Video-encoder feeds {"frames": float32 [b, T, 3, S, S], "frame_mask": float32 [b, T]}."""
        end = len(self) if end is None else min(end, len(self))
        for i in range(start, end, batch):
            j = min(i + batch, end)
            yield dict(zip(VIDEO_INPUTS, (preprocess(self.frames[i:j], self.bundle),
                                          self.masks[i:j].astype(np.float32))))


def load_clips(paths: Sequence[Path], bundle: Bundle, max_clips: int | None = None, source: str | Path = "",
               warn: Callable[[str], None] | None = None) -> ClipSet:
    """Decode up to `max_clips` of `paths` (evenly spread, see `spread`) with the bundle's T and image size.

    Files that fail to decode are skipped, each with a warning, and listed in `ClipSet.skipped`; when nothing
    decodes the error names `source`.
    """
    warn = warn or log.warning
    where = str(source) or "calibration videos"
    if not paths:
        raise CalibrationDataError(f"{where}: no video files")
    wanted = len(paths) if max_clips is None else max(1, int(max_clips))
    frames, masks, kept, skipped = [], [], [], []
    for index in spread(len(paths), wanted):
        if len(kept) == wanted:
            break
        path = paths[index]
        try:
            clip, mask = load_clip(path, bundle.num_frames, bundle.image_size)
        except VideoError as exc:
            skipped.append((str(path), exc.reason))
            warn(f"warning: skipping unreadable video {path}: {exc.reason}")
            continue
        frames.append(clip)
        masks.append(mask)
        kept.append(Path(path))
    if skipped:
        warn(f"warning: {len(skipped)} of {len(skipped) + len(kept)} videos tried in {where} could not be "
             f"decoded and were skipped")
    if not kept:
        raise CalibrationDataError(f"{where}: none of the {len(skipped)} video file(s) tried could be decoded "
                                   f"(first: {skipped[0][0]}: {skipped[0][1]})")
    return ClipSet(bundle, kept, np.stack(frames), np.stack(masks), skipped)


@dataclass
class CaptionSet:
    """Captions that calibrate the text encoder, tokenized as the runtime tokenizes queries."""

    bundle: Bundle
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def feeds(self, batch: int = 16, start: int = 0, end: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Text-encoder feeds {"token_ids": int32 [b, L], "token_mask": float32 [b, L]}."""
        from hbci.runtime.tokenizer import ClipTokenizer

        tokenizer = ClipTokenizer.from_file(self.bundle.tokenizer_path, self.bundle.max_words)
        end = len(self) if end is None else min(end, len(self))
        for i in range(start, end, batch):
            ids, mask = tokenizer(self.texts[i:min(i + batch, end)])
            yield dict(zip(TEXT_INPUTS, (np.asarray(ids, np.int32), np.asarray(mask, np.float32))))


def calibration_captions(bundle: Bundle, texts: Sequence[str], max_captions: int = DEFAULT_CAPTIONS) -> CaptionSet:
    """Up to `max_captions` distinct captions of `texts`, evenly spread over them."""
    distinct = list(dict.fromkeys(t for t in texts if t and t.strip()))
    if not distinct:
        raise CalibrationDataError("no captions to calibrate the text encoder with")
    count = min(len(distinct), max_captions)
    return CaptionSet(bundle, [distinct[i] for i in spread(len(distinct), count)[:count]])


class CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol over a ClipSet or a CaptionSet: one feed per `batch` items.

    `set_range` and `__len__` let `quantize_static` collect in rounds (its CalibStridedMinMax option), which is
    how the histogram calibrators are kept to a bounded number of clips in memory.
    """

    def __init__(self, clips: ClipSet | CaptionSet, batch: int = 1):
        self.clips, self.batch = clips, batch
        self._start, self._end = 0, len(clips)
        self._it: Iterator | None = None

    def __len__(self) -> int:
        return len(self.clips)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end, self._it = start_index, end_index, None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self.clips.feeds(self.batch, self._start, self._end)
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None
